//! Table-driven instruction cases: registers and flags in, registers and flags out,
//! named so that a failure says which case and on which engine.

use super::kernel::{self, Kernel, Record};
use super::machine::{Asm, Machine};
use super::{flags_compared, EngineMaker, RAX, SOFTWARE_ENGINES};
use crate::cpu::rflags;
use crate::exception::vector;
use crate::exit::StopReason;
use crate::x86::opcode;
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// One case: registers and flags in, registers and flags out.
#[derive(Clone, Copy)]
pub struct Case {
    /// Shown when the case fails.
    pub name: &'static str,
    /// The code under test.
    pub asm: Asm,
    /// Registers set before the run.
    pub regs: &'static [(usize, u64)],
    /// RFLAGS before the run.
    pub flags: u64,
    /// Registers expected after the run (full 64-bit values).
    pub want: &'static [(usize, u64)],
    /// Expected flags, compared under `mask`.
    pub want_flags: u64,
    /// The flags the case checks (those the manual defines for it).
    pub mask: u64,
}

/// Which of a case's flags a run is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagsCompared {
    /// Every flag the case's mask names, those the manuals leave undefined as Popek
    /// defines them: for the interpreter.
    Popek,
    /// Only the flags the manuals define after the case's instructions: for a real CPU
    /// and for engines that run the instructions on one (the translator).
    Architectural,
}

/// The RFLAGS bits the manuals leave undefined after any instruction of `code`, decoded
/// from its start up to its end, a HLT or bytes that do not decode.
pub(super) fn undefined_flags(bitness: u32, code: &[u8]) -> u64 {
    let mut decoder = Decoder::new(bitness, code, DecoderOptions::NONE);
    let mut undefined = 0;
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.is_invalid() || ins.mnemonic() == Mnemonic::Hlt {
            break;
        }
        undefined |= opcode::rflags_bits(ins.rflags_undefined());
    }
    undefined
}

impl Case {
    /// Checks a run's final registers, and its flags under `mask` (the case's mask, or
    /// less of it).
    fn verify(&self, engine: &str, gpr: &[u64; 16], rflags: u64, mask: u64) {
        let name = self.name;
        for &(r, v) in self.want {
            assert_eq!(
                gpr[r], v,
                "{name} on {engine}: register {r} is {:#x}, want {v:#x}",
                gpr[r]
            );
        }
        let (got, want) = (rflags & mask, self.want_flags & mask);
        assert_eq!(
            got, want,
            "{name} on {engine}: flags {got:#x}, want {want:#x} (mask {mask:#x})"
        );
    }
}

/// Runs every case in 32-bit flat protected mode on every software engine.
pub fn check(cases: &[Case]) {
    check_in(cases, Machine::new);
}

/// Runs every case in 64-bit mode (without paging) on every software engine.
pub fn check64(cases: &[Case]) {
    check_in(cases, Machine::new64);
}

fn check_in(cases: &[Case], machine: fn(Asm) -> Machine) {
    for &(engine, maker) in SOFTWARE_ENGINES {
        check_on(engine, maker, cases, machine);
    }
}

/// Runs every case on the engines `maker` makes, each in the guest `machine` builds,
/// holding the flags to what [`flags_compared`] says for `engine`.
pub fn check_on(engine: &str, maker: EngineMaker, cases: &[Case], machine: fn(Asm) -> Machine) {
    for c in cases {
        let mut m = machine(c.asm).on(maker).regs(c.regs).flags(c.flags);
        let mask = match flags_compared(engine) {
            FlagsCompared::Popek => c.mask,
            FlagsCompared::Architectural => c.mask & !m.undefined_flags(),
        };
        let stop = m.run();
        assert_eq!(
            stop,
            StopReason::Halted,
            "{} on {engine}: stopped with {stop}",
            c.name
        );
        c.verify(engine, &m.state.gpr, m.state.rflags.get(), mask);
    }
}

/// Runs every case at CPL 3 in the long-mode kernel ([`Kernel::long`]) on the engines
/// `maker` makes: `bitness` 64 runs 64-bit code, 32 runs it in compatibility mode. This
/// is a guest a real CPU (KVM) runs, unlike [`check64`]'s: the code runs into a `ud2`
/// whose #UD stub saves RAX and the frame (so RFLAGS) and halts at CPL 0; every other
/// register is as the case left it.
pub fn check_ring3(
    engine: &str,
    maker: EngineMaker,
    bitness: u32,
    flags: FlagsCompared,
    cases: &[Case],
) {
    for c in cases {
        let mut k = Kernel::long();
        k.compat = bitness == 32;
        for &(r, v) in c.regs {
            k.regs[r] = v;
        }
        k.rflags = c.flags | rflags::FIXED;
        let program = kernel::assemble(bitness, kernel::CODE, |a| {
            (c.asm)(a)?;
            a.label("end")?;
            a.ud2()
        });
        let mut m = Machine::kernel(&k, &program).on(maker);
        let stop = m.run();
        let name = c.name;
        assert_eq!(
            stop,
            StopReason::Halted,
            "{name} on {engine}: stopped with {stop}"
        );
        let record = Record::read(m.ram.as_slice(), true);
        assert_eq!(
            (record.vector, record.eip),
            (Some(vector::UD), program.ip("end")),
            "{name} on {engine}: the code did not run to its end: {record:x?}"
        );
        let mut gpr = m.state.gpr;
        gpr[RAX] = record.eax;
        let mask = match flags {
            FlagsCompared::Popek => c.mask,
            FlagsCompared::Architectural => {
                let end = (program.ip("end") - program.origin) as usize;
                c.mask & !undefined_flags(bitness, &program.bytes[..end])
            }
        };
        c.verify(engine, &gpr, record.eflags, mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::bt_factory;
    use crate::testkit::tables::TABLES32;

    /// The count of `what` among an engine's counters.
    fn counter(counters: &[(String, u64)], what: &str) -> u64 {
        counters
            .iter()
            .find(|(name, _)| name == what)
            .map_or(0, |&(_, n)| n)
    }

    #[test]
    fn the_32_bit_tables_run_as_translated_code_on_bt() {
        // Flat 32-bit protected mode is what the translator translates: had a case's
        // code run in its interpreter fallback, the tables would not test translation.
        // (A translated block may still call out single instructions the translator
        // does not copy to the host: BSF and BSR, and DIV, which can fault.)
        for (table, cases) in TABLES32 {
            for c in *cases {
                let mut m = Machine::new(c.asm)
                    .on(bt_factory)
                    .regs(c.regs)
                    .flags(c.flags);
                assert_eq!(m.run(), StopReason::Halted);
                let translated = counter(&m.counters, "blocks translated");
                let interpreted = counter(&m.counters, "blocks interpreted");
                assert!(
                    translated > 0 && interpreted == 0,
                    "{table}: {}: {translated} blocks translated, {interpreted} blocks \
                     interpreted",
                    c.name
                );
            }
        }
    }
}
