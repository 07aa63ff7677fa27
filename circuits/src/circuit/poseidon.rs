//! The input-hash chip: the packed input words absorbed by a Poseidon sponge in the circuit,
//! so that a model with thousands of inputs has one public word for its input (the digest)
//! instead of hundreds (`compile --input-visibility hashed`).
//!
//! **The hash.** Poseidon over BN254's scalar field with the parameters of the Poseidon paper
//! (Grassi, Khovratovich, Rechberger, Roy, Schofnegger, "Poseidon: A New Hash Function for
//! Zero-Knowledge Proof Systems", USENIX Security 2021) for 128-bit security at width 3:
//! `x^5` S-box, 8 full and 57 partial rounds, round constants and the Cauchy MDS matrix drawn
//! from the paper's Grain LFSR (generated here, [`spec`]). The permutation is the one circom's
//! `Poseidon(2)` and circomlibjs compute (the authors' test vector is a unit test below). The
//! sponge over `n` words: left-pad the words with one zero if `n` is odd, start from the state
//! `(n, b₀, b₁)` (the first pair), permute, then for each further pair add it to the two rate
//! elements and permute; the digest is the first element of the final state. With `n ≤ 2`
//! this is circomlibjs's `poseidon([w₀, w₁], n)`; the length in the capacity element makes the
//! padding unambiguous.
//!
//! **Layout.** Four first-phase advice columns: the state `x₀, x₁, x₂` and the message column
//! `m`; fixed columns: the round constants `rc` (lane `j`'s constant on the round's row `+j`)
//! and the selectors `q_round`, `q_full`, `q_abs` (0, 1, or 2 for the first absorption) and
//! `q_dig`. The region starts below the public layout's first layer (row `S`) and runs down:
//! - absorption (`q_abs`, 1 row): `x' = x + (0, m, m[+1])`; the first one `x' = (n, m, m[+1])`
//!   (`(n, 0, m[+1])` when `n` is odd);
//! - round (`q_round`, 3 rows): with `y = x + rc`, the next row holds `s`, the one after `f`,
//!   the third the new state `x''' = M·(f ∘ y)`. Lane 0 always has `s₀ = y₀²`, `f₀ = s₀²`
//!   (so `f₀·y₀ = y₀⁵`); lanes 1 and 2 the same in a full round (`q_full`) and `f = 1` in a
//!   partial one (`q_round − q_full`), so that one mixing constraint serves both kinds.
//!
//! Every intermediate cell is *determined* by the cells above it (one square per cell), so each
//! permutation's output is exactly Poseidon of its input: there is no free cell to cheat with.
//! The digest gate on row 0 (`q_dig`) reads `x₀` of the final state by rotation and equals it
//! to the instance's first word. The messages are tied by copy constraints (`m` is the only
//! column with equality) to `m` of the input-word rows, where the input gate requires
//! `m = a + 2^16·c[+S]`, the word the range-checked codes pack (the same gate compares with the
//! instance when inputs are public). So the public digest is Poseidon of exactly the words the
//! forward pass reads, and by Poseidon's collision resistance it determines the input codes.
//!
//! Every constraint has degree at most 3 (a selector times a square, or a selector times `f·y`;
//! the 3-valued `q_abs` is a degree-2 selector on linear constraints). One gate for both round
//! kinds and one constant column keep the EVM verifier small: each column is a commitment and
//! each queried cell an evaluation it reads, and every constraint is code it runs. A circuit with public
//! inputs has none of these columns: its keys are unchanged.

use super::config::{c, k, select};
use super::*;
use std::sync::OnceLock;

/// State width.
pub const WIDTH: usize = 3;
/// Full rounds (half before, half after the partial rounds).
pub const FULL_ROUNDS: usize = 8;
/// Partial rounds.
pub const PARTIAL_ROUNDS: usize = 57;

/// Round constants and MDS matrix.
pub struct Spec {
    pub round_constants: Vec<[Fr; WIDTH]>,
    pub mds: [[Fr; WIDTH]; WIDTH],
}

/// The Grain LFSR of the Poseidon paper's parameter script, seeded with the parameters.
struct Grain {
    bits: std::collections::VecDeque<bool>,
}

impl Grain {
    fn new(field_bits: u32, width: u32, full: u32, partial: u32) -> Self {
        // field (1: prime), S-box (0: x^α), field size, width, rounds, then 30 ones; MSB first
        let mut bits = std::collections::VecDeque::with_capacity(80);
        for (v, n) in [
            (1u32, 2u32),
            (0, 4),
            (field_bits, 12),
            (width, 12),
            (full, 10),
            (partial, 10),
        ] {
            for i in (0..n).rev() {
                bits.push_back(v >> i & 1 == 1);
            }
        }
        bits.extend(std::iter::repeat_n(true, 30));
        let mut g = Grain { bits };
        for _ in 0..160 {
            g.step();
        }
        g
    }
    fn step(&mut self) -> bool {
        let b = &self.bits;
        let new = b[62] ^ b[51] ^ b[38] ^ b[23] ^ b[13] ^ b[0];
        self.bits.pop_front();
        self.bits.push_back(new);
        new
    }
    /// One output bit: bits come in pairs, the second kept when the first is 1.
    fn bit(&mut self) -> bool {
        loop {
            let keep = self.step();
            let b = self.step();
            if keep {
                return b;
            }
        }
    }
    /// `n` output bits as a big-endian integer, little-endian bytes.
    fn bytes(&mut self, n: u32) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in (0..n).rev() {
            if self.bit() {
                out[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        out
    }
    /// A field element below the modulus (rejection sampling).
    fn element(&mut self) -> Fr {
        loop {
            if let Some(f) = Option::<Fr>::from(Fr::from_repr(self.bytes(Fr::NUM_BITS))) {
                return f;
            }
        }
    }
    /// A field element reduced modulo the modulus (the script's MDS sampling).
    fn reduced(&mut self) -> Fr {
        let bytes = self.bytes(Fr::NUM_BITS);
        bytes.iter().rev().fold(Fr::zero(), |acc, &b| {
            acc * Fr::from(256) + Fr::from(b as u64)
        })
    }
}

/// The parameters (generated once).
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let rounds = FULL_ROUNDS + PARTIAL_ROUNDS;
        let mut g = Grain::new(
            Fr::NUM_BITS,
            WIDTH as u32,
            FULL_ROUNDS as u32,
            PARTIAL_ROUNDS as u32,
        );
        let round_constants = (0..rounds)
            .map(|_| [(); WIDTH].map(|_| g.element()))
            .collect();
        // a Cauchy matrix 1/(x_i + y_j) from 2·WIDTH distinct samples (the first draw is
        // distinct and gives a secure matrix for these parameters; the test vector checks it)
        let xy: Vec<Fr> = (0..2 * WIDTH).map(|_| g.reduced()).collect();
        let mut mds = [[Fr::zero(); WIDTH]; WIDTH];
        for (i, row) in mds.iter_mut().enumerate() {
            for (j, e) in row.iter_mut().enumerate() {
                *e = (xy[i] + xy[WIDTH + j]).invert().unwrap();
            }
        }
        Spec {
            round_constants,
            mds,
        }
    })
}

/// Round `r` is full (the first and last `FULL_ROUNDS / 2`), or partial.
fn full_round(r: usize) -> bool {
    !(FULL_ROUNDS / 2..FULL_ROUNDS / 2 + PARTIAL_ROUNDS).contains(&r)
}

fn pow5(x: Fr) -> Fr {
    x.square().square() * x
}

fn mix(mds: &[[Fr; WIDTH]; WIDTH], y: [Fr; WIDTH]) -> [Fr; WIDTH] {
    std::array::from_fn(|i| (0..WIDTH).fold(Fr::zero(), |acc, j| acc + mds[i][j] * y[j]))
}

/// The Poseidon permutation.
pub fn permute(mut state: [Fr; WIDTH]) -> [Fr; WIDTH] {
    let sp = spec();
    for (r, rc) in sp.round_constants.iter().enumerate() {
        let mut y: [Fr; WIDTH] = std::array::from_fn(|j| state[j] + rc[j]);
        if full_round(r) {
            y = y.map(pow5);
        } else {
            y[0] = pow5(y[0]);
        }
        state = mix(&sp.mds, y);
    }
    state
}

/// The words in absorption order: left-padded with a zero to an even count.
fn padded(words: &[Fr]) -> Vec<Fr> {
    let mut v = vec![Fr::zero(); words.len() % 2];
    v.extend_from_slice(words);
    v
}

/// The sponge's digest of `words` (see the module documentation).
pub fn hash_words(words: &[Fr]) -> Fr {
    let v = padded(words);
    let mut state = [Fr::from(words.len() as u64), Fr::zero(), Fr::zero()];
    for (b, pair) in v.chunks(2).enumerate() {
        if b > 0 {
            state[1] += pair[0];
            state[2] += pair[1];
        } else {
            state[1] = pair[0];
            state[2] = pair[1];
        }
        state = permute(state);
    }
    state[0]
}

/// Rows of one permutation with its absorption: 1, then 3 per round.
pub(crate) const PERMUTATION_ROWS: usize = 1 + 3 * (FULL_ROUNDS + PARTIAL_ROUNDS);

/// Rows of the sponge region for `n` words (the final state's row included).
pub(crate) fn sponge_rows(n: usize) -> usize {
    n.div_ceil(2) * PERMUTATION_ROWS + 1
}

/// Where word `j` of `n` is absorbed: the region row of its absorption and whether it is the
/// second message (`m[+1]`).
pub(crate) fn message_row(n: usize, j: usize) -> usize {
    let q = j + n % 2;
    (q / 2) * PERMUTATION_ROWS + q % 2
}

/// The columns of the input-hash chip.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpongeColumns {
    pub(crate) x: [Column<Advice>; WIDTH],
    pub(crate) m: Column<Advice>,
    pub(crate) rc: Column<Fixed>,
    pub(crate) q_round: Column<Fixed>,
    pub(crate) q_full: Column<Fixed>,
    pub(crate) q_abs: Column<Fixed>,
    pub(crate) q_dig: Column<Fixed>,
}

impl SpongeColumns {
    /// Declares the columns and gates for a sponge over `n` words whose region starts at row
    /// `start` (the digest gate reads the final state there by rotation from row 0).
    pub(crate) fn configure(
        meta: &mut ConstraintSystem<Fr>,
        instance: Column<Instance>,
        n: usize,
        start: usize,
    ) -> Self {
        let x = [(); WIDTH].map(|_| meta.advice_column_in(FirstPhase));
        let m = meta.advice_column_in(FirstPhase);
        meta.enable_equality(m);
        let [rc, q_round, q_full, q_abs, q_dig] = [(); 5].map(|_| meta.fixed_column());
        let mds = spec().mds;
        let cur = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>, rot: i32| {
            x.map(|c| m.query_advice(c, Rotation(rot)))
        };
        meta.create_gate("poseidon round", |m| {
            let q = m.query_fixed(q_round, Rotation::cur());
            let full = m.query_fixed(q_full, Rotation::cur());
            let x0 = cur(m, 0);
            let y: [Expression<Fr>; WIDTH] =
                std::array::from_fn(|j| x0[j].clone() + m.query_fixed(rc, Rotation(j as i32)));
            let (s, f, next) = (cur(m, 1), cur(m, 2), cur(m, 3));
            let mut out = vec![
                q.clone() * (s[0].clone() - y[0].clone() * y[0].clone()),
                q.clone() * (f[0].clone() - s[0].clone() * s[0].clone()),
            ];
            for j in 1..WIDTH {
                out.push(full.clone() * (s[j].clone() - y[j].clone() * y[j].clone()));
                out.push(full.clone() * (f[j].clone() - s[j].clone() * s[j].clone()));
                out.push((q.clone() - full.clone()) * (f[j].clone() - c(1)));
            }
            for (i, row) in mds.iter().enumerate() {
                let mixed =
                    (0..WIDTH).fold(c(0), |acc, j| acc + k(row[j]) * f[j].clone() * y[j].clone());
                out.push(q.clone() * (next[i].clone() - mixed));
            }
            out
        });
        let odd = n % 2 == 1;
        meta.create_gate("poseidon absorption", |mc| {
            let [one, first, any] = select(mc.query_fixed(q_abs, Rotation::cur()));
            let (x0, next) = (cur(mc, 0), cur(mc, 1));
            let (m0, m1) = (
                mc.query_advice(m, Rotation::cur()),
                mc.query_advice(m, Rotation::next()),
            );
            // the first pair of an odd count is (0, w₀): its `m` is not read
            let first_m0 = if odd { c(0) } else { m0.clone() };
            vec![
                any.clone() * next[0].clone()
                    - one.clone() * x0[0].clone()
                    - first.clone() * c(n as u64),
                any.clone() * next[1].clone()
                    - one.clone() * (x0[1].clone() + m0)
                    - first * first_m0,
                any * (next[2].clone() - m1) - one * x0[2].clone(),
            ]
        });
        let last = (start + sponge_rows(n) - 1) as i32;
        meta.create_gate("poseidon digest", |m| {
            let q = m.query_fixed(q_dig, Rotation::cur());
            vec![
                q * (m.query_advice(x[0], Rotation(last))
                    - m.query_instance(instance, Rotation::cur())),
            ]
        });
        SpongeColumns {
            x,
            m,
            rc,
            q_round,
            q_full,
            q_abs,
            q_dig,
        }
    }
}

/// One row of the sponge region: the state columns and the message.
pub(crate) type SpongeRow = [Fr; WIDTH + 1];

/// The fixed cells of the sponge region: per row the round constant and `q_round`, `q_full`,
/// `q_abs` (the digest selector is on row 0 of the circuit, outside the region).
pub(crate) fn sponge_fixed(n: usize) -> Vec<(Fr, [u64; 3])> {
    let sp = spec();
    let mut rows = vec![(Fr::zero(), [0u64; 3]); sponge_rows(n)];
    let mut u = 0;
    for b in 0..n.div_ceil(2) {
        rows[u].1[2] = if b == 0 { 2 } else { 1 };
        u += 1;
        for (r, rc) in sp.round_constants.iter().enumerate() {
            rows[u].1[0] = 1;
            rows[u].1[1] = u64::from(full_round(r));
            for (j, v) in rc.iter().enumerate() {
                rows[u + j].0 = *v;
            }
            u += 3;
        }
    }
    debug_assert_eq!(u + 1, rows.len());
    rows
}

/// The advice cells of the sponge region absorbing `words`; the last row's `x₀` is the digest.
/// `bump`: a round (counted over all permutations) whose new state's first element is made one
/// higher, the rest of the sponge following (a soundness test's fault).
pub(crate) fn sponge_witness(words: &[Fr], bump: Option<usize>) -> Vec<SpongeRow> {
    let (sp, n) = (spec(), words.len());
    let v = padded(words);
    let mut rows = vec![[Fr::zero(); WIDTH + 1]; sponge_rows(n)];
    let mut state = [Fr::zero(); WIDTH];
    let (mut u, mut round) = (0, 0);
    for (b, pair) in v.chunks(2).enumerate() {
        rows[u][..WIDTH].copy_from_slice(&state);
        // the first message of an odd count is the padding, not read by the gate
        if !(b == 0 && n % 2 == 1) {
            rows[u][WIDTH] = pair[0];
        }
        rows[u + 1][WIDTH] = pair[1];
        state = if b == 0 {
            [Fr::from(n as u64), pair[0], pair[1]]
        } else {
            [state[0], state[1] + pair[0], state[2] + pair[1]]
        };
        u += 1;
        for (r, rc) in sp.round_constants.iter().enumerate() {
            rows[u][..WIDTH].copy_from_slice(&state);
            let y: [Fr; WIDTH] = std::array::from_fn(|j| state[j] + rc[j]);
            if full_round(r) {
                let s = y.map(|v| v.square());
                let f = s.map(|v| v.square());
                rows[u + 1][..WIDTH].copy_from_slice(&s);
                rows[u + 2][..WIDTH].copy_from_slice(&f);
                state = mix(&sp.mds, std::array::from_fn(|j| f[j] * y[j]));
                u += 3;
            } else {
                // lanes 1 and 2 pass through: `f = 1` (their `s` is not read)
                let s = y[0].square();
                let f = s.square();
                rows[u + 1][0] = s;
                rows[u + 2][..WIDTH].copy_from_slice(&[f, Fr::one(), Fr::one()]);
                state = mix(&sp.mds, [f * y[0], y[1], y[2]]);
                u += 3;
            }
            if bump == Some(round) {
                state[0] += Fr::one();
            }
            round += 1;
        }
    }
    rows[u][..WIDTH].copy_from_slice(&state);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Fr {
        let mut bytes = hex::decode(s).unwrap();
        bytes.reverse();
        let mut repr = [0u8; 32];
        repr.copy_from_slice(&bytes);
        Fr::from_repr(repr).unwrap()
    }

    #[test]
    fn permutation_matches_the_authors_test_vector() {
        // the Poseidon reference implementation's vector for x^5, 254 bits, width 3
        let out = permute([Fr::zero(), Fr::one(), Fr::from(2)]);
        assert_eq!(
            out,
            [
                hex("115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a"),
                hex("0fca49b798923ab0239de1c9e7a4a9a2210312b6a2f616d18b5a87f9b628ae29"),
                hex("0e7ae82e40091e63cbd4f16a6d16310b3729d4b6e138fcf54110e2867045a30c"),
            ]
        );
    }

    #[test]
    fn sponge_binds_length_order_and_every_word() {
        let w: Vec<Fr> = (1..=5u64).map(Fr::from).collect();
        let h = hash_words(&w);
        // a trailing zero (a different length) and a leading zero both change the digest
        let mut longer = w.clone();
        longer.push(Fr::zero());
        assert_ne!(hash_words(&longer), h);
        let mut front = vec![Fr::zero()];
        front.extend_from_slice(&w);
        assert_ne!(hash_words(&front), h);
        for i in 0..w.len() {
            let mut x = w.clone();
            x[i] += Fr::one();
            assert_ne!(hash_words(&x), h, "word {i}");
        }
        let mut swapped = w.clone();
        swapped.swap(0, 1);
        assert_ne!(hash_words(&swapped), h);
        // two words: circomlibjs's poseidon([1, 2]) with the length 2 as its initial state
        assert_eq!(
            hash_words(&[Fr::one(), Fr::from(2)]),
            permute([Fr::from(2), Fr::one(), Fr::from(2)])[0]
        );
    }

    #[test]
    fn the_region_witness_ends_in_the_digest() {
        for n in [1usize, 2, 3, 6, 7] {
            let w: Vec<Fr> = (0..n as u64).map(|i| Fr::from(1000 + i)).collect();
            let rows = sponge_witness(&w, None);
            assert_eq!(rows.len(), sponge_rows(n));
            assert_eq!(rows.last().unwrap()[0], hash_words(&w), "n = {n}");
            for (j, word) in w.iter().enumerate() {
                assert_eq!(rows[message_row(n, j)][WIDTH], *word, "n = {n}, word {j}");
            }
            let fixed = sponge_fixed(n);
            assert_eq!(fixed.iter().filter(|r| r.1[2] == 2).count(), 1);
            assert_eq!(
                fixed.iter().filter(|r| r.1[2] == 1).count(),
                n.div_ceil(2) - 1
            );
        }
    }
}
