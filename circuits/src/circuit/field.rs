//! Exact conversions between integers and field elements.

use super::*;

/// Converts a signed integer to a field element.
pub fn fr_from_i128(v: i128) -> Fr {
    let m = fr_from_u128(v.unsigned_abs());
    if v >= 0 {
        m
    } else {
        -m
    }
}

/// `Fr::from_u128` is 64 field doublings; two 64-bit conversions are much cheaper.
pub(crate) fn fr_from_u128(v: u128) -> Fr {
    let lo = Fr::from(v as u64);
    match (v >> 64) as u64 {
        0 => lo,
        hi => Fr::from(hi) * Fr::from_raw([0, 1, 0, 0]) + lo,
    }
}

/// Reads a field element back as a signed integer of at most 127 bits, if it is one.
pub fn fr_to_i128(f: &Fr) -> Option<i128> {
    let small = |f: &Fr| {
        let repr = f.to_repr();
        let bytes: &[u8] = repr.as_ref();
        if bytes[16..].iter().any(|&b| b != 0) || bytes[15] & 0x80 != 0 {
            return None;
        }
        let mut lo = [0u8; 16];
        lo.copy_from_slice(&bytes[..16]);
        Some(i128::from_le_bytes(lo))
    };
    small(f).or_else(|| small(&-*f).map(|v| -v))
}
