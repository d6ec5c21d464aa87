//! Stopping a running machine from outside ([`StopRequest`]): the run ends at an
//! instruction boundary with [`StopReason::Paused`], and the next run continues exactly
//! where it stopped.

use devices::SharedBuffer;
use emu_core::cpu::CpuState;
use emu_core::engine::Engine;
use emu_core::exit::{ExitHandler, Flow, InterruptPoll, StopReason, VmExit};
use emu_core::interp::Interpreter;
use emu_core::machine::Machine;
use emu_core::memory::GuestRam;
use emu_core::stop::{StopRequest, POLL_INTERVAL};
use iced_x86::code_asm::*;
use std::sync::Arc;
use std::time::Duration;

/// Where the guest's code goes (and starts), as for a Multiboot kernel.
const CODE: u64 = 0x10_0000;
/// Guest RAM.
const RAM: usize = 2 << 20;
/// COM1's transmit register and the debug-exit port.
const COM1: u32 = devices::COM1_BASE as u32;
const DEBUG_EXIT: u32 = devices::DEBUG_EXIT_BASE as u32;
/// The counting guest's iterations: some 40 million instructions, long enough for
/// another thread to catch it running.
const ITERATIONS: u32 = 8_000_000;
/// It prints a digit every this many iterations (a power of two).
const PRINT_EVERY: u32 = 1 << 20;

fn assemble(build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).expect("assembler");
    build(&mut a).expect("guest assembles");
    a.assemble(CODE).expect("guest encodes")
}

/// Counts down from [`ITERATIONS`], folding the counter into a checksum and printing a
/// digit every [`PRINT_EVERY`] iterations; prints the checksum's four bytes and exits
/// with 0. No timer: nothing but the stop request makes the interpreter look up.
fn counter() -> Vec<u8> {
    assemble(|a| {
        let mut top = a.create_label();
        let mut quiet = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(ecx, ITERATIONS)?;
        a.mov(edx, COM1)?;
        a.set_label(&mut top)?;
        a.add(ebx, ecx)?;
        a.rol(ebx, 3)?;
        a.test(ecx, PRINT_EVERY - 1)?;
        a.jnz(quiet)?;
        a.mov(eax, ecx)?;
        a.shr(eax, PRINT_EVERY.trailing_zeros())?;
        a.add(eax, u32::from(b'0'))?;
        a.out(dx, al)?;
        a.set_label(&mut quiet)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        for _ in 0..4 {
            a.mov(al, bl)?;
            a.out(dx, al)?;
            a.shr(ebx, 8)?;
        }
        a.xor(eax, eax)?;
        a.out(DEBUG_EXIT, eax)
    })
}

fn machine(code: &[u8]) -> (Machine, SharedBuffer) {
    let serial = SharedBuffer::new();
    let mut m = Machine::interpreted(RAM, Box::new(serial.clone())).expect("machine");
    let at = CODE as usize;
    m.ram_mut().as_mut_slice()[at..at + code.len()].copy_from_slice(code);
    m.set_cpu_state(&CpuState::multiboot(CODE as u32, 0, 0))
        .unwrap();
    (m, serial)
}

#[test]
fn a_guest_stopped_from_another_thread_resumes_where_it_stopped() {
    let code = counter();
    let (mut whole, whole_out) = machine(&code);
    let end = whole.run(u64::MAX);
    assert_eq!(end.stop, StopReason::Exited(0));

    let (mut m, out) = machine(&code);
    let stop = m.stop_request();
    let requester = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        stop.request();
    });
    let first = m.run(u64::MAX);
    requester.join().unwrap();
    assert_eq!(first.stop, StopReason::Paused);
    assert!(
        first.instructions > 0 && first.instructions < end.instructions,
        "paused after {} of {} instructions",
        first.instructions,
        end.instructions
    );
    // Paused promptly: the interpreter looks at least every POLL_INTERVAL instructions,
    // well under a millisecond.
    assert!(first.wall < Duration::from_secs(5), "{:?}", first.wall);
    assert!(whole_out.contents().starts_with(&out.contents()));

    let second = m.run(u64::MAX);
    assert_eq!(second.stop, StopReason::Exited(0));
    assert_eq!(first.instructions + second.instructions, end.instructions);
    assert_eq!(out.contents(), whole_out.contents());
    assert_eq!(m.cpu_state().unwrap(), whole.cpu_state().unwrap());
}

#[test]
fn a_request_before_the_run_stops_it_at_once_and_only_once() {
    let (mut m, _) = machine(&counter());
    m.stop_request().request();
    let first = m.run(u64::MAX);
    assert_eq!((first.stop, first.instructions), (StopReason::Paused, 0));
    // Taken by that run: the next one goes on.
    assert_eq!(m.run(1000).stop, StopReason::Budget);
}

/// Records the instruction count of every interrupt poll, and raises its stop request
/// at the third.
struct PollRecorder {
    stop: Arc<StopRequest>,
    polls: Vec<u64>,
}

impl ExitHandler for PollRecorder {
    fn handle(&mut self, _exit: VmExit<'_>, _icount: u64) -> Flow {
        Flow::Continue
    }

    fn poll_interrupts(&mut self, icount: u64) -> InterruptPoll {
        self.polls.push(icount);
        if self.polls.len() == 3 {
            self.stop.request();
        }
        InterruptPoll {
            pending: false,
            next_poll: u64::MAX,
            next_poll_at: None,
        }
    }

    fn stop_request(&self) -> Option<Arc<StopRequest>> {
        Some(Arc::clone(&self.stop))
    }
}

#[test]
fn with_no_timer_the_interpreter_still_looks_every_poll_interval() {
    // spin: jmp spin
    let code = assemble(|a| {
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    let mut ram = GuestRam::new(RAM).unwrap();
    ram.as_mut_slice()[CODE as usize..][..code.len()].copy_from_slice(&code);
    let mut engine = Interpreter::new();
    engine
        .set_state(&CpuState::multiboot(CODE as u32, 0, 0))
        .unwrap();
    let mut handler = PollRecorder {
        stop: Arc::new(StopRequest::new()),
        polls: Vec::new(),
    };
    let stop = engine.run(&ram, &mut handler, 100 * POLL_INTERVAL);
    assert_eq!(stop, StopReason::Paused, "polls at {:?}", handler.polls);
    // Asked at the third poll, honoured at the fourth.
    assert_eq!(handler.polls.len(), 3);
    assert_eq!(engine.instructions_retired(), 3 * POLL_INTERVAL);
    for pair in handler.polls.windows(2) {
        assert!(pair[1] - pair[0] <= POLL_INTERVAL, "{:?}", handler.polls);
    }
    // The next run goes on from there.
    assert_eq!(engine.run(&ram, &mut handler, 10), StopReason::Budget);
    assert_eq!(engine.instructions_retired(), 3 * POLL_INTERVAL + 10);
}
