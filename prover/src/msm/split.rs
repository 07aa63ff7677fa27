//! The CPU backend: scalars sorted by size (see the module documentation of [`super`]).

use super::MsmBackend;
use halo2_proofs::arithmetic::best_multiexp;
use halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use halo2_proofs::halo2curves::ff::{Field, PrimeField};
use halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Curve, Group};
use rayon::prelude::*;
use std::collections::HashMap;

/// Small scalars (64-bit magnitude, either sign) through narrow buckets; full-size ones that
/// repeat a few values grouped by value; the rest through halo2curves' MSM.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitMsm;

/// A small scalar: its magnitude, its sign, its point's index.
#[derive(Clone, Copy)]
struct Small {
    magnitude: u64,
    negative: bool,
    index: u32,
}

/// The low 64 bits of a canonical scalar when the rest is zero.
fn as_u64(s: &Fr) -> Option<u64> {
    let repr = s.to_repr();
    let b = repr.as_ref();
    if b[8..].iter().any(|&x| x != 0) {
        return None;
    }
    Some(u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
}

/// Sorts one chunk of scalars: small ones (zeros dropped), and the indices of full ones.
fn sort_chunk(scalars: &[Fr], offset: usize) -> (Vec<Small>, Vec<u32>) {
    let mut small = Vec::with_capacity(scalars.len());
    let mut full = Vec::new();
    for (i, s) in scalars.iter().enumerate() {
        let index = (offset + i) as u32;
        if let Some(m) = as_u64(s) {
            if m != 0 {
                small.push(Small {
                    magnitude: m,
                    negative: false,
                    index,
                });
            }
        } else if let Some(m) = as_u64(&-*s) {
            small.push(Small {
                magnitude: m,
                negative: true,
                index,
            });
        } else {
            full.push(index);
        }
    }
    (small, full)
}

/// The window width that minimises `windows · (points per thread + 2·buckets)`.
fn window_bits(points: usize, max_bits: u32, threads: usize) -> u32 {
    let per_thread = points.div_ceil(threads.max(1)) as f64;
    (1..=max_bits.clamp(1, 16))
        .min_by(|&a, &b| {
            let cost =
                |c: u32| max_bits.div_ceil(c) as f64 * (per_thread + 2.0 * (1u64 << c) as f64);
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(1)
}

/// Σ ±mᵢ·P over one chunk of small scalars: the bucket method with `c`-bit windows.
fn small_chunk(items: &[Small], bases: &[G1Affine], c: u32, windows: u32) -> G1 {
    let mask = (1u64 << c) - 1;
    let mut buckets = vec![G1::identity(); (1usize << c) - 1];
    let mut total = G1::identity();
    for w in (0..windows).rev() {
        for _ in 0..c {
            total = total.double();
        }
        buckets.iter_mut().for_each(|b| *b = G1::identity());
        let shift = w * c;
        for it in items {
            let digit = (it.magnitude >> shift) & mask;
            if digit != 0 {
                let b = &mut buckets[digit as usize - 1];
                let p = &bases[it.index as usize];
                *b = if it.negative { *b - p } else { *b + p };
            }
        }
        // Σ d·bucket[d] by running sums, highest digit first
        let mut running = G1::identity();
        let mut sum = G1::identity();
        for b in buckets.iter().rev() {
            running += b;
            sum += running;
        }
        total += sum;
    }
    total
}

fn small_msm(items: &[Small], bases: &[G1Affine]) -> G1 {
    let Some(max) = items.iter().map(|s| s.magnitude).max() else {
        return G1::identity();
    };
    let max_bits = 64 - max.leading_zeros();
    let threads = rayon::current_num_threads();
    let c = window_bits(items.len(), max_bits, threads);
    let windows = max_bits.div_ceil(c);
    let chunk = items.len().div_ceil(threads).max(1024);
    items
        .par_chunks(chunk)
        .map(|ch| small_chunk(ch, bases, c, windows))
        .reduce(G1::identity, |a, b| a + b)
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

/// Σ sᵢ·Pᵢ over `indices` when few distinct values repeat among the scalars (a column of
/// challenge powers, say): the points of each value are added first (one addition a point), then
/// one scalar multiplication a value. `None` when more than a quarter of the scalars differ.
fn repeated_msm(indices: &[u32], scalars: &[Fr], bases: &[G1Affine]) -> Option<G1> {
    let limit = indices.len() / 4;
    // a spread-out sample first: random-looking scalars are given up on after 256 lookups
    let step = (indices.len() / 256).max(1);
    let sample: std::collections::HashSet<Fr> = indices
        .iter()
        .step_by(step)
        .map(|&i| scalars[i as usize])
        .collect();
    if sample.len() > indices.len().div_ceil(step) / 4 {
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
    let values = slot.len();
    let chunk = indices
        .len()
        .div_ceil(rayon::current_num_threads())
        .max(4096);
    let sums = indices
        .par_chunks(chunk)
        .zip(which.par_chunks(chunk))
        .map(|(ix, wh)| {
            let mut acc = vec![G1::identity(); values];
            for (&i, &k) in ix.iter().zip(wh) {
                acc[k as usize] += bases[i as usize];
            }
            acc
        })
        .reduce(
            || vec![G1::identity(); values],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut points = vec![G1Affine::identity(); values];
    G1::batch_normalize(&sums, &mut points);
    let mut coeffs = vec![Fr::ZERO; values];
    for (s, k) in slot {
        coeffs[k as usize] = s;
    }
    Some(finite_msm(coeffs, points))
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
        let sorted: Vec<(Vec<Small>, Vec<u32>)> = scalars
            .par_chunks(chunk)
            .enumerate()
            .map(|(i, ch)| sort_chunk(ch, i * chunk))
            .collect();
        let small: Vec<Small> = sorted.iter().flat_map(|(s, _)| s.iter().copied()).collect();
        let full: Vec<u32> = sorted.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let (full_sum, small_sum) = rayon::join(
            || {
                if full.is_empty() {
                    return G1::identity();
                }
                if let Some(sum) = repeated_msm(&full, scalars, bases) {
                    return sum;
                }
                let (s, b): (Vec<Fr>, Vec<G1Affine>) = full
                    .iter()
                    .map(|&i| (scalars[i as usize], bases[i as usize]))
                    .unzip();
                finite_msm(s, b)
            },
            || small_msm(&small, bases),
        );
        full_sum + small_sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fits_the_magnitudes() {
        // bytes: one window of 8 bits for a column of any length
        assert_eq!(window_bits(1 << 16, 8, 2), 8);
        // a few wide scalars: narrow windows, few buckets
        assert!(window_bits(10, 64, 2) <= 4);
    }
}
