//! Far transfers across segments and rings: far JMP and CALL (direct and through call
//! gates), far RET, IRET, SYSENTER/SYSEXIT and SYSCALL/SYSRET, in real mode, 32-bit
//! protected mode and long mode.
//!
//! The tests run on the small kernel of `testkit::kernel` on each software engine with an
//! exit handler that also records the ring transitions the engine reports. Code that ends
//! in ring 0 halts; code that ends in ring 3 runs into `ud2` at "mark", and the #UD stub
//! records where it came from.

use emu_core::cpu::{cr0, rflags, CpuState, SegReg, Segment};
use emu_core::exception::vector;
use emu_core::exit::{ExitHandler, Flow, GuestEvent, RingCause, StopReason, VmExit};
use emu_core::memory::GuestRam;
use emu_core::testkit::kernel::*;
use emu_core::testkit::{EngineMaker, SOFTWARE_ENGINES};
use iced_x86::code_asm::*;
use iced_x86::{Code, IcedError, Instruction};

/// Far more instructions than any test needs.
const BUDGET: u64 = 10_000;
/// A call gate to ring-0 code.
const GATE: u16 = FREE_SLOT | 3;
/// A second code segment, for transfers that change segments without changing rings.
const OTHER_CS: u16 = (FREE_SLOT + 8) | 3;
/// A conforming ring-0 code segment.
const CONFORMING_CS: u16 = FREE_SLOT + 16;
/// 32-bit ring-0 code, for compatibility mode.
const KERNEL_CS32: u16 = FREE_SLOT + 24;

/// Records ring transitions; stops at HLT (nothing can wake the CPU) and triple faults.
#[derive(Default)]
struct Recorder {
    rings: Vec<(u8, u8, RingCause)>,
}

impl ExitHandler for Recorder {
    fn handle(&mut self, exit: VmExit<'_>, _icount: u64) -> Flow {
        match exit {
            VmExit::Hlt { .. } => Flow::Stop(StopReason::Halted),
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            VmExit::Unsupported { rip, what } => Flow::Stop(StopReason::Unsupported { rip, what }),
            VmExit::IoIn { data, .. } => {
                data.fill(0xFF);
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    fn notify(&mut self, event: GuestEvent, _icount: u64) -> Flow {
        if let GuestEvent::RingTransition { from, to, cause } = event {
            self.rings.push((from, to, cause));
        }
        Flow::Continue
    }
}

/// How a run went.
struct Run {
    stop: StopReason,
    state: CpuState,
    record: Record,
    rings: Vec<(u8, u8, RingCause)>,
    program: Program,
}

impl Run {
    /// The run ended in the stub of `v` (it halts), for the instruction at "mark".
    fn assert_fault(&self, v: u8, error: Option<u64>) {
        assert_eq!(
            self.stop,
            StopReason::Halted,
            "run ended with {}",
            self.stop
        );
        assert_eq!(
            self.record.vector,
            Some(v),
            "stub; record {:x?}",
            self.record
        );
        assert_eq!(self.record.error, error, "error code");
        assert_eq!(self.record.eip, self.program.ip("mark"), "saved EIP");
    }

    /// The run halted in ring 0 without an exception.
    fn assert_halted(&self) {
        assert_eq!(
            self.stop,
            StopReason::Halted,
            "run ended with {}",
            self.stop
        );
        assert_eq!(self.record.vector, None, "a stub ran: {:x?}", self.record);
    }

    fn seg(&self, s: SegReg) -> Segment {
        self.state.seg[s as usize]
    }
}

/// Runs from `state` with RAM as it is, on every software engine: they must agree on
/// how the run ended, the final state, the record and the ring transitions.
fn execute(ram: GuestRam, state: &CpuState, program: Program, long: bool) -> Run {
    let mut runs = SOFTWARE_ENGINES.iter().map(|&(name, maker)| {
        let mut copy = GuestRam::new(RAM).expect("guest RAM");
        copy.as_mut_slice().copy_from_slice(ram.as_slice());
        (name, execute_on(maker, copy, state, long))
    });
    let (first, run) = runs.next().expect("a software engine");
    for (name, other) in runs {
        assert_eq!(other.stop, run.stop, "{name} and {first}: stop");
        assert_eq!(other.state, run.state, "{name} and {first}: state");
        assert_eq!(other.record, run.record, "{name} and {first}: record");
        assert_eq!(other.rings, run.rings, "{name} and {first}: rings");
    }
    Run {
        stop: run.stop,
        state: run.state,
        record: run.record,
        rings: run.rings,
        program,
    }
}

/// How one engine ran it (the program is the caller's).
struct EngineRun {
    stop: StopReason,
    state: CpuState,
    record: Record,
    rings: Vec<(u8, u8, RingCause)>,
}

fn execute_on(maker: EngineMaker, ram: GuestRam, state: &CpuState, long: bool) -> EngineRun {
    let mut engine = maker()(&ram).expect("engine builds");
    engine.set_state(state).unwrap();
    let mut recorder = Recorder::default();
    let stop = engine.run(&ram, &mut recorder, BUDGET);
    EngineRun {
        stop,
        state: engine.state().unwrap(),
        record: Record::read(ram.as_slice(), long),
        rings: recorder.rings,
    }
}

/// Installs the kernel and the program, and runs it.
fn run(kernel: &Kernel, program: Program) -> Run {
    let mut ram = GuestRam::new(RAM).expect("guest RAM");
    let state = kernel.install(ram.as_mut_slice(), &program);
    execute(ram, &state, program, kernel.long)
}

fn far_branch(a: &mut Asm, code: Code, selector: u16, offset: u64) -> Result<(), IcedError> {
    a.add_instruction(Instruction::with_far_branch(code, selector, offset as u32)?)
}

// ---- real mode ----

/// Where real-mode test code starts in its segment: far enough that no label address
/// fits an 8-bit immediate (see `assemble_with_labels`).
const REAL_IP: u64 = 0x100;
/// The code segment of the real-mode tests.
const REAL_CS: u16 = ((CODE - REAL_IP) >> 4) as u16;
/// The stack segment of the real-mode tests, and SP.
const REAL_SS: u16 = 0x2000;
const REAL_SP: u64 = 0x1000;

/// Runs 16-bit code at REAL_CS:REAL_IP in real mode.
fn run_real(code: impl Fn(&mut Asm, &dyn Fn(&str) -> u64) -> Result<(), IcedError>) -> Run {
    let program = assemble_with_labels(16, REAL_IP, code);
    let mut ram = GuestRam::new(RAM).expect("guest RAM");
    let at = CODE as usize;
    ram.as_mut_slice()[at..at + program.bytes.len()].copy_from_slice(&program.bytes);
    clear_record(ram.as_mut_slice());
    let real = |selector: u16, type_bits: u16| Segment {
        selector,
        base: (selector as u64) << 4,
        limit: 0xFFFF,
        attr: type_bits | Segment::CODE_DATA | Segment::PRESENT,
    };
    let data = real(0, Segment::TYPE_DATA_RW);
    let mut state = CpuState {
        rflags: rflags::FIXED.into(),
        seg: [data; 6].into(),
        cr0: cr0::ET,
        rip: REAL_IP,
        ..CpuState::default()
    };
    state
        .seg
        .set(SegReg::Cs, real(REAL_CS, Segment::TYPE_CODE_RX));
    state
        .seg
        .set(SegReg::Ss, real(REAL_SS, Segment::TYPE_DATA_RW));
    state.gpr[4] = REAL_SP;
    execute(ram, &state, program, false)
}

#[test]
fn far_call_jmp_and_retf_in_real_mode() {
    // Another segment reaching the same code: 0xF00:x is linear 0xF000 + x.
    const SHIFTED_CS: u16 = REAL_CS - 0x100;
    let r = run_real(|a, ip| {
        far_branch(a, Code::Call_ptr1616, SHIFTED_CS, ip("callee") + 0x1000)?;
        a.label("returned")?;
        // The same place as the label "done", seen from the segment below.
        far_branch(a, Code::Jmp_ptr1616, REAL_CS - 1, ip("done") + 0x10)?;
        a.label("callee")?;
        a.mov(ax, cs)?;
        a.mov(bx, sp)?;
        a.retf()?;
        a.label("done")?;
        a.mov(cx, cs)?;
        a.hlt()
    });
    r.assert_halted();
    assert_eq!(
        r.state.gpr[0] & 0xFFFF,
        SHIFTED_CS as u64,
        "CS in the callee"
    );
    assert_eq!(
        r.state.gpr[3] & 0xFFFF,
        REAL_SP - 4,
        "CALL pushed CS and IP"
    );
    assert_eq!(
        r.state.gpr[1] & 0xFFFF,
        (REAL_CS - 1) as u64,
        "CS after the JMP"
    );
    assert_eq!(r.seg(SegReg::Cs).base, ((REAL_CS - 1) as u64) << 4);
    assert_eq!(r.state.gpr[4], REAL_SP, "RETF popped both");
    assert!(r.rings.is_empty());
}

#[test]
fn iret_in_real_mode_pops_ip_cs_and_flags() {
    let r = run_real(|a, ip| {
        a.push(rflags::CF as u32 | rflags::IF as u32)?;
        a.push(REAL_CS as u32)?;
        a.push(ip("target") as u32)?;
        a.iret()?;
        a.label("target")?;
        a.hlt()
    });
    r.assert_halted();
    assert_eq!(r.state.rip, r.program.ip("target") + 1);
    assert_eq!(
        r.state.rflags & (rflags::CF | rflags::IF),
        rflags::CF | rflags::IF
    );
    assert_eq!(r.state.gpr[4], REAL_SP);
}

// ---- protected mode: direct far transfers ----

#[test]
fn far_jmp_to_conforming_code_keeps_the_cpl() {
    let mut k = Kernel::legacy();
    k.set_descriptor(CONFORMING_CS, &[conforming32(0)]);
    k.set_descriptor(OTHER_CS, &[code32(3)]);
    let program = assemble_with_labels(32, CODE, |a, ip| {
        // The selector's RPL 0 does not matter: conforming code runs at the CPL.
        far_branch(a, Code::Jmp_ptr1632, CONFORMING_CS, ip("conforming"))?;
        a.label("conforming")?;
        a.mov(ebx, cs)?;
        far_branch(a, Code::Jmp_ptr1632, OTHER_CS, ip("other"))?;
        a.label("other")?;
        a.mov(esi, cs)?;
        a.label("mark")?;
        a.ud2()
    });
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    assert_eq!(r.state.gpr[3], (CONFORMING_CS | 3) as u64, "CS RPL = CPL 3");
    assert_eq!(r.state.gpr[6], OTHER_CS as u64);
    assert_eq!(r.record.cs, OTHER_CS as u64);
    assert_eq!(r.rings, [(3, 0, RingCause::Exception(vector::UD))]);
}

#[test]
fn far_jmp_to_more_privileged_code_faults() {
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.label("mark")?;
        far_branch(a, Code::Jmp_ptr1632, KERNEL_CS, ip("mark"))
    });
    let r = run(&Kernel::legacy(), program);
    r.assert_fault(vector::GP, Some(KERNEL_CS as u64));
}

#[test]
fn far_jmp_to_a_not_present_segment_faults() {
    let mut k = Kernel::legacy();
    k.set_descriptor(OTHER_CS, &[absent(code32(3))]);
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.label("mark")?;
        far_branch(a, Code::Jmp_ptr1632, OTHER_CS, ip("mark"))
    });
    let r = run(&k, program);
    r.assert_fault(vector::NP, Some((OTHER_CS & !3) as u64));
}

#[test]
fn far_call_and_retf_within_ring3_through_memory() {
    let mut k = Kernel::legacy();
    k.set_descriptor(OTHER_CS, &[code32(3)]);
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.mov(dword_ptr(USER_DATA), ip("callee") as u32)?;
        a.mov(word_ptr(USER_DATA + 4), OTHER_CS as u32)?;
        a.push(7)?; // one parameter, released by RETF 4
        a.call(fword_ptr(USER_DATA))?;
        a.label("mark")?;
        a.ud2()?;
        a.label("callee")?;
        a.mov(eax, dword_ptr(esp + 4))?; // the caller's CS
        a.mov(ebx, dword_ptr(esp + 8))?; // the parameter
        a.retf_1(4)
    });
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    assert_eq!(r.record.eax, USER_CS as u64);
    assert_eq!(r.state.gpr[3], 7);
    assert_eq!(r.record.cs, USER_CS as u64, "back in the first segment");
    assert_eq!(r.record.esp, Some(USER_STACK), "parameter released");
}

#[test]
fn far_call_whose_push_faults_changes_nothing() {
    let mut k = Kernel::legacy();
    k.set_descriptor(OTHER_CS, &[code32(3)]);
    // The stack sits right above the absent page: the first push faults.
    k.regs[3] = ABSENT + 0x1000;
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.mov(esp, ebx)?;
        a.label("mark")?;
        far_branch(a, Code::Call_ptr1632, OTHER_CS, ip("mark"))
    });
    let r = run(&k, program);
    r.assert_fault(vector::PF, Some(0x6)); // a user write to a page not present
    assert_eq!(r.state.cr2, ABSENT + 0xFFC);
    assert_eq!(r.record.cs, USER_CS as u64, "CS not loaded");
    assert_eq!(r.record.esp, Some(ABSENT + 0x1000), "ESP not moved");
}

// ---- protected mode: call gates, far RET to an outer ring ----

#[test]
fn call_gate_copies_parameters_to_the_inner_stack_and_retf_returns() {
    let mut k = Kernel::legacy();
    let program = assemble(32, CODE, |a| {
        a.push(0x1111)?;
        a.push(0x2222)?;
        far_branch(a, Code::Call_ptr1632, GATE, 0)?; // a gate ignores the offset
        a.label("mark")?;
        a.ud2()?;
        a.label("kernel")?;
        // A ring-0 segment in ES: the return to ring 3 must empty it.
        a.mov(eax, KERNEL_DS as u32)?;
        a.mov(es, ax)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(ebx, dword_ptr(esp + 4))?;
        a.mov(ecx, dword_ptr(esp + 8))?;
        a.mov(edx, dword_ptr(esp + 12))?;
        a.mov(esi, dword_ptr(esp + 16))?;
        a.mov(edi, dword_ptr(esp + 20))?;
        a.mov(ebp, esp)?;
        a.retf_1(8)
    });
    let params = 2;
    k.set_descriptor(
        GATE,
        &[gate(
            system::CALL_GATE,
            3,
            KERNEL_CS,
            program.ip("kernel") as u32,
            params,
        )],
    );
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    let g = &r.state.gpr;
    assert_eq!(r.record.eax, r.program.ip("mark"), "return EIP");
    assert_eq!(g[3], USER_CS as u64, "return CS");
    assert_eq!((g[1], g[2]), (0x2222, 0x1111), "parameters, in their order");
    assert_eq!(g[6], USER_STACK - 8, "caller's ESP");
    assert_eq!(g[7], USER_DS as u64, "caller's SS");
    assert_eq!(g[5], KERNEL_STACK - 24, "ring-0 stack from the TSS");
    assert_eq!(
        r.record.esp,
        Some(USER_STACK),
        "RETF 8 released the parameters"
    );
    assert_eq!(r.record.ss, Some(USER_DS as u64));
    assert_eq!(r.seg(SegReg::Es).selector, 0, "ES emptied on the way out");
    assert_eq!(r.seg(SegReg::Ds).selector, USER_DS, "DS kept");
    assert_eq!(
        r.rings,
        [
            (3, 0, RingCause::CallGate),
            (0, 3, RingCause::FarReturn),
            (3, 0, RingCause::Exception(vector::UD)),
        ]
    );
}

#[test]
fn jmp_through_a_call_gate_never_changes_ring() {
    let mut k = Kernel::legacy();
    k.set_descriptor(GATE, &[gate(system::CALL_GATE, 3, KERNEL_CS, 0, 0)]);
    let program = assemble(32, CODE, |a| {
        a.label("mark")?;
        a.add_instruction(Instruction::with_far_branch(Code::Jmp_ptr1632, GATE, 0)?)
    });
    let r = run(&k, program);
    r.assert_fault(vector::GP, Some(KERNEL_CS as u64));
}

#[test]
fn call_gate_below_the_cpl_faults() {
    let mut k = Kernel::legacy();
    k.set_descriptor(GATE, &[gate(system::CALL_GATE, 0, KERNEL_CS, 0, 0)]);
    let program = assemble(32, CODE, |a| {
        a.label("mark")?;
        a.add_instruction(Instruction::with_far_branch(Code::Call_ptr1632, GATE, 0)?)
    });
    let r = run(&k, program);
    r.assert_fault(vector::GP, Some((GATE & !3) as u64));
    assert_eq!(r.record.esp, Some(USER_STACK), "nothing pushed");
}

#[test]
fn retf_to_an_outer_ring_checks_the_stack_segment() {
    let mut k = Kernel::legacy();
    k.cpl = 0;
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.push((KERNEL_DS | 3) as u32)?; // a ring-0 segment cannot be ring 3's stack
        a.push(USER_STACK as u32)?;
        a.push(USER_CS as u32)?;
        a.push(ip("mark") as u32)?;
        a.label("mark")?;
        a.retf()
    });
    let r = run(&k, program);
    r.assert_fault(vector::GP, Some(KERNEL_DS as u64));
    assert_eq!(r.record.cs, KERNEL_CS as u64, "still in ring 0");
    assert!(r.rings.is_empty(), "{:?}", r.rings);
}

// ---- IRET ----

#[test]
fn iret_to_ring3_and_back_with_int3() {
    let mut k = Kernel::legacy();
    k.cpl = 0;
    let user_flags = rflags::FIXED | rflags::IF | rflags::CF;
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.push(USER_DS as u32)?;
        a.push(USER_STACK as u32)?;
        a.push(user_flags as u32)?;
        a.push(USER_CS as u32)?;
        a.push(ip("user") as u32)?;
        a.iretd()?;
        a.label("user")?;
        a.int3()?;
        a.label("mark")?;
        a.nop()
    });
    let r = run(&k, program);
    r.assert_fault(vector::BP, None);
    assert_eq!(r.record.cs, USER_CS as u64);
    assert_eq!(r.record.eflags, user_flags);
    assert_eq!(r.record.esp, Some(USER_STACK));
    assert_eq!(r.record.ss, Some(USER_DS as u64));
    assert_eq!(
        r.seg(SegReg::Ss).selector,
        KERNEL_DS,
        "back on the ring-0 stack"
    );
    assert_eq!(
        r.rings,
        [
            (0, 3, RingCause::Iret),
            (3, 0, RingCause::SoftwareInterrupt(vector::BP)),
        ]
    );
}

#[test]
fn iret_at_cpl3_cannot_change_iopl_or_if() {
    let program = assemble_with_labels(32, CODE, |a, ip| {
        let wanted = rflags::FIXED | rflags::IOPL | rflags::IF | rflags::CF;
        a.push(wanted as u32)?;
        a.push(USER_CS as u32)?;
        a.push(ip("mark") as u32)?;
        a.iretd()?;
        a.label("mark")?;
        a.ud2()
    });
    let r = run(&Kernel::legacy(), program);
    r.assert_fault(vector::UD, None);
    // The #UD's pushed image has RF set, as every fault's does.
    assert_eq!(
        r.record.eflags,
        rflags::FIXED | rflags::CF | rflags::RF,
        "only CF changed"
    );
    assert_eq!(
        r.record.esp,
        Some(USER_STACK),
        "same ring: no SS:ESP popped"
    );
}

#[test]
fn iret_with_nt_set_is_an_unsupported_task_return() {
    let mut k = Kernel::legacy();
    k.rflags |= rflags::NT;
    let r = run(&k, assemble(32, CODE, |a| a.iretd()));
    assert!(
        matches!(r.stop, StopReason::Unsupported { .. }),
        "{}",
        r.stop
    );
}

#[test]
fn iret_to_virtual_8086_mode_is_unsupported() {
    let mut k = Kernel::legacy();
    k.cpl = 0;
    let program = assemble(32, CODE, |a| {
        for v in [0, 0, 0, 0, USER_DS as u32, USER_STACK as u32] {
            a.push(v)?;
        }
        a.push((rflags::FIXED | rflags::VM) as u32)?;
        a.push(USER_CS as u32)?;
        a.push(0)?;
        a.iretd()
    });
    let r = run(&k, program);
    assert!(
        matches!(r.stop, StopReason::Unsupported { .. }),
        "{}",
        r.stop
    );
}

// ---- SYSENTER/SYSEXIT ----

fn sysenter_kernel() -> Kernel {
    let mut k = Kernel::legacy();
    k.msr.sysenter_cs = KERNEL_CS as u64;
    k.msr.sysenter_esp = KERNEL_STACK;
    k
}

#[test]
fn sysenter_and_sysexit_round_trip() {
    let mut k = sysenter_kernel();
    k.rflags |= rflags::IF;
    let program = assemble_with_labels(32, CODE, |a, ip| {
        a.mov(ecx, esp)?;
        a.mov(edx, ip("mark") as u32)?;
        a.sysenter()?;
        a.label("kernel")?;
        a.mov(eax, cs)?;
        a.mov(ebx, ss)?;
        a.mov(esi, esp)?;
        a.pushfd()?;
        a.pop(edi)?;
        a.sysexit()?;
        a.label("mark")?;
        a.ud2()
    });
    k.msr.sysenter_eip = program.ip("kernel");
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    let g = &r.state.gpr;
    assert_eq!(r.record.eax, KERNEL_CS as u64);
    assert_eq!(g[3], KERNEL_DS as u64, "SS = SYSENTER_CS + 8");
    assert_eq!(g[6], KERNEL_STACK);
    assert_eq!(g[7] & rflags::IF, 0, "SYSENTER clears IF");
    assert_eq!(r.record.cs, USER_CS as u64, "SYSENTER_CS + 16, RPL 3");
    assert_eq!(r.record.ss, Some(USER_DS as u64), "SYSENTER_CS + 24, RPL 3");
    assert_eq!(r.record.esp, Some(USER_STACK));
    assert_eq!(
        r.rings,
        [
            (3, 0, RingCause::Sysenter),
            (0, 3, RingCause::Sysexit),
            (3, 0, RingCause::Exception(vector::UD)),
        ]
    );
}

#[test]
fn sysenter_without_sysenter_cs_faults() {
    let program = assemble(32, CODE, |a| {
        a.label("mark")?;
        a.sysenter()
    });
    let r = run(&Kernel::legacy(), program);
    r.assert_fault(vector::GP, Some(0));
}

#[test]
fn sysexit_at_cpl3_faults() {
    let program = assemble(32, CODE, |a| {
        a.label("mark")?;
        a.sysexit()
    });
    let r = run(&sysenter_kernel(), program);
    r.assert_fault(vector::GP, Some(0));
}

// ---- long mode ----

/// STAR: SYSCALL loads CS = KERNEL_CS (SS = KERNEL_DS); SYSRET CS = USER_CS (32-bit)
/// or USER_CS64, with SS = USER_DS.
const STAR: u64 = ((KERNEL_CS as u64) << 32) | (((USER_CS & !3) as u64) << 48);

fn syscall_kernel() -> Kernel {
    let mut k = Kernel::long();
    k.efer |= emu_core::cpu::efer::SCE;
    k.msr.star = STAR;
    k.msr.fmask = rflags::IF;
    k
}

#[test]
fn syscall_and_sysret_in_long_mode() {
    let mut k = syscall_kernel();
    k.rflags |= rflags::IF | rflags::CF;
    let program = assemble(64, CODE, |a| {
        a.syscall()?;
        a.label("mark")?;
        a.ud2()?;
        a.label("kernel")?;
        a.mov(eax, cs)?;
        a.mov(ebx, ss)?;
        a.mov(r13, rcx)?;
        a.mov(r14, r11)?;
        a.pushfq()?;
        a.pop(r15)?;
        a.sysretq()
    });
    k.msr.lstar = program.ip("kernel");
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    let g = &r.state.gpr;
    let user_flags = rflags::FIXED | rflags::IF | rflags::CF;
    assert_eq!(r.record.eax, KERNEL_CS as u64);
    assert_eq!(g[3], KERNEL_DS as u64, "SS = STAR[47:32] + 8");
    assert_eq!(g[13], r.program.ip("mark"), "RCX = return RIP");
    assert_eq!(g[14], user_flags, "R11 = RFLAGS");
    assert_eq!(g[15], rflags::FIXED | rflags::CF, "SFMASK cleared IF");
    assert_eq!(r.record.cs, USER_CS64 as u64, "STAR[63:48] + 16, RPL 3");
    assert_eq!(r.record.ss, Some(USER_DS as u64), "STAR[63:48] + 8, RPL 3");
    // Recorded by the #UD after SYSRET: RFLAGS from R11, plus the RF every fault pushes.
    assert_eq!(r.record.eflags, user_flags | rflags::RF, "RFLAGS from R11");
    assert_eq!(
        r.rings,
        [
            (3, 0, RingCause::Syscall),
            (0, 3, RingCause::Sysret),
            (3, 0, RingCause::Exception(vector::UD)),
        ]
    );
}

#[test]
fn sysret_to_a_non_canonical_address_faults_in_ring0() {
    let mut k = syscall_kernel();
    k.cpl = 0;
    let program = assemble(64, CODE, |a| {
        a.mov(rcx, 0x0000_8000_0000_0000u64)?;
        a.label("mark")?;
        a.sysretq()
    });
    let r = run(&k, program);
    r.assert_fault(vector::GP, Some(0));
    assert_eq!(r.record.cs, KERNEL_CS as u64);
    assert!(r.rings.is_empty(), "{:?}", r.rings);
}

#[test]
fn syscall_without_efer_sce_is_invalid() {
    let program = assemble(64, CODE, |a| {
        a.label("mark")?;
        a.syscall()
    });
    let r = run(&Kernel::long(), program);
    r.assert_fault(vector::UD, None);
}

#[test]
fn long_mode_call_gate_and_retfq() {
    let mut k = Kernel::long();
    let program = assemble(64, CODE, |a| {
        a.mov(word_ptr(USER_DATA + 8), GATE as u32)?;
        a.call(tword_ptr(USER_DATA))?; // m16:64; a gate ignores the offset
        a.label("mark")?;
        a.ud2()?;
        a.label("kernel")?;
        a.mov(rax, qword_ptr(rsp))?;
        a.mov(rbx, qword_ptr(rsp + 8))?;
        a.mov(rcx, qword_ptr(rsp + 16))?;
        a.mov(rdx, qword_ptr(rsp + 24))?;
        a.mov(rsi, rsp)?;
        a.mov(edi, ss)?;
        a.add_instruction(Instruction::with(Code::Retfq))
    });
    let [low, high] = gate64(system::CALL_GATE, 3, KERNEL_CS, program.ip("kernel"));
    k.set_descriptor(GATE, &[low, high]);
    let r = run(&k, program);
    r.assert_fault(vector::UD, None);
    let g = &r.state.gpr;
    assert_eq!(r.record.eax, r.program.ip("mark"), "return RIP");
    assert_eq!(g[3], USER_CS64 as u64, "return CS");
    assert_eq!(g[1], USER_STACK, "caller's RSP");
    assert_eq!(g[2], USER_DS as u64, "caller's SS");
    assert_eq!(g[6], KERNEL_STACK - 32, "ring-0 stack from the TSS");
    assert_eq!(g[7], 0, "null SS in ring 0");
    assert_eq!(r.record.cs, USER_CS64 as u64);
    assert_eq!(r.record.esp, Some(USER_STACK));
    assert_eq!(r.record.ss, Some(USER_DS as u64));
    assert_eq!(
        r.rings,
        [
            (3, 0, RingCause::CallGate),
            (0, 3, RingCause::FarReturn),
            (3, 0, RingCause::Exception(vector::UD)),
        ]
    );
}

#[test]
fn iretq_to_ring3_and_within_ring0() {
    let mut k = Kernel::long();
    k.cpl = 0;
    const RING0_RSP: u64 = KERNEL_STACK - 0x100;
    let program = assemble_with_labels(64, CODE, |a, ip| {
        // Within ring 0, 64-bit IRET still pops SS:RSP (a null SS is fine there).
        a.push(0)?;
        a.push(RING0_RSP as i32)?;
        a.pushfq()?;
        a.push(KERNEL_CS as i32)?;
        a.push(ip("ring0") as i32)?;
        a.iretq()?;
        a.label("ring0")?;
        a.mov(rbx, rsp)?;
        a.push(USER_DS as i32)?;
        a.push(USER_STACK as i32)?;
        a.push(rflags::FIXED as i32)?;
        a.push(USER_CS64 as i32)?;
        a.push(ip("user") as i32)?;
        a.iretq()?;
        a.label("user")?;
        a.int3()?;
        a.label("mark")?;
        a.nop()
    });
    let r = run(&k, program);
    r.assert_fault(vector::BP, None);
    assert_eq!(r.state.gpr[3], RING0_RSP, "RSP popped within ring 0");
    assert_eq!(r.record.cs, USER_CS64 as u64);
    assert_eq!(r.record.esp, Some(USER_STACK));
    assert_eq!(r.record.ss, Some(USER_DS as u64));
    assert_eq!(
        r.rings,
        [
            (0, 3, RingCause::Iret),
            (3, 0, RingCause::SoftwareInterrupt(vector::BP)),
        ]
    );
}

#[test]
fn far_jmp_from_64bit_to_compatibility_mode_and_back() {
    let mut k = Kernel::long();
    k.cpl = 0;
    k.set_descriptor(KERNEL_CS32, &[code32(0)]);
    // The 32-bit part, after the 64-bit one.
    const COMPAT: u64 = CODE + 0x800;
    let back = assemble(64, CODE, |a| {
        a.mov(dword_ptr(USER_DATA), COMPAT as u32)?;
        a.mov(word_ptr(USER_DATA + 4), KERNEL_CS32 as u32)?;
        a.jmp(fword_ptr(USER_DATA))?; // m16:32
        a.label("back")?;
        a.mov(rcx, 0x1_0000_0000u64)?; // only 64-bit code has 64-bit registers
        a.hlt()
    });
    let compat = assemble(32, COMPAT, |a| {
        a.mov(ebx, cs)?;
        far_branch(a, Code::Jmp_ptr1632, KERNEL_CS, back.ip("back"))
    });
    let mut ram = GuestRam::new(RAM).expect("guest RAM");
    let state = k.install(ram.as_mut_slice(), &back);
    let at = COMPAT as usize;
    ram.as_mut_slice()[at..at + compat.bytes.len()].copy_from_slice(&compat.bytes);
    let r = execute(ram, &state, back, true);
    r.assert_halted();
    assert_eq!(
        r.state.gpr[3], KERNEL_CS32 as u64,
        "ran in compatibility mode"
    );
    assert_eq!(r.state.gpr[1], 0x1_0000_0000, "back in 64-bit mode");
    assert_eq!(r.seg(SegReg::Cs).selector, KERNEL_CS);
}
