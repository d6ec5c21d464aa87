//! The instruction-family case tables, gathered so that any engine's tests can run
//! them: the families keep their tables next to their code (`interp::*::cases`), and
//! emu-core's own tests run them on every software engine.

pub use crate::interp::bits::cases as bits;
pub use crate::interp::moves::cases as moves;
pub use crate::interp::muldiv::cases as muldiv;
pub use crate::interp::shift::cases as shift;

use super::Case;

/// The tables of 32-bit code, by name.
pub const TABLES32: &[(&str, &[Case])] = &[
    ("bits: bit tests on registers", bits::BIT_TESTS_ON_REGISTERS),
    ("bits: bit scans", bits::BIT_SCANS),
    ("muldiv: unsigned multiply", muldiv::UNSIGNED_MULTIPLY),
    ("muldiv: signed multiply", muldiv::SIGNED_MULTIPLY),
    ("muldiv: divide", muldiv::DIVIDE),
    ("shift: shifts", shift::SHIFTS),
    ("shift: rotates", shift::ROTATES_CHANGE_ONLY_CF_AND_OF),
    ("shift: double shifts", shift::DOUBLE_SHIFTS),
];

/// The tables of 64-bit code, by name.
pub const TABLES64: &[(&str, &[Case])] = &[
    ("bits: 64-bit operands", bits::SIXTY_FOUR_BIT_OPERANDS),
    (
        "moves: cmpxchg",
        moves::CMPXCHG_WRITES_ONLY_THE_REGISTER_IT_CHANGES,
    ),
    ("muldiv: 64-bit operands", muldiv::SIXTY_FOUR_BIT_OPERANDS),
    ("shift: 64-bit operands", shift::SIXTY_FOUR_BIT_OPERANDS),
];
