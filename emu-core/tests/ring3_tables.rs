//! The instruction-family case tables at CPL 3 in the long-mode test kernel, on every
//! software engine: the guest KVM runs them in (accel-kvm's `kvm::tables`), so the
//! engines are checked in the same setting.

use emu_core::testkit::cases::check_ring3;
use emu_core::testkit::tables::{TABLES32, TABLES64};
use emu_core::testkit::{flags_compared, SOFTWARE_ENGINES};

#[test]
fn sixty_four_bit_tables_at_ring3() {
    for &(engine, maker) in SOFTWARE_ENGINES {
        for (table, cases) in TABLES64 {
            println!("{table} on {engine}");
            check_ring3(engine, maker, 64, flags_compared(engine), cases);
        }
    }
}

#[test]
fn thirty_two_bit_tables_in_compatibility_mode_at_ring3() {
    for &(engine, maker) in SOFTWARE_ENGINES {
        for (table, cases) in TABLES32 {
            println!("{table} on {engine}");
            check_ring3(engine, maker, 32, flags_compared(engine), cases);
        }
    }
}
