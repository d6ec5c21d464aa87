//! emu-core's instruction-family case tables on KVM, through the engine-generic harness
//! (`emu_core::testkit`): each case runs at CPL 3 in the long-mode test kernel, as on the
//! software engines (emu-core's `ring3_tables`), comparing only the flags the manuals
//! define (the tables also pin down the values Popek gives undefined flags).
//!
//! On this project's PVM host 64-bit ring-3 code runs natively; ring-0 code (the #UD
//! stub that ends each case) and 32-bit code are emulated by the host kernel.

use crate::common::kvm_factory;
use emu_core::testkit::cases::{check_ring3, FlagsCompared};
use emu_core::testkit::tables::{TABLES32, TABLES64};

#[test]
fn sixty_four_bit_tables_at_ring3() {
    crate::require_kvm!();
    for (table, cases) in TABLES64 {
        println!("{table} on kvm");
        check_ring3("kvm", kvm_factory, 64, FlagsCompared::Architectural, cases);
    }
}

#[test]
fn thirty_two_bit_tables_in_compatibility_mode_at_ring3() {
    crate::require_kvm!();
    for (table, cases) in TABLES32 {
        println!("{table} on kvm");
        check_ring3("kvm", kvm_factory, 32, FlagsCompared::Architectural, cases);
    }
}
