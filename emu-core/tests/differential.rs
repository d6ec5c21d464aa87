//! Differential test of the interpreter against the host CPU.
//!
//! Thousands of random user-level instruction sequences run twice: natively, encoded for
//! 64-bit mode (every instruction used means the same there on 32- and 8/16-bit
//! registers), and in the interpreter, encoded for 32-bit protected mode. Every
//! register, every status flag the sequence leaves defined, and the scratch buffer that
//! memory operands use must end up the same. The host CPU is the oracle.
//!
//! Environment: `POPEK_DIFF_CASES` (how many sequences) and `POPEK_DIFF_SEED` (the first
//! seed; case `i` uses seed + i). A failure prints the command that reruns just it.
//! The native side needs an x86-64 Linux host (MAP_32BIT); elsewhere the test skips.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[path = "differential/generate.rs"]
mod generate;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[path = "differential/native.rs"]
mod native;

#[test]
fn interpreter_matches_host_cpu() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    host::run();
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    eprintln!("skipped: host is not x86_64 Linux");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod host {
    use super::generate::{Case, Generator, Table, MEM_BASE_INDEX, MEM_SIZE};
    use super::native::{Jit, Regs};
    use emu_core::cpu::{rflags, CpuState, SegReg};
    use emu_core::engine::Engine;
    use emu_core::exit::{ExitHandler, Flow, StopReason, VmExit};
    use emu_core::interp::Interpreter;
    use emu_core::memory::GuestRam;
    use iced_x86::{Encoder, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind};
    use std::collections::BTreeMap;
    use std::fmt::Write;
    use std::time::Instant;

    /// Sequences per run by default: a few seconds in a debug build.
    const DEFAULT_CASES: u64 = 15_000;
    const DEFAULT_SEED: u64 = 0x5EED_0000;
    /// The largest fraction of sequences that may be skipped because the interpreter
    /// does not implement one of their instructions.
    const MAX_UNSUPPORTED: f64 = 0.02;
    /// Failures reported in full before the test gives up.
    const MAX_REPORTS: usize = 10;

    /// Where the interpreter runs the sequence.
    const CODE_AT: u32 = 0x1000;
    /// Where the interpreter's scratch buffer lives; DS is based so that the host
    /// buffer's address, which ESI holds, lands here.
    const SCRATCH_AT: u32 = 0x8000;
    const HLT: u8 = 0xF4;
    /// Instructions the interpreter may run before the test calls it a hang.
    const BUDGET: u64 = 10_000;
    const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
    const FLAG_NAMES: [(u32, &str); 6] = [
        (rflags::CF as u32, "CF"),
        (rflags::PF as u32, "PF"),
        (rflags::AF as u32, "AF"),
        (rflags::ZF as u32, "ZF"),
        (rflags::SF as u32, "SF"),
        (rflags::OF as u32, "OF"),
    ];

    fn env_u64(name: &str, default: u64) -> u64 {
        match std::env::var(name) {
            Ok(v) => {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            }
            Err(_) => default,
        }
    }

    /// The final state of one side.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Outcome {
        regs: [u32; 8],
        flags: u32,
        mem: [u8; MEM_SIZE],
    }

    /// What a case came to.
    enum Verdict {
        Same,
        Unsupported(String),
        Differs(Box<(Outcome, Result<Outcome, StopReason>)>),
    }

    /// Stops the interpreter at HLT and at anything the sequence should not do.
    struct StopAtHlt;

    impl ExitHandler for StopAtHlt {
        fn handle(&mut self, exit: VmExit<'_>, _icount: u64) -> Flow {
            Flow::Stop(match exit {
                VmExit::Hlt { .. } => StopReason::Halted,
                VmExit::Unsupported { rip, what } => StopReason::Unsupported { rip, what },
                // No IDT: an exception ends as a triple fault that names it.
                VmExit::Shutdown { cause } => StopReason::Shutdown(cause),
                other => panic!("the sequence caused an unexpected exit: {other:?}"),
            })
        }
    }

    /// Runs cases on both sides.
    struct Bench {
        jit: Jit,
        ram: GuestRam,
        interp: Interpreter,
    }

    impl Bench {
        fn new() -> Self {
            Bench {
                jit: Jit::new().expect("map the native code page"),
                ram: GuestRam::new(1 << 20).expect("guest RAM"),
                interp: Interpreter::new(),
            }
        }

        /// Initial registers: ESI holds the host buffer's address when memory is used.
        fn initial_regs(&self, case: &Case) -> [u32; 8] {
            let mut regs = case.regs;
            if case.memory {
                regs[MEM_BASE_INDEX] = self.jit.scratch_address();
            }
            regs
        }

        fn native(&mut self, case: &Case) -> Outcome {
            let regs = self.initial_regs(case);
            let mut state = Regs {
                gpr: regs.map(u64::from),
                // IF stays set in user mode whatever POPFQ is given; the rest is clear.
                rflags: u64::from(case.flags) | rflags::FIXED | rflags::IF,
            };
            let mut mem = case.mem;
            self.jit
                .run(case.instructions().copied(), &mut state, &mut mem)
                .expect("run natively");
            Outcome {
                regs: state.gpr.map(|r| r as u32),
                flags: state.rflags as u32,
                mem,
            }
        }

        fn interpreted(&mut self, case: &Case) -> Result<Outcome, StopReason> {
            let regs = self.initial_regs(case);
            let mut code = encode32(case.instructions());
            code.push(HLT);
            let ram = self.ram.as_mut_slice();
            ram[CODE_AT as usize..][..code.len()].copy_from_slice(&code);
            ram[SCRATCH_AT as usize..][..MEM_SIZE].copy_from_slice(&case.mem);
            let mut st = CpuState::multiboot(CODE_AT, 0, 0);
            for (i, r) in regs.iter().enumerate().filter(|(i, _)| *i != 4) {
                st.gpr[i] = u64::from(*r);
            }
            st.rflags = u64::from(case.flags) | rflags::FIXED;
            if case.memory {
                // DS base + ESI = SCRATCH_AT, modulo 4 GiB.
                let base = SCRATCH_AT.wrapping_sub(regs[MEM_BASE_INDEX]);
                st.seg[SegReg::Ds as usize].base = u64::from(base);
            }
            self.interp.set_state(&st);
            match self.interp.run(&mut self.ram, &mut StopAtHlt, BUDGET) {
                StopReason::Halted => {}
                other => return Err(other),
            }
            let st = self.interp.state();
            let mut mem = [0u8; MEM_SIZE];
            mem.copy_from_slice(&self.ram.as_slice()[SCRATCH_AT as usize..][..MEM_SIZE]);
            Ok(Outcome {
                regs: st.gpr[..8]
                    .iter()
                    .map(|&r| r as u32)
                    .collect::<Vec<_>>()
                    .try_into()
                    .expect("8 registers"),
                flags: st.rflags as u32,
                mem,
            })
        }

        fn check(&mut self, case: &Case) -> Verdict {
            let defined = case
                .defined_flags()
                .expect("the generator only emits sequences that read defined flags");
            let native = self.native(case);
            let interp = match self.interpreted(case) {
                Err(StopReason::Unsupported { what, .. }) => return Verdict::Unsupported(what),
                other => other,
            };
            let same = interp.as_ref().is_ok_and(|i| {
                let regs = (0..8).all(|r| r == 4 || i.regs[r] == native.regs[r]);
                regs && (i.flags ^ native.flags) & defined == 0 && i.mem == native.mem
            });
            if same {
                Verdict::Same
            } else {
                Verdict::Differs(Box::new((native, interp)))
            }
        }

        /// Drops units while the case still fails, for a shorter report.
        fn shrink(&mut self, case: &Case) -> Case {
            let mut best = case.clone();
            let mut i = best.units.len();
            while i > 0 {
                i -= 1;
                let mut smaller = best.clone();
                smaller.units.remove(i);
                if smaller.defined_flags().is_some()
                    && matches!(self.check(&smaller), Verdict::Differs(_))
                {
                    best = smaller;
                }
            }
            best
        }
    }

    fn encode32<'a>(insns: impl Iterator<Item = &'a Instruction>) -> Vec<u8> {
        let mut enc = Encoder::new(32);
        let mut ip = u64::from(CODE_AT);
        for ins in insns {
            ip += enc.encode(ins, ip).expect("encode for 32-bit mode") as u64;
        }
        enc.take_buffer()
    }

    fn flag_list(flags: u32) -> String {
        let set: Vec<&str> = FLAG_NAMES
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        if set.is_empty() {
            "-".into()
        } else {
            set.join(" ")
        }
    }

    /// A failure report: the sequence, inputs and every difference.
    fn report(bench: &mut Bench, case: &Case, original_units: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {:#x} (shrunk from {original_units} to {} units): \
             rerun with POPEK_DIFF_SEED={:#x} POPEK_DIFF_CASES=1",
            case.seed,
            case.units.len(),
            case.seed
        );
        let mut fmt = IntelFormatter::new();
        for ins in case.instructions() {
            let mut text = String::new();
            fmt.format(ins, &mut text);
            let bytes: String = encode32(std::iter::once(ins))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = writeln!(s, "    {bytes:<24} {text}");
        }
        let regs = bench.initial_regs(case);
        let _ = write!(s, "  in: ");
        for (i, r) in regs.iter().enumerate().filter(|(i, _)| *i != 4) {
            let _ = write!(s, "{}={r:08x} ", NAMES[i]);
        }
        let _ = writeln!(s, "flags: {}", flag_list(case.flags));
        let touches_memory = case.instructions().any(|i| {
            i.mnemonic() != Mnemonic::Lea
                && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
        });
        if touches_memory {
            let _ = writeln!(s, "  scratch at [esi]: {:02x?}", case.mem);
        }
        let defined = case.defined_flags().unwrap_or(0);
        let Verdict::Differs(pair) = bench.check(case) else {
            let _ = writeln!(s, "  (no longer differs when rerun)");
            return s;
        };
        let (native, interp) = *pair;
        match interp {
            Err(stop) => {
                let _ = writeln!(s, "  interpreter stopped: {stop}");
            }
            Ok(interp) => {
                for i in (0..8).filter(|&i| i != 4 && interp.regs[i] != native.regs[i]) {
                    let _ = writeln!(
                        s,
                        "  {}: native {:08x}  interp {:08x}",
                        NAMES[i], native.regs[i], interp.regs[i]
                    );
                }
                let diff = (interp.flags ^ native.flags) & defined;
                if diff != 0 {
                    let _ = writeln!(
                        s,
                        "  flags {}: native {}  interp {}  (compared: {})",
                        flag_list(diff),
                        flag_list(native.flags & defined),
                        flag_list(interp.flags & defined),
                        flag_list(defined)
                    );
                }
                for i in (0..MEM_SIZE).filter(|&i| interp.mem[i] != native.mem[i]) {
                    let _ = writeln!(
                        s,
                        "  [esi+{i:#x}]: native {:02x}  interp {:02x}",
                        native.mem[i], interp.mem[i]
                    );
                }
            }
        }
        s
    }

    /// Whether the host runs LAHF and SAHF in 64-bit mode (CPUID 0x8000_0001 ECX.0).
    fn lahf_in_long_mode() -> bool {
        use std::arch::x86_64::__cpuid;
        // Leaf 0x8000_0000 says whether the extended leaf is there before it is read.
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 != 0
    }

    pub fn run() {
        let cases = env_u64("POPEK_DIFF_CASES", DEFAULT_CASES);
        let first_seed = env_u64("POPEK_DIFF_SEED", DEFAULT_SEED);
        let lahf = lahf_in_long_mode();
        if !lahf {
            eprintln!("note: the host has no LAHF/SAHF in 64-bit mode; not generating them");
        }
        let table = Table::new(lahf);
        let mut generator = Generator::new(&table);
        let mut bench = Bench::new();
        let start = Instant::now();
        let (mut ran, mut same, mut instructions) = (0u64, 0u64, 0usize);
        let mut unsupported: BTreeMap<String, u64> = BTreeMap::new();
        let mut failures = Vec::new();
        for seed in (0..cases).map(|i| first_seed.wrapping_add(i)) {
            let case = generator.case(seed);
            ran += 1;
            instructions += case.instructions().count();
            match bench.check(&case) {
                Verdict::Same => same += 1,
                Verdict::Unsupported(what) => {
                    let mnemonic = what.split_whitespace().next().unwrap_or("?").to_owned();
                    *unsupported.entry(mnemonic).or_default() += 1;
                }
                Verdict::Differs(_) => {
                    failures.push(case);
                    if failures.len() == MAX_REPORTS {
                        break;
                    }
                }
            }
        }
        let skipped: u64 = unsupported.values().sum();
        eprintln!(
            "differential: {ran} sequences ({instructions} instructions) in {:.2?}: \
             {same} same, {skipped} skipped as unsupported, {} differ; \
             {} candidate units rejected for reading undefined flags",
            start.elapsed(),
            failures.len(),
            generator.rejected
        );
        let forms: Vec<String> = table.sizes().map(|(f, n)| format!("{f:?} {n}")).collect();
        eprintln!("forms per family: {}", forms.join(", "));
        if !unsupported.is_empty() {
            let list: Vec<String> = unsupported
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            eprintln!("first unsupported instruction: {}", list.join(", "));
        }
        let reports: Vec<String> = failures
            .iter()
            .map(|case| {
                let small = bench.shrink(case);
                report(&mut bench, &small, case.units.len())
            })
            .collect();
        assert!(
            reports.is_empty(),
            "{} sequences differ between the host CPU and the interpreter:\n\n{}",
            reports.len(),
            reports.join("\n")
        );
        let fraction = skipped as f64 / ran.max(1) as f64;
        assert!(
            fraction <= MAX_UNSUPPORTED,
            "{:.1}% of sequences hit unsupported instructions (at most {:.1}% allowed)",
            fraction * 100.0,
            MAX_UNSUPPORTED * 100.0
        );
    }
}
