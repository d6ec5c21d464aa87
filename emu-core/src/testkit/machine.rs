//! A guest for instruction and system tests: code assembled with iced-x86 (or given as
//! bytes) at [`CODE_BASE`] followed by HLT, a CPU state to start from, and the
//! processor's tables in guest RAM built from named fields: a GDT ([`Desc`]), an IDT
//! whose handlers record the exception and halt ([`Trap`]), a TSS, and identity-mapped
//! page tables. It runs on whatever engine its [`EngineMaker`] makes.

use super::cases::undefined_flags;
use super::exits::TestExits;
// The GDT layout is the kernel image's: the same selectors name the same segments.
use super::kernel::{descriptor, gate, Kernel, Program};
use super::kernel::{KERNEL_CS, KERNEL_DS, TSS_SEL, USER_CS, USER_DS};
use super::{EngineMaker, SOFTWARE_ENGINES};
use crate::cpu::{cr0, cr4, efer, rflags, CpuState, DescriptorTable, SegReg, Segment};
use crate::exit::StopReason;
use crate::memory::GuestRam;
use crate::x86::segment::Descriptor;
use iced_x86::code_asm::{edi, esi, rdi, CodeAssembler};
use iced_x86::IcedError;

/// Where the code under test is placed (and where execution starts).
pub const CODE_BASE: u64 = 0x1000;
/// Guest RAM size: room for code, tables and a few pages to remap.
pub const RAM_SIZE: usize = 4 << 20;
/// A scratch data area well away from the code.
pub const DATA: u64 = 0x8000;
/// The GDT of protected-mode tests.
pub const GDT_BASE: u64 = 0x1_0000;
/// The IDT.
pub const IDT_BASE: u64 = 0x1_1000;
/// The TSS (with room for an I/O permission bitmap after it).
pub const TSS_BASE: u64 = 0x1_2000;
/// Exception handler stubs, one per vector.
const HANDLERS: u64 = 0x1_4000;
/// Bytes reserved per handler stub.
const HANDLER_SIZE: u64 = 16;
/// Top of the ring-0 stack (in the TSS, and the initial stack at CPL 0).
pub const KERNEL_STACK: u64 = 0x2_0000;
/// Top of the ring-3 stack.
pub const USER_STACK: u64 = 0x3_0000;
/// Page tables built by the helpers (and free pages for tests' own tables).
pub const PAGE_TABLES: u64 = 0x4_0000;
/// Budget for tests that are expected to halt on their own.
const DEFAULT_BUDGET: u64 = 1_000_000;
/// HLT, appended after the code so a test run ends by itself.
const HLT: u8 = 0xF4;
/// Exceptions that the IDT handles (the architecturally defined vectors).
const VECTORS: u8 = 32;
/// ESI before a run: a handler stub replaces it with its vector.
const NO_TRAP: u64 = 0xFFFF_FFFF;
/// Vectors whose exceptions push an error code (#DF #TS #NP #SS #GP #PF #AC).
const ERROR_CODE_VECTORS: [u8; 7] = [8, 10, 11, 12, 13, 14, 17];
/// Size of a 32-bit TSS; the I/O bitmap (if any) follows it.
pub const TSS32_SIZE: u64 = 0x68;
/// Offset of ESP0 in a 32-bit TSS (SS0 follows at +4); RSP0 in a 64-bit TSS.
const TSS_SP0: u64 = 4;
/// Offset of the I/O bitmap base in a 32/64-bit TSS.
pub const TSS_IOMAP: u64 = 0x66;
/// Page-table entry: present, writable, user.
const PTE_PRW_US: u64 = 0x7;
/// Page-directory entry: maps a large page.
const PDE_PS: u64 = 0x80;
/// A 2 MiB page.
const LARGE_PAGE: u64 = 2 << 20;

/// Descriptor type values of code and data segments (S = 1).
pub mod kind {
    /// Execute/read code, accessed.
    pub const CODE: u16 = 0xB;
    /// Read/write data, accessed.
    pub const DATA: u16 = 0x3;
    /// Read-only data.
    pub const DATA_RO: u16 = 0x1;
    /// Execute-only code.
    pub const CODE_XO: u16 = 0x9;
    /// Execute/read conforming code.
    pub const CODE_CONFORMING: u16 = 0xF;
}

/// A segment or system descriptor by its fields; [`Desc::encode`] packs the bits.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// Base address (bits 63:32 only for 16-byte system descriptors).
    pub base: u64,
    /// Limit in bytes; above 1 MiB it is stored in pages (G = 1).
    pub limit: u32,
    /// Attributes in the layout of [`Segment::attr`] (type, S, DPL, P, L, D/B).
    pub attr: u16,
}

impl Desc {
    /// A flat 32-bit execute/read code segment.
    pub fn code32(dpl: u8) -> Self {
        Self::flat(kind::CODE | Segment::DB, dpl)
    }
    /// A flat 64-bit code segment.
    pub fn code64(dpl: u8) -> Self {
        Self::flat(kind::CODE | Segment::LONG, dpl)
    }
    /// A flat read/write data segment.
    pub fn data(dpl: u8) -> Self {
        Self::flat(kind::DATA | Segment::DB, dpl)
    }
    /// A flat code or data segment with these type bits.
    pub fn flat(bits: u16, dpl: u8) -> Self {
        Desc {
            base: 0,
            limit: u32::MAX,
            attr: bits | Segment::CODE_DATA | Segment::PRESENT | (u16::from(dpl) << 5),
        }
    }
    /// A system descriptor (TSS, LDT, gate type) with DPL 0.
    pub fn system(kind: u16, base: u64, limit: u32) -> Self {
        Desc {
            base,
            limit,
            attr: kind | Segment::PRESENT,
        }
    }
    /// The same descriptor marked not present.
    pub fn absent(self) -> Self {
        Desc {
            attr: self.attr & !Segment::PRESENT,
            ..self
        }
    }
    /// The 8-byte descriptor.
    pub fn encode(&self) -> u64 {
        let (raw, gran) = if self.limit > 0xF_FFFF {
            (self.limit >> 12, Segment::GRANULARITY)
        } else {
            (self.limit, 0)
        };
        let attr = self.attr | gran;
        descriptor(self.base as u32, raw, attr as u8, (attr >> 8) as u8 & 0xF)
    }
    /// The segment register contents loading `selector` with this descriptor gives.
    pub fn segment(&self, selector: u16) -> Segment {
        Descriptor(self.encode()).segment(selector)
    }
}

/// The code and data descriptors of the kernel image's GDT (slots 1 to 6), with
/// `kernel_code` as the ring-0 code segment.
fn kernel_gdt(kernel_code: Desc) -> [Desc; 6] {
    [
        kernel_code,
        Desc::data(0),
        Desc::code32(3),
        Desc::data(3),
        Desc::code64(3),
        Desc::data(3),
    ]
}

/// The TSS the test machines run with (busy: it is in TR), without an I/O bitmap.
pub fn busy_tss() -> Desc {
    let limit = TSS32_SIZE as u32 - 1;
    Desc::system(crate::x86::segment::system_type::TSS_BUSY, TSS_BASE, limit)
}

/// A 32-bit gate of type `kind` (interrupt or trap gate) to `offset` in the ring-0
/// code segment.
pub fn gate32(kind: u16, offset: u64, dpl: u8) -> u64 {
    gate(kind as u8, dpl, KERNEL_CS, offset as u32, 0)
}

/// An exception raised in the guest, as the handler stub that caught it recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trap {
    /// The vector.
    pub vector: u8,
    /// The error code, for vectors that push one.
    pub error_code: Option<u32>,
    /// The return address in the frame (the faulting or the next instruction).
    pub rip: u64,
    /// The saved CS selector.
    pub cs: u16,
    /// The saved RFLAGS.
    pub rflags: u64,
}

/// Builds the code under test.
pub type Asm = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// A guest with code loaded, a CPU state to start from, and a test VMM.
pub struct Machine {
    /// The state the next run starts from; the final state after it.
    pub state: CpuState,
    /// Guest RAM.
    pub ram: GuestRam,
    /// The VMM.
    pub exits: TestExits,
    /// Makes the engine each run starts on; `None`: every software engine, which must
    /// agree.
    pub engine: Option<EngineMaker>,
    /// The engine's own counters after the last run (the first engine's, when every
    /// software engine ran): whether the translator ran the code translated.
    pub counters: Vec<(String, u64)>,
}

impl Machine {
    /// 32-bit flat protected mode (the Multiboot state, no tables) running `asm`, then
    /// HLT: the guest of one-instruction tests.
    pub fn new(asm: Asm) -> Self {
        Self::flat32(asm)
    }

    /// 64-bit code running `asm`, then HLT, for 64-bit operands: the flat state with
    /// EFER.LMA and a 64-bit CS but no page tables or descriptor tables, which only
    /// software engines accept (a real CPU needs paging: see [`Machine::long`]).
    pub fn new64(asm: Asm) -> Self {
        let mut m = Self::blank();
        m.assemble(64, CODE_BASE, asm);
        m.state = CpuState::multiboot(CODE_BASE as u32, 0, 0);
        m.state.efer = efer::LME | efer::LMA;
        m.state.seg.modify(SegReg::Cs, |cs| {
            cs.attr = (cs.attr | Segment::LONG) & !Segment::DB;
        });
        m
    }

    /// 32-bit flat protected mode running raw machine code, then HLT.
    pub fn with_bytes(code: &[u8]) -> Self {
        let mut m = Self::blank();
        let mut bytes = code.to_vec();
        bytes.push(HLT);
        m.poke(CODE_BASE, &bytes);
        m.state = CpuState::multiboot(CODE_BASE as u32, 0, 0);
        m
    }

    /// The kernel image `kernel` with `program` installed, starting as the kernel says.
    pub fn kernel(kernel: &Kernel, program: &Program) -> Self {
        let mut m = Self::blank();
        m.state = kernel.install(m.ram.as_mut_slice(), program);
        m
    }

    /// Runs on the engines `engine` makes instead of every software engine.
    pub fn on(mut self, engine: EngineMaker) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Sets general-purpose registers.
    pub fn regs(mut self, regs: &[(usize, u64)]) -> Self {
        for &(r, v) in regs {
            self.state.gpr[r] = v;
        }
        self
    }

    /// 32-bit flat protected mode (the Multiboot state, no tables) running `asm`.
    pub fn flat32(asm: Asm) -> Self {
        let mut m = Self::blank();
        m.assemble(32, CODE_BASE, asm);
        m.state = CpuState::multiboot(CODE_BASE as u32, 0, 0);
        m
    }

    /// 32-bit protected mode at CPL 0 with a GDT, an IDT catching every exception, and
    /// a 32-bit TSS in TR, running `asm` and then HLT.
    pub fn protected(asm: Asm) -> Self {
        let mut m = Self::flat32(asm);
        m.gdt(&kernel_gdt(Desc::code32(0)));
        let tss = busy_tss();
        m.set_gdt_entry(TSS_SEL, tss);
        m.poke_u32(TSS_BASE + TSS_SP0, KERNEL_STACK as u32);
        m.poke_u32(TSS_BASE + TSS_SP0 + 4, KERNEL_DS.into());
        m.idt(32);
        m.state.tr = tss.segment(TSS_SEL);
        m.kernel_segments(Desc::code32(0));
        m
    }

    /// 64-bit mode at CPL 0 with paging (the first GiB identity-mapped), a GDT, a
    /// 64-bit IDT and TSS, running `asm` and then HLT.
    pub fn long(asm: Asm) -> Self {
        let mut m = Self::blank();
        m.assemble(64, CODE_BASE, asm);
        m.state = CpuState::multiboot(CODE_BASE as u32, 0, 0);
        m.gdt(&kernel_gdt(Desc::code64(0)));
        let tss = busy_tss();
        m.set_gdt_entry64(TSS_SEL, tss);
        m.poke_u64(TSS_BASE + TSS_SP0, KERNEL_STACK);
        m.idt(64);
        m.state.tr = tss.segment(TSS_SEL);
        m.state.cr3 = m.identity_map_long();
        m.state.cr4 = cr4::PAE;
        m.state.efer = efer::LME | efer::LMA;
        m.state.cr0 |= cr0::PG;
        m.kernel_segments(Desc::code64(0));
        m
    }

    fn blank() -> Self {
        Machine {
            state: CpuState::default(),
            ram: GuestRam::new(RAM_SIZE).expect("test RAM maps"),
            exits: TestExits::default(),
            engine: None,
            counters: Vec::new(),
        }
    }

    /// Assembles `asm` followed by HLT at `at`.
    pub fn assemble(&mut self, bitness: u32, at: u64, asm: Asm) {
        let mut a = CodeAssembler::new(bitness).expect("valid bitness");
        asm(&mut a).expect("test code assembles");
        let mut bytes = a.assemble(at).expect("test code assembles");
        bytes.push(HLT);
        self.poke(at, &bytes);
    }

    /// Ring-0 segments and stack.
    fn kernel_segments(&mut self, code: Desc) {
        let data = Desc::data(0).segment(KERNEL_DS);
        self.state.seg = [data; 6].into();
        self.state.seg.set(SegReg::Cs, code.segment(KERNEL_CS));
        self.state.gpr[4] = KERNEL_STACK;
        self.state.gpr[6] = NO_TRAP;
    }

    /// Starts the code at CPL 3 instead (ring-3 segments and stack; the code and its
    /// data are reachable since paging, if any, maps them user-accessible).
    pub fn user(mut self) -> Self {
        let data = Desc::data(3).segment(USER_DS);
        self.state.seg = [data; 6].into();
        self.state
            .seg
            .set(SegReg::Cs, Desc::code32(3).segment(USER_CS));
        self.state.gpr[4] = USER_STACK;
        self
    }

    /// Writes GDT entries from slot 1 on (slot 0 is the null descriptor) and loads GDTR
    /// with room for a few more.
    pub fn gdt(&mut self, descs: &[Desc]) {
        for (i, d) in descs.iter().enumerate() {
            self.set_gdt_entry(8 * (i as u16 + 1), *d);
        }
        self.state.gdtr = DescriptorTable {
            base: GDT_BASE,
            limit: 0xFF,
        };
    }

    /// Writes the GDT entry of `selector`.
    pub fn set_gdt_entry(&mut self, selector: u16, d: Desc) {
        self.poke_u64(GDT_BASE + u64::from(selector & !7), d.encode());
    }

    /// Writes a 16-byte long-mode system descriptor at `selector`.
    pub fn set_gdt_entry64(&mut self, selector: u16, d: Desc) {
        let at = GDT_BASE + u64::from(selector & !7);
        self.poke_u64(at, d.encode());
        self.poke_u64(at + 8, d.base >> 32);
    }

    /// An IDT with an interrupt gate per exception vector to a stub that puts the
    /// vector in ESI and the error code (if any) in EDI, then halts.
    fn idt(&mut self, bitness: u32) {
        let gate_size = if bitness == 64 { 16 } else { 8 };
        for v in 0..VECTORS {
            let stub = HANDLERS + u64::from(v) * HANDLER_SIZE;
            let mut a = CodeAssembler::new(bitness).expect("valid bitness");
            a.mov(esi, u32::from(v)).expect("assembles");
            if ERROR_CODE_VECTORS.contains(&v) {
                match bitness {
                    64 => a.pop(rdi),
                    _ => a.pop(edi),
                }
                .expect("assembles");
            }
            a.hlt().expect("assembles");
            let bytes = a.assemble(stub).expect("assembles");
            self.poke(stub, &bytes);
            let entry = IDT_BASE + u64::from(v) * gate_size;
            let int_gate = crate::x86::segment::system_type::INT_GATE;
            self.poke_u64(entry, gate32(int_gate, stub, 0));
            if bitness == 64 {
                self.poke_u64(entry + 8, stub >> 32);
            }
        }
        self.state.idtr = DescriptorTable {
            base: IDT_BASE,
            limit: (u64::from(VECTORS) * gate_size - 1) as u16,
        };
    }

    /// 4-level page tables mapping the first GiB to itself with 2 MiB pages; returns
    /// the CR3 value.
    pub fn identity_map_long(&mut self) -> u64 {
        let (pml4, pdpt, pd) = (PAGE_TABLES, PAGE_TABLES + 0x1000, PAGE_TABLES + 0x2000);
        self.poke_u64(pml4, pdpt | PTE_PRW_US);
        self.poke_u64(pdpt, pd | PTE_PRW_US);
        for i in 0..512 {
            self.poke_u64(pd + 8 * i, (i * LARGE_PAGE) | PDE_PS | PTE_PRW_US);
        }
        pml4
    }

    /// 32-bit page tables mapping the first 4 MiB to itself with 4 KiB pages; returns
    /// (CR3, the page table's address).
    pub fn identity_map32(&mut self) -> (u64, u64) {
        let (pd, pt) = (PAGE_TABLES + 0x3000, PAGE_TABLES + 0x4000);
        self.poke_u32(pd, (pt | PTE_PRW_US) as u32);
        for i in 0..1024 {
            self.poke_u32(pt + 4 * i, ((i << 12) | PTE_PRW_US) as u32);
        }
        (pd, pt)
    }

    /// Sets RFLAGS (the reserved bit 1 is added).
    pub fn flags(mut self, flags: u64) -> Self {
        self.state.rflags = (flags | rflags::FIXED).into();
        self
    }

    /// Copies bytes into guest RAM.
    pub fn poke(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        self.ram.as_mut_slice()[a..a + bytes.len()].copy_from_slice(bytes);
    }

    /// Writes a little-endian u32.
    pub fn poke_u32(&mut self, addr: u64, v: u32) {
        self.poke(addr, &v.to_le_bytes());
    }

    /// Writes a little-endian u64.
    pub fn poke_u64(&mut self, addr: u64, v: u64) {
        self.poke(addr, &v.to_le_bytes());
    }

    /// Guest RAM bytes.
    pub fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        &self.ram.as_slice()[addr as usize..addr as usize + len]
    }

    /// Reads `n` bytes (1 to 8) of guest RAM, little-endian.
    pub fn peek(&self, addr: u64, n: usize) -> u64 {
        let a = addr as usize;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(&self.ram.as_slice()[a..a + n]);
        u64::from_le_bytes(buf)
    }

    /// Runs until the guest stops, within a generous budget.
    pub fn run(&mut self) -> StopReason {
        self.run_for(DEFAULT_BUDGET)
    }

    /// Runs at most `budget` instructions on a fresh engine (on each software engine
    /// unless [`Machine::on`] chose one); the final state lands in `self.state`.
    pub fn run_for(&mut self, budget: u64) -> StopReason {
        match self.engine {
            Some(engine) => self.run_on(engine, budget),
            None => self.run_on_each(SOFTWARE_ENGINES, budget),
        }
    }

    /// Runs on a fresh engine that `engine` makes.
    fn run_on(&mut self, engine: EngineMaker, budget: u64) -> StopReason {
        let mut engine = engine()(&self.ram).expect("test engine builds");
        engine
            .set_state(&self.state)
            .expect("engine takes the state");
        let stop = engine.run(&self.ram, &mut self.exits, budget);
        self.state = engine.state().expect("engine gives its state");
        self.counters = engine.counters();
        stop
    }

    /// Runs the same guest on each engine, from the same start; they must agree on how
    /// the run ended, the final state, RAM and every exit. The first one's run stays.
    ///
    /// The status flags the manuals leave undefined after an instruction of the code
    /// under test are left out of the final state: engines may set them differently
    /// (the translator runs most instructions on the host CPU, which leaves them as
    /// the processor model does, while the interpreter defines values of its own).
    pub fn run_on_each(&mut self, engines: &[(&str, EngineMaker)], budget: u64) -> StopReason {
        let ((first, engine), others) = engines.split_first().expect("an engine");
        let copies: Vec<_> = others.iter().map(|&e| (e, self.copy())).collect();
        let undefined = self.undefined_flags();
        let defined = |state: &CpuState| {
            let mut state = state.clone();
            state.rflags = (state.rflags.get() & !undefined).into();
            state
        };
        let stop = self.run_on(*engine, budget);
        for ((name, engine), mut other) in copies {
            let other_stop = other.run_on(engine, budget);
            let pair = format!("{name} and {first}");
            assert_eq!(other_stop, stop, "{pair}: stop");
            assert_eq!(
                defined(&other.state),
                defined(&self.state),
                "{pair}: final state (flags {undefined:#x} undefined)"
            );
            assert_eq!(other.exits, self.exits, "{pair}: exits");
            assert!(other.ram.as_slice() == self.ram.as_slice(), "{pair}: RAM");
        }
        stop
    }

    /// The status flags the manuals leave undefined after some instruction of the code
    /// the run starts in (decoded from CS:RIP to the first HLT).
    pub(super) fn undefined_flags(&self) -> u64 {
        let start = self.state.linear(SegReg::Cs, self.state.rip) as usize;
        let code = self.ram.as_slice().get(start..).unwrap_or_default();
        undefined_flags(self.state.code_bitness(), code)
    }

    /// The same guest, in RAM of its own.
    fn copy(&self) -> Machine {
        let mut ram = GuestRam::new(RAM_SIZE).expect("test RAM maps");
        ram.as_mut_slice().copy_from_slice(self.ram.as_slice());
        Machine {
            state: self.state.clone(),
            ram,
            exits: self.exits.clone(),
            engine: self.engine,
            counters: self.counters.clone(),
        }
    }

    /// Runs to a HLT, failing the test on any other stop.
    pub fn run_to_halt(&mut self) -> &CpuState {
        match self.run() {
            StopReason::Halted => &self.state,
            other => panic!("expected HLT, stopped with: {other}"),
        }
    }

    /// Runs a guest without an IDT expecting an exception (which shuts it down);
    /// returns its vector and the state at the fault.
    pub fn run_to_exception(&mut self) -> (u8, CpuState) {
        match self.run() {
            StopReason::Shutdown(Some((exception, state))) => (exception.vector, *state),
            other => panic!("expected an exception, stopped with: {other}"),
        }
    }

    /// Runs expecting an exception handler to halt; returns what it caught.
    pub fn run_to_trap(&mut self) -> Trap {
        self.run_to_halt();
        self.trap().expect("an exception handler halted")
    }

    /// The exception a handler stub caught, if one halted.
    pub fn trap(&self) -> Option<Trap> {
        let vector = self.state.gpr[6];
        if vector == NO_TRAP {
            return None;
        }
        let vector = vector as u8;
        let error_code = ERROR_CODE_VECTORS
            .contains(&vector)
            .then_some(self.state.gpr[7] as u32);
        let sp = self.state.gpr[4];
        let slot = if self.state.efer & efer::LMA != 0 {
            8
        } else {
            4
        };
        Some(Trap {
            vector,
            error_code,
            rip: self.peek(sp, slot),
            cs: self.peek(sp + slot as u64, 2) as u16,
            rflags: self.peek(sp + 2 * slot as u64, slot),
        })
    }

    /// Returns from the exception a handler stub caught to the same privilege level, as
    /// its IRET would: RIP and RFLAGS from the frame, the frame popped, ESI reset.
    pub fn return_from_trap(&mut self, rflags_set: u64) {
        let trap = self.trap().expect("an exception handler halted");
        let slot = if self.state.efer & efer::LMA != 0 {
            8
        } else {
            4
        };
        self.state.rip = trap.rip;
        self.state.rflags = (trap.rflags | rflags_set).into();
        self.state.gpr[4] += 3 * slot;
        self.state.gpr[6] = NO_TRAP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{interpreter, RAX};
    use iced_x86::code_asm::*;

    #[test]
    fn engines_that_agree_give_one_run() {
        let twice = [
            ("interp", interpreter as EngineMaker),
            ("again", interpreter),
        ];
        let mut m = Machine::new(|a| {
            a.mov(dword_ptr(DATA), 7u32)?;
            a.out(0x80, al)?;
            a.inc(eax)
        })
        .regs(&[(RAX, 41)]);
        assert_eq!(m.run_on_each(&twice, 100), StopReason::Halted);
        assert_eq!(m.state.gpr[RAX], 42);
        assert_eq!(m.peek(DATA, 4), 7);
        assert_eq!(m.exits.port_output, [(0x80, vec![41])]);
    }
}
