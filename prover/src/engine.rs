//! VeriML's commitment scheme: halo2's KZG on BN254 with the prover's commitments computed by
//! an [`MsmBackend`].
//!
//! halo2-axiom makes every commitment of `create_proof` through the scheme's parameters
//! (`Params::commit_lagrange` for advice, lookup, permutation and shuffle columns;
//! `ParamsProver::commit` for the vanishing argument's random polynomial and quotient
//! pieces), and `create_proof` is generic over the scheme. [`VeriKzg`] is a scheme whose prover
//! parameters ([`EngineParams`]) hold halo2's `ParamsKZG` (the same points) and a backend:
//! proofs are byte-for-byte those of `KZGCommitmentScheme`, checked by the unchanged
//! `VerifierSHPLONK` and by the generated Solidity verifier.
//!
//! The multi-open step ([`EngineShplonk`]) runs halo2's own `ProverSHPLONK` on the wrapped
//! parameters: its two commitments (of full-size scalars) stay on halo2curves' MSM. A SHPLONK
//! prover of VeriML's own cannot be written against halo2-axiom 0.5's public API: the opening
//! queries it receives (`ProverQuery`) keep their polynomials in crate-private fields.
//!
//! `ParamsKZG` has no accessor for its Lagrange-basis points either; [`EngineParams::new`] reads
//! them back from the parameters' own serialization (no FFT, no copy of halo2 code).

use crate::msm::MsmBackend;
use halo2_proofs::halo2curves::bn256::{Bn256, Fr, G1Affine, G1};
use halo2_proofs::halo2curves::serde::SerdeObject;
use halo2_proofs::poly::commitment::{Blind, CommitmentScheme, Params, ParamsProver, Prover};
use halo2_proofs::poly::kzg::commitment::ParamsKZG;
use halo2_proofs::poly::kzg::msm::MSMKZG;
use halo2_proofs::poly::kzg::multiopen::ProverSHPLONK;
use halo2_proofs::poly::ProverQuery;
use halo2_proofs::poly::{Coeff, LagrangeCoeff, Polynomial};
use halo2_proofs::transcript::{EncodedChallenge, TranscriptWrite};
use halo2_proofs::SerdeFormat;
use std::io;
use std::sync::Arc;
use veriml_circuits::halo2_proofs;

/// KZG parameters with the Lagrange-basis points at hand and a backend for every commitment.
#[derive(Clone, Debug)]
pub struct EngineParams {
    kzg: ParamsKZG<Bn256>,
    g_lagrange: Arc<Vec<G1Affine>>,
    backend: Arc<dyn MsmBackend>,
}

/// The Lagrange-basis points of `kzg`, from its raw serialization (`k`, then `n` monomial
/// points, then `n` Lagrange points, then the G2 points).
fn lagrange_points(kzg: &ParamsKZG<Bn256>) -> io::Result<Vec<G1Affine>> {
    let mut bytes = Vec::new();
    kzg.write_custom(&mut bytes, SerdeFormat::RawBytesUnchecked)?;
    let n = kzg.n() as usize;
    let point = G1Affine::default().to_raw_bytes().len();
    let start = 4 + n * point;
    let body = bytes
        .get(start..start + n * point)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short KZG parameters"))?;
    // the points of parameters already in memory: no checks needed
    Ok(body
        .chunks_exact(point)
        .map(G1Affine::from_raw_bytes_unchecked)
        .collect())
}

impl EngineParams {
    /// Wraps halo2's parameters with a backend.
    pub fn new(kzg: ParamsKZG<Bn256>, backend: Arc<dyn MsmBackend>) -> io::Result<Self> {
        let g_lagrange = Arc::new(lagrange_points(&kzg)?);
        Ok(EngineParams {
            kzg,
            g_lagrange,
            backend,
        })
    }

    /// The same parameters with another backend (the points are shared, not copied).
    pub fn with_backend(&self, backend: Arc<dyn MsmBackend>) -> Self {
        EngineParams {
            kzg: self.kzg.clone(),
            g_lagrange: self.g_lagrange.clone(),
            backend,
        }
    }

    /// halo2's parameters.
    pub fn kzg(&self) -> &ParamsKZG<Bn256> {
        &self.kzg
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The monomial-basis points.
    pub fn g(&self) -> &[G1Affine] {
        self.kzg.get_g()
    }

    /// The Lagrange-basis points.
    pub fn g_lagrange(&self) -> &[G1Affine] {
        &self.g_lagrange
    }
}

impl<'params> Params<'params, G1Affine> for EngineParams {
    type MSM = MSMKZG<Bn256>;

    fn k(&self) -> u32 {
        self.kzg.k()
    }

    fn n(&self) -> u64 {
        self.kzg.n()
    }

    fn downsize(&mut self, k: u32) {
        self.kzg.downsize(k);
        self.g_lagrange =
            Arc::new(lagrange_points(&self.kzg).expect("parameters serialize into memory"));
    }

    fn empty_msm(&'params self) -> MSMKZG<Bn256> {
        MSMKZG::new()
    }

    /// KZG commitments are not blinded by `r` (as in halo2's `ParamsKZG`).
    fn commit_lagrange(&self, poly: &Polynomial<Fr, LagrangeCoeff>, _: Blind<Fr>) -> G1 {
        self.backend.msm(poly.values(), &self.g_lagrange)
    }

    fn write<W: io::Write>(&self, writer: &mut W) -> io::Result<()> {
        self.kzg.write(writer)
    }

    fn read<R: io::Read>(reader: &mut R) -> io::Result<Self> {
        EngineParams::new(
            ParamsKZG::<Bn256>::read(reader)?,
            Arc::new(crate::msm::SplitMsm),
        )
    }
}

impl<'params> ParamsProver<'params, G1Affine> for EngineParams {
    type ParamsVerifier = ParamsKZG<Bn256>;

    fn new(k: u32) -> Self {
        EngineParams::new(
            <ParamsKZG<Bn256> as ParamsProver<G1Affine>>::new(k),
            Arc::new(crate::msm::SplitMsm),
        )
        .expect("parameters serialize into memory")
    }

    fn commit(&self, poly: &Polynomial<Fr, Coeff>, _: Blind<Fr>) -> G1 {
        self.backend.msm(poly.values(), self.kzg.get_g())
    }

    fn get_g(&self) -> &[G1Affine] {
        self.kzg.get_g()
    }

    fn verifier_params(&'params self) -> &'params ParamsKZG<Bn256> {
        &self.kzg
    }
}

/// KZG on BN254 with [`EngineParams`] for the prover.
#[derive(Debug)]
pub struct VeriKzg;

impl CommitmentScheme for VeriKzg {
    type Scalar = Fr;
    type Curve = G1Affine;
    type ParamsProver = EngineParams;
    type ParamsVerifier = ParamsKZG<Bn256>;

    fn new_params(k: u32) -> EngineParams {
        <EngineParams as ParamsProver<G1Affine>>::new(k)
    }

    fn read_params<R: io::Read>(reader: &mut R) -> io::Result<EngineParams> {
        <EngineParams as Params<G1Affine>>::read(reader)
    }
}

/// SHPLONK multi-opening for [`VeriKzg`]: halo2's prover on the wrapped parameters (see the
/// module documentation).
#[derive(Debug)]
pub struct EngineShplonk<'params> {
    inner: ProverSHPLONK<'params, Bn256>,
}

impl<'params> Prover<'params, VeriKzg> for EngineShplonk<'params> {
    const QUERY_INSTANCE: bool = false;

    fn new(params: &'params EngineParams) -> Self {
        EngineShplonk {
            inner: ProverSHPLONK::new(&params.kzg),
        }
    }

    fn create_proof<'com, E: EncodedChallenge<G1Affine>, T: TranscriptWrite<G1Affine, E>, R, I>(
        &self,
        rng: R,
        transcript: &mut T,
        queries: I,
    ) -> io::Result<()>
    where
        I: IntoIterator<Item = ProverQuery<'com, G1Affine>> + Clone,
        R: rand::RngCore,
    {
        self.inner.create_proof(rng, transcript, queries)
    }
}
