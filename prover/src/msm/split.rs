//! The CPU backend: scalars sorted by size (see the module documentation of [`super`]).

use super::affine::{self, Term};
use super::MsmBackend;
use halo2_proofs::arithmetic::best_multiexp;
use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::ff::{Field, PrimeField};
use halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Group};
use rayon::prelude::*;
use std::collections::HashMap;

/// Small scalars (64-bit magnitude, either sign) in windows that cover only their largest
/// magnitude; full-size ones that repeat few values grouped by value; the rest in 254-bit
/// windows (batch-affine buckets up to 2^16 of them, halo2curves' MSM above).
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitMsm;

/// The low 64 bits of a canonical scalar when the rest is zero.
fn as_u64(s: &Fr) -> Option<u64> {
    let repr = s.to_repr();
    let b = repr.as_ref();
    if b[8..].iter().any(|&x| x != 0) {
        return None;
    }
    Some(u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
}

/// Sorts one chunk of scalars: small ones as terms (zeros dropped), and the indices of full
/// ones.
fn sort_chunk(scalars: &[Fr], offset: usize) -> (Vec<Term>, Vec<u32>) {
    let mut small = Vec::with_capacity(scalars.len());
    let mut full = Vec::new();
    let term = |m: u64, negative: bool, index: u32| Term {
        magnitude: [m, 0, 0, 0],
        negative,
        index,
    };
    for (i, s) in scalars.iter().enumerate() {
        let index = (offset + i) as u32;
        if let Some(m) = as_u64(s) {
            if m != 0 {
                small.push(term(m, false, index));
            }
        } else if let Some(m) = as_u64(&-*s) {
            small.push(term(m, true, index));
        } else {
            full.push(index);
        }
    }
    (small, full)
}

/// halo2curves' MSM without the points at infinity: its batch-affine MSM assumes none (it panics
/// on one above ~2^13 points), and such a point adds nothing.
fn finite_msm(scalars: Vec<Fr>, bases: Vec<G1Affine>) -> G1 {
    if !bases.iter().any(|p| bool::from(p.is_identity())) {
        return best_multiexp(&scalars, &bases);
    }
    let (s, b): (Vec<Fr>, Vec<G1Affine>) = scalars
        .into_iter()
        .zip(bases)
        .filter(|(_, p)| !bool::from(p.is_identity()))
        .unzip();
    best_multiexp(&s, &b)
}

/// Full-size scalars up to this many go through [`affine::msm`]; above it halo2curves' own
/// batch-affine MSM is faster. Measured (`cargo bench -p veriml-prover --features
/// veriml-circuits/asm -- "msm backends"`, the affine method against halo2curves, medians):
/// 2^11 1.65x, 2^13 1.17x, 2^16 1.11x faster; 2^18 15% slower (458.2 against 398.8 ms).
const AFFINE_FULL_LIMIT: usize = 1 << 16;

/// Σ sᵢ·Pᵢ over the full-size scalars at `indices`.
fn full_msm(indices: &[u32], scalars: &[Fr], bases: &[G1Affine]) -> G1 {
    if indices.len() <= AFFINE_FULL_LIMIT {
        let terms: Vec<Term> = indices
            .iter()
            .map(|&i| Term {
                magnitude: affine::limbs(&scalars[i as usize]),
                negative: false,
                index: i,
            })
            .collect();
        return affine::msm(&terms, bases);
    }
    let (s, b): (Vec<Fr>, Vec<G1Affine>) = indices
        .iter()
        .map(|&i| (scalars[i as usize], bases[i as usize]))
        .unzip();
    finite_msm(s, b)
}

/// Σ sᵢ·Pᵢ over `indices` when few distinct values repeat among the scalars (a column of
/// challenge powers, say): the points of each value are added first (batch-affine buckets, one
/// a value), then one MSM over the values. `None` when a sample shows too few repeats (below) or
/// more than half of the scalars differ.
fn repeated_msm(indices: &[u32], scalars: &[Fr], bases: &[G1Affine]) -> Option<G1> {
    let limit = indices.len() / 2;
    // a spread-out sample first (256 to 511 scalars, or all of them when fewer): scalars without
    // repeats are given up on at once, when more than 4/5 of the sample differ. v equally
    // frequent values show about v·(1 − e^(−m/v)) distinct ones in a sample of m: 63% of the
    // sample at v = m, 80% (the cut) at v ≈ 2.2·m, 88% at v = 4·m.
    let step = (indices.len() / 256).max(1);
    let sample: std::collections::HashSet<Fr> = indices
        .iter()
        .step_by(step)
        .map(|&i| scalars[i as usize])
        .collect();
    if sample.len() * 5 > indices.len().div_ceil(step) * 4 {
        return None;
    }
    let mut slot: HashMap<Fr, u32> = HashMap::new();
    let mut which = Vec::with_capacity(indices.len());
    for &i in indices {
        let next = slot.len() as u32;
        let k = *slot.entry(scalars[i as usize]).or_insert(next);
        if slot.len() > limit {
            return None;
        }
        which.push(k);
    }
    // counting sort of the points by value, then every value's points added
    let values = slot.len();
    let mut starts = vec![0usize; values + 1];
    for &k in &which {
        starts[k as usize + 1] += 1;
    }
    for v in 0..values {
        starts[v + 1] += starts[v];
    }
    let mut next = starts.clone();
    let mut points = vec![G1Affine::identity(); indices.len()];
    for (&i, &k) in indices.iter().zip(&which) {
        points[next[k as usize]] = bases[i as usize];
        next[k as usize] += 1;
    }
    let sums = affine::bucket_sums(&mut points, &starts);
    let mut coeffs = vec![Fr::ZERO; values];
    for (s, k) in slot {
        coeffs[k as usize] = s;
    }
    let all: Vec<u32> = (0..values as u32).collect();
    Some(full_msm(&all, &coeffs, &sums))
}

impl MsmBackend for SplitMsm {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn msm(&self, scalars: &[Fr], bases: &[G1Affine]) -> G1 {
        let n = scalars.len();
        assert!(bases.len() >= n, "{} bases for {n} scalars", bases.len());
        assert!(n <= u32::MAX as usize, "MSM of {n} points");
        let chunk = n.div_ceil(rayon::current_num_threads()).max(4096);
        let sorted: Vec<(Vec<Term>, Vec<u32>)> = scalars
            .par_chunks(chunk)
            .enumerate()
            .map(|(i, ch)| sort_chunk(ch, i * chunk))
            .collect();
        let small: Vec<Term> = sorted.iter().flat_map(|(s, _)| s.iter().copied()).collect();
        let full: Vec<u32> = sorted.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let (full_sum, small_sum) = rayon::join(
            || {
                if full.is_empty() {
                    return G1::identity();
                }
                if let Some(sum) = repeated_msm(&full, scalars, bases) {
                    return sum;
                }
                full_msm(&full, scalars, bases)
            },
            || affine::msm(&small, bases),
        );
        full_sum + small_sum
    }
}
