//! The gateway's jobs, in an embedded SQLite database (one file, nothing to install).
//!
//! A job is `queued`, then `running` (claimed by one worker), then `done` (with its receipt) or
//! `failed` (with the reason). What keeps a job from being lost or run twice:
//! - every change is one SQL statement in a database opened with `synchronous = FULL` (WAL), so
//!   an accepted job is on disk before the client hears its id;
//! - a worker claims a job with one `UPDATE … WHERE state = 'queued'`, which also counts the
//!   attempt; only that attempt can finish it (`finish` matches the attempt number and the
//!   `running` state), so a stale worker cannot overwrite a later result and a finished job is
//!   never finished again;
//! - a gateway that stops in the middle of a job leaves it `running`; the next start puts every
//!   `running` job back in the queue ([`JobStore::open`] reports how many), so it completes
//!   exactly once; one that was started [`MAX_ATTEMPTS`] times already is failed instead;
//! - one process at a time: [`JobStore::open`] holds an exclusive lock on `DB.lock` for as long
//!   as the store lives, so a second gateway on the same file is refused instead of putting the
//!   first one's running jobs back in the queue;
//! - finished jobs get a finishing number in the order they finish ([`Job::finished`]), which
//!   is what a reader of finished jobs pages by (jobs finish out of acceptance order).

use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// A job store failure; names the database file.
#[derive(Debug, Error)]
#[error("job database {path}: {detail}")]
pub struct StoreError {
    pub path: PathBuf,
    pub detail: String,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether the job will not change again.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// A job as clients see it (`GET /v1/jobs/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Order of acceptance.
    pub seq: i64,
    /// Order of finishing (done or failed), from 1; the settlement agent pages through finished
    /// jobs by it, since jobs finish out of the order they were accepted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
    pub model_id: String,
    pub state: JobState,
    /// What the job is doing now, in words.
    pub stage: String,
    /// 0 to 1.
    pub progress: f64,
    /// How many times a worker started it (more than 1 only after a restart).
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The `InferenceReceipt` of a finished job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<serde_json::Value>,
    /// Why a failed job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a listing starts: after an acceptance number, or after a finishing number (finished
/// jobs only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    AcceptedAfter(i64),
    FinishedAfter(i64),
}

/// How many times a job is started before it is failed: a job that takes the process down
/// (out of memory, say) must not do so at every start.
pub const MAX_ATTEMPTS: u32 = 3;

/// A claimed job: what the worker needs to run it.
#[derive(Clone, Debug)]
pub struct Claim {
    pub id: String,
    pub model_id: String,
    pub input: serde_json::Value,
    pub attempt: u32,
}

/// The job database.
#[derive(Debug)]
pub struct JobStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held (locked) while the store lives.
    _lock: std::fs::File,
}

/// Opens an SQLite database for records that must survive a crash (the job store's and the
/// settlement agent's): write-ahead log, every commit synced, a wait for another writer.
pub(crate) fn open_durable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new job id: 16 random bytes, hex.
fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

const COLUMNS: &str = "id, seq, model_id, state, stage, progress, attempts, created_ms, \
    updated_ms, receipt, error, finished";

/// The next finishing number, inside an UPDATE or INSERT of the job store (one connection, one
/// statement at a time: no two jobs get the same number).
const NEXT_FINISHED: &str = "(SELECT COALESCE(MAX(finished), 0) + 1 FROM jobs)";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let state: String = r.get(3)?;
    let receipt: Option<String> = r.get(9)?;
    Ok(Job {
        id: r.get(0)?,
        seq: r.get(1)?,
        model_id: r.get(2)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        stage: r.get(4)?,
        progress: r.get(5)?,
        attempts: r.get(6)?,
        created_ms: r.get::<_, i64>(7)? as u64,
        updated_ms: r.get::<_, i64>(8)? as u64,
        receipt: receipt.and_then(|t| serde_json::from_str(&t).ok()),
        error: r.get(10)?,
        finished: r.get(11)?,
    })
}

impl JobStore {
    /// Opens (or creates) the database and puts jobs left `running` by an earlier process back
    /// in the queue. Returns the store and how many jobs were put back.
    pub fn open(path: &Path) -> Result<(JobStore, usize), StoreError> {
        let fail = |e: rusqlite::Error| StoreError {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError {
                path: lock_path.clone(),
                detail: e.to_string(),
            })?;
        lock.try_lock().map_err(|e| StoreError {
            path: path.to_path_buf(),
            detail: format!(
                "another process (a second gateway?) holds {}: {e}",
                lock_path.display()
            ),
        })?;
        let conn = open_durable(path).map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                model_id TEXT NOT NULL,
                input TEXT NOT NULL,
                state TEXT NOT NULL,
                stage TEXT NOT NULL,
                progress REAL NOT NULL,
                attempts INTEGER NOT NULL,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                receipt TEXT,
                error TEXT,
                finished INTEGER UNIQUE
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);",
        )
        .map_err(fail)?;
        // one at a time, so that each gets its own finishing number
        loop {
            let n = conn
                .execute(
                    &format!(
                        "UPDATE jobs SET state = 'failed', stage = 'failed', progress = 1,
                         error = 'the prover stopped (the process ended) ' || attempts ||
                           ' times on this job', updated_ms = ?1, finished = {NEXT_FINISHED}
                         WHERE seq = (SELECT seq FROM jobs WHERE state = 'running'
                           AND attempts >= ?2 LIMIT 1)"
                    ),
                    params![now_ms() as i64, MAX_ATTEMPTS],
                )
                .map_err(fail)?;
            if n == 0 {
                break;
            }
        }
        let requeued = conn
            .execute(
                "UPDATE jobs SET state = 'queued', stage = 'queued again after a restart',
                 progress = 0, updated_ms = ?1 WHERE state = 'running'",
                params![now_ms() as i64],
            )
            .map_err(fail)?;
        Ok((
            JobStore {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                _lock: lock,
            },
            requeued,
        ))
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|e| self.err(e))
    }

    /// Queues a job unless `max_queued` jobs are already waiting (then `None`: the caller
    /// answers 429).
    pub fn enqueue(
        &self,
        model_id: &str,
        input: &serde_json::Value,
        max_queued: usize,
    ) -> Result<Option<Job>, StoreError> {
        let id = new_id();
        let now = now_ms() as i64;
        let input = input.to_string();
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let queued: i64 = tx.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )?;
            if queued as usize >= max_queued {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO jobs (id, model_id, input, state, stage, progress, attempts,
                 created_ms, updated_ms) VALUES (?1, ?2, ?3, 'queued', 'queued', 0, 0, ?4, ?4)",
                params![id, model_id, input, now],
            )?;
            let job = tx.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row_to_job,
            )?;
            tx.commit()?;
            Ok(Some(job))
        })
    }

    /// Records a job that finished at once (a closed model's answer).
    pub fn insert_done(
        &self,
        model_id: &str,
        input: &serde_json::Value,
        receipt: &serde_json::Value,
    ) -> Result<Job, StoreError> {
        let id = new_id();
        let now = now_ms() as i64;
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO jobs (id, model_id, input, state, stage, progress, attempts,
                     created_ms, updated_ms, receipt, finished)
                     VALUES (?1, ?2, ?3, 'done', 'done', 1, 1, ?4, ?4, ?5, {NEXT_FINISHED})"
                ),
                params![id, model_id, input.to_string(), now, receipt.to_string()],
            )?;
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row_to_job,
            )
        })
    }

    /// Claims the oldest queued job for one worker.
    pub fn claim(&self) -> Result<Option<Claim>, StoreError> {
        let now = now_ms() as i64;
        self.with(|c| {
            c.query_row(
                "UPDATE jobs SET state = 'running', stage = 'starting', progress = 0,
                 attempts = attempts + 1, updated_ms = ?1
                 WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1)
                 RETURNING id, model_id, input, attempts",
                params![now],
                |r| {
                    let input: String = r.get(2)?;
                    Ok(Claim {
                        id: r.get(0)?,
                        model_id: r.get(1)?,
                        input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
                        attempt: r.get(3)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Records a running job's stage; false when the attempt no longer owns the job.
    pub fn progress(&self, claim: &Claim, stage: &str, progress: f64) -> Result<bool, StoreError> {
        let now = now_ms() as i64;
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET stage = ?1, progress = ?2, updated_ms = ?3
                 WHERE id = ?4 AND state = 'running' AND attempts = ?5",
                params![stage, progress, now, claim.id, claim.attempt],
            )
            .map(|n| n == 1)
        })
    }

    /// Finishes the claimed attempt with its receipt or its error; false (nothing written) when
    /// the job is no longer this attempt's.
    pub fn finish(
        &self,
        claim: &Claim,
        result: Result<&serde_json::Value, &str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms() as i64;
        let (state, stage, receipt, error) = match result {
            Ok(r) => ("done", "done", Some(r.to_string()), None),
            Err(e) => ("failed", "failed", None, Some(e.to_string())),
        };
        self.with(|c| {
            c.execute(
                &format!(
                    "UPDATE jobs SET state = ?1, stage = ?2, progress = 1, receipt = ?3, error = ?4,
                     updated_ms = ?5, finished = {NEXT_FINISHED}
                     WHERE id = ?6 AND state = 'running' AND attempts = ?7"
                ),
                params![state, stage, receipt, error, now, claim.id, claim.attempt],
            )
            .map(|n| n == 1)
        })
    }

    /// One job.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                row_to_job,
            )
            .optional()
        })
    }

    /// Jobs in `state` from `page` on, in that order, at most `limit`.
    pub fn list(
        &self,
        state: Option<JobState>,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let (column, after) = match page {
            Page::AcceptedAfter(n) => ("seq", n),
            Page::FinishedAfter(n) => ("finished", n),
        };
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE {column} > ?1 AND (?2 IS NULL OR state = ?2)
                 ORDER BY {column} LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![after, state.map(JobState::as_str), limit as i64],
                row_to_job,
            )?;
            rows.collect()
        })
    }

    /// How many jobs are in each state: queued, running, done, failed.
    pub fn counts(&self) -> Result<[u64; 4], StoreError> {
        self.with(|c| {
            let mut out = [0u64; 4];
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (s, n) = row?;
                let i = match JobState::parse(&s) {
                    Some(JobState::Queued) => 0,
                    Some(JobState::Running) => 1,
                    Some(JobState::Done) => 2,
                    _ => 3,
                };
                out[i] += n as u64;
            }
            Ok(out)
        })
    }
}
