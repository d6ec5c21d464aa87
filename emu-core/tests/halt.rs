//! How a halted processor's run ends when nothing can wake it, and what Popek says.

use emu_core::cpu::CpuState;
use emu_core::exit::StopReason;
use emu_core::testkit::board::on_every_engine;
use iced_x86::code_asm::*;

/// Where the guest's code goes (and starts), as for a Multiboot kernel.
const CODE: u64 = 0x10_0000;
/// Guest RAM.
const RAM: usize = 2 << 20;
/// The master PIC's data port (its interrupt mask once initialized) and the PIT's.
const PIC_MASTER_DATA: u32 = devices::PIC_MASTER_BASE as u32 + 1;
const PIT_CH0: u32 = devices::PIT_BASE as u32;
const PIT_CONTROL: u32 = PIT_CH0 + devices::pit::CONTROL as u32;
/// PIT control word: counter 0, low then high byte, mode 2 (rate generator), binary.
const PIT_CH0_RATE: u32 = 0x34;

fn run(build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> StopReason {
    let mut a = CodeAssembler::new(32).expect("assembler");
    build(&mut a).expect("guest assembles");
    let code = a.assemble(CODE).expect("guest encodes");
    let (stop, _) = on_every_engine(RAM, |m| {
        m.ram_mut().as_mut_slice()[CODE as usize..][..code.len()].copy_from_slice(&code);
        m.set_cpu_state(&CpuState::multiboot(CODE as u32, 0, 0))
            .unwrap();
        m.run(1_000_000).stop
    });
    stop
}

#[test]
fn cli_hlt_says_interrupts_are_disabled() {
    let stop = run(|a| {
        a.cli()?;
        a.hlt()
    });
    assert_eq!(stop, StopReason::Halted);
    assert!(stop.to_string().contains("interrupts disabled"), "{stop}");
}

#[test]
fn sti_hlt_with_no_timer_says_nothing_can_raise_an_interrupt() {
    let stop = run(|a| {
        a.sti()?;
        a.hlt()
    });
    assert_eq!(stop, StopReason::HaltedNoInterrupt { timer_ticks: 0 });
    let said = stop.to_string();
    assert!(said.contains("interrupts enabled"), "{said}");
    assert!(said.contains("no timer is programmed"), "{said}");
}

#[test]
fn sti_hlt_with_the_timer_masked_says_the_ticks_never_arrived() {
    let stop = run(|a| {
        // The PIC's power-on mask lets IRQ 0 through: mask it, then start the PIT.
        a.mov(al, 0xFF)?;
        a.out(PIC_MASTER_DATA, al)?;
        a.mov(al, PIT_CH0_RATE)?;
        a.out(PIT_CONTROL, al)?;
        a.mov(al, 0)?;
        a.out(PIT_CH0, al)?;
        a.out(PIT_CH0, al)?;
        a.sti()?;
        a.hlt()
    });
    let StopReason::HaltedNoInterrupt { timer_ticks } = stop else {
        panic!("expected a halt no interrupt reaches, got {stop}");
    };
    assert!(timer_ticks > 0);
    let said = stop.to_string();
    assert!(said.contains("interrupts enabled"), "{said}");
    assert!(
        said.contains(&format!("{timer_ticks} timer ticks")),
        "{said}"
    );
}
