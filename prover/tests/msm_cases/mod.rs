//! The MSM test cases that the CPU and GPU differential tests share: points with the point at
//! infinity and repeats mixed in, and the scalar families a prover commits to.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use veriml_circuits::halo2_proofs::halo2curves::bn256::{Fr, G1Affine, G1};
use veriml_circuits::halo2_proofs::halo2curves::ff::Field;
use veriml_circuits::halo2_proofs::halo2curves::group::{prime::PrimeCurveAffine, Curve, Group};

/// Random points, with the point at infinity and repeated points mixed in.
pub fn bases(n: usize, rng: &mut ChaCha20Rng) -> Vec<G1Affine> {
    let proj: Vec<G1> = (0..n)
        .map(|i| match i % 11 {
            3 => G1::identity(),
            7 if i > 0 => G1::identity() + G1::random(&mut *rng) * Fr::ZERO, // identity again
            _ => G1::random(&mut *rng),
        })
        .collect();
    let mut out = vec![G1Affine::identity(); n];
    G1::batch_normalize(&proj, &mut out);
    // repeated bases
    for i in (5..n).step_by(13) {
        out[i] = out[i - 5];
    }
    out
}

pub fn fr_u64(v: u64) -> Fr {
    Fr::from(v)
}

/// The scalar families a prover commits to.
pub fn families(n: usize, rng: &mut ChaCha20Rng) -> Vec<(&'static str, Vec<Fr>)> {
    let two64 = Fr::from(u64::MAX) + Fr::ONE;
    vec![
        ("zeros", vec![Fr::ZERO; n]),
        ("ones", vec![Fr::ONE; n]),
        (
            "bytes",
            (0..n).map(|_| fr_u64(rng.gen_range(0..256))).collect(),
        ),
        (
            "signed bytes",
            (0..n)
                .map(|_| {
                    let v = fr_u64(rng.gen_range(0..256));
                    if rng.gen() {
                        -v
                    } else {
                        v
                    }
                })
                .collect(),
        ),
        (
            "64-bit edges",
            (0..n)
                .map(|i| match i % 6 {
                    0 => fr_u64(u64::MAX),
                    1 => two64,
                    2 => -fr_u64(u64::MAX),
                    3 => -two64,
                    4 => fr_u64(1 << 63),
                    _ => two64 + Fr::ONE,
                })
                .collect(),
        ),
        (
            "near the modulus",
            (0..n)
                .map(|i| -fr_u64(i as u64 + 1) - two64 * Fr::from(i as u64 % 3))
                .collect(),
        ),
        ("full", (0..n).map(|_| Fr::random(&mut *rng)).collect()),
        (
            // a few full-size values, repeated (challenge powers), zeros and small ones between
            "repeated full",
            {
                let values: Vec<Fr> = (0..7).map(|_| Fr::random(&mut *rng)).collect();
                (0..n)
                    .map(|i| match i % 9 {
                        0 => Fr::ZERO,
                        1 => fr_u64(i as u64),
                        _ => values[rng.gen_range(0..values.len())],
                    })
                    .collect()
            },
        ),
        (
            "mixed",
            (0..n)
                .map(|i| match i % 5 {
                    0 => Fr::ZERO,
                    1 => fr_u64(rng.gen_range(0..1 << 16)),
                    2 => -fr_u64(rng.gen_range(0..1 << 20)),
                    3 => Fr::random(&mut *rng),
                    _ => fr_u64(rng.gen()),
                })
                .collect(),
        ),
    ]
}
