//! Para-virtualization end to end: the `rings-pv` ROM (the `rings` kernel asking the
//! VMM through hypercalls) against `rings`, and the `pvcheck` ROM's bad hypercalls.

use devices::SharedBuffer;
use emu_core::cpu::{CpuState, SegReg};
use emu_core::engine::{DebugConfig, Engine, EngineError};
use emu_core::exit::{ExitHandler, ExitReason, StopReason};
use emu_core::interp::Interpreter;
use emu_core::machine::{Machine, Vmm};
use emu_core::memory::GuestRam;
use emu_core::pv::{abi, HypercallTrap};
use proptest::prelude::*;

/// Guest RAM of the test machines.
const RAM: usize = 64 << 20;
/// Far more instructions than any of these ROMs needs.
const BUDGET: u64 = 50_000_000;

/// Runs an embedded ROM in the interpreter: the machine, its output, how it stopped.
fn run(name: &str) -> (Machine, String, StopReason) {
    let rom = test_roms::find(name).expect("the ROM is embedded");
    let serial = SharedBuffer::new();
    let mut m = Machine::interpreted(RAM, Box::new(serial.clone())).unwrap();
    m.load_multiboot(rom.image, "").unwrap();
    let stop = m.run(BUDGET).stop;
    let out = String::from_utf8(serial.contents()).unwrap();
    (m, out, stop)
}

#[test]
fn rings_pv_prints_what_rings_prints() {
    let (_, native, native_stop) = run("rings");
    let (_, pv, pv_stop) = run("rings-pv");
    assert_eq!(native_stop, StopReason::Exited(0), "{native}");
    assert!(native.lines().count() > 20, "{native}");
    assert!(!native.contains("FAIL"), "{native}");
    assert_eq!(pv, native);
    assert_eq!(pv_stop, native_stop);
}

#[test]
fn rings_pv_enters_the_vmm_less_often_than_rings() {
    let (native, _, _) = run("rings");
    let (pv, _, _) = run("rings-pv");
    let (n, p) = (&native.vmm.counters, &pv.vmm.counters);
    // Native: a port read and write per byte printed. PV: a hypercall per line.
    assert!(n.exits(ExitReason::IoOut) > 500);
    assert_eq!(p.exits(ExitReason::IoOut) + p.exits(ExitReason::IoIn), 0);
    assert!(
        p.total_exits() * 10 < n.total_exits(),
        "{p:?} against {n:?}"
    );
    let calls = &pv.vmm.counters.pv;
    // Every hypercall is an exit; so is the write of the hypercall-page MSR.
    assert_eq!(p.exits(ExitReason::Hypercall), calls.total() + 1);
    assert_eq!(calls.errors(), 0);
    let batches = calls.hypercalls[abi::HC_MMU_UPDATE as usize].calls;
    assert_eq!(batches, 2, "the set-up batch and the read-only page fix-up");
    assert_eq!(
        calls.callbacks, 1,
        "the timer event came through the callback"
    );
}

/// The interpreter, claiming KVM's hypercall trap: an engine whose stubs differ.
struct PortOutEngine(Interpreter);

impl Engine for PortOutEngine {
    fn name(&self) -> &'static str {
        "port-out"
    }
    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, budget: u64) -> StopReason {
        self.0.run(ram, exits, budget)
    }
    fn state(&self) -> Result<CpuState, EngineError> {
        self.0.state()
    }
    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError> {
        self.0.set_state(state)
    }
    fn instructions_retired(&self) -> u64 {
        self.0.instructions_retired()
    }
    fn set_debug(&mut self, debug: &DebugConfig) -> Result<(), EngineError> {
        self.0.set_debug(debug)
    }
    fn hypercall_trap(&self) -> HypercallTrap {
        HypercallTrap::PortOut
    }
}

/// The trap bytes of every stub in the guest's hypercall page.
fn traps(m: &Machine) -> Vec<[u8; 3]> {
    let page = m
        .vmm
        .pv
        .hypercall_page
        .expect("the guest registered its page");
    (0..abi::HC_COUNT as u64)
        .map(|nr| {
            let mut trap = [0; 3];
            m.read_physical(page + nr * abi::STUB_SIZE as u64 + 5, &mut trap)
                .unwrap();
            trap
        })
        .collect()
}

#[test]
fn switching_engines_rewrites_the_stubs() {
    let (_, native, _) = run("rings");
    let rom = test_roms::find("rings-pv").unwrap();
    let serial = SharedBuffer::new();
    let mut m = Machine::interpreted(RAM, Box::new(serial.clone())).unwrap();
    m.load_multiboot(rom.image, "").unwrap();
    // Far enough for the kernel to have registered its page, not to have finished.
    assert_eq!(m.run(2_000).stop, StopReason::Budget);
    let vmcall = HypercallTrap::Vmcall.bytes();
    assert!(traps(&m).iter().all(|t| *t == vmcall), "{:x?}", traps(&m));
    m.switch_engine(Box::new(|_| {
        Ok(Box::new(PortOutEngine(Interpreter::new())))
    }))
    .unwrap();
    let out = HypercallTrap::PortOut.bytes();
    assert!(traps(&m).iter().all(|t| *t == out), "{:x?}", traps(&m));
    m.switch_engine(Box::new(|_| Ok(Box::new(Interpreter::new()))))
        .unwrap();
    assert!(traps(&m).iter().all(|t| *t == vmcall));
    // The interpreter dropped the stubs it had decoded: the guest carries on.
    assert_eq!(m.run(BUDGET).stop, StopReason::Exited(0));
    assert_eq!(String::from_utf8(serial.contents()).unwrap(), native);
    assert_eq!(m.vmm.counters.pv.stub_fills, 3);
}

// ---- garbage hypercalls ----

/// Where the garbage guests' code starts.
const CODE: u64 = 0x10_0000;
/// RAM of the garbage guests: small, so random pointers often land in it.
const SMALL_RAM: usize = 4 << 20;
/// Where the garbage guests' stack starts (the callback pushes there).
const STACK: u32 = 0x8_0000;

/// One random hypercall: the number and the EBX, ECX arguments.
fn any_call() -> impl Strategy<Value = (u32, u32, u32)> {
    // Arguments: anything, or addresses in the small RAM (garbage to parse).
    let arg = prop_oneof![any::<u32>(), 0..SMALL_RAM as u32, Just(0u32)];
    (
        prop_oneof![0..abi::HC_COUNT + 2, any::<u32>()],
        arg.clone(),
        arg,
    )
}

/// A guest that makes `calls` with VMCALL one after the other (saving each result on
/// the stack), then halts; RAM below the code holds `garbage`.
fn garbage_guest(garbage: &[u8], calls: &[(u32, u32, u32)], page: Option<u32>) -> Machine {
    let mut code = Vec::new();
    if let Some(page) = page {
        // WRMSR of the hypercall-page MSR, whatever the value (a bad one is #GP).
        code.extend([0xB9]);
        code.extend(abi::MSR_HYPERCALL_PAGE.to_le_bytes());
        code.extend([0xB8]);
        code.extend(page.to_le_bytes());
        code.extend([0x31, 0xD2, 0x0F, 0x30]); // xor edx, edx; wrmsr
    }
    for &(nr, a, b) in calls {
        code.push(0xB8); // mov eax, nr
        code.extend(nr.to_le_bytes());
        code.push(0xBB); // mov ebx, a
        code.extend(a.to_le_bytes());
        code.push(0xB9); // mov ecx, b
        code.extend(b.to_le_bytes());
        code.extend([0x0F, 0x01, 0xC1, 0x50]); // vmcall; push eax
    }
    code.push(0xF4); // hlt
    let mut m = Machine::interpreted(SMALL_RAM, Box::new(SharedBuffer::new())).unwrap();
    m.write_physical(0, garbage).unwrap();
    m.write_physical(CODE, &code).unwrap();
    let mut st = CpuState::multiboot(CODE as u32, 0, 0);
    st.gpr[4] = STACK.into();
    m.set_cpu_state(&st).unwrap();
    m
}

/// What a hypercall may return: a success or one of the ABI's errors.
fn is_abi_result(eax: u32) -> bool {
    let errors = [
        abi::EPERM,
        abi::ENOENT,
        abi::EACCES,
        abi::EFAULT,
        abi::EINVAL,
        abi::EDEADLK,
        abi::ENOSYS,
    ];
    (eax as i32) >= 0 || errors.iter().any(|e| eax as i32 == -e)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random numbers and arguments over random RAM: every call returns a result or an
    /// ABI error, the VMM counts it, and the guest runs on to its HLT (or to the
    /// shutdown or exception it asked for).
    #[test]
    fn garbage_hypercalls_get_errors_not_crashes(
        garbage in proptest::collection::vec(any::<u8>(), 0..64 * 1024),
        calls in proptest::collection::vec(any_call(), 1..24),
        page in prop_oneof![Just(None), (0..SMALL_RAM as u32 / 4096).prop_map(|p| Some(p * 4096)), any::<u32>().prop_map(Some)],
    ) {
        let mut m = garbage_guest(&garbage, &calls, page);
        let stop = m.run(1_000_000).stop;
        let pv = &m.vmm.counters.pv;
        match stop {
            StopReason::Halted => {
                prop_assert_eq!(pv.total(), calls.len() as u64);
                let esp = m.cpu_state().unwrap().gpr[4] as u32;
                // The results, pushed in order; the last call's is on top. (A call
                // that entered the event callback pushed its return address too.)
                if pv.callbacks == 0 {
                    for i in 0..calls.len() as u32 {
                        let mut eax = [0; 4];
                        m.read_physical((esp + 4 * i).into(), &mut eax).unwrap();
                        let eax = u32::from_le_bytes(eax);
                        prop_assert!(is_abi_result(eax), "result {:#x}", eax);
                    }
                }
            }
            // Shutdown asked for; a trap table or page tables the guest set up took
            // over; the callback went into garbage.
            StopReason::Exited(_) | StopReason::Shutdown(_) | StopReason::Budget
            | StopReason::Unsupported { .. } | StopReason::HaltedNoInterrupt { .. } => {}
            other => prop_assert!(false, "unexpected stop {:?}", other),
        }
        prop_assert!(pv.errors() <= pv.total());
    }
}

#[test]
fn a_hypercall_from_ring_3_is_refused_and_counted() {
    let ram = GuestRam::new(SMALL_RAM).unwrap();
    let mut vmm = Vmm::new(Box::new(SharedBuffer::new()));
    for nr in [
        abi::HC_CONSOLE_WRITE,
        abi::HC_SHUTDOWN,
        abi::HC_MMU_BASE,
        77,
    ] {
        let mut cpu = CpuState::multiboot(CODE as u32, nr, 0);
        cpu.gpr[0] = nr.into();
        // CPL 3: CS.RPL = 3.
        cpu.seg.modify(SegReg::Cs, |cs| cs.selector |= 3);
        let mut flush = false;
        let flow = vmm.handle(
            emu_core::exit::VmExit::Hypercall {
                cpu: &mut cpu,
                ram: ram.view(),
                code: ram.code(),
                flush_tlb: &mut flush,
            },
            0,
        );
        assert_eq!(flow, emu_core::exit::Flow::Continue, "nr {nr}");
        assert_eq!(cpu.gpr[0] as u32 as i32, -abi::EPERM, "nr {nr}");
    }
    assert_eq!(vmm.counters.pv.errors(), 4);
    assert_eq!(vmm.counters.exits(ExitReason::Hypercall), 4);
}

#[test]
fn a_snapshot_keeps_what_the_guest_registered() {
    let rom = test_roms::find("rings-pv").unwrap();
    let serial = SharedBuffer::new();
    let mut a = Machine::interpreted(RAM, Box::new(serial.clone())).unwrap();
    a.load_multiboot(rom.image, "").unwrap();
    // Past the registrations and the set-up, before the ring-3 task's output.
    assert_eq!(a.run(4_000).stop, StopReason::Budget);
    let snapshot = a.save().unwrap();
    assert!(snapshot.pv.hypercall_page.is_some() && snapshot.pv.shared_info.is_some());
    let json = serde_json::to_string(&snapshot).unwrap();
    assert_eq!(a.run(BUDGET).stop, StopReason::Exited(0));
    let whole = String::from_utf8(serial.contents()).unwrap();

    let rest = SharedBuffer::new();
    let mut b = Machine::interpreted(RAM, Box::new(rest.clone())).unwrap();
    b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(b.vmm.pv.shared_info, snapshot.pv.shared_info);
    assert_eq!(b.vmm.pv.hypercall_page, snapshot.pv.hypercall_page);
    assert_eq!(b.run(BUDGET).stop, StopReason::Exited(0));
    let rest = String::from_utf8(rest.contents()).unwrap();
    assert!(rest.lines().count() > 10, "{rest}");
    assert!(whole.ends_with(&rest), "{rest}");

    let mut bad = snapshot.clone();
    bad.pv.shared_info = Some(RAM as u64);
    let err = b.restore(&bad).unwrap_err().to_string();
    assert!(err.contains("shared-info page"), "{err}");
}
