//! Deliberate wrong witnesses for the soundness tests.

use super::*;

/// Which witness cell a [`Fault`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultTarget {
    /// A cell of the second-phase running sum.
    RunningSum,
    /// A byte inverse `h` of a checked row.
    ByteInverse,
    /// The high byte `b` of a checked row.
    HighByte,
    /// The (first part of the) positive part `p` of a rounded output.
    RescalePos,
    /// The negative part `n` of a rounded output.
    RescaleNeg,
    /// The remainder `r` of a rounding.
    RescaleRem,
    /// Quotient one higher and remainder one divisor lower, the rest of the forward pass
    /// following: only the range check on the remainder stops it.
    RescaleShiftQuotient,
    /// `p` and `n` both one higher (the rounded value unchanged, a ReLU output one higher), the
    /// rest of the forward pass and the public output following: only `p·n = 0` stops it.
    RescaleBothParts,
    /// A packed model input part.
    PackedInput,
    /// An accumulator cell of the input layout.
    InputAccumulator,
    /// An output word cell.
    PublicWord,
    /// A table multiplicity.
    Multiplicity,
    /// A model input moved by one slot unit into its neighbour, the rest of the forward pass
    /// following: the packed word is unchanged, only the range check of the input stops it.
    InputCarry,
    /// An unused input slot of the last word set to one, its word following: only the
    /// zero-sum equation of the unused slots stops it.
    PaddingInput,
    /// The low byte of a one-byte row in the two-byte layout set to one (`a = 256·v + 1`).
    SmallLowByte,
    /// A model input set to the code one above the largest (an input just above the declared
    /// range), the rest of the forward pass and the public words following: only the range
    /// check of the input stops it.
    InputAboveRange,
    /// A copy row (a value repeated in another page) one higher than its source: only the copy
    /// constraint stops it.
    CopyRow,
    /// The constant row of a page holding 2 instead of 1.
    ConstantRow,
    /// A page power `t` one higher.
    PagePower,
    /// A lookup output one above its table entry, the rest of the forward pass and the public
    /// words following: only the lookup argument stops it.
    LookupOutput,
    /// A lookup output taken from another layer's table (the entry that table has for the same
    /// rounded value), the rest following: only the table id in the lookup key stops it.
    LookupOtherTable,
    /// A clamped lookup input claimed one step inside the clamp (its entry and the rest of the
    /// forward pass following): only the clamp constraints stop it.
    LookupClampInside,
    /// A function-table multiplicity one higher.
    LookupMultiplicity,
    /// The inverse `h` of a lookup row one higher.
    LookupInverse,
    /// A Poseidon round's new state one higher in its first element, the rest of the sponge
    /// and the public digest following: only that round's constraint stops it.
    SpongeRound,
    /// An absorbed message one higher than its input word, the sponge and the public digest
    /// following: only the copy constraint stops it.
    SpongeMessage,
    /// The message cell of an input-word row one higher, the absorbed message, the sponge and
    /// the public digest following: only the input-word gate stops it.
    SpongeWord,
    /// A product one above its rounded value (remainder unchanged), the rest of the forward
    /// pass and the public words following: only the product gate stops it.
    ProductOutput,
    /// A product's first factor one above the value it selects, the product and the rest
    /// following: only the factor's equation in the running sum stops it.
    ProductFactor,
    /// A matrix product's output one above its rounded value (remainder unchanged), the rest of
    /// the forward pass and the public words following: only its equation in the running sum
    /// stops it.
    MatMulOutput,
    /// The first chain cell of `A` of one unit of a matrix product one higher (its chain
    /// following) and the last of another unit's changed so that the running sum still closes
    /// (the carries following): only the chain gate stops it (on both units' first-row and
    /// later-row constraints).
    MatMulChain,
    /// Two consecutive carry cells of one unit of a matrix product (the first carry among them
    /// at index 0) changed so that their terms in the running sum cancel: only the carry gate
    /// stops it.
    MatMulCarry,
    /// A matrix product's output one above its rounded value (the rest of the forward pass and
    /// the public words following), the running sum moved on a chain row of `B` by what its
    /// equation lost, so that the sum still closes: only the matmul sum gate stops it.
    MatMulSum,
}

/// A deliberate wrong witness, for soundness tests: the `index`-th cell of `target` (modulo
/// their number) is increased by one (see [`FaultTarget`] for the compound faults). A circuit
/// with a fault must never verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub target: FaultTarget,
    pub index: usize,
}
