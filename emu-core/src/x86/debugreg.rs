//! The debug registers' architectural rules: which of DR0-DR7 hold what, and which bits
//! of DR6 and DR7 are fixed. What triggers a #DB is the engine's business (the
//! interpreter checks before and after each instruction).

use crate::cpu::{dr6, dr7};

/// Index of DR6 in [`crate::cpu::CpuState::dr`].
pub const DR6: usize = 6;
/// Index of DR7 in [`crate::cpu::CpuState::dr`].
pub const DR7: usize = 7;
/// The value DR6 or DR7 reads after `v` was written: reserved bits read as fixed.
pub fn fixed_bits(index: usize, v: u64) -> u64 {
    match index {
        DR6 => (v & dr6::WRITABLE) | dr6::FIXED,
        DR7 => (v & dr7::WRITABLE) | dr7::FIXED,
        _ => v,
    }
}
