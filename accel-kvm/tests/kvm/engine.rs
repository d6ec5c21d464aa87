//! The KVM engine on its own, and against the interpreter on the same guests.

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use accel_kvm::KvmEngine;
use emu_core::cpu::{
    cr0, cr4, efer, fxsave, rflags, CpuState, DescriptorTable, FpuState, Msrs, SegReg, Segment,
    MXCSR_INIT,
};
use emu_core::cpuid;
use emu_core::engine::Engine;
use emu_core::exit::{ExitReason, StopReason};
use emu_core::machine::Vmm;
use emu_core::memory::GuestRam;
use std::time::Instant;

#[test]
fn com1_output_debug_exit_status_and_exit_counts() {
    require_kvm!();
    let (m, out, outcome) = run_on(Start::Kvm, &hello());
    assert_eq!(m.engine_name(), "kvm");
    assert_eq!(outcome.stop, StopReason::Exited(HELLO_STATUS));
    assert_eq!(out, HELLO_TEXT);
    let c = &m.vmm.counters;
    let len = HELLO_TEXT.len() as u64;
    // One LSR poll per byte (the UART is always ready), one OUT per byte, one to exit.
    assert_eq!(c.exits(ExitReason::IoIn), len);
    assert_eq!(c.exits(ExitReason::IoOut), len + 1);
    assert_eq!(c.total_exits(), 2 * len + 1);
    assert_eq!(c.ports[&COM1_DATA].writes, len);
    assert_eq!(c.ports[&COM1_LSR].reads, len);
    assert_eq!(c.ports[&DEBUG_EXIT].writes, 1);
    assert_eq!(outcome.instructions, 0, "KVM counts no instructions");
}

#[test]
fn kvm_and_the_interpreter_agree_on_output_state_and_exits() {
    require_kvm!();
    for guest in [hello(), summer(), assorted()] {
        let (im, iout, ioutcome) = run_on(Start::Interp, &guest);
        let (km, kout, koutcome) = run_on(Start::Kvm, &guest);
        assert!(
            matches!(ioutcome.stop, StopReason::Exited(_)),
            "interpreter: {}",
            ioutcome.stop
        );
        assert_eq!(koutcome.stop, ioutcome.stop);
        assert_eq!(
            String::from_utf8_lossy(&kout),
            String::from_utf8_lossy(&iout)
        );
        assert_eq!(
            user_visible(&km.cpu_state().unwrap()),
            user_visible(&im.cpu_state().unwrap())
        );
        let (ic, kc) = (&im.vmm.counters, &km.vmm.counters);
        assert_eq!(kc.exits, ic.exits, "exit counts by reason");
        assert_eq!(kc.ports, ic.ports);
        assert_eq!(kc.mmio, ic.mmio);
    }
}

#[test]
fn assorted_guest_sees_the_shared_cpuid_vendor() {
    require_kvm!();
    let (m, out, _) = run_on(Start::Kvm, &assorted());
    assert_eq!(out, [cpuid::VENDOR.as_slice(), b"\n"].concat());
    let mmio = m.vmm.counters.mmio.get(MMIO_NOWHERE).expect("counted");
    assert_eq!((mmio.reads, mmio.writes), (1, 1));
}

/// The guest sees the shared table under both engines, except where the host's KVM
/// module installs values of its own, which the engine reports.
#[test]
fn cpuid_reports_the_shared_table() {
    require_kvm!();
    let deviations = KvmEngine::new(&GuestRam::new(RAM_SIZE).unwrap())
        .unwrap()
        .cpuid_deviations()
        .to_vec();
    for d in &deviations {
        println!("this host's KVM changes {d}");
    }
    for start in [Start::Interp, Start::Kvm] {
        let (m, _, outcome) = run_on(start, &cpuid_dump());
        assert_eq!(outcome.stop, StopReason::Halted, "{start:?}");
        let dump = &m.ram().as_slice()[CPUID_DUMP as usize..];
        for (i, leaf) in cpuid::LEAVES.into_iter().enumerate() {
            let got: Vec<u32> = dump[i * 16..(i + 1) * 16]
                .chunks(4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .collect();
            let changed = deviations
                .iter()
                .find(|d| (d.leaf, d.index) == (leaf, 0))
                .filter(|_| start == Start::Kvm);
            let expected = changed.map_or(cpuid::cpuid(leaf), |d| d.kvm);
            assert_eq!(got, expected, "{start:?}, leaf {leaf:#x}");
        }
    }
}

#[test]
fn hlt_stops_with_halted_after_the_hlt() {
    require_kvm!();
    let guest = halts();
    let (m, _, outcome) = run_on(Start::Kvm, &guest);
    assert_eq!(outcome.stop, StopReason::Halted);
    let state = m.cpu_state().unwrap();
    assert_eq!(state.rip, guest.labels[0]);
    assert_eq!(state.gpr[0], u64::from(HALT_EAX));
    assert_eq!(m.vmm.counters.exits(ExitReason::Hlt), 1);
    let (im, _, _) = run_on(Start::Interp, &guest);
    assert_eq!(user_visible(&state), user_visible(&im.cpu_state().unwrap()));
}

#[test]
fn triple_fault_stops_with_shutdown() {
    require_kvm!();
    let (m, _, outcome) = run_on(Start::Kvm, &triple_fault());
    assert_eq!(outcome.stop, StopReason::Shutdown(None));
    assert_eq!(m.vmm.counters.exits(ExitReason::Shutdown), 1);
}

#[test]
fn stopping_on_a_read_exit_completes_the_load() {
    require_kvm!();
    let guest = reads();
    let mut rig = Rig::new(&guest);

    let (stop, read) = rig.run_until_first(ExitReason::IoIn);
    assert_eq!(stop, StopReason::Budget);
    let state = rig.kvm.state().unwrap();
    assert_eq!(state.rip, guest.labels[0], "stopped after the IN");
    assert_eq!(read.len(), 1);
    let expected = (READS_EAX & !0xFF) | u32::from(read[0]);
    assert_eq!(
        state.gpr[0],
        u64::from(expected),
        "AL holds what COM1 returned"
    );

    let (stop, read) = rig.run_until_first(ExitReason::MmioRead);
    assert_eq!(stop, StopReason::Budget);
    let state = rig.kvm.state().unwrap();
    assert_eq!(state.rip, guest.labels[1], "stopped after the load");
    assert_eq!(read, [devices::OPEN_BUS; 4]);
    assert_eq!(
        state.gpr[3],
        u64::from(u32::from_le_bytes([devices::OPEN_BUS; 4]))
    );

    let (stop, _) = rig.run_until_first(ExitReason::Hlt);
    assert_eq!(stop, StopReason::Halted);
}

/// A valid 32-bit protected-mode state with every field of [`CpuState`] set, most to
/// values no reset or Multiboot state has.
fn every_field_set() -> CpuState {
    let mut state = CpuState::multiboot(ENTRY as u32, 0x2BAD_B002, 0x9500);
    for (i, r) in state.gpr.iter_mut().enumerate() {
        *r = 0x0101_0101 * i as u64;
    }
    state.rflags =
        (state.rflags.get() | rflags::CF | rflags::ZF | rflags::DF | rflags::IOPL).into();
    state.seg.modify(SegReg::Fs, |s| s.base = 0x0012_3000);
    state.seg.modify(SegReg::Gs, |s| s.base = 0x0045_6000);
    state.gdtr = DescriptorTable {
        base: 0x1000,
        limit: 0x37,
    };
    state.idtr = DescriptorTable {
        base: 0x2000,
        limit: 0x7FF,
    };
    state.ldtr = Segment {
        selector: 0x30,
        base: 0x6000,
        limit: 0x1F,
        attr: 0x2 | Segment::PRESENT,
    };
    state.tr = Segment {
        selector: 0x28,
        base: 0x5000,
        limit: 0x67,
        attr: 0xB | Segment::PRESENT,
    };
    state.cr0 |= cr0::MP | cr0::NE | cr0::WP;
    state.cr2 = 0xDEAD_B000;
    state.cr3 = 0x7000;
    state.cr4 = cr4::OSFXSR | cr4::OSXMMEXCPT;
    state.efer = efer::SCE;
    // DR6 and DR7 with the bits that always read as one; a breakpoint on DR0.
    state.dr = [
        0x1000,
        0x2000,
        0x3000,
        0x4000,
        0,
        0,
        0xFFFF_0FF1,
        0x0000_0401,
    ];
    state.msr = Msrs {
        sysenter_cs: 0x08,
        sysenter_esp: 0x8_F000,
        sysenter_eip: 0x10_2000,
        star: 0x0023_0008_0000_0000,
        lstar: 0xFFFF_8000_0010_0000,
        cstar: 0xFFFF_8000_0020_0000,
        fmask: 0x4_7700,
        kernel_gs_base: 0xFFFF_8000_0030_0000,
        tsc: 1 << 40,
        tsc_aux: 0x1234,
        pat: 0x0007_0406_0007_0105,
        mtrr_def_type: 0xC06,
        ..Msrs::default()
    };
    state.msr.mtrr_var[0] = 0x8000_0006;
    let fpu = &mut state.fpu;
    fpu.fsw = 5 << 11 | 0x0041; // TOP 5, C0 and invalid-operation flags (masked)
    fpu.ftw = 0b1110_0000;
    fpu.fop = 0x1D9;
    fpu.fip = 0x0008_0010_0040;
    fpu.fdp = 0x0010_0009_0000;
    for (i, r) in fpu.regs.iter_mut().enumerate() {
        *r = [i as u8 + 1; 10];
    }
    fpu.xmm = std::array::from_fn(|i| u128::MAX / 3 * i as u128);
    fpu.mxcsr = MXCSR_INIT | 0x3F; // every SIMD exception flag raised (masked)
    fpu.set_fcw(0x0F7F);
    state
}

/// How far the TSC may have counted on between setting and reading it: a minute at
/// 10 GHz, far more than the test takes.
const TSC_SLACK: u64 = 600_000_000_000;

/// The host's time-stamp counter.
fn host_tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions; every x86-64 processor has it.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[test]
fn state_round_trips_through_kvm() {
    require_kvm!();
    let ram = GuestRam::new(RAM_SIZE).unwrap();
    let mut kvm = KvmEngine::new(&ram).unwrap();
    let state = every_field_set();
    let host_before = host_tsc();
    kvm.set_state(&state).unwrap();
    let back = kvm.state().unwrap();
    // The TSC is a clock: it keeps counting after it is set. A KVM that cannot offset
    // the guest's TSC (PVM, whose guests read the host's) ignores the write.
    let tsc = back.msr.tsc;
    let counted_on_from = |start: u64| (start..start + TSC_SLACK).contains(&tsc);
    if !counted_on_from(state.msr.tsc) {
        assert!(
            counted_on_from(host_before),
            "TSC set to {:#x}, read {tsc:#x}: neither that nor the host's",
            state.msr.tsc
        );
        println!("this host's KVM does not offset the TSC: the guest reads the host's");
    }
    let mut expected = state.clone();
    expected.msr.tsc = tsc;
    assert_eq!(back, expected);

    // The Multiboot state, with TR undefined, comes back unchanged too (but for the TSC,
    // which KVM takes a write of 0 to mean "keep in step with the host").
    let multiboot = CpuState::multiboot(ENTRY as u32, 0, 0);
    kvm.set_state(&multiboot).unwrap();
    let mut back = kvm.state().unwrap();
    back.msr.tsc = 0;
    assert_eq!(back, multiboot);
}

#[test]
fn the_guest_runs_with_the_state_set_and_state_reads_what_it_did() {
    require_kvm!();
    let mut rig = Rig::new(&registers());
    let mut state = every_field_set();
    state.rip = ENTRY;
    rig.kvm.set_state(&state).unwrap();
    let stop = rig.kvm.run(&rig.ram, &mut rig.vmm, UNLIMITED);
    assert_eq!(stop, StopReason::Halted);
    let ram = rig.ram.as_slice();
    let dword = |at: u64| u32::from_le_bytes(ram[at as usize..][..4].try_into().unwrap());
    assert_eq!(dword(REGISTERS_DUMP), state.msr.sysenter_esp as u32);
    assert_eq!(dword(REGISTERS_DUMP + 4), state.dr[1] as u32);
    let image: &[u8; fxsave::SIZE] = ram[FXSAVE_AT as usize..][..fxsave::SIZE]
        .try_into()
        .unwrap();
    let seen = FpuState::from_fxsave(image);
    // What FXSAVE stores on every processor: not the last-instruction pointers, which
    // AMD's store only while an x87 exception is pending, and outside 64-bit mode only
    // XMM0-XMM7.
    let legacy = |f: &FpuState| (f.fcw, f.fsw, f.ftw, f.regs, f.mxcsr, f.xmm[..8].to_vec());
    assert_eq!(legacy(&seen), legacy(&state.fpu));
    let after = rig.kvm.state().unwrap();
    assert_eq!(after.fpu.mxcsr, NEW_MXCSR);
    assert_eq!(after.msr.sysenter_eip, u64::from(NEW_SYSENTER_EIP));
    assert_eq!(after.fpu.xmm, state.fpu.xmm);
}

/// CR4 bit 63: reserved on every x86 processor.
const RESERVED_CR4_BIT: u64 = 1 << 63;

#[test]
fn a_state_kvm_refuses_fails_the_next_run() {
    require_kvm!();
    let mut rig = Rig::new(&halts());
    let mut state = CpuState::multiboot(ENTRY as u32, 0, 0);
    // A reserved CR4 bit: no CPU has it, so KVM refuses it.
    state.cr4 = RESERVED_CR4_BIT;
    let refused = rig.kvm.set_state(&state).unwrap_err();
    assert!(
        refused.to_string().contains("rejected the CPU state"),
        "{refused}"
    );
    let stop = rig.kvm.run(&rig.ram, &mut rig.vmm, UNLIMITED);
    let StopReason::EngineFailure(why) = stop else {
        panic!("expected an engine failure, got {stop}");
    };
    assert!(why.contains("rejected the CPU state"), "{why}");
}

#[test]
fn run_refuses_ram_it_was_not_created_for() {
    require_kvm!();
    let ram = GuestRam::new(RAM_SIZE).unwrap();
    let mut kvm = KvmEngine::new(&ram).unwrap();
    let other = GuestRam::new(RAM_SIZE).unwrap();
    let mut vmm = Vmm::new(Box::new(std::io::sink()));
    let stop = kvm.run(&other, &mut vmm, UNLIMITED);
    assert!(
        matches!(&stop, StopReason::EngineFailure(why) if why.contains("not the RAM")),
        "{stop}"
    );
}

/// Prints the cost of one port-I/O exit round trip (guest OUT → VMM → guest) on both
/// engines: a loop with an OUT per iteration, less the same loop without.
/// `cargo test --release -p accel-kvm -- --ignored --nocapture port_io`.
#[test]
#[ignore = "benchmark"]
fn port_io_exit_round_trip() {
    require_kvm!();
    let count = u64::from(OUT_LOOP_COUNT);
    for start in [Start::Kvm, Start::Interp] {
        let [with, without] = [true, false].map(|with_out| {
            let (mut m, _) = boot(start, &out_loop(with_out));
            let t = Instant::now();
            let outcome = m.run(UNLIMITED);
            let wall = t.elapsed();
            assert_eq!(outcome.stop, StopReason::Halted);
            let outs = m.vmm.counters.exits(ExitReason::IoOut);
            assert_eq!(outs, if with_out { count } else { 0 });
            wall
        });
        let per_exit = (with.as_secs_f64() - without.as_secs_f64()) * 1e6 / count as f64;
        println!(
            "{start:?}: {count} iterations in {with:?} with an OUT each, {without:?} without: \
             {per_exit:.2} µs per OUT exit"
        );
    }
}
