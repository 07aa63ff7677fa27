//! `veriml settle`: the settlement agent. It checks inference receipts off-chain and puts the
//! valid ones on chain through `InferenceRegistry` (`submitProof` for open models,
//! `submitReceipt` for closed ones), recording what it did in an SQLite file.
//!
//! Each receipt settles once, whatever stops the agent:
//! - a receipt is keyed by its result id, `keccak256(abi.encode(modelId, inputHash,
//!   outputHash))` with `modelId = keccak256(catalogue id)`: what the registry keys it by;
//! - a transaction is signed here, its hash, nonce and bytes recorded (`sent`), and only then
//!   broadcast. An agent stopped after that finds the record at its next start, broadcasts the
//!   same bytes again (a node that dropped it gets it back; one that has it ignores them) and
//!   waits for that transaction instead of sending another. Only when another transaction has
//!   taken its nonce (so it can never be mined) and the result is still unsettled does it send
//!   a new one;
//! - before sending, the registry is asked whether the result is settled already (`isSettled`),
//!   and the call is simulated (`eth_call`): a receipt the contract would refuse is reported
//!   with the contract's error and never sent;
//! - invalid receipts (any check of [`InferenceReceipt::verify`] failing, or a refusal by the
//!   contracts that no later state can lift) are recorded as such and never submitted; a
//!   refusal that may lift (the runner's key or the model's route not registered yet) defers
//!   the receipt, kept in the records and tried again by [`Settler::retry_deferred`];
//!   `AlreadySettled` or a used nonce is settled when `isSettled` says so.
//!
//! Transactions: EIP-1559 fees from the node, gas estimated and given a 25% margin, the nonce
//! kept here (read from the node's pending count at start and after any nonce error). Node
//! errors are retried with exponential back-off (`retries` times, from `backoff`).

use crate::catalogue::Catalogue;
use crate::receipt::{Evidence, InferenceReceipt};
use alloy::{
    consensus::TxEnvelope,
    eips::eip2718::Encodable2718,
    network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    primitives::{keccak256, Address, Bytes, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
    sol,
    sol_types::{SolCall, SolInterface, SolValue},
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use veriml_prover::pipeline;

sol! {
    /// verifier-contracts/src/InferenceRegistry.sol, as the agent calls it.
    interface IInferenceRegistry {
        struct TeeReceipt {
            uint256 chainId;
            bytes32 modelId;
            bytes32 requestHash;
            bytes32 responseHash;
            uint64 timestamp;
            bytes32 nonce;
        }
        error NotOwner();
        error BadRoute();
        error WrongKind(bytes32 modelId, uint8 routed);
        error WrongTeeModel(bytes32 signed, bytes32 routed);
        error AlreadySettled(bytes32 resultId);
        function submitProof(bytes32 modelId, uint256[] calldata publicInputs, bytes calldata proof)
            external returns (bytes32 resultId);
        function submitReceipt(bytes32 modelId, TeeReceipt calldata receipt, bytes calldata signature)
            external returns (bytes32 resultId);
        function isSettled(bytes32 modelId, bytes32 inputHash, bytes32 outputHash)
            external view returns (bool);
    }

    /// The errors of the contracts the registry calls, to name a refusal.
    interface IEvidenceErrors {
        error UnknownModel(bytes32 modelId);
        error WrongInputCount(uint256 got, uint256 expected);
        error InputOutOfField(uint256 index);
        error ProofRejected(bytes32 modelId);
        error BadSignature();
        error UnknownKey(address key);
        error KeyRevoked(address key);
        error KeyExpired(address key, uint64 expiry);
        error MeasurementIsRevoked(bytes32 measurementHash);
        error WrongChain(uint256 chainId);
        error StaleReceipt(uint64 timestamp);
        error FutureReceipt(uint64 timestamp);
        error NonceUsed(bytes32 nonce);
    }
}

/// Why the agent could not do its work (a receipt that does not check out is an
/// [`Outcome::Invalid`], not an error).
#[derive(Debug, Error)]
pub enum SettleError {
    #[error("settlement records {path}: {detail}")]
    Store { path: PathBuf, detail: String },
    #[error("{stage}: {detail}")]
    Chain { stage: &'static str, detail: String },
    #[error("the gateway at {url}: {detail}")]
    Gateway { url: String, detail: String },
}

/// What became of one receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Settled by this agent's transaction.
    Settled {
        result_id: String,
        tx_hash: String,
        block: u64,
        gas_used: u64,
    },
    /// Settled before (by this agent's earlier run or by someone else); nothing sent.
    AlreadySettled { result_id: String },
    /// The receipt does not check out off-chain, or the registry would refuse it: never sent.
    Invalid { result_id: String, reason: String },
    /// The registry refuses it for now (the runner's key or the model's route is not
    /// registered yet, or an unexplained revert): kept and tried again at the next run.
    Deferred { result_id: String, reason: String },
}

/// How the agent reaches the chain.
#[derive(Clone, Debug)]
pub struct SettleConfig {
    pub rpc_url: String,
    pub private_key: String,
    /// The `InferenceRegistry`.
    pub registry: Address,
    /// The settlement records (created when missing).
    pub db: PathBuf,
    pub allow_insecure_srs: bool,
    /// Attempts at a node call before giving up.
    pub retries: u32,
    /// The first back-off; doubled at each retry.
    pub backoff: Duration,
    /// How long to wait for a sent transaction to be mined.
    pub confirm_timeout: Duration,
}

/// The settlement agent.
pub struct Settler {
    provider: DynProvider,
    wallet: EthereumWallet,
    from: Address,
    chain_id: u64,
    cfg: SettleConfig,
    conn: Connection,
    nonce: Option<u64>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("from", &self.from)
            .field("chain_id", &self.chain_id)
            .field("registry", &self.cfg.registry)
            .finish_non_exhaustive()
    }
}

/// A settlement record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    pub result_id: String,
    pub model_id: String,
    /// `sent`, `settled` or `invalid`.
    pub state: String,
    pub tx_hash: Option<String>,
    pub nonce: Option<u64>,
    pub detail: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn b256(field: &str, s: &str) -> Result<B256, String> {
    let b = hex::decode(s.trim_start_matches("0x")).map_err(|e| format!("{field}: {e}"))?;
    (b.len() == 32)
        .then(|| B256::from_slice(&b))
        .ok_or_else(|| format!("{field}: {} bytes, not 32", b.len()))
}

/// The registry's id of a catalogue model id.
pub fn registry_model_id(catalogue_id: &str) -> B256 {
    keccak256(catalogue_id.as_bytes())
}

/// The registry's result id of a receipt (`None` when its hashes are not 32 bytes).
pub fn result_id(r: &InferenceReceipt) -> Option<B256> {
    let input = b256("input_hash", &r.input_hash).ok()?;
    let output = b256("output_hash", &r.output_hash).ok()?;
    Some(keccak256(
        (registry_model_id(&r.model_id), input, output).abi_encode(),
    ))
}

/// What a refusal by the contracts means for a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// It can never settle.
    Final,
    /// It may settle later (the runner's key or the model's route is not registered yet).
    NotYet,
    /// Someone settled it, or may have (ask `isSettled`).
    MaybeSettled,
}

/// Sorts a revert of the registry or of the contracts it calls.
fn refusal(data: &[u8]) -> Refusal {
    if let Ok(e) = IInferenceRegistry::IInferenceRegistryErrors::abi_decode(data) {
        use IInferenceRegistry::IInferenceRegistryErrors as E;
        return match e {
            E::AlreadySettled(_) => Refusal::MaybeSettled,
            E::WrongKind(x) if x.routed == 0 => Refusal::NotYet,
            _ => Refusal::Final,
        };
    }
    if let Ok(e) = IEvidenceErrors::IEvidenceErrorsErrors::abi_decode(data) {
        use IEvidenceErrors::IEvidenceErrorsErrors as E;
        return match e {
            E::UnknownModel(_) | E::UnknownKey(_) => Refusal::NotYet,
            E::NonceUsed(_) => Refusal::MaybeSettled,
            _ => Refusal::Final,
        };
    }
    Refusal::NotYet
}

/// Names a revert of the registry or of the contracts it calls.
fn revert_reason(data: &[u8]) -> String {
    if let Ok(e) = IInferenceRegistry::IInferenceRegistryErrors::abi_decode(data) {
        use IInferenceRegistry::IInferenceRegistryErrors as E;
        return match e {
            E::NotOwner(_) => "NotOwner".into(),
            E::BadRoute(_) => "BadRoute".into(),
            E::WrongKind(x) => format!(
                "WrongKind: the model is routed to evidence kind {} (0 none, 1 zk, 2 tee)",
                x.routed
            ),
            E::WrongTeeModel(x) => format!(
                "WrongTeeModel: signed for {}, routed to {}",
                x.signed, x.routed
            ),
            E::AlreadySettled(x) => format!("AlreadySettled({})", x.resultId),
        };
    }
    if let Ok(e) = IEvidenceErrors::IEvidenceErrorsErrors::abi_decode(data) {
        use IEvidenceErrors::IEvidenceErrorsErrors as E;
        return match e {
            E::UnknownModel(x) => format!("UnknownModel({})", x.modelId),
            E::WrongInputCount(x) => format!("WrongInputCount({}, {})", x.got, x.expected),
            E::InputOutOfField(x) => format!("InputOutOfField({})", x.index),
            E::ProofRejected(_) => "ProofRejected: the verifier refused the proof".into(),
            E::BadSignature(_) => "BadSignature".into(),
            E::UnknownKey(x) => format!("UnknownKey({}): not a registered runner key", x.key),
            E::KeyRevoked(x) => format!("KeyRevoked({})", x.key),
            E::KeyExpired(x) => format!("KeyExpired({}, {})", x.key, x.expiry),
            E::MeasurementIsRevoked(x) => format!("MeasurementIsRevoked({})", x.measurementHash),
            E::WrongChain(x) => format!("WrongChain({})", x.chainId),
            E::StaleReceipt(x) => format!("StaleReceipt({})", x.timestamp),
            E::FutureReceipt(x) => format!("FutureReceipt({})", x.timestamp),
            E::NonceUsed(x) => format!("NonceUsed({})", x.nonce),
        };
    }
    format!("reverted with data 0x{}", hex::encode(data))
}

/// The registry call that settles a receipt.
fn calldata(r: &InferenceReceipt) -> Result<Vec<u8>, String> {
    let model = registry_model_id(&r.model_id);
    Ok(match &r.evidence {
        Evidence::Zk { proof } => {
            let words = proof
                .instances
                .iter()
                .map(|w| {
                    pipeline::fr_from_hex(w)
                        .map(|f| veriml_prover::chain::word(&f))
                        .ok_or_else(|| format!("public word `{w}` is not a field element"))
                })
                .collect::<Result<Vec<U256>, _>>()?;
            let proof = hex::decode(proof.proof.trim_start_matches("0x"))
                .map_err(|e| format!("proof bytes: {e}"))?;
            IInferenceRegistry::submitProofCall {
                modelId: model,
                publicInputs: words,
                proof: Bytes::from(proof),
            }
            .abi_encode()
        }
        Evidence::Tee(t) => {
            let sig = hex::decode(t.signature.trim_start_matches("0x"))
                .map_err(|e| format!("signature: {e}"))?;
            let x = &t.receipt;
            IInferenceRegistry::submitReceiptCall {
                modelId: model,
                receipt: IInferenceRegistry::TeeReceipt {
                    chainId: U256::from(x.chain_id),
                    modelId: B256::from(x.model_id),
                    requestHash: B256::from(x.request_hash),
                    responseHash: B256::from(x.response_hash),
                    timestamp: x.timestamp,
                    nonce: B256::from(x.nonce),
                },
                signature: Bytes::from(sig),
            }
            .abi_encode()
        }
    })
}

impl Settler {
    /// Connects to the node and opens the records.
    pub async fn connect(cfg: SettleConfig) -> Result<Settler, SettleError> {
        let chain = |stage, detail: String| SettleError::Chain { stage, detail };
        let signer: PrivateKeySigner = cfg
            .private_key
            .trim()
            .parse()
            .map_err(|e| chain("reading the private key", format!("{e}")))?;
        let from = signer.address();
        let url = cfg
            .rpc_url
            .parse()
            .map_err(|e| chain("reading the RPC URL", format!("{}: {e}", cfg.rpc_url)))?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url)
            .erased();
        let store = |e: rusqlite::Error| SettleError::Store {
            path: cfg.db.clone(),
            detail: e.to_string(),
        };
        let conn = crate::jobs::open_durable(&cfg.db).map_err(store)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS settlements (
                result_id TEXT PRIMARY KEY,
                model_id TEXT NOT NULL,
                state TEXT NOT NULL,
                tx_hash TEXT,
                nonce INTEGER,
                raw_tx TEXT,
                receipt TEXT,
                detail TEXT,
                updated_ms INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS cursor (source TEXT PRIMARY KEY, seq INTEGER NOT NULL);",
        )
        .map_err(store)?;
        let mut s = Settler {
            provider,
            wallet: EthereumWallet::from(signer),
            from,
            chain_id: 0,
            cfg,
            conn,
            nonce: None,
        };
        s.chain_id = s
            .retry("asking the chain id", |p| async move {
                p.get_chain_id().await.map_err(|e| e.to_string())
            })
            .await?;
        Ok(s)
    }

    /// The sending account.
    pub fn from(&self) -> Address {
        self.from
    }

    fn store_err(&self, e: rusqlite::Error) -> SettleError {
        SettleError::Store {
            path: self.cfg.db.clone(),
            detail: e.to_string(),
        }
    }

    /// A node call, retried with back-off.
    async fn retry<T, F, Fut>(&self, stage: &'static str, f: F) -> Result<T, SettleError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let mut wait = self.cfg.backoff;
        let mut last = String::new();
        for attempt in 0..self.cfg.retries.max(1) {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            match f(self.provider.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(SettleError::Chain {
            stage,
            detail: format!("{last} (after {} attempts)", self.cfg.retries.max(1)),
        })
    }

    /// The settlement record of a result.
    pub fn record(&self, result_id: &str) -> Result<Option<Record>, SettleError> {
        self.conn
            .query_row(
                "SELECT result_id, model_id, state, tx_hash, nonce, detail FROM settlements
                 WHERE result_id = ?1",
                params![result_id],
                |r| {
                    Ok(Record {
                        result_id: r.get(0)?,
                        model_id: r.get(1)?,
                        state: r.get(2)?,
                        tx_hash: r.get(3)?,
                        nonce: r.get::<_, Option<i64>>(4)?.map(|n| n as u64),
                        detail: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.store_err(e))
    }

    /// Records a receipt as invalid (never to be sent) and says so.
    fn invalid(&self, rid: &str, model_id: &str, reason: String) -> Result<Outcome, SettleError> {
        self.write(rid, model_id, "invalid", None, Some(&reason))?;
        Ok(Outcome::Invalid {
            result_id: rid.to_string(),
            reason,
        })
    }

    /// Records a result as settled by someone or earlier (nothing sent now) and says so.
    fn settled_before(
        &self,
        rid: &str,
        model_id: &str,
        detail: &str,
    ) -> Result<Outcome, SettleError> {
        self.write(rid, model_id, "settled", None, Some(detail))?;
        Ok(Outcome::AlreadySettled {
            result_id: rid.to_string(),
        })
    }

    /// Records a result as settled by this agent's mined transaction and says so.
    fn settled_by(
        &self,
        rid: &str,
        model_id: &str,
        hash: B256,
        block: u64,
        gas_used: u64,
    ) -> Result<Outcome, SettleError> {
        self.write(rid, model_id, "settled", None, None)?;
        Ok(Outcome::Settled {
            result_id: rid.to_string(),
            tx_hash: hash.to_string(),
            block,
            gas_used,
        })
    }

    /// The account's nonce: of the latest block, or counting pending transactions.
    async fn account_nonce(&self, pending: bool) -> Result<u64, SettleError> {
        let from = self.from;
        self.retry("reading the account's nonce", |p| async move {
            let count = p.get_transaction_count(from);
            if pending {
                count.pending()
            } else {
                count.latest()
            }
            .await
            .map_err(|e| e.to_string())
        })
        .await
    }

    /// Keeps a receipt the registry refuses for now, to try it again later.
    fn write_deferred(
        &self,
        result_id: &str,
        r: &InferenceReceipt,
        reason: &str,
    ) -> Result<(), SettleError> {
        self.write(result_id, &r.model_id, "deferred", None, Some(reason))?;
        let text = serde_json::to_string(r).map_err(|e| SettleError::Store {
            path: self.cfg.db.clone(),
            detail: e.to_string(),
        })?;
        self.conn
            .execute(
                "UPDATE settlements SET receipt = ?1 WHERE result_id = ?2",
                params![text, result_id],
            )
            .map(|_| ())
            .map_err(|e| self.store_err(e))
    }

    /// Tries the deferred receipts again. Returns each one's result id with its outcome.
    pub async fn retry_deferred(
        &mut self,
        catalogue: &Catalogue,
    ) -> Result<Vec<(String, Outcome)>, SettleError> {
        let mut stmt = self
            .conn
            .prepare("SELECT result_id, receipt FROM settlements WHERE state = 'deferred'")
            .map_err(|e| self.store_err(e))?;
        let rows: Vec<(String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.store_err(e))?;
        drop(stmt);
        let mut out = Vec::new();
        for (id, text) in rows {
            let outcome = match text.as_deref().map(InferenceReceipt::from_json) {
                Some(Ok(r)) => self.settle(catalogue, &r).await?,
                _ => Outcome::Invalid {
                    result_id: id.clone(),
                    reason: "the deferred receipt's record is unreadable".into(),
                },
            };
            out.push((id, outcome));
        }
        Ok(out)
    }

    /// The signed bytes of the transaction recorded for a result.
    fn raw_tx(&self, result_id: &str) -> Result<Option<Vec<u8>>, SettleError> {
        let raw: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT raw_tx FROM settlements WHERE result_id = ?1",
                params![result_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.store_err(e))?;
        Ok(raw.flatten().and_then(|h| hex::decode(h).ok()))
    }

    /// Every record, in result-id order.
    pub fn records(&self) -> Result<Vec<Record>, SettleError> {
        let mut stmt = self
            .conn
            .prepare("SELECT result_id FROM settlements ORDER BY result_id")
            .map_err(|e| self.store_err(e))?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.store_err(e))?;
        ids.iter()
            .filter_map(|id| self.record(id).transpose())
            .collect()
    }

    fn write(
        &self,
        result_id: &str,
        model_id: &str,
        state: &str,
        tx: Option<(&str, u64, &[u8])>,
        detail: Option<&str>,
    ) -> Result<(), SettleError> {
        self.conn
            .execute(
                "INSERT INTO settlements (result_id, model_id, state, tx_hash, nonce, raw_tx, detail,
                   updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(result_id) DO UPDATE SET state = ?3,
                   tx_hash = COALESCE(?4, tx_hash), nonce = COALESCE(?5, nonce),
                   raw_tx = COALESCE(?6, raw_tx), detail = ?7, updated_ms = ?8",
                params![
                    result_id,
                    model_id,
                    state,
                    tx.map(|t| t.0),
                    tx.map(|t| t.1 as i64),
                    tx.map(|t| hex::encode(t.2)),
                    detail,
                    now_ms()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.store_err(e))
    }

    async fn is_settled(&self, r: &InferenceReceipt) -> Result<bool, SettleError> {
        let (Ok(input), Ok(output)) = (
            b256("input_hash", &r.input_hash),
            b256("output_hash", &r.output_hash),
        ) else {
            return Ok(false);
        };
        let data = IInferenceRegistry::isSettledCall {
            modelId: registry_model_id(&r.model_id),
            inputHash: input,
            outputHash: output,
        }
        .abi_encode();
        let tx = TransactionRequest::default()
            .to(self.cfg.registry)
            .input(data.into());
        let out = self
            .retry("asking the registry", |p| {
                let tx = tx.clone();
                async move { p.call(tx).await.map_err(|e| e.to_string()) }
            })
            .await?;
        IInferenceRegistry::isSettledCall::abi_decode_returns(&out).map_err(|e| {
            SettleError::Chain {
                stage: "asking the registry",
                detail: format!("not an InferenceRegistry at {}: {e}", self.cfg.registry),
            }
        })
    }

    /// Waits for a sent transaction: `Some((block, gas, success))` once mined, `None` when the
    /// node does not know it after `confirm_timeout`.
    async fn wait_mined(&self, hash: B256) -> Result<Option<(u64, u64, bool)>, SettleError> {
        let deadline = tokio::time::Instant::now() + self.cfg.confirm_timeout;
        loop {
            let receipt = self
                .retry("reading a transaction receipt", |p| async move {
                    p.get_transaction_receipt(hash)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await?;
            if let Some(r) = receipt {
                return Ok(Some((r.block_number.unwrap_or(0), r.gas_used, r.status())));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn next_nonce(&mut self) -> Result<u64, SettleError> {
        if let Some(n) = self.nonce {
            return Ok(n);
        }
        let n = self.account_nonce(true).await?;
        self.nonce = Some(n);
        Ok(n)
    }

    /// Checks a receipt and settles it (see the module documentation).
    pub async fn settle(
        &mut self,
        catalogue: &Catalogue,
        r: &InferenceReceipt,
    ) -> Result<Outcome, SettleError> {
        let Some(id) = result_id(r) else {
            let reason = "the receipt's hashes are not 32 bytes of hex".to_string();
            return Ok(Outcome::Invalid {
                result_id: String::new(),
                reason,
            });
        };
        let rid = id.to_string();
        match self.record(&rid)? {
            Some(rec) if rec.state == "settled" => {
                return Ok(Outcome::AlreadySettled { result_id: rid })
            }
            Some(rec) if rec.state == "sent" => {
                // an earlier run sent it: broadcast that very transaction again (a no-op where
                // the node has it) and wait for it rather than send another
                let hash = rec.tx_hash.as_deref().and_then(|h| b256("tx", h).ok());
                if let (Some(hash), Some(nonce)) = (hash, rec.nonce) {
                    let mut resend_error = None;
                    if let Some(raw) = self.raw_tx(&rid)? {
                        if let Err(e) = self.provider.send_raw_transaction(&raw).await {
                            let text = e.to_string();
                            // a node that has it, or mined it, says so: not an error
                            if !text.contains("already known") && !text.contains("nonce") {
                                resend_error = Some(text);
                            }
                        }
                    }
                    match self.wait_mined(hash).await? {
                        Some((block, gas_used, true)) => {
                            return self.settled_by(&rid, &r.model_id, hash, block, gas_used);
                        }
                        // reverted: the checks below say why (settled by another, or refused)
                        Some(_) => {}
                        None => {
                            // never mined while its nonce is free: it may still be; when another
                            // transaction took the nonce, it never will be, so send anew
                            if self.account_nonce(false).await? <= nonce {
                                return Err(SettleError::Chain {
                                    stage: "confirming an earlier transaction",
                                    detail: format!(
                                        "{hash} (nonce {nonce}) is not mined yet{}; run again later",
                                        resend_error
                                            .map(|e| format!(" (sending it again: {e})"))
                                            .unwrap_or_default()
                                    ),
                                });
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if let Err(e) = r.verify(catalogue, self.cfg.allow_insecure_srs) {
            return self.invalid(&rid, &r.model_id, e.to_string());
        }
        if self.is_settled(r).await? {
            return self.settled_before(&rid, &r.model_id, "settled before");
        }
        let data = match calldata(r) {
            Ok(d) => d,
            Err(reason) => return self.invalid(&rid, &r.model_id, reason),
        };
        self.send(r, &rid, data).await
    }

    /// Simulates, signs, records, broadcasts and confirms the settling transaction.
    async fn send(
        &mut self,
        r: &InferenceReceipt,
        rid: &str,
        data: Vec<u8>,
    ) -> Result<Outcome, SettleError> {
        let call = TransactionRequest::default()
            .from(self.from)
            .to(self.cfg.registry)
            .input(data.into());
        // simulation: a refusal by the contract is final, a node error is retried
        let mut wait = self.cfg.backoff;
        let mut node_error = None;
        for attempt in 0..self.cfg.retries.max(1) {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            match self.provider.call(call.clone()).await {
                Ok(_) => {
                    node_error = None;
                    break;
                }
                Err(e) => {
                    let data = e.as_error_resp().and_then(|p| p.as_revert_data());
                    let text = e.to_string();
                    if data.is_none() && !text.contains("revert") {
                        node_error = Some(text);
                        continue;
                    }
                    let (kind, why) = match &data {
                        Some(d) => (refusal(d), revert_reason(d)),
                        None => (Refusal::NotYet, text),
                    };
                    let reason = format!("the registry refuses it: {why}");
                    if kind == Refusal::MaybeSettled && self.is_settled(r).await? {
                        return self.settled_before(rid, &r.model_id, &reason);
                    }
                    if kind == Refusal::NotYet {
                        self.write_deferred(rid, r, &reason)?;
                        return Ok(Outcome::Deferred {
                            result_id: rid.to_string(),
                            reason,
                        });
                    }
                    return self.invalid(rid, &r.model_id, reason);
                }
            }
        }
        if let Some(detail) = node_error {
            return Err(SettleError::Chain {
                stage: "simulating the settlement",
                detail,
            });
        }
        let gas = self
            .retry("estimating gas", |p| {
                let c = call.clone();
                async move { p.estimate_gas(c).await.map_err(|e| e.to_string()) }
            })
            .await?;
        let fees = self
            .retry("estimating fees", |p| async move {
                p.estimate_eip1559_fees().await.map_err(|e| e.to_string())
            })
            .await?;
        for _ in 0..3 {
            let nonce = self.next_nonce().await?;
            let tx = call
                .clone()
                .with_chain_id(self.chain_id)
                .with_nonce(nonce)
                .with_gas_limit(gas + gas / 4)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            let envelope: TxEnvelope = <TransactionRequest as NetworkTransactionBuilder<
                Ethereum,
            >>::build(tx, &self.wallet)
            .await
            .map_err(|e| SettleError::Chain {
                stage: "signing the transaction",
                detail: e.to_string(),
            })?;
            let hash = *envelope.tx_hash();
            let raw = envelope.encoded_2718();
            // recorded before it is broadcast: a restart finds it
            self.write(
                rid,
                &r.model_id,
                "sent",
                Some((&hash.to_string(), nonce, &raw)),
                None,
            )?;
            match self.provider.send_raw_transaction(&raw).await {
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("nonce") {
                        // another sender used the nonce: read it again and re-sign
                        self.nonce = None;
                        continue;
                    }
                    if !text.contains("already known") {
                        // not sent: the record must not make the next run wait for it
                        self.conn
                            .execute(
                                "UPDATE settlements SET state = 'unsent', tx_hash = NULL,
                                 nonce = NULL, raw_tx = NULL, detail = ?1 WHERE result_id = ?2",
                                params![text, rid],
                            )
                            .map_err(|e| self.store_err(e))?;
                        self.nonce = None;
                        return Err(SettleError::Chain {
                            stage: "sending the transaction",
                            detail: text,
                        });
                    }
                }
            }
            self.nonce = Some(nonce + 1);
            return match self.wait_mined(hash).await? {
                Some((block, gas_used, true)) => {
                    self.settled_by(rid, &r.model_id, hash, block, gas_used)
                }
                Some((_, _, false)) => {
                    if self.is_settled(r).await? {
                        return self.settled_before(rid, &r.model_id, "settled by another");
                    }
                    Err(SettleError::Chain {
                        stage: "confirming the transaction",
                        detail: format!("{hash} reverted"),
                    })
                }
                None => Err(SettleError::Chain {
                    stage: "confirming the transaction",
                    detail: format!(
                        "{hash} not mined within {} s; the next run waits for it",
                        self.cfg.confirm_timeout.as_secs()
                    ),
                }),
            };
        }
        Err(SettleError::Chain {
            stage: "sending the transaction",
            detail: "the nonce kept changing under the agent (another sender on this account?)"
                .into(),
        })
    }

    /// Settles every job of a gateway that finished since the last call (the position, a
    /// finishing number, is kept in the records), in the order they finished. Returns each job's id with its outcome.
    pub async fn from_gateway(
        &mut self,
        catalogue: &Catalogue,
        url: &str,
    ) -> Result<Vec<(String, Outcome)>, SettleError> {
        let base = url.trim_end_matches('/').to_string();
        let gw = |detail: String| SettleError::Gateway {
            url: base.clone(),
            detail,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| gw(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let after: i64 = self
                .conn
                .query_row(
                    "SELECT seq FROM cursor WHERE source = ?1",
                    params![base],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.store_err(e))?
                .unwrap_or(0);
            let page: serde_json::Value = http
                .get(format!(
                    "{base}/v1/jobs?state=done&finished_after={after}&limit=100"
                ))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| gw(e.to_string()))?
                .json()
                .await
                .map_err(|e| gw(e.to_string()))?;
            let jobs: Vec<crate::jobs::Job> =
                serde_json::from_value(page["jobs"].clone()).map_err(|e| gw(e.to_string()))?;
            if jobs.is_empty() {
                return Ok(out);
            }
            for job in jobs {
                let outcome = match job.receipt.as_ref().map(|v| {
                    serde_json::from_value::<InferenceReceipt>(v.clone()).map_err(|e| e.to_string())
                }) {
                    Some(Ok(r)) => self.settle(catalogue, &r).await?,
                    Some(Err(e)) => Outcome::Invalid {
                        result_id: String::new(),
                        reason: format!("job {}: not a receipt: {e}", job.id),
                    },
                    None => Outcome::Invalid {
                        result_id: String::new(),
                        reason: format!("job {} is done but has no receipt", job.id),
                    },
                };
                self.conn
                    .execute(
                        "INSERT INTO cursor (source, seq) VALUES (?1, ?2)
                         ON CONFLICT(source) DO UPDATE SET seq = ?2",
                        params![base, job.finished.unwrap_or(after)],
                    )
                    .map_err(|e| self.store_err(e))?;
                out.push((job.id, outcome));
            }
        }
    }
}

/// Reads a receipt file for [`Settler::settle`].
pub fn read_receipt(path: &Path) -> Result<InferenceReceipt, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    InferenceReceipt::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn refusals_are_sorted_by_whether_they_can_lift() {
        let key = Address::repeat_byte(7);
        let id = B256::repeat_byte(1);
        // the runner's key or the model's route may be registered later
        assert_eq!(
            refusal(&IEvidenceErrors::UnknownKey { key }.abi_encode()),
            Refusal::NotYet
        );
        assert_eq!(
            refusal(&IEvidenceErrors::UnknownModel { modelId: id }.abi_encode()),
            Refusal::NotYet
        );
        let unrouted = IInferenceRegistry::WrongKind {
            modelId: id,
            routed: 0,
        };
        assert_eq!(refusal(&unrouted.abi_encode()), Refusal::NotYet);
        // settled by someone else, maybe
        let settled = IInferenceRegistry::AlreadySettled { resultId: id };
        assert_eq!(refusal(&settled.abi_encode()), Refusal::MaybeSettled);
        assert_eq!(
            refusal(&IEvidenceErrors::NonceUsed { nonce: id }.abi_encode()),
            Refusal::MaybeSettled
        );
        // never
        let wrong = IInferenceRegistry::WrongKind {
            modelId: id,
            routed: 1,
        };
        assert_eq!(refusal(&wrong.abi_encode()), Refusal::Final);
        assert_eq!(
            refusal(&IEvidenceErrors::ProofRejected { modelId: id }.abi_encode()),
            Refusal::Final
        );
        assert_eq!(
            refusal(&IEvidenceErrors::KeyRevoked { key }.abi_encode()),
            Refusal::Final
        );
        // an error no contract here declares: maybe later
        assert_eq!(refusal(&[1, 2, 3, 4]), Refusal::NotYet);
    }
}
