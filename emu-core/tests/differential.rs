//! Differential test of the software engines (the interpreter, and every engine of
//! `testkit::SOFTWARE_ENGINES`) against the host CPU.
//!
//! Thousands of random user-level instruction sequences run twice, natively and on the
//! engine, in two modes. In 32-bit mode the engine runs them encoded for 32-bit
//! protected mode and the host encoded for 64-bit mode (every instruction used means
//! the same there on 32-, 16- and 8-bit registers). In 64-bit mode both run the same
//! bytes at the same addresses: the engine in long mode. In both, flat segments and page
//! tables map the host's buffer page (and in 64-bit mode its code page) to guest RAM,
//! the state the translator translates code in. Every register, every status
//! flag the sequence leaves defined, and the scratch buffer that memory operands use
//! must end up the same. The host CPU is the oracle.
//!
//! Environment: `POPEK_DIFF_MODE` (`32` or `64`; both by default), `POPEK_DIFF_CASES`
//! (sequences per mode) and `POPEK_DIFF_SEED` (the first seed; case `i` uses seed + i).
//! A failure prints the command that reruns just it. The native side needs an x86-64
//! Linux host (MAP_32BIT); elsewhere the test skips.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[path = "differential/generate.rs"]
mod generate;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[path = "differential/native.rs"]
mod native;

#[test]
fn software_engines_match_host_cpu() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    host::run();
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    eprintln!("skipped: host is not x86_64 Linux");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod host {
    use super::generate::{
        env_u64, lahf_in_long_mode, Case, Generator, Mode, Outcome, Table, MEM_BASE_INDEX, MEM_SIZE,
    };
    use super::native::{Jit, Regs};
    use emu_core::cpu::{cr0, cr4, efer, rflags, CpuState, SegReg, Segment, GPR_NAMES};
    use emu_core::engine::Engine;
    use emu_core::exit::{ExitHandler, Flow, StopReason, VmExit};
    use emu_core::memory::GuestRam;
    use emu_core::testkit::{EngineMaker, SOFTWARE_ENGINES};
    use iced_x86::{Encoder, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind};
    use std::collections::BTreeMap;
    use std::fmt::Write;
    use std::time::Instant;

    /// Sequences per mode by default: a few seconds for both in a debug build.
    const DEFAULT_CASES: u64 = 20_000;
    const DEFAULT_SEED: u64 = 0x5EED_0000;
    /// The largest fraction of sequences that may be skipped because the interpreter
    /// does not implement one of their instructions.
    const MAX_UNSUPPORTED: f64 = 0.02;
    /// Failures reported in full (per mode) before the test gives up.
    const MAX_REPORTS: usize = 10;

    /// Where the interpreter runs the sequence: in 32-bit mode at this address, in
    /// 64-bit mode at the host's address, in the page mapped here.
    const CODE_AT: u64 = 0x1000;
    /// Where the engine's scratch buffer lives: the page tables map the host buffer's
    /// page, whose address ESI or RSI holds, here. (Paging rather than a DS base keeps
    /// the segments flat, the state the translator runs translated code in.)
    const SCRATCH_AT: u64 = 0x8000;
    /// The page tables: the PML4 (64-bit) or page directory (32-bit), then the other
    /// tables as they are needed.
    const PAGE_TABLES: u64 = 0x10000;
    const PAGE: u64 = 0x1000;
    const HLT: u8 = 0xF4;
    /// Instructions the interpreter may run before the test calls it a hang.
    const BUDGET: u64 = 10_000;
    const FLAG_NAMES: [(u32, &str); 6] = [
        (rflags::CF as u32, "CF"),
        (rflags::PF as u32, "PF"),
        (rflags::AF as u32, "AF"),
        (rflags::ZF as u32, "ZF"),
        (rflags::SF as u32, "SF"),
        (rflags::OF as u32, "OF"),
    ];

    /// The modes `POPEK_DIFF_MODE` asks for.
    fn modes() -> Vec<Mode> {
        match std::env::var("POPEK_DIFF_MODE") {
            Err(_) => vec![Mode::Protected, Mode::Long],
            Ok(v) => match v.trim() {
                "32" => vec![Mode::Protected],
                "64" => vec![Mode::Long],
                other => panic!("POPEK_DIFF_MODE={other}: expected 32 or 64"),
            },
        }
    }

    /// The name of register `i` in `mode`.
    fn reg_name(mode: Mode, i: usize) -> String {
        match mode {
            Mode::Protected => format!("e{}", &GPR_NAMES[i][1..]),
            Mode::Long => GPR_NAMES[i].to_owned(),
        }
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

    /// Runs cases of one mode on both sides.
    struct Bench {
        mode: Mode,
        jit: Jit,
        ram: GuestRam,
        /// The engine under test, kept from case to case, and its name.
        engine: Box<dyn Engine>,
        name: &'static str,
    }

    impl Bench {
        fn new(mode: Mode, name: &'static str, maker: EngineMaker) -> Self {
            let jit = Jit::new(mode == Mode::Protected).expect("map the native pages");
            let mut ram = GuestRam::new(1 << 20).expect("guest RAM");
            let code_page = match mode {
                Mode::Protected => CODE_AT,
                Mode::Long => jit.body_address() & !(PAGE - 1),
            };
            let ram_bytes = ram.as_mut_slice();
            let mut next = PAGE_TABLES + PAGE;
            map_page(mode, ram_bytes, &mut next, code_page, CODE_AT);
            map_page(
                mode,
                ram_bytes,
                &mut next,
                jit.scratch_address(),
                SCRATCH_AT,
            );
            let engine = maker()(&ram).expect("engine builds");
            Bench {
                mode,
                jit,
                ram,
                engine,
                name,
            }
        }

        /// Initial registers: ESI/RSI holds the host buffer's address when memory is used.
        fn initial_regs(&self, case: &Case) -> [u64; 16] {
            let mut regs = case.regs;
            if case.memory {
                regs[MEM_BASE_INDEX] = self.jit.scratch_address();
            }
            regs
        }

        /// Where the interpreter runs the sequence, and how it is encoded there.
        fn guest_code(&self, case: &Case) -> (u64, Vec<u8>) {
            let ip = match self.mode {
                Mode::Protected => CODE_AT,
                Mode::Long => self.jit.body_address(),
            };
            (ip, encode(self.mode.bitness(), ip, case.instructions()))
        }

        fn native(&mut self, case: &Case) -> Outcome {
            let mut state = Regs {
                gpr: self.initial_regs(case),
                // IF stays set in user mode whatever POPFQ is given; the rest is clear.
                rflags: u64::from(case.flags) | rflags::FIXED | rflags::IF,
            };
            let body = encode(64, self.jit.body_address(), case.instructions());
            let mut mem = case.mem;
            self.jit
                .run(&body, &mut state, &mut mem)
                .expect("run natively");
            Outcome {
                regs: state.gpr,
                flags: state.rflags as u32,
                mem,
            }
        }

        fn interpreted(&mut self, case: &Case) -> Result<Outcome, StopReason> {
            let regs = self.initial_regs(case);
            let (ip, mut code) = self.guest_code(case);
            code.push(HLT);
            // Protected mode runs without paging from CODE_AT; in long mode CODE_AT's
            // page is the one mapped at the host's code page.
            let code_at = (CODE_AT + ip % PAGE) as usize;
            let ram = self.ram.as_mut_slice();
            ram[code_at..][..code.len()].copy_from_slice(&code);
            ram[SCRATCH_AT as usize..][..MEM_SIZE].copy_from_slice(&case.mem);
            let mut st = CpuState::multiboot(0, 0, 0);
            st.rip = ip;
            st.cr0 |= cr0::PG;
            st.cr3 = PAGE_TABLES;
            if self.mode == Mode::Long {
                st.seg.modify(SegReg::Cs, |cs| {
                    cs.attr = (cs.attr | Segment::LONG) & !Segment::DB;
                });
                st.cr4 |= cr4::PAE;
                st.efer = efer::LME | efer::LMA;
            }
            for i in self.mode.compared() {
                st.gpr[i] = regs[i];
            }
            st.rflags = (u64::from(case.flags) | rflags::FIXED).into();
            self.engine.set_state(&st).unwrap();
            match self.engine.run(&self.ram, &mut StopAtHlt, BUDGET) {
                StopReason::Halted => {}
                other => return Err(other),
            }
            let st = self.engine.state().unwrap();
            let mut mem = [0u8; MEM_SIZE];
            mem.copy_from_slice(&self.ram.as_slice()[SCRATCH_AT as usize..][..MEM_SIZE]);
            Ok(Outcome {
                regs: st.gpr,
                flags: st.rflags.get() as u32,
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
            let mask = self.mode.reg_mask();
            let same = interp.as_ref().is_ok_and(|i| {
                let regs = self
                    .mode
                    .compared()
                    .all(|r| (i.regs[r] ^ native.regs[r]) & mask == 0);
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

    /// Maps the 4 KiB page at linear `lin` to `phys` in the page tables of `mode` at
    /// [`PAGE_TABLES`], taking missing tables from `next` on (RAM starts zeroed).
    fn map_page(mode: Mode, ram: &mut [u8], next: &mut u64, lin: u64, phys: u64) {
        // Present, writable, user.
        const FLAGS: u64 = 0b111;
        // 4-level paging in 64-bit mode; 32-bit paging (a page directory and page tables
        // of 1024 four-byte entries) in protected mode.
        let (size, index_bits, upper): (usize, u32, &[u32]) = match mode {
            Mode::Long => (8, 9, &[39, 30, 21]),
            Mode::Protected => (4, 10, &[22]),
        };
        let entry_at = |table: u64, shift: u32| {
            (table + ((lin >> shift) & ((1 << index_bits) - 1)) * size as u64) as usize
        };
        let write = |ram: &mut [u8], at: usize, entry: u64| {
            ram[at..at + size].copy_from_slice(&entry.to_le_bytes()[..size]);
        };
        let mut table = PAGE_TABLES;
        for &shift in upper {
            let at = entry_at(table, shift);
            let mut bytes = [0u8; 8];
            bytes[..size].copy_from_slice(&ram[at..at + size]);
            let entry = u64::from_le_bytes(bytes);
            table = if entry & 1 != 0 {
                entry & !(PAGE - 1)
            } else {
                let fresh = *next;
                *next += PAGE;
                write(ram, at, fresh | FLAGS);
                fresh
            };
        }
        write(ram, entry_at(table, 12), phys | FLAGS);
    }

    /// The instructions encoded for `bitness`-bit code at `ip`.
    fn encode<'a>(bitness: u32, ip: u64, insns: impl Iterator<Item = &'a Instruction>) -> Vec<u8> {
        let mut enc = Encoder::new(bitness);
        let mut ip = ip;
        for ins in insns {
            ip += enc
                .encode(ins, ip)
                .expect("the generator checked the encoding") as u64;
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
        let mode = bench.mode;
        let digits = mode.bitness() as usize / 4;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {}-bit seed {:#x} (shrunk from {original_units} to {} units): rerun with \
             POPEK_DIFF_MODE={} POPEK_DIFF_SEED={:#x} POPEK_DIFF_CASES=1",
            bench.name,
            mode.bitness(),
            case.seed,
            case.units.len(),
            mode.bitness(),
            case.seed
        );
        let mut fmt = IntelFormatter::new();
        let (mut ip, _) = bench.guest_code(case);
        for ins in case.instructions() {
            let mut text = String::new();
            fmt.format(ins, &mut text);
            let bytes = encode(mode.bitness(), ip, std::iter::once(ins));
            ip += bytes.len() as u64;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(s, "    {hex:<30} {text}");
        }
        let regs = bench.initial_regs(case);
        let _ = write!(s, "  in:");
        for (n, i) in mode.compared().enumerate() {
            let sep = if n % 4 == 0 && n > 0 { "\n      " } else { " " };
            let _ = write!(s, "{sep}{}={:0digits$x}", reg_name(mode, i), regs[i]);
        }
        let _ = writeln!(s, "\n      flags: {}", flag_list(case.flags));
        let touches_memory = case.instructions().any(|i| {
            i.mnemonic() != Mnemonic::Lea
                && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
        });
        if touches_memory {
            let _ = writeln!(
                s,
                "  scratch at {:#x}: {:02x?}",
                bench.jit.scratch_address(),
                case.mem
            );
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
                let mask = mode.reg_mask();
                for i in mode
                    .compared()
                    .filter(|&i| (interp.regs[i] ^ native.regs[i]) & mask != 0)
                {
                    let _ = writeln!(
                        s,
                        "  {}: native {:0digits$x}  interp {:0digits$x}",
                        reg_name(mode, i),
                        native.regs[i] & mask,
                        interp.regs[i] & mask
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
                        "  scratch+{i:#x}: native {:02x}  interp {:02x}",
                        native.mem[i], interp.mem[i]
                    );
                }
            }
        }
        s
    }

    /// Runs `cases` sequences of `mode`; returns what went wrong.
    fn run_mode(
        (name, maker): (&'static str, EngineMaker),
        mode: Mode,
        cases: u64,
        first_seed: u64,
        lahf: bool,
    ) -> Vec<String> {
        let table = Table::new(mode, lahf);
        let mut bench = Bench::new(mode, name, maker);
        let mut generator = Generator::new(&table, bench.jit.scratch_address());
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
            "differential, {name} {}-bit: {ran} sequences ({instructions} instructions) in {:.2?}: \
             {same} same, {skipped} skipped as unsupported, {} differ; \
             {} candidate units rejected for reading undefined flags",
            mode.bitness(),
            start.elapsed(),
            failures.len(),
            generator.rejected
        );
        let counters = bench.engine.counters();
        let listed: Vec<String> = counters
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(what, n)| format!("{what} {n}"))
            .collect();
        if !listed.is_empty() {
            eprintln!("{name} counters: {}", listed.join(", "));
        }
        // A translator must run most 32-bit sequences as translated code, or this test
        // would check only the interpreter it falls back to.
        let translated = counters
            .iter()
            .find(|(what, _)| what == "instructions translated")
            .map(|&(_, n)| n);
        let too_few = translated.is_some_and(|n| (n as usize) < instructions / 2);
        let problems_translating = (mode == Mode::Protected && too_few).then(|| {
            format!(
                "{name} 32-bit: only {} of {instructions} instructions ran translated",
                translated.unwrap_or_default()
            )
        });
        let forms: Vec<String> = table.sizes().map(|(f, n)| format!("{f:?} {n}")).collect();
        eprintln!("forms per family: {}", forms.join(", "));
        if !unsupported.is_empty() {
            let list: Vec<String> = unsupported
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            eprintln!("first unsupported instruction: {}", list.join(", "));
        }
        let mut problems: Vec<String> = failures
            .iter()
            .map(|case| {
                let small = bench.shrink(case);
                report(&mut bench, &small, case.units.len())
            })
            .collect();
        let fraction = skipped as f64 / ran.max(1) as f64;
        if fraction > MAX_UNSUPPORTED {
            problems.push(format!(
                "{}-bit: {:.1}% of sequences hit unsupported instructions (at most {:.1}% \
                 allowed)",
                mode.bitness(),
                fraction * 100.0,
                MAX_UNSUPPORTED * 100.0
            ));
        }
        problems.extend(problems_translating);
        problems
    }

    pub fn run() {
        let cases = env_u64("POPEK_DIFF_CASES", DEFAULT_CASES);
        let first_seed = env_u64("POPEK_DIFF_SEED", DEFAULT_SEED);
        let lahf = lahf_in_long_mode();
        if !lahf {
            eprintln!("note: the host has no LAHF/SAHF in 64-bit mode; not generating them");
        }
        let problems: Vec<String> = SOFTWARE_ENGINES
            .iter()
            .flat_map(|&engine| {
                modes()
                    .into_iter()
                    .flat_map(move |mode| run_mode(engine, mode, cases, first_seed, lahf))
            })
            .collect();
        assert!(
            problems.is_empty(),
            "the host CPU and the software engines disagree:\n\n{}",
            problems.join("\n")
        );
    }
}
