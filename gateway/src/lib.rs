//! VeriML's gateway: one request path for open models (proven by the halo2 circuit) and closed
//! models (run by the SEV-SNP TEE runner).
//!
//! So far: the model catalogue ([`catalogue`]), which says for each model id where it runs, and
//! the one receipt format for both kinds of evidence ([`receipt`]).

pub mod catalogue;
pub mod receipt;

pub use catalogue::{Catalogue, CatalogueError, ClosedModel, Entry, OpenModel};
pub use receipt::{Evidence, InferenceReceipt, ReceiptCheckError, TeeEvidence};
