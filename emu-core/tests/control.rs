//! The control plane on the interpreter: a machine on its own thread, driven through
//! [`MachineHandle`]s — pause, resume, step, run until an event, registers, memory,
//! breakpoints and watchpoints, counters and trace — and the races between its clients.

#[path = "control/scenarios.rs"]
mod scenarios;

use emu_core::cpu::{CpuState, SegReg};
use emu_core::engine::{DebugConfig, Engine, EngineError, WatchKind, Watchpoint};
use emu_core::exit::{
    DebugStop, DropCause, EngineEvent, ExitHandler, GuestEvent, RingCause, StopOn, StopReason,
};
use emu_core::interp::Assist;
use emu_core::machine::{
    bt_factory, interpreter_factory, ControlError, Machine, MachineError, MachineHandle, Pause,
    Status,
};
use emu_core::memory::GuestRam;
use emu_core::trace::{EventKind, EventMask, Trace};
use iced_x86::code_asm::{dword_ptr, eax, ebx, ecx};
use scenarios::kernel::{assemble, Kernel, Program, ABSENT, CODE, PAGE_TABLES, RAM, USER_DATA};
use scenarios::{finish, resume_and_wait, DEBUG_EXIT, PROMPTLY, RBX, RUN_FIRST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// RAM for the test ROMs.
const ROM_RAM: usize = 16 << 20;
/// Where the flat guests below keep a variable.
const DATA: u64 = 0x2_0000;

/// 32-bit paging-entry bits.
mod pte {
    /// Present.
    pub const P: u32 = 1 << 0;
    /// Writable.
    pub const RW: u32 = 1 << 1;
    /// User.
    pub const US: u32 = 1 << 2;
    /// Accessed: the processor sets it when it uses the entry.
    pub const A: u32 = 1 << 5;
    /// Dirty: the processor sets it when it writes the page.
    pub const D: u32 = 1 << 6;
}

fn interp() -> Box<emu_core::machine::EngineFactory<'static>> {
    interpreter_factory(Assist::None)
}

/// `program`, assembled for 32 bits at [`CODE`], in a flat 32-bit interpreted machine
/// (the state Multiboot leaves), on its own thread.
fn spawn_flat(
    program: &Program,
    max_instructions: Option<u64>,
) -> (MachineHandle, JoinHandle<Machine>) {
    let mut m = Machine::interpreted(RAM, Box::new(std::io::sink())).unwrap();
    m.write_physical(CODE, &program.bytes).unwrap();
    m.set_cpu_state(&CpuState::multiboot(CODE as u32, 0, 0))
        .unwrap();
    MachineHandle::spawn(m, max_instructions).unwrap()
}

/// An embedded ROM booted in an interpreted machine whose COM1 writes to the buffer.
fn rom_machine(name: &str, cmdline: &str) -> (Machine, devices::SharedBuffer) {
    let rom = test_roms::find(name).expect("the ROM is embedded");
    let serial = devices::SharedBuffer::new();
    let mut m = Machine::interpreted(ROM_RAM, Box::new(serial.clone())).unwrap();
    m.load_multiboot(rom.image, cmdline).unwrap();
    (m, serial)
}

fn read_u32(
    h: &MachineHandle,
    read: impl Fn(&MachineHandle) -> Result<Vec<u8>, ControlError>,
) -> u32 {
    let bytes = read(h).unwrap();
    u32::from_le_bytes(bytes[..4].try_into().unwrap())
}

// ---- the scenarios every engine passes ----

#[test]
fn a_spinning_guest_is_paused_from_another_thread_changed_and_resumed() {
    let slowest = scenarios::pause_write_resume(interp());
    println!("interp: slowest pause {slowest:?}");
}

#[test]
fn code_written_into_a_running_loop_is_executed() {
    scenarios::code_written_while_running(interp());
}

#[test]
fn breakpoint_watchpoint_and_steps() {
    assert!(scenarios::stops_at_a_ring3_breakpoint(interp()));
    scenarios::breakpoint_watchpoint_and_steps(interp());
}

// ---- memory through the guest's page tables ----

#[test]
fn reading_guest_virtual_memory_leaves_no_trace_in_the_guest() {
    /// The page the debugger reads and the guest later remaps.
    const X: u64 = USER_DATA;
    /// The page the guest maps at X: the one the test kernel maps read-only.
    const OTHER: u64 = USER_DATA + 0x1000;
    /// X's entry in the legacy kernel's page table (the second of its two levels).
    const PTE_X: u64 = PAGE_TABLES + 0x1000 + (X >> 12) * 4;
    /// What X and OTHER hold.
    const IN_X: u32 = 0x11;
    const IN_OTHER: u32 = 0x22;
    /// CR2 before anything happens.
    const CR2: u64 = 0xC2C2_0000;
    // At CPL 0: spin until told, then point X at OTHER without INVLPG, read X, exit
    // with what it read. A TLB entry for X would make it read the old page.
    let program = assemble(32, CODE, |a| {
        let spin = a.target("spin");
        a.label("spin")?;
        a.test(ebx, ebx)?;
        a.jz(spin)?;
        a.mov(dword_ptr(PTE_X), OTHER as u32 | pte::P | pte::RW | pte::US)?;
        a.mov(eax, dword_ptr(X))?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let mut kernel = Kernel::legacy();
    kernel.cpl = 0;
    let mut m = Machine::interpreted(RAM, Box::new(std::io::sink())).unwrap();
    let mut state = kernel.install(m.ram_mut().as_mut_slice(), &program);
    state.cr2 = CR2;
    m.set_cpu_state(&state).unwrap();
    m.write_physical(X, &IN_X.to_le_bytes()).unwrap();
    m.write_physical(OTHER, &IN_OTHER.to_le_bytes()).unwrap();
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();

    h.resume().unwrap();
    std::thread::sleep(RUN_FIRST);
    h.pause().unwrap();
    let page_tables = |h: &MachineHandle| h.read_physical(PAGE_TABLES, 0x2000).unwrap();
    let before = page_tables(&h);
    let pte_x = read_u32(&h, |h| h.read_physical(PTE_X, 4));
    assert_eq!(pte_x & (pte::A | pte::D), 0, "the guest never touched X");

    assert_eq!(read_u32(&h, |h| h.read_linear(X, 4)), IN_X);
    // Across a page boundary, and a page that is not mapped.
    let across = h.read_linear(X - 2, 4).unwrap();
    assert_eq!(across[2..], IN_X.to_le_bytes()[..2]);
    let walk = h.translate(X + 0x123).unwrap();
    assert_eq!((walk.phys, walk.page_bits, walk.depth), (X + 0x123, 12, 2));
    assert!(matches!(
        h.read_linear(ABSENT, 4),
        Err(ControlError::Machine(MachineError::NotMapped {
            addr: ABSENT,
            ..
        }))
    ));
    // A debugger's write goes through the page tables too, without a dirty bit.
    h.write_linear(X + 4, &[0xAB]).unwrap();
    assert_eq!(h.read_physical(X + 4, 1).unwrap(), [0xAB]);

    assert_eq!(page_tables(&h), before, "no accessed or dirty bit changed");
    assert_eq!(h.registers().unwrap().cr2, CR2);

    let mut regs = h.registers().unwrap();
    regs.gpr[RBX] = 1;
    h.set_registers(regs).unwrap();
    // No TLB entry for X: the guest reads the page it mapped there.
    assert_eq!(
        resume_and_wait(&h),
        Status::Finished(StopReason::Exited(IN_OTHER))
    );
    let pte_x = read_u32(&h, |h| h.read_physical(PTE_X, 4));
    assert_eq!(pte_x & pte::A, pte::A, "the guest's own read sets A");
    finish(h, thread);
}

// ---- stepping and running until ----

#[test]
fn single_steps_retire_one_instruction_each_at_the_expected_addresses() {
    let program = assemble(32, CODE, |a| {
        let top = a.target("top");
        a.label("l0")?;
        a.nop()?;
        a.label("l1")?;
        a.mov(eax, 1)?;
        a.label("top")?;
        a.inc(ebx)?;
        a.label("l3")?;
        a.add(eax, ebx)?;
        a.label("l4")?;
        a.cmp(ebx, 3)?;
        a.label("l5")?;
        a.jne(top)?;
        a.label("l6")?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let (h, thread) = spawn_flat(&program, None);
    let start = h.instructions_retired().unwrap();
    let mut path = vec!["l1"];
    for _ in 0..3 {
        path.extend(["top", "l3", "l4", "l5"]);
    }
    path.push("l6");
    for (i, label) in path.iter().enumerate() {
        assert_eq!(h.step(1).unwrap(), Status::Paused(Pause::StepDone));
        assert_eq!(
            h.registers().unwrap().rip,
            program.ip(label),
            "step {}",
            i + 1
        );
        assert_eq!(h.instructions_retired().unwrap(), start + i as u64 + 1);
    }
    // A step of nothing changes nothing.
    assert_eq!(h.step(0).unwrap(), Status::Paused(Pause::StepDone));
    assert_eq!(h.registers().unwrap().rip, program.ip("l6"));
    // The last instruction ends the guest: 1 + (1+2+3) = 7.
    assert_eq!(h.step(5).unwrap(), Status::Finished(StopReason::Exited(7)));
    assert!(matches!(
        h.step(1),
        Err(ControlError::Finished(StopReason::Exited(7)))
    ));
    finish(h, thread);
}

#[test]
fn a_step_of_many_instructions_retires_exactly_that_many() {
    let (m, _) = rom_machine("loop", "loop iters=100000000");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    // A stop request raised between runs is not a reason to stop.
    h.call(|m| m.stop_request().request()).unwrap();
    assert_eq!(h.step(1000).unwrap(), Status::Paused(Pause::StepDone));
    assert_eq!(h.instructions_retired().unwrap(), 1000);
    // Requests served during the step cut its runs short: it makes up for them.
    let quit = Arc::new(AtomicBool::new(false));
    let hammer = hammer(&h, &quit);
    const MANY: u64 = 30_000_000;
    assert_eq!(h.step(MANY).unwrap(), Status::Paused(Pause::StepDone));
    quit.store(true, Ordering::SeqCst);
    let served = hammer.join().unwrap();
    assert!(
        served > 10,
        "only {served} requests were served during the step"
    );
    assert_eq!(h.instructions_retired().unwrap(), 1000 + MANY);
    finish(h, thread);
}

/// A client that reads registers and counters until `quit`; how many it read.
fn hammer(h: &MachineHandle, quit: &Arc<AtomicBool>) -> JoinHandle<u64> {
    let (h, quit) = (h.clone(), Arc::clone(quit));
    std::thread::spawn(move || {
        let mut served = 0;
        while !quit.load(Ordering::SeqCst) {
            h.registers().unwrap();
            h.counters().unwrap();
            served += 1;
        }
        served
    })
}

/// The linear address of the handler of IDT vector `vector`, read through the handle
/// from the guest's 32-bit interrupt gate.
fn gate_offset(h: &MachineHandle, regs: &CpuState, vector: u64) -> u64 {
    /// A 32-bit gate descriptor's size.
    const GATE: u64 = 8;
    let g = h
        .read_linear(regs.idtr.base + vector * GATE, GATE as usize)
        .unwrap();
    u64::from(u16::from_le_bytes([g[0], g[1]])) | u64::from(u16::from_le_bytes([g[6], g[7]])) << 16
}

#[test]
fn run_until_a_ring_change_stops_at_the_first_instruction_of_the_new_ring() {
    /// The `rings` ROM's system call vector.
    const SYSCALL: u8 = 0x80;
    let (reference, reference_out) = rom_machine("rings", "rings");
    let mut reference = reference;
    assert_eq!(reference.run(u64::MAX).stop, StopReason::Exited(0));

    let (m, serial) = rom_machine("rings", "rings");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.set_trace_mask(EventMask::RINGS).unwrap();
    let rings = StopOn {
        ring_change: true,
        ..StopOn::default()
    };
    h.run_until(rings).unwrap();
    let to_user = GuestEvent::RingTransition {
        from: 0,
        to: 3,
        cause: RingCause::Iret,
    };
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Paused(Pause::Debug(DebugStop::Event(to_user)))
    );
    let cpl = |h: &MachineHandle| h.registers().unwrap().seg[SegReg::Cs as usize].selector & 3;
    assert_eq!(cpl(&h), 3);

    h.run_until(rings).unwrap();
    let to_kernel = GuestEvent::RingTransition {
        from: 3,
        to: 0,
        cause: RingCause::SoftwareInterrupt(SYSCALL),
    };
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Paused(Pause::Debug(DebugStop::Event(to_kernel)))
    );
    let regs = h.registers().unwrap();
    assert_eq!(cpl(&h), 0);
    let handler = gate_offset(&h, &regs, u64::from(SYSCALL));
    assert_eq!(
        regs.seg[SegReg::Cs as usize].base + regs.rip,
        handler,
        "at the handler's first instruction"
    );
    // The trace's latest events are the two transitions.
    let events: Vec<_> = h
        .trace_events(2)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        events,
        [
            EventKind::Guest(GuestEvent::RingTransition {
                from: 0,
                to: 3,
                cause: RingCause::Iret
            }),
            EventKind::Guest(GuestEvent::RingTransition {
                from: 3,
                to: 0,
                cause: RingCause::SoftwareInterrupt(SYSCALL)
            }),
        ]
    );
    assert_eq!(
        h.counters().unwrap().ring_transitions.get(&(3, 0)),
        Some(&1)
    );

    // Resumed with nothing to stop at, it runs to its end as if never stopped.
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(0)));
    assert_eq!(serial.contents(), reference_out.contents());
    assert_eq!(
        h.instructions_retired().unwrap(),
        reference.instructions_retired()
    );
    finish(h, thread);
}

#[test]
fn breakpoints_and_watchpoints_stop_where_they_should_and_resuming_moves_on() {
    let program = assemble(32, CODE, |a| {
        let top = a.target("top");
        a.label("top")?;
        a.inc(ebx)?;
        a.label("store")?;
        a.mov(dword_ptr(DATA), ebx)?;
        a.label("cmp")?;
        a.cmp(ebx, 5)?;
        a.jne(top)?;
        a.mov(eax, ebx)?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let (h, thread) = spawn_flat(&program, None);
    let store = program.ip("store");
    let data = |h: &MachineHandle| read_u32(h, |h| h.read_physical(DATA, 4));
    h.add_breakpoint(store).unwrap();
    for round in 1..=2 {
        assert_eq!(
            resume_and_wait(&h),
            Status::Paused(Pause::Debug(DebugStop::Breakpoint { addr: store }))
        );
        let regs = h.registers().unwrap();
        assert_eq!((regs.rip, regs.gpr[RBX]), (store, round), "round {round}");
        assert_eq!(data(&h), round as u32 - 1, "the store has not run");
    }
    assert!(h.remove_breakpoint(store).unwrap());
    assert!(!h.remove_breakpoint(store).unwrap());
    let watch = Watchpoint {
        addr: DATA,
        len: 4,
        kind: WatchKind::Write,
    };
    h.add_watchpoint(watch).unwrap();
    assert_eq!(
        resume_and_wait(&h),
        Status::Paused(Pause::Debug(DebugStop::Watchpoint {
            addr: DATA,
            len: 4,
            write: true
        }))
    );
    let regs = h.registers().unwrap();
    assert_eq!((regs.rip, regs.gpr[RBX]), (program.ip("cmp"), 2));
    assert_eq!(data(&h), 2, "the store completed");
    assert!(h.remove_watchpoint(watch).unwrap());
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(5)));
    finish(h, thread);
}

#[test]
fn a_breakpoint_where_a_run_was_cut_short_for_a_request_still_stops_it() {
    /// The outer loop: INC, NOP, MOV, JMP and the inner loop's 2 x INNER instructions
    /// make exactly one poll interval, so the run looks at the stop request exactly when
    /// it is back at the breakpoint, before it looks for the breakpoint.
    const INNER: u32 = (emu_core::stop::POLL_INTERVAL as u32 - 4) / 2;
    let program = assemble(32, CODE, |a| {
        let (top, inner) = (a.target("top"), a.target("inner"));
        a.label("top")?;
        a.inc(ebx)?;
        a.nop()?;
        a.mov(ecx, INNER)?;
        a.label("inner")?;
        a.dec(ecx)?;
        a.jnz(inner)?;
        a.jmp(top)
    });
    let (h, thread) = spawn_flat(&program, None);
    let top = program.ip("top");
    h.add_breakpoint(top).unwrap();
    let quit = Arc::new(AtomicBool::new(false));
    let hammer = hammer(&h, &quit);
    for round in 1..=30 {
        assert_eq!(
            resume_and_wait(&h),
            Status::Paused(Pause::Debug(DebugStop::Breakpoint { addr: top }))
        );
        // Once round the loop per stop: no visit of the breakpoint was missed.
        assert_eq!(h.registers().unwrap().gpr[RBX], round);
    }
    quit.store(true, Ordering::SeqCst);
    hammer.join().unwrap();
    finish(h, thread);
}

// ---- several clients, the budget ----

#[test]
fn clients_at_once_do_not_change_what_the_guest_computes() {
    const CMDLINE: &str = "loop iters=40000000";
    let (mut reference, reference_out) = rom_machine("loop", CMDLINE);
    assert_eq!(reference.run(u64::MAX).stop, StopReason::Exited(0));

    let (m, serial) = rom_machine("loop", CMDLINE);
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    let quit = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2).map(|_| hammer(&h, &quit)).collect();
    // Running before the third client starts: a machine paused at its start is not
    // one this client paused, and may be resumed by the first while it looks.
    h.resume().unwrap();
    // A third client pauses and resumes, checking that paused means still.
    let pauser = {
        let h = h.clone();
        std::thread::spawn(move || {
            let mut pauses = 0;
            while let Status::Paused(pause) = h.pause().unwrap() {
                assert_eq!(pause, Pause::Requested);
                let rip = h.registers().unwrap().rip;
                let retired = h.instructions_retired().unwrap();
                std::thread::sleep(Duration::from_millis(1));
                assert_eq!(h.registers().unwrap().rip, rip);
                assert_eq!(h.instructions_retired().unwrap(), retired);
                pauses += 1;
                h.resume().unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            pauses
        })
    };
    let end = loop {
        match h.wait(PROMPTLY).unwrap() {
            // Paused by the other client, for a moment.
            Status::Paused(Pause::Requested) | Status::Running => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => break other,
        }
    };
    assert_eq!(end, Status::Finished(StopReason::Exited(0)));
    assert!(pauser.join().unwrap() > 3);
    quit.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 10);
    }
    assert_eq!(serial.contents(), reference_out.contents());
    assert_eq!(
        h.instructions_retired().unwrap(),
        reference.instructions_retired()
    );
    assert_eq!(h.registers().unwrap(), reference.cpu_state().unwrap());
    finish(h, thread);
}

#[test]
fn the_whole_run_budget_holds_across_pauses_and_resumes() {
    const BUDGET: u64 = 25_000_000;
    let (m, _) = rom_machine("loop", "loop iters=100000000");
    let (h, thread) = MachineHandle::spawn(m, Some(BUDGET)).unwrap();
    h.resume().unwrap();
    let mut pauses = 0;
    while let Status::Paused(Pause::Requested) = h.pause().unwrap() {
        pauses += 1;
        h.resume().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Finished(StopReason::Budget)
    );
    assert!(pauses > 3, "paused {pauses} times");
    assert_eq!(h.instructions_retired().unwrap(), BUDGET);
    finish(h, thread);
}

// ---- robustness ----

#[test]
fn a_client_dropping_its_handle_leaves_the_others_working() {
    let (m, _) = rom_machine("loop", "loop iters=1000000000");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.resume().unwrap();
    let client = {
        let h = h.clone();
        std::thread::spawn(move || {
            assert_eq!(h.status().unwrap(), Status::Running);
            h.counters().unwrap();
            // Dropped here, the guest still running.
        })
    };
    client.join().unwrap();
    std::thread::sleep(RUN_FIRST);
    assert_eq!(h.status().unwrap(), Status::Running);
    assert_eq!(h.pause().unwrap(), Status::Paused(Pause::Requested));
    h.resume().unwrap();
    // Dropping the last handle ends the thread, running guest or not, and gives the
    // machine back.
    drop(h);
    let m = thread.join().unwrap();
    assert!(m.instructions_retired() > 0);
}

#[test]
fn a_finished_guest_can_be_inspected_but_not_run() {
    let (m, serial) = rom_machine("hello", "hello");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    let end = Status::Finished(StopReason::Exited(0));
    assert_eq!(resume_and_wait(&h), end);
    assert!(!serial.contents().is_empty());
    assert!(matches!(
        h.resume(),
        Err(ControlError::Finished(StopReason::Exited(0)))
    ));
    assert!(matches!(h.step(1), Err(ControlError::Finished(_))));
    // A pause that comes after the end says so.
    assert_eq!(h.pause().unwrap(), end);
    let regs = h.registers().unwrap();
    assert_eq!(h.read_linear(regs.rip, 1).unwrap().len(), 1);
    assert!(h.counters().unwrap().total_exits() > 0);
    assert_eq!(h.status().unwrap(), end);
    finish(h, thread);
}

#[test]
fn a_pause_as_the_guest_finishes_is_either_a_pause_or_the_end() {
    let (mut reference, reference_out) = rom_machine("hello", "hello");
    let end = Status::Finished(reference.run(u64::MAX).stop);
    let (mut paused, mut finished) = (0, 0);
    for delay in 0..40 {
        let (m, serial) = rom_machine("hello", "hello");
        let (h, thread) = MachineHandle::spawn(m, None).unwrap();
        h.resume().unwrap();
        std::thread::sleep(Duration::from_micros(delay * 5));
        match h.pause().unwrap() {
            Status::Paused(Pause::Requested) => {
                paused += 1;
                assert_eq!(resume_and_wait(&h), end);
            }
            status => {
                finished += 1;
                assert_eq!(status, end);
            }
        }
        assert_eq!(serial.contents(), reference_out.contents());
        finish(h, thread);
    }
    println!("{paused} paused, {finished} finished first");
}

#[test]
fn quit_while_running_ends_the_thread_for_every_client() {
    let (m, _) = rom_machine("loop", "loop iters=1000000000");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    let other = h.clone();
    h.resume().unwrap();
    std::thread::sleep(RUN_FIRST);
    // A client waiting for a stop is told the thread ended.
    let waiter = {
        let h = h.clone();
        std::thread::spawn(move || h.wait(PROMPTLY))
    };
    h.quit().unwrap();
    assert!(matches!(other.status(), Err(ControlError::Gone)));
    let m = thread.join().unwrap();
    assert!(m.instructions_retired() > 0);
    assert!(matches!(waiter.join().unwrap(), Err(ControlError::Gone)));
    assert!(matches!(other.pause(), Err(ControlError::Gone)));
    assert!(matches!(other.registers(), Err(ControlError::Gone)));
    assert!(matches!(other.quit(), Err(ControlError::Gone)));
}

#[test]
fn a_panicking_request_fails_alone() {
    let (m, _) = rom_machine("loop", "loop iters=1000000000");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.resume().unwrap();
    let failed = h.call(|_| -> u32 { panic!("a lab script's bug") });
    assert!(
        matches!(&failed, Err(ControlError::Panicked(why)) if why == "a lab script's bug"),
        "{failed:?}"
    );
    assert_eq!(h.status().unwrap(), Status::Running);
    assert_eq!(h.pause().unwrap(), Status::Paused(Pause::Requested));
    finish(h, thread);
}

/// An engine that panics when run: a machine thread dying under its clients.
struct Panicking;

impl Engine for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }

    fn run(&mut self, _: &GuestRam, _: &mut dyn ExitHandler, _: u64) -> StopReason {
        panic!("the engine broke");
    }

    fn state(&self) -> Result<CpuState, EngineError> {
        Ok(CpuState::default())
    }

    fn set_state(&mut self, _: &CpuState) -> Result<(), EngineError> {
        Ok(())
    }

    fn instructions_retired(&self) -> u64 {
        0
    }

    fn set_debug(&mut self, _: &DebugConfig) -> Result<(), EngineError> {
        Ok(())
    }
}

#[test]
fn a_machine_thread_that_died_is_an_error_not_a_hang() {
    let m = Machine::new(
        RAM,
        Box::new(std::io::sink()),
        Box::new(|_| Ok(Box::new(Panicking))),
    )
    .unwrap();
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.resume().unwrap();
    assert!(matches!(h.wait(PROMPTLY), Err(ControlError::Gone)));
    assert!(matches!(h.pause(), Err(ControlError::Gone)));
    assert!(matches!(h.step(1), Err(ControlError::Gone)));
    assert!(thread.join().is_err(), "the thread panicked");
}

#[test]
fn engines_switch_at_a_pause_only() {
    let (m, serial) = rom_machine("hello", "hello");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    assert_eq!(h.step(100).unwrap(), Status::Paused(Pause::StepDone));
    h.switch_engine(interpreter_factory(Assist::Vtx)).unwrap();
    assert_eq!(h.instructions_retired().unwrap(), 100);
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(0)));
    assert!(String::from_utf8_lossy(&serial.contents()).contains("Hello"));
    finish(h, thread);

    let (m, _) = rom_machine("loop", "loop iters=1000000000");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.resume().unwrap();
    assert!(matches!(
        h.switch_engine(interp()),
        Err(ControlError::Running)
    ));
    assert!(matches!(h.step(1), Err(ControlError::Running)));
    h.quit().unwrap();
    thread.join().unwrap();
}

#[test]
fn the_translators_counters_and_trace_events_reach_clients() {
    let (m, _) = rom_machine("smc", "smc");
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    assert_eq!(
        h.engine_counters().unwrap(),
        Vec::new(),
        "the interpreter has none"
    );
    h.switch_engine(bt_factory()).unwrap();
    h.set_trace_mask(EventMask::ENGINE).unwrap();
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(0)));
    let counters = h.engine_counters().unwrap();
    let count = |name: &str| {
        counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name:?} in {counters:?}"))
    };
    assert!(count("blocks translated") > 0);
    assert!(count("translation flushes: code written") > 0);
    let events = h.trace_events(Trace::DEFAULT_CAPACITY).unwrap();
    assert!(events.iter().all(|e| e.kind.mask() == EventMask::ENGINE));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::Engine(EngineEvent::BlockTranslated { instructions, host_bytes, .. })
            if instructions > 0 && host_bytes > 0
    )));
    assert!(events.iter().any(|e| e.kind
        == EventKind::Engine(EngineEvent::TranslationsDropped {
            cause: DropCause::CodeWritten
        })));
    finish(h, thread);
}
