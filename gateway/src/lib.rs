//! VeriML's gateway: one request path for open models (proven by the halo2 circuit) and closed
//! models (run by the SEV-SNP TEE runner).
//!
//! - [`catalogue`]: which model id runs where;
//! - [`receipt`]: the one receipt format for both kinds of evidence;
//! - [`jobs`] and [`server`]: `veriml serve`, the HTTP gateway with its job queue;
//! - [`settle`]: `veriml settle`, the agent that puts checked receipts on chain.

pub mod catalogue;
pub mod jobs;
pub mod receipt;
pub mod server;
pub mod settle;

pub use catalogue::{Catalogue, CatalogueError, ClosedModel, Entry, OpenModel};
pub use receipt::{Evidence, InferenceReceipt, ReceiptCheckError, TeeEvidence};
