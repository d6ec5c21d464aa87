//! emu-core's exception table (`emu_core::testkit::exceptions`) on KVM: the rows this
//! host can run, checked exactly as on the software engines.
//!
//! The PVM host triple-faults 32-bit guests with paging on, so the table's 32-bit
//! protected-mode rows (most of it) do not run here; its long-mode rows (64-bit ring 3
//! runs natively) and real-mode rows (emulated by the host kernel) do, except the ones
//! in [`NOT_ON_THIS_HOST`].

use emu_core::cpu::{cr0, rflags};
use emu_core::exception::vector;
use emu_core::exit::StopReason;
use emu_core::testkit::exceptions::*;
use emu_core::testkit::kernel::*;
use iced_x86::code_asm::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Rows that fit the modes above but that this host runs differently, and why.
const NOT_ON_THIS_HOST: &[(&str, &str)] = &[
    (
        "triple_fault_without_an_idt",
        "KVM reports a shutdown without the exception that caused it",
    ),
    (
        "gp_for_a_qword_running_into_non_canonical_space",
        "the host CPU raises #PF for the unmapped first page before #GP for the \
         non-canonical end of the access; Popek raises #GP (an open question)",
    ),
    (
        "real_mode_word_push_at_sp_1_shuts_down",
        "the host's real-mode emulator halts instead of shutting down",
    ),
    (
        "real_mode_byte_read_at_ffff_is_fine",
        "the host's real-mode emulator fails (KVM internal error 1)",
    ),
    (
        "unreal_mode_keeps_the_limit_protected_mode_loaded",
        "the host's real-mode emulator fails (KVM internal error 1)",
    ),
];

/// Every row, by name.
macro_rules! rows {
    ($($(#[$meta:meta])* $name:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        #[allow(clippy::needless_update)] // some rows set every field
        const ROWS: &[(&str, Case)] = &[
            $((stringify!($name), Case { $($field: $value,)* ..Case::DEFAULT }),)*
        ];
    };
}

emu_core::exception_table!(rows);

#[test]
fn long_mode_and_real_mode_rows() {
    crate::require_kvm!();
    for (name, _) in NOT_ON_THIS_HOST {
        assert!(ROWS.iter().any(|(row, _)| row == name), "no row {name}");
    }
    let mut ran = 0;
    let mut failed = Vec::new();
    for (name, case) in ROWS {
        let kernel = (case.kernel)();
        if !(kernel.long || kernel.real) || NOT_ON_THIS_HOST.iter().any(|(n, _)| n == name) {
            continue;
        }
        ran += 1;
        let run = catch_unwind(AssertUnwindSafe(|| {
            run_on(
                &format!("{name} on kvm"),
                crate::common::kvm_factory(),
                case,
            )
        }));
        if run.is_err() {
            failed.push(*name);
        }
    }
    println!("{ran} rows on kvm");
    assert!(ran >= 4, "only {ran} rows fit");
    assert!(failed.is_empty(), "failed on kvm: {failed:?}");
}
