//! Batch-affine bucket method: the points of every bucket are added in affine coordinates, all
//! the additions of a round sharing one field inversion (Montgomery's trick).
//!
//! Once the inversion is shared, an affine addition costs about six multiplications (three for
//! the trick, then λ, λ² and λ·(x₁ − x₃)) against about eleven for halo2curves' complete
//! projective addition. halo2curves batches affine additions only from 10-bit windows up
//! (about 8,100 points); below that every addition is projective, and digits_mlp's and
//! mnist_mlp's columns are 2^10 and 2^11 rows.
//!
//! Buckets are summed by a tree rather than a schedule: the points are sorted by bucket (one
//! counting sort a window), then each round adds neighbours within every bucket at once,
//! halving every bucket's list, until one point is left per bucket. A round never touches a
//! point twice, so there are no collisions to schedule around, and a round's batch is as large
//! as half the points left.
//!
//! Scalars are cut into signed `c`-bit digits (−2^(c−1) ≤ d ≤ 2^(c−1)): a negative digit adds
//! the negated point, so a window has 2^(c−1) buckets. Windows are independent: threads take
//! whole windows, or slices of the points when there are few windows (bytes); the cost model
//! picks that and `c` for the number of points, the largest magnitude and the threads.
//!
//! Nothing is assumed away in an addition: a point at infinity (x = y = 0 in halo2curves'
//! encoding; never on y² = x³ + 3) is the other operand; equal points are doubled
//! (λ = 3x²/2y: no point of G1 has y = 0, its order being an odd prime); opposite points give the
//! point at infinity.

use halo2_proofs::halo2curves::bn256::{Fq, Fr, G1Affine, G1};
use halo2_proofs::halo2curves::ff::{Field, PrimeField};
use halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Group};
use rayon::prelude::*;

/// One term of an MSM: a scalar's magnitude (little-endian limbs), its sign and its point.
#[derive(Clone, Copy, Debug)]
pub(super) struct Term {
    pub magnitude: [u64; 4],
    pub negative: bool,
    pub index: u32,
}

/// A scalar's canonical value as little-endian limbs.
pub(super) fn limbs(s: &Fr) -> [u64; 4] {
    let repr = s.to_repr();
    let mut m = [0u64; 4];
    for (l, chunk) in m.iter_mut().zip(repr.as_ref().chunks(8)) {
        *l = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    m
}

fn is_infinity(p: &G1Affine) -> bool {
    p.x.is_zero_vartime() && p.y.is_zero_vartime()
}

fn negate(p: &G1Affine) -> G1Affine {
    G1Affine { x: p.x, y: -p.y }
}

/// What `p + q` needs inverted (one when nothing: an operand at infinity, or opposite points).
fn denominator(p: &G1Affine, q: &G1Affine) -> Fq {
    if is_infinity(p) || is_infinity(q) {
        Fq::ONE
    } else if p.x == q.x {
        if p.y == q.y {
            p.y.double()
        } else {
            Fq::ONE
        }
    } else {
        q.x - p.x
    }
}

/// `p + q`, given the inverse of [`denominator`]`(p, q)`.
fn add_with_inverse(p: &G1Affine, q: &G1Affine, inverse: &Fq) -> G1Affine {
    if is_infinity(p) {
        return *q;
    }
    if is_infinity(q) {
        return *p;
    }
    let lambda = if p.x == q.x {
        if p.y != q.y {
            return G1Affine::identity();
        }
        let xx = p.x.square();
        (xx.double() + xx) * inverse
    } else {
        (q.y - p.y) * inverse
    };
    let x = lambda.square() - p.x - q.x;
    let y = lambda * (p.x - x) - p.y;
    G1Affine { x, y }
}

/// The sum of each bucket's points, bucket `b` holding `points[starts[b]..starts[b + 1]]`
/// (`starts` ends with `points.len()`); the point at infinity for an empty bucket. `points` is
/// used as scratch.
pub(super) fn bucket_sums(points: &mut [G1Affine], starts: &[usize]) -> Vec<G1Affine> {
    let buckets = starts.len().saturating_sub(1);
    let mut len: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let mut inverses: Vec<Fq> = Vec::new();
    let mut prefix: Vec<Fq> = Vec::new();
    loop {
        // every pair of neighbours within a bucket, one shared inversion
        inverses.clear();
        prefix.clear();
        let mut acc = Fq::ONE;
        for b in 0..buckets {
            let s = starts[b];
            for j in 0..len[b] / 2 {
                let d = denominator(&points[s + 2 * j], &points[s + 2 * j + 1]);
                prefix.push(acc);
                acc *= d;
                inverses.push(d);
            }
        }
        if inverses.is_empty() {
            break;
        }
        // every denominator is nonzero for points on the curve (y = 0 is none of G1's), so their
        // product is; a base off the curve would make the sums wrong, and the proof then fails
        // verification
        debug_assert!(!bool::from(acc.is_zero()), "a base is not on the curve");
        let mut inv = acc.invert().unwrap_or(Fq::ZERO);
        for (d, before) in inverses.iter_mut().zip(&prefix).rev() {
            let denominator = *d;
            *d = inv * before;
            inv *= denominator;
        }
        // forward: pair j of a bucket lands on its j-th slot, after pair j has been read
        let mut i = 0;
        for b in 0..buckets {
            let (s, l) = (starts[b], len[b]);
            for j in 0..l / 2 {
                points[s + j] =
                    add_with_inverse(&points[s + 2 * j], &points[s + 2 * j + 1], &inverses[i]);
                i += 1;
            }
            if l % 2 == 1 {
                points[s + l / 2] = points[s + l - 1];
            }
            len[b] = l.div_ceil(2);
        }
    }
    (0..buckets)
        .map(|b| {
            if len[b] == 0 {
                G1Affine::identity()
            } else {
                points[starts[b]]
            }
        })
        .collect()
}

/// Bits `start..start + c` of a magnitude (`c` ≤ 16).
fn bits(m: &[u64; 4], start: usize, c: usize) -> u64 {
    let (limb, offset) = (start / 64, start % 64);
    if limb >= 4 {
        return 0;
    }
    let mut v = m[limb] >> offset;
    if offset + c > 64 && limb + 1 < 4 {
        v |= m[limb + 1] << (64 - offset);
    }
    v & ((1u64 << c) - 1)
}

/// A term's signed `c`-bit digits, lowest first, one for each of `out`'s windows: a digit above
/// 2^(c−1) becomes negative and carries one into the next window. `out` must have room for the
/// magnitude's bits and one more.
fn signed_digits(t: &Term, c: usize, out: &mut [i32]) {
    let (half, full) = (1i64 << (c - 1), 1i64 << c);
    let mut carry = 0;
    for (w, d) in out.iter_mut().enumerate() {
        let raw = bits(&t.magnitude, w * c, c) as i64 + carry;
        let (digit, next) = if raw > half {
            (raw - full, 1)
        } else {
            (raw, 0)
        };
        *d = if t.negative { -digit } else { digit } as i32;
        carry = next;
    }
    debug_assert_eq!(carry, 0, "{} windows of {c} bits", out.len());
}

/// Relative costs (hundredths of a projective mixed addition, measured roughly here): an
/// affine addition in a batch, and a bucket's share of the running sum (a mixed and a full
/// projective addition).
const AFFINE_ADD: usize = 55;
const RUNNING_SUM: usize = 230;

/// How an MSM is cut: `c`-bit windows, and the points split in `chunks` (each chunk's windows
/// on one thread, the chunks' sums added) or, with one chunk, the windows split over threads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    c: usize,
    chunks: usize,
}

/// The cheapest [`Plan`] for `n` points whose largest magnitude has `max_bits` bits: many
/// windows (full scalars) are best shared out whole; few (bytes: one or two) leave threads idle
/// unless the points are split instead.
fn plan(n: usize, max_bits: usize, threads: usize) -> Plan {
    let threads = threads.max(1);
    let cost = |p: &Plan| {
        let windows = (max_bits + 1).div_ceil(p.c);
        let buckets = (1usize << (p.c - 1)) * RUNNING_SUM;
        if p.chunks == 1 {
            windows.div_ceil(threads) * (n * AFFINE_ADD + buckets)
        } else {
            windows * (n.div_ceil(p.chunks) * AFFINE_ADD + buckets)
        }
    };
    (2..=16)
        .flat_map(|c| [Plan { c, chunks: 1 }, Plan { c, chunks: threads }])
        .min_by_key(cost)
        .expect("window widths 2 to 16")
}

/// Σ ±mᵢ·P_indexᵢ over `terms` (points at infinity are allowed and add nothing).
pub(super) fn msm(terms: &[Term], bases: &[G1Affine]) -> G1 {
    let n = terms.len();
    let max_bits = terms
        .iter()
        .map(|t| {
            let top = t.magnitude.iter().rposition(|&l| l != 0);
            top.map_or(0, |i| 64 * i + 64 - t.magnitude[i].leading_zeros() as usize)
        })
        .max()
        .unwrap_or(0);
    if max_bits == 0 {
        return G1::identity();
    }
    // a few points: a window is too little work to hand to another thread
    let threads = if n < 64 {
        1
    } else {
        rayon::current_num_threads()
    };
    let Plan { c, chunks } = plan(n, max_bits, threads);
    if chunks > 1 {
        terms
            .par_chunks(n.div_ceil(chunks))
            .map(|part| windows_msm(part, bases, c, max_bits, false))
            .reduce(G1::identity, |a, b| a + b)
    } else {
        windows_msm(terms, bases, c, max_bits, threads > 1)
    }
}

/// Σ ±mᵢ·P_indexᵢ over `terms` by `c`-bit signed windows, the windows on threads when `parallel`.
fn windows_msm(
    terms: &[Term],
    bases: &[G1Affine],
    c: usize,
    max_bits: usize,
    parallel: bool,
) -> G1 {
    // one more bit than the magnitudes: the top digit takes the last carry
    let windows = (max_bits + 1).div_ceil(c);
    let mut digits = vec![0i32; terms.len() * windows];
    for (out, t) in digits.chunks_mut(windows).zip(terms) {
        signed_digits(t, c, out);
    }
    let window = |w| window_sum(terms, bases, &digits, windows, w, 1 << (c - 1));
    let sums: Vec<G1> = if parallel {
        (0..windows).into_par_iter().map(window).collect()
    } else {
        (0..windows).map(window).collect()
    };
    let mut acc = G1::identity();
    for s in sums.iter().rev() {
        for _ in 0..c {
            acc = acc.double();
        }
        acc += s;
    }
    acc
}

/// Σ d·Bucket_d for window `w`, buckets 1..=`half`.
fn window_sum(
    terms: &[Term],
    bases: &[G1Affine],
    digits: &[i32],
    windows: usize,
    w: usize,
    half: usize,
) -> G1 {
    let digit = |i: usize| digits[i * windows + w];
    let mut starts = vec![0usize; half + 1];
    for i in 0..terms.len() {
        let d = digit(i).unsigned_abs() as usize;
        if d != 0 {
            starts[d] += 1;
        }
    }
    // bucket b (digit b + 1) is starts[b]..starts[b + 1]
    for b in 0..half {
        starts[b + 1] += starts[b];
    }
    let total = starts[half];
    let mut next = starts.clone();
    let mut points = vec![G1Affine::identity(); total];
    for (i, t) in terms.iter().enumerate() {
        let d = digit(i);
        if d != 0 {
            let slot = &mut next[d.unsigned_abs() as usize - 1];
            let p = &bases[t.index as usize];
            points[*slot] = if d < 0 { negate(p) } else { *p };
            *slot += 1;
        }
    }
    let sums = bucket_sums(&mut points, &starts);
    let mut running = G1::identity();
    let mut sum = G1::identity();
    let mut started = false;
    for b in sums.iter().rev() {
        if !is_infinity(b) {
            running += b;
            started = true;
        }
        if started {
            sum += running;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msm::naive;
    use halo2_proofs::halo2curves::group::Curve;

    fn point(i: u64) -> G1Affine {
        (G1Affine::generator() * Fr::from(i + 1)).to_affine()
    }

    fn terms(scalars: &[Fr]) -> Vec<Term> {
        scalars
            .iter()
            .enumerate()
            .map(|(i, s)| Term {
                magnitude: limbs(s),
                negative: false,
                index: i as u32,
            })
            .collect()
    }

    #[test]
    fn buckets_double_cancel_and_skip_infinity() {
        let (p, q) = (point(1), point(2));
        let inf = G1Affine::identity();
        // bucket 0: p + p (doubling); 1: p + (−p) (infinity) then + q; 2: ∞ + q + ∞;
        // 3: empty; 4: p, p, p, −p, q (doubling, then cancelling across rounds)
        let mut pts = vec![p, p, p, negate(&p), q, inf, q, inf, p, p, p, negate(&p), q];
        let starts = [0, 2, 5, 8, 8, 13];
        let sums = bucket_sums(&mut pts, &starts);
        let g = |x: G1| x.to_affine();
        assert_eq!(sums[0], g(G1::from(p) + p));
        assert_eq!(sums[1], q);
        assert_eq!(sums[2], q);
        assert!(is_infinity(&sums[3]));
        assert_eq!(sums[4], g(G1::from(p) + p + q));
        // all cancel
        let mut pts = vec![p, negate(&p), q, negate(&q)];
        assert!(is_infinity(&bucket_sums(&mut pts, &[0, 4])[0]));
    }

    #[test]
    fn matches_the_definition() {
        let n = 300;
        let bases: Vec<G1Affine> = (0..n).map(|i| point(i % 37)).collect();
        let mut x = Fr::from(0x1234_5678_9abc_def1);
        let mut scalars: Vec<Fr> = (0..n)
            .map(|_| {
                x = x.square() + Fr::from(3);
                x
            })
            .collect();
        scalars[5] = -Fr::ONE;
        scalars[6] = Fr::ZERO;
        scalars[7] = Fr::from(u64::MAX);
        // equal terms on equal points: buckets see P + P
        scalars[100..140].fill(Fr::from(0xabcd));
        let expect = naive(&scalars, &bases);
        assert_eq!(msm(&terms(&scalars), &bases), expect);
        // every window width, windows on threads or not
        for c in 2..=16 {
            let got = windows_msm(&terms(&scalars), &bases, c, 254, c % 2 == 0);
            assert_eq!(got, expect, "c = {c}");
        }
        // negative magnitudes
        let negated: Vec<Fr> = scalars.iter().map(|s| -*s).collect();
        let mut t = terms(&negated);
        t.iter_mut().for_each(|t| t.negative = true);
        assert_eq!(msm(&t, &bases), expect);
        // small magnitudes of both signs, several window widths through the sizes
        for len in [1, 2, 3, 17, 300] {
            let small: Vec<Fr> = (0..len)
                .map(|i| {
                    let v = Fr::from((i as u64 * 7919) % 300);
                    if i % 3 == 0 {
                        -v
                    } else {
                        v
                    }
                })
                .collect();
            let t: Vec<Term> = small
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let neg = i % 3 == 0;
                    let m = if neg { -*s } else { *s };
                    let mut term = terms(&[m])[0];
                    term.negative = neg;
                    term.index = i as u32;
                    term
                })
                .collect();
            assert_eq!(msm(&t, &bases), naive(&small, &bases[..len]), "{len}");
        }
    }

    #[test]
    fn plans_fit_the_scalars() {
        // full scalars: windows shared out whole
        assert_eq!(plan(2048, 254, 2).chunks, 1);
        // bytes on many points: the points split, one window of 256 buckets
        assert_eq!(plan(1 << 18, 8, 2), Plan { c: 9, chunks: 2 });
        // one thread: nothing to split
        assert_eq!(plan(1 << 18, 8, 1).chunks, 1);
    }

    #[test]
    fn digits_spell_the_scalar() {
        // p − 1 (254 bits) and 2^64 − 1, both signs, every window width
        for s in [-Fr::ONE, Fr::from(u64::MAX), Fr::from(1u64 << 63)] {
            for negative in [false, true] {
                let mut t = terms(&[s])[0];
                t.negative = negative;
                for c in 2..=16 {
                    let mut out = vec![0; 255usize.div_ceil(c)];
                    signed_digits(&t, c, &mut out);
                    let radix = Fr::from(1u64 << c);
                    let spelled = out.iter().rev().fold(Fr::ZERO, |acc, &d| {
                        let m = Fr::from(d.unsigned_abs() as u64);
                        acc * radix + if d < 0 { -m } else { m }
                    });
                    assert_eq!(spelled, if negative { -s } else { s }, "c = {c}");
                    assert!(out.iter().all(|d| d.unsigned_abs() <= 1 << (c - 1)));
                }
            }
        }
    }
}
