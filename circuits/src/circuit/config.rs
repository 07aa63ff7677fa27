//! Columns, the challenge and the gates (every constraint of degree at most 3).

use super::*;

/// Columns, challenge and gates of the circuit.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub(crate) a: Column<Advice>,
    /// High bytes (two bytes per row only).
    pub(crate) b: Option<Column<Advice>>,
    pub(crate) c: Column<Advice>,
    pub(crate) s: Column<Advice>,
    pub(crate) h: Column<Advice>,
    /// Inverses of the high bytes (two bytes per row only).
    pub(crate) g: Option<Column<Advice>>,
    pub(crate) w: Vec<Column<Fixed>>,
    pub(crate) q_run: Column<Fixed>,
    pub(crate) q_rc: Column<Fixed>,
    pub(crate) q_tab: Column<Fixed>,
    pub(crate) q_blk: Column<Fixed>,
    pub(crate) q_z: Column<Fixed>,
    pub(crate) q_x: Column<Fixed>,
    /// With pages: the page power `γ^(F·page)` of each row (second phase).
    pub(crate) t: Option<Column<Advice>>,
    /// With pages: 1 where the next row is in the same page, 2 where it starts the next.
    pub(crate) q_pg: Option<Column<Fixed>>,
    pub(crate) gamma: Challenge,
    /// With lookups: the table-key challenge `θ`, the lookup-row selector, the table id and
    /// the function tables' two columns.
    pub(crate) lookup: Option<LookupColumns>,
    /// With a hashed input: the sponge's columns (`poseidon.rs`).
    pub(crate) sponge: Option<SpongeColumns>,
    /// With products: the product gate's selector (`product.rs`).
    pub(crate) q_mul: Option<Column<Fixed>>,
    /// With matrix products: the chain and carry selectors (`matmul.rs`).
    pub(crate) q_mm: Option<matmul::MatmulColumns>,
    pub(crate) shape: ColumnShape,
}

pub(crate) fn c(v: u64) -> Expression<Fr> {
    Expression::Constant(Fr::from(v))
}

pub(crate) fn k(v: Fr) -> Expression<Fr> {
    Expression::Constant(v)
}

/// For a selector taking the values 0, 1, 2: expressions that are 1 on value 1 (resp. 2, resp.
/// either) and 0 elsewhere (degree 2).
pub(crate) fn select(q: Expression<Fr>) -> [Expression<Fr>; 3] {
    let half = k(Fr::from(2).invert().unwrap());
    [
        q.clone() * (c(2) - q.clone()),
        q.clone() * (q.clone() - c(1)) * half.clone(),
        q.clone() * (c(3) - q) * half,
    ]
}

/// `Σ_f γ^f w_f` of the current row by Horner's rule: a row's weight combination (the running
/// sum's, the closing row's, the matmul carry's).
pub(crate) fn weight_comb(
    m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>,
    w: &[Column<Fixed>],
    gamma: Challenge,
) -> Expression<Fr> {
    let gm = m.query_challenge(gamma);
    let mut e = m.query_fixed(*w.last().expect("w"), Rotation::cur());
    for wc in w.iter().rev().skip(1) {
        e = e * gm.clone() + m.query_fixed(*wc, Rotation::cur());
    }
    e
}

impl ModelConfig {
    /// Declares the columns and gates for a shape.
    pub fn configure(meta: &mut ConstraintSystem<Fr>, shape: ColumnShape) -> Self {
        let wide = shape.row_bytes == 2;
        let a = meta.advice_column_in(FirstPhase);
        let b = wide.then(|| meta.advice_column_in(FirstPhase));
        let c_ = meta.advice_column_in(FirstPhase);
        let gamma = meta.challenge_usable_after(FirstPhase);
        let lookup = shape.lookups().then(|| LookupColumns::configure(meta));
        let [s, h] = [(); 2].map(|_| meta.advice_column_in(SecondPhase));
        let g = wide.then(|| meta.advice_column_in(SecondPhase));
        let w: Vec<_> = (0..shape.weight_columns.max(1))
            .map(|_| meta.fixed_column())
            .collect();
        let [q_run, q_rc, q_tab, q_blk, q_z, q_x] = [(); 6].map(|_| meta.fixed_column());
        let instance: Column<Instance> = meta.instance_column();
        let sponge = shape.hashed_input.then(|| {
            SpongeColumns::configure(meta, instance, shape.input_words, shape.sponge_start())
        });
        // pages: copies of `a` in other pages are tied by copy constraints, constant rows hold 1
        let paged = shape.paged();
        let t = paged.then(|| meta.advice_column_in(SecondPhase));
        let q_pg = paged.then(|| meta.fixed_column());
        if paged {
            meta.enable_equality(a);
            let constants = meta.fixed_column();
            meta.enable_constant(constants);
        }

        let comb = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>| weight_comb(m, &w, gamma);

        meta.create_gate("running sum and output words", |m| {
            let [_, tie, any] = select(m.query_fixed(q_run, Rotation::cur()));
            let l = comb(m);
            let (cur, next) = (
                m.query_advice(s, Rotation::cur()),
                m.query_advice(s, Rotation::next()),
            );
            let x = m.query_advice(a, Rotation::cur());
            let hv = m.query_advice(h, Rotation::cur());
            let inverses = match g {
                Some(g) => hv.clone() + m.query_advice(g, Rotation::cur()),
                None => hv.clone(),
            };
            let rc = m.query_fixed(q_rc, Rotation::cur());
            let tab = m.query_fixed(q_tab, Rotation::cur());
            let word = m.query_advice(a, Rotation::cur());
            let inst = m.query_instance(instance, Rotation::cur());
            let term = match t {
                Some(t) => x * m.query_advice(t, Rotation::cur()) * l,
                None => x * l,
            };
            let mut sum = any * (next - cur) - term - rc * inverses;
            // lookup rows add their inverse like a checked byte (without lookups the gate is
            // the one of circuits before them, term for term: the verifying key hashes it)
            if let Some(lk) = lookup {
                sum = sum - m.query_fixed(lk.q_lk, Rotation::cur()) * hv.clone();
            }
            vec![sum + tab * hv, tie * (word - inst)]
        });

        if let (Some(t), Some(q_pg)) = (t, q_pg) {
            // t' = t in a page, t' = t·γ^F into the next (γ^F is a product of challenges)
            meta.create_gate("page powers", |m| {
                let [same, up, _] = select(m.query_fixed(q_pg, Rotation::cur()));
                let gm = m.query_challenge(gamma);
                let step = (1..shape.weight_columns).fold(gm.clone(), |e, _| e * gm.clone());
                let (cur, next) = (
                    m.query_advice(t, Rotation::cur()),
                    m.query_advice(t, Rotation::next()),
                );
                vec![
                    same * (next.clone() - cur.clone()),
                    up * (next - cur * step),
                ]
            });
        }

        meta.create_gate("byte inverses", |m| {
            let q = m.query_fixed(q_rc, Rotation::cur());
            let gm = m.query_challenge(gamma);
            let x = m.query_advice(a, Rotation::cur());
            let hv = m.query_advice(h, Rotation::cur());
            match (b, g) {
                (Some(b), Some(g)) => {
                    let hi = m.query_advice(b, Rotation::cur());
                    let lo = x - hi.clone() * c(TABLE_SIZE as u64);
                    vec![
                        q.clone() * (hv * (gm.clone() + lo) - c(1)),
                        q * (m.query_advice(g, Rotation::cur()) * (gm + hi) - c(1)),
                    ]
                }
                _ => vec![q * (hv * (gm + x) - c(1))],
            }
        });

        // γ + θ·id + θ²·z + θ³·y, by Horner's rule
        let key = |m: &mut halo2_proofs::plonk::VirtualCells<'_, Fr>,
                   lk: &LookupColumns,
                   z: Expression<Fr>,
                   y: Expression<Fr>| {
            let th = m.query_challenge(lk.theta);
            let id = m.query_fixed(lk.lid, Rotation::cur());
            m.query_challenge(gamma) + th.clone() * (id + th.clone() * (z + th * y))
        };
        meta.create_gate("table", |m| {
            let q = m.query_fixed(q_tab, Rotation::cur());
            let gm = m.query_challenge(gamma);
            let t = m.query_fixed(w[0], Rotation::cur());
            // byte rows: γ + t; function-table rows (t = 0): the key of their entry
            let den = match &lookup {
                Some(lk) => {
                    let (z, y) = (
                        m.query_fixed(lk.lz, Rotation::cur()),
                        m.query_fixed(lk.ly, Rotation::cur()),
                    );
                    key(m, lk, z, y) + t
                }
                None => gm + t,
            };
            vec![
                q.clone()
                    * (m.query_advice(h, Rotation::cur()) * den
                        - m.query_advice(c_, Rotation::cur())),
                q * m.query_advice(a, Rotation::cur()),
            ]
        });

        if let Some(lk) = lookup {
            // h·key(id, zc, a) = 1 with zc = p − n − op + on (the rows below the entry), and
            // the clamp: op·(lz − zc) = 0, on·(lz + zc) = 0 (lz: the clamp bound)
            let bits = shape.lookup_parts();
            meta.create_gate("lookup", |m| {
                let q = m.query_fixed(lk.q_lk, Rotation::cur());
                let parts = bits.len() as i32;
                let mut value = |which: i32| {
                    (0..bits.len()).fold(c(0), |acc, t| {
                        acc + m.query_advice(a, Rotation(1 + which * parts + t as i32))
                            * k(shape.factor(&bits, t))
                    })
                };
                let (p, n, op, on) = (value(0), value(1), value(2), value(3));
                let (p_relu, n_relu) = (p.clone(), n.clone());
                let zc = p - n - op.clone() + on.clone();
                let bound = m.query_fixed(lk.lz, Rotation::cur());
                let y = m.query_advice(a, Rotation::cur());
                let den = key(m, &lk, zc.clone(), y);
                let q_lr = m.query_fixed(lk.q_lr, Rotation::cur());
                vec![
                    q.clone() * (m.query_advice(h, Rotation::cur()) * den - c(1)),
                    q.clone() * op * (bound.clone() - zc.clone()),
                    q * on * (bound + zc),
                    q_lr * p_relu * n_relu,
                ]
            });
        }

        let out_bits = shape.relu_parts();
        meta.create_gate("rounding", |m| {
            let q = m.query_fixed(q_blk, Rotation::cur());
            let rows = out_bits.len() as i32;
            let mut value = |first: i32| {
                (0..out_bits.len()).fold(c(0), |acc, t| {
                    acc + m.query_advice(a, Rotation(first + t as i32))
                        * k(shape.factor(&out_bits, t))
                })
            };
            let p = value(0);
            let n = value(rows);
            vec![q * p * n]
        });

        meta.create_gate("ends and zeros", |m| {
            let [sum, zero, _] = select(m.query_fixed(q_z, Rotation::cur()));
            let l = comb(m);
            let x = m.query_advice(a, Rotation::cur());
            let low = match b {
                Some(b) => x - m.query_advice(b, Rotation::cur()) * c(TABLE_SIZE as u64),
                None => x,
            };
            vec![
                sum * (m.query_advice(s, Rotation::cur()) + l),
                zero.clone() * m.query_advice(c_, Rotation::cur()),
                zero * low,
            ]
        });

        let q_mul = shape
            .products()
            .then(|| product::configure(meta, a, &shape));

        let q_mm = shape
            .matmuls()
            .then(|| matmul::configure(meta, a, h, s, t, &w, gamma, &shape));

        let stride = shape.stride() as i32;
        meta.create_gate("input words", |m| {
            let [acc, word, _] = select(m.query_fixed(q_x, Rotation::cur()));
            let rest = m.query_advice(a, Rotation::cur())
                + m.query_advice(c_, Rotation(stride)) * k(pow2(shape.row_bits()));
            // the word is public, or the sponge's message cell (copied to where it is absorbed)
            let target = match sponge {
                Some(sp) => m.query_advice(sp.m, Rotation::cur()),
                None => m.query_instance(instance, Rotation::cur()),
            };
            let mut out = vec![
                acc * (m.query_advice(c_, Rotation::cur()) - rest.clone()),
                word.clone() * (target - rest),
            ];
            // the input-word rows open page 0: t = 1
            if let Some(t) = t {
                out.push(word * (m.query_advice(t, Rotation::cur()) - c(1)));
            }
            out
        });

        ModelConfig {
            a,
            b,
            c: c_,
            s,
            h,
            g,
            w,
            q_run,
            q_rc,
            q_tab,
            q_blk,
            q_z,
            q_x,
            t,
            q_pg,
            gamma,
            lookup,
            sponge,
            q_mul,
            q_mm,
            shape,
        }
    }
}
