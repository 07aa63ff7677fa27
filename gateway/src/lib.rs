//! VeriML's gateway: one request path for open models (proven by the halo2 circuit) and closed
//! models (run by the SEV-SNP TEE runner).
//!
//! So far: the model catalogue ([`catalogue`]), which says for each model id where it runs.

pub mod catalogue;

pub use catalogue::{Catalogue, CatalogueError, ClosedModel, Entry, OpenModel};
