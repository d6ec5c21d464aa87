//! The exception table (`emu_core::testkit::exceptions`) on every software engine, one
//! `#[test]` per row so that a failure says which case broke.

use emu_core::cpu::{cr0, rflags};
use emu_core::exception::vector;
use emu_core::exit::StopReason;
use emu_core::testkit::exceptions::*;
use emu_core::testkit::kernel::*;
use iced_x86::code_asm::*;

/// One `#[test]` per row, named after it.
macro_rules! tests {
    ($($(#[$meta:meta])* $name:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[test]
            #[allow(clippy::needless_update)] // some rows set every field
            fn $name() {
                run(stringify!($name), Case { $($field: $value,)* ..Case::DEFAULT });
            }
        )*
    };
}

emu_core::exception_table!(tests);
