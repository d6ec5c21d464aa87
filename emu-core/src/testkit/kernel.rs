//! A tiny kernel image, built from Rust, for the tests of exceptions and far transfers.
//!
//! [`Kernel`] describes it: a GDT (kernel and user code and data, a TSS), the TSS (ring
//! stacks and an I/O permission bitmap), an IDT whose 32 exception gates lead to stubs
//! that record what the processor pushed and halt, and page tables identity-mapping low
//! memory with a few user pages, one of them read-only and one absent. Its real-mode
//! variant has only an interrupt vector table leading to 16-bit stubs. A test adjusts a
//! `Kernel`, assembles its code with [`assemble`], and [`Kernel::install`]s both into
//! guest RAM, which gives the CPU state to start from: the system registers are set
//! directly, without LGDT/LIDT/LTR/MOV CR.

use crate::cpu::{cr0, cr4, efer, rflags, CpuState, DescriptorTable, Msrs, SegReg, Segment};
use crate::x86::segment::Descriptor;
use iced_x86::code_asm::{dword_ptr, eax, esp, qword_ptr, rax, rsp, CodeAssembler, CodeLabel};
use iced_x86::{BlockEncoderOptions, IcedError};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

// ---- memory layout (linear = physical: everything is identity-mapped) ----

/// Guest RAM of the test machines.
pub const RAM: usize = 2 << 20;
/// The GDT.
pub const GDT: u64 = 0x1000;
/// The IDT.
pub const IDT: u64 = 0x2000;
/// The TSS.
pub const TSS: u64 = 0x3000;
/// The page tables: four pages (two levels in legacy mode, four in long mode).
pub const PAGE_TABLES: u64 = 0x4000;
/// The exception stubs, [`STUB_SIZE`] bytes apart.
pub const STUBS: u64 = 0x8000;
/// Room for one stub.
pub const STUB_SIZE: u64 = 0x80;
/// Where the stubs record what they found (see [`Record`]).
pub const RECORD: u64 = 0x9000;
/// Top of the ring-0 stack (ESP0 in the TSS, and the stack of CPL 0 cases).
pub const KERNEL_STACK: u64 = 0xB000;
/// Top of a stack tests may give ring 1 or 2.
pub const INNER_STACK: u64 = 0xC000;
/// The test's code: two user pages (every ring may run code from a user page).
pub const CODE: u64 = 0x1_0000;
/// Top of the ring-3 stack (a user page).
pub const USER_STACK: u64 = 0x1_3000;
/// A user read/write data page.
pub const USER_DATA: u64 = 0x1_3000;
/// A user page mapped read-only.
pub const USER_RO: u64 = 0x1_4000;
/// A page that is not mapped.
pub const ABSENT: u64 = 0x1_5000;
/// Pages the page tables map, from 0.
pub const MAPPED_PAGES: u64 = 512;
/// The I/O permission bitmap covers ports 0 to 0x3FF; the TSS limit denies the rest.
pub const IO_PORTS: usize = 0x400;
/// Real mode: the code segment, whose base is [`CODE`] (code offsets start at 0).
pub const REAL_CS: u16 = (CODE >> 4) as u16;
/// Real mode: the limit of every segment after reset.
pub const REAL_LIMIT: u32 = 0xFFFF;
/// Real mode: the attributes of a data segment after reset (present read/write data).
pub const REAL_DATA_ATTR: u16 = 0x93;
/// Real mode: the attributes of CS after reset (present execute/read code).
pub const REAL_CODE_ATTR: u16 = 0x9B;
/// Size of a real-mode interrupt vector: offset, then segment.
const IVT_ENTRY: u64 = 4;

// ---- the GDT ----

/// Ring-0 code: 32-bit, or 64-bit in long mode.
pub const KERNEL_CS: u16 = 0x08;
/// Ring-0 data.
pub const KERNEL_DS: u16 = 0x10;
/// Ring-3 32-bit code.
pub const USER_CS: u16 = 0x18 | 3;
/// Ring-3 data.
pub const USER_DS: u16 = 0x20 | 3;
/// Ring-3 64-bit code (SYSEXIT's 64-bit CS with SYSENTER_CS = KERNEL_CS).
pub const USER_CS64: u16 = 0x28 | 3;
/// Ring-3 data again, where a 64-bit SYSEXIT puts SS.
pub const USER_DS64: u16 = 0x30 | 3;
/// The TSS (two slots in long mode).
pub const TSS_SEL: u16 = 0x38;
/// The first descriptor slot tests may fill with their own.
pub const FREE_SLOT: u16 = 0x48;

/// Access-byte bits of descriptors.
pub mod access {
    /// Present.
    pub const P: u8 = 0x80;
    /// Code or data (not a system descriptor).
    pub const S: u8 = 0x10;
    /// Code segment.
    pub const CODE: u8 = 0x08;
    /// Code: conforming.
    pub const CONFORMING: u8 = 0x04;
    /// Data: expand-down (the bit conforming code uses).
    pub const EXPAND_DOWN: u8 = 0x04;
    /// Code: readable; data: writable.
    pub const RW: u8 = 0x02;
    /// Where the DPL starts.
    pub const DPL_SHIFT: u8 = 5;
}

/// Flag nibble of code/data descriptors.
pub mod flags {
    /// Limit in 4 KiB units.
    pub const G: u8 = 0x8;
    /// 32-bit default operand size / stack.
    pub const D: u8 = 0x4;
    /// 64-bit code.
    pub const L: u8 = 0x2;
}

/// System descriptor types.
pub mod system {
    /// Busy 32/64-bit TSS (TR is loaded).
    pub const TSS_BUSY: u8 = 0xB;
    /// 16-bit call gate.
    pub const CALL_GATE16: u8 = 0x4;
    /// 32/64-bit call gate.
    pub const CALL_GATE: u8 = 0xC;
    /// 32/64-bit interrupt gate.
    pub const INT_GATE: u8 = 0xE;
}

/// A code or data descriptor; `limit` is the raw 20-bit field.
pub fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let (base, limit) = (base as u64, limit as u64);
    (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | ((access as u64) << 40)
        | (((limit >> 16) & 0xF) << 48)
        | ((flags as u64) << 52)
        | ((base >> 24) << 56)
}

fn dpl_bits(dpl: u8) -> u8 {
    dpl << access::DPL_SHIFT
}

/// A flat 4 GiB 32-bit execute/read code segment.
pub fn code32(dpl: u8) -> u64 {
    let a = access::P | access::S | access::CODE | access::RW | dpl_bits(dpl);
    descriptor(0, 0xF_FFFF, a, flags::G | flags::D)
}

/// A flat conforming 32-bit code segment.
pub fn conforming32(dpl: u8) -> u64 {
    code32(dpl) | ((access::CONFORMING as u64) << 40)
}

/// A 16-bit code segment of 64 KiB at `base`.
pub fn code16(base: u32, dpl: u8) -> u64 {
    let a = access::P | access::S | access::CODE | access::RW | dpl_bits(dpl);
    descriptor(base, 0xFFFF, a, 0)
}

/// A 64-bit code segment.
pub fn code64(dpl: u8) -> u64 {
    let a = access::P | access::S | access::CODE | access::RW | dpl_bits(dpl);
    descriptor(0, 0xF_FFFF, a, flags::G | flags::L)
}

/// A flat 4 GiB read/write data (and stack) segment.
pub fn data(dpl: u8) -> u64 {
    let a = access::P | access::S | access::RW | dpl_bits(dpl);
    descriptor(0, 0xF_FFFF, a, flags::G | flags::D)
}

/// The same descriptor, marked not present.
pub fn absent(desc: u64) -> u64 {
    desc & !((access::P as u64) << 40)
}

/// A legacy gate (call, interrupt or trap): 32-bit offset, parameter count for calls.
pub fn gate(kind: u8, dpl: u8, selector: u16, offset: u32, params: u8) -> u64 {
    let offset = offset as u64;
    (offset & 0xFFFF)
        | ((selector as u64) << 16)
        | ((params as u64 & 0x1F) << 32)
        | (((access::P | dpl_bits(dpl) | kind) as u64) << 40)
        | ((offset >> 16) << 48)
}

/// A 16-byte long-mode gate, as two descriptor slots.
pub fn gate64(kind: u8, dpl: u8, selector: u16, offset: u64) -> [u64; 2] {
    [gate(kind, dpl, selector, offset as u32, 0), offset >> 32]
}

/// The hidden part a segment register holds after loading `desc` with `selector`.
pub fn loaded(selector: u16, desc: u64) -> Segment {
    Descriptor(desc).segment(selector)
}

// ---- the IDT and its stubs ----

/// Vectors whose exceptions push an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// One IDT entry.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Code segment of the handler.
    pub selector: u16,
    /// Handler offset.
    pub offset: u64,
    /// Gate type (see [`system`]).
    pub kind: u8,
    /// Privilege needed to reach it with INT n.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
}

/// Record slots the stubs fill (4 bytes each in legacy mode, 8 in long mode).
pub mod slot {
    /// The vector of the stub that ran.
    pub const VECTOR: u64 = 0;
    /// The error code, or all ones if the vector has none.
    pub const ERROR: u64 = 1;
    /// Saved EIP.
    pub const EIP: u64 = 2;
    /// Saved CS.
    pub const CS: u64 = 3;
    /// Saved EFLAGS.
    pub const EFLAGS: u64 = 4;
    /// Saved ESP (only when the frame has one: from another ring, or in long mode).
    pub const ESP: u64 = 5;
    /// Saved SS (likewise).
    pub const SS: u64 = 6;
    /// EAX when the stub started.
    pub const EAX: u64 = 7;
    /// How many there are.
    pub const COUNT: u64 = 8;
}

/// What a stub found: the frame the processor pushed, and EAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The vector, or None if no stub ran.
    pub vector: Option<u8>,
    /// The error code, if the vector has one.
    pub error: Option<u64>,
    /// Saved EIP/RIP.
    pub eip: u64,
    /// Saved CS.
    pub cs: u64,
    /// Saved EFLAGS/RFLAGS.
    pub eflags: u64,
    /// Saved ESP/RSP, if the frame held one.
    pub esp: Option<u64>,
    /// Saved SS, if the frame held one.
    pub ss: Option<u64>,
    /// EAX when the stub started.
    pub eax: u64,
}

impl Record {
    /// Reads the record back from guest RAM.
    pub fn read(ram: &[u8], long: bool) -> Record {
        let width = if long { 8 } else { 4 };
        let none = u64::MAX >> (64 - 8 * width);
        let get = |slot: u64| {
            let at = (RECORD + slot * width as u64) as usize;
            let mut buf = [0u8; 8];
            buf[..width].copy_from_slice(&ram[at..at + width]);
            u64::from_le_bytes(buf)
        };
        let known = |v: u64| (v != none).then_some(v);
        Record {
            vector: known(get(slot::VECTOR)).map(|v| v as u8),
            error: known(get(slot::ERROR)),
            eip: get(slot::EIP),
            cs: get(slot::CS),
            eflags: get(slot::EFLAGS),
            esp: known(get(slot::ESP)),
            ss: known(get(slot::SS)),
            eax: get(slot::EAX),
        }
    }
}

/// Marks the record empty: no stub ran (yet).
pub fn clear_record(ram: &mut [u8]) {
    let size = (slot::COUNT * 8) as usize;
    ram[RECORD as usize..RECORD as usize + size].fill(0xFF);
}

/// The real-mode stub of `vector` (at CS 0): records IP, CS, FLAGS and EAX in
/// [`RECORD`], zero-extended to its 4-byte slots, and halts. Real mode pushes no error
/// codes.
fn stub16(vector: u8) -> Result<Vec<u8>, IcedError> {
    use iced_x86::code_asm::{bp, sp, word_ptr};
    let ip = STUBS + vector as u64 * STUB_SIZE;
    let mut a = CodeAssembler::new(16)?;
    let at = |s: u64| RECORD + s * 4;
    a.mov(dword_ptr(at(slot::EAX)).ss(), eax)?;
    a.mov(dword_ptr(at(slot::VECTOR)).ss(), vector as u32)?;
    a.mov(dword_ptr(at(slot::ERROR)).ss(), u32::MAX)?;
    a.mov(bp, sp)?;
    for (i, s) in [slot::EIP, slot::CS, slot::EFLAGS].into_iter().enumerate() {
        a.movzx(eax, word_ptr(bp + 2 * i as u32))?;
        a.mov(dword_ptr(at(s)).ss(), eax)?;
    }
    a.hlt()?;
    let bytes = a.assemble(ip)?;
    assert!(bytes.len() as u64 <= STUB_SIZE, "stub {vector} too long");
    Ok(bytes)
}

/// The stub of `vector`: records the frame and EAX in [`RECORD`] and halts.
fn stub(vector: u8, long: bool) -> Result<Vec<u8>, IcedError> {
    let ip = STUBS + vector as u64 * STUB_SIZE;
    let mut a = CodeAssembler::new(if long { 64 } else { 32 })?;
    let width = if long { 8 } else { 4 };
    let error = has_error_code(vector);
    // Frame words above the error code: EIP, CS, EFLAGS, then ESP and SS if present.
    let frame = |i: u64| (i + error as u64) * width;
    let at = |s: u64| RECORD + s * width;
    let mut same_ring = a.create_label();
    if long {
        a.mov(qword_ptr(at(slot::EAX)), rax)?;
        a.mov(qword_ptr(at(slot::VECTOR)), vector as i32)?;
        if error {
            a.mov(rax, qword_ptr(rsp))?;
            a.mov(qword_ptr(at(slot::ERROR)), rax)?;
        } else {
            a.mov(qword_ptr(at(slot::ERROR)), -1)?;
        }
        // A long-mode frame always holds SS:RSP.
        for (i, s) in [slot::EIP, slot::CS, slot::EFLAGS, slot::ESP, slot::SS]
            .into_iter()
            .enumerate()
        {
            a.mov(rax, qword_ptr(rsp + frame(i as u64)))?;
            a.mov(qword_ptr(at(s)), rax)?;
        }
    } else {
        // Through SS, the ring-0 stack's data segment: DS may hold anything, even a
        // null selector a return to ring 3 left.
        a.mov(dword_ptr(at(slot::EAX)).ss(), eax)?;
        a.mov(dword_ptr(at(slot::VECTOR)).ss(), vector as u32)?;
        if error {
            a.mov(eax, dword_ptr(esp))?;
            a.mov(dword_ptr(at(slot::ERROR)).ss(), eax)?;
        } else {
            a.mov(dword_ptr(at(slot::ERROR)).ss(), u32::MAX)?;
        }
        for (i, s) in [slot::EIP, slot::CS, slot::EFLAGS].into_iter().enumerate() {
            a.mov(eax, dword_ptr(esp + frame(i as u64)))?;
            a.mov(dword_ptr(at(s)).ss(), eax)?;
        }
        // The stubs run in ring 0: a saved CS with another RPL came from an outer
        // ring, and only then does the frame hold SS:ESP.
        a.test(dword_ptr(esp + frame(1)), 3u32)?;
        a.jz(same_ring)?;
        for (i, s) in [(3, slot::ESP), (4, slot::SS)] {
            a.mov(eax, dword_ptr(esp + frame(i)))?;
            a.mov(dword_ptr(at(s)).ss(), eax)?;
        }
    }
    a.set_label(&mut same_ring)?;
    a.hlt()?;
    let bytes = a.assemble(ip)?;
    assert!(bytes.len() as u64 <= STUB_SIZE, "stub {vector} too long");
    Ok(bytes)
}

// ---- assembling test code ----

/// A code assembler with named labels, so tests can ask where an instruction ended up.
pub struct Asm {
    a: CodeAssembler,
    labels: HashMap<&'static str, CodeLabel>,
}

impl Deref for Asm {
    type Target = CodeAssembler;
    fn deref(&self) -> &CodeAssembler {
        &self.a
    }
}

impl DerefMut for Asm {
    fn deref_mut(&mut self) -> &mut CodeAssembler {
        &mut self.a
    }
}

impl Asm {
    /// The label called `name`, for a branch to it (defined by [`Asm::label`]).
    pub fn target(&mut self, name: &'static str) -> CodeLabel {
        let a = &mut self.a;
        *self.labels.entry(name).or_insert_with(|| a.create_label())
    }

    /// Puts the label `name` on the next instruction.
    pub fn label(&mut self, name: &'static str) -> Result<(), IcedError> {
        let mut label = self.target(name);
        self.a.set_label(&mut label)?;
        self.labels.insert(name, label);
        Ok(())
    }
}

/// Assembled code and where its labels are.
pub struct Program {
    /// Where the code goes.
    pub origin: u64,
    /// The machine code.
    pub bytes: Vec<u8>,
    labels: HashMap<&'static str, u64>,
}

impl Program {
    /// The address of the instruction labelled `name`.
    pub fn ip(&self, name: &str) -> u64 {
        *self
            .labels
            .get(name)
            .unwrap_or_else(|| panic!("no label {name}"))
    }
}

/// Assembles code for `bitness` at `origin`.
pub fn assemble(
    bitness: u32,
    origin: u64,
    code: impl FnOnce(&mut Asm) -> Result<(), IcedError>,
) -> Program {
    let mut asm = Asm {
        a: CodeAssembler::new(bitness).expect("valid bitness"),
        labels: HashMap::new(),
    };
    code(&mut asm).expect("test code assembles");
    let result = asm
        .a
        .assemble_options(origin, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .expect("test code encodes");
    let labels = asm
        .labels
        .iter()
        .map(|(name, label)| (*name, result.label_ip(label).expect("label is set")))
        .collect();
    Program {
        origin,
        bytes: result.inner.code_buffer,
        labels,
    }
}

/// A stand-in for label addresses in the first pass of [`assemble_with_labels`]: above
/// 127 so that no immediate shrinks to 8 bits, within 16 bits for real-mode offsets.
const PLACEHOLDER_IP: u64 = 0x1000;

/// Assembles code that uses its own labels' addresses as immediates (far pointers,
/// return addresses pushed by hand): a first pass finds the labels, the second uses them.
pub fn assemble_with_labels(
    bitness: u32,
    origin: u64,
    code: impl Fn(&mut Asm, &dyn Fn(&str) -> u64) -> Result<(), IcedError>,
) -> Program {
    let first = assemble(bitness, origin, |a| code(a, &|_| PLACEHOLDER_IP));
    let second = assemble(bitness, origin, |a| code(a, &|name| first.ip(name)));
    assert_eq!(first.labels, second.labels, "label addresses moved");
    second
}

// ---- the kernel ----

/// Page-table entry bits.
mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
}

/// 32-bit TSS fields.
mod tss {
    /// ESPn is at 4 + 8n, SSn at 8 + 8n (a 64-bit TSS has RSPn at 4 + 8n).
    pub const STACKS: u64 = 4;
    /// The offset of the I/O bitmap, a 16-bit field.
    pub const IOMAP_BASE: u64 = 0x66;
    /// Where this TSS puts its I/O bitmap: right after the fixed part.
    pub const IOMAP: u64 = 0x68;
}

/// Everything a test may change about the kernel before installing it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Long mode (4-level paging, 64-bit kernel code, 16-byte gates).
    pub long: bool,
    /// In long mode, the code at CPL 3 runs in compatibility mode (32-bit code).
    pub compat: bool,
    /// Real mode: no protection, no paging; the code runs at [`REAL_CS`]:0 and the
    /// exception vectors lead through the interrupt vector table at 0 to 16-bit stubs.
    pub real: bool,
    /// The GDT, one descriptor per slot.
    pub gdt: Vec<u64>,
    /// The 32 exception gates.
    pub gates: Vec<Gate>,
    /// IDTR.limit; 0 leaves the IDT empty (every exception ends in a triple fault).
    pub idt_limit: u16,
    /// SSn and ESPn (RSPn) for rings 0-2.
    pub ring_stacks: [(u16, u64); 3],
    /// The I/O permission bitmap: a set bit denies the port.
    pub io_bitmap: Vec<u8>,
    /// The CPL the code starts at (0 or 3).
    pub cpl: u8,
    /// RFLAGS at the start.
    pub rflags: u64,
    /// CR0 (protected mode and paging, plus what a test adds).
    pub cr0: u64,
    /// EFER bits beyond what long mode needs.
    pub efer: u64,
    /// General-purpose registers at the start (RSP is set from the CPL).
    pub regs: [u64; 16],
    /// MSRs.
    pub msr: Msrs,
}

impl Kernel {
    /// A 32-bit protected-mode kernel with paging, starting at CPL 3.
    pub fn legacy() -> Self {
        Self::new(false)
    }

    /// A long-mode kernel, starting at CPL 3 in 64-bit code.
    pub fn long() -> Self {
        Self::new(true)
    }

    /// Real mode after reset, with an interrupt vector table; the code starts at
    /// [`REAL_CS`]:0 with the other segments 0, SP at [`KERNEL_STACK`].
    pub fn real_mode() -> Self {
        Kernel {
            real: true,
            cpl: 0,
            cr0: cr0::ET,
            ..Self::new(false)
        }
    }

    /// The bitness of the test code.
    pub fn bitness(&self) -> u32 {
        match (self.real, self.long && !self.compat) {
            (true, _) => 16,
            (false, true) => 64,
            (false, false) => 32,
        }
    }

    /// Where the test code is assembled: its first offset in CS.
    pub fn origin(&self) -> u64 {
        if self.real {
            0
        } else {
            CODE
        }
    }

    fn new(long: bool) -> Self {
        let kernel_code = if long { code64(0) } else { code32(0) };
        let mut gdt = vec![
            0,
            kernel_code,
            data(0),
            code32(3),
            data(3),
            code64(3),
            data(3),
        ];
        let tss_limit = tss::IOMAP + (IO_PORTS / 8) as u64;
        let a = access::P | system::TSS_BUSY;
        gdt.push(descriptor(TSS as u32, tss_limit as u32, a, 0));
        gdt.push(0); // the upper half of a long-mode TSS descriptor (base < 4 GiB)
        debug_assert_eq!(gdt.len() * 8, FREE_SLOT as usize);
        let gates = (0..32u8)
            .map(|v| Gate {
                selector: KERNEL_CS,
                offset: STUBS + v as u64 * STUB_SIZE,
                kind: system::INT_GATE,
                // INT3 and INTO are meant for user code.
                dpl: if v == 3 || v == 4 { 3 } else { 0 },
                present: true,
            })
            .collect();
        Kernel {
            long,
            compat: false,
            real: false,
            gdt,
            gates,
            idt_limit: 32 * if long { 16 } else { 8 } - 1,
            ring_stacks: [(KERNEL_DS, KERNEL_STACK), (0, 0), (0, 0)],
            io_bitmap: vec![0xFF; IO_PORTS / 8],
            cpl: 3,
            rflags: rflags::FIXED,
            cr0: cr0::PE | cr0::ET | cr0::PG,
            efer: 0,
            regs: [0; 16],
            msr: Msrs::default(),
        }
    }

    /// Puts a descriptor (or a 16-byte one's halves) at `selector`'s slot.
    pub fn set_descriptor(&mut self, selector: u16, halves: &[u64]) {
        let at = (selector >> 3) as usize;
        if self.gdt.len() < at + halves.len() {
            self.gdt.resize(at + halves.len(), 0);
        }
        self.gdt[at..at + halves.len()].copy_from_slice(halves);
    }

    /// Lets CPL 3 use `port` through the I/O bitmap.
    pub fn allow_port(&mut self, port: u16) {
        self.io_bitmap[port as usize / 8] &= !(1 << (port % 8));
    }

    fn page_flags(addr: u64) -> u64 {
        match addr {
            ABSENT => 0,
            USER_RO => pte::P | pte::US,
            a if (CODE..USER_RO).contains(&a) => pte::P | pte::RW | pte::US,
            _ => pte::P | pte::RW,
        }
    }

    fn write(ram: &mut [u8], at: u64, bytes: &[u8]) {
        ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    fn write_u64s(ram: &mut [u8], at: u64, words: &[u64], width: usize) {
        for (i, w) in words.iter().enumerate() {
            Self::write(ram, at + (i * width) as u64, &w.to_le_bytes()[..width]);
        }
    }

    fn install_tables(&self, ram: &mut [u8]) {
        Self::write_u64s(ram, GDT, &self.gdt, 8);
        for (v, g) in self.gates.iter().enumerate() {
            let mut halves = if self.long {
                gate64(g.kind, g.dpl, g.selector, g.offset)
            } else {
                [gate(g.kind, g.dpl, g.selector, g.offset as u32, 0), 0]
            };
            if !g.present {
                halves[0] = absent(halves[0]);
            }
            let size = if self.long { 16 } else { 8 };
            Self::write_u64s(ram, IDT + (v * size) as u64, &halves[..size / 8], 8);
        }
        for (ring, &(ss, sp)) in self.ring_stacks.iter().enumerate() {
            let at = TSS + tss::STACKS + 8 * ring as u64;
            if self.long {
                Self::write(ram, at, &sp.to_le_bytes());
            } else {
                Self::write(ram, at, &(sp as u32).to_le_bytes());
                Self::write(ram, at + 4, &ss.to_le_bytes());
            }
        }
        Self::write(
            ram,
            TSS + tss::IOMAP_BASE,
            &(tss::IOMAP as u16).to_le_bytes(),
        );
        Self::write(ram, TSS + tss::IOMAP, &self.io_bitmap);
    }

    fn install_page_tables(&self, ram: &mut [u8]) {
        let levels = if self.long { 4 } else { 2 };
        let width = if self.long { 8 } else { 4 };
        // Each level's first entry points to the next page; the last maps the pages.
        for level in 0..levels - 1 {
            let table = PAGE_TABLES + 0x1000 * level;
            let next = table + 0x1000;
            Self::write_u64s(ram, table, &[next | pte::P | pte::RW | pte::US], width);
        }
        let leaf = PAGE_TABLES + 0x1000 * (levels - 1);
        let entries: Vec<u64> = (0..MAPPED_PAGES)
            .map(|page| page << 12 | Self::page_flags(page << 12))
            .collect();
        Self::write_u64s(ram, leaf, &entries, width);
    }

    fn install_stubs(&self, ram: &mut [u8]) {
        for v in 0..32u8 {
            let at = STUBS + v as u64 * STUB_SIZE;
            let code = if self.real {
                // Vector v's entry in the IVT: the stub's offset, segment 0.
                Self::write(ram, v as u64 * IVT_ENTRY, &(at as u16).to_le_bytes());
                stub16(v)
            } else {
                stub(v, self.long)
            };
            Self::write(ram, at, &code.expect("stub assembles"));
        }
        clear_record(ram);
    }

    /// Writes the kernel and `program` into guest RAM; returns the CPU state that
    /// starts the program at `program.origin` at the kernel's CPL.
    pub fn install(&self, ram: &mut [u8], program: &Program) -> CpuState {
        self.install_tables(ram);
        self.install_page_tables(ram);
        self.install_stubs(ram);
        // In real mode the code segment's base is CODE and the program's origin an
        // offset in it; elsewhere segments are flat and the origin is linear.
        let base = if self.real { CODE } else { 0 };
        Self::write(ram, base + program.origin, &program.bytes);
        if self.real {
            self.real_state(program.origin)
        } else {
            self.state(program.origin)
        }
    }

    /// GDTR for the kernel's GDT.
    fn gdtr(&self) -> DescriptorTable {
        DescriptorTable {
            base: GDT,
            limit: (self.gdt.len() * 8 - 1) as u16,
        }
    }

    /// The CPU state at the start in real mode.
    fn real_state(&self, ip: u64) -> CpuState {
        let data = Segment {
            selector: 0,
            base: 0,
            limit: REAL_LIMIT,
            attr: REAL_DATA_ATTR,
        };
        let mut seg = [data; 6];
        seg[SegReg::Cs as usize] = Segment {
            selector: REAL_CS,
            base: CODE,
            limit: REAL_LIMIT,
            attr: REAL_CODE_ATTR,
        };
        let mut gpr = self.regs;
        gpr[4] = KERNEL_STACK;
        CpuState {
            gpr,
            rip: ip,
            rflags: self.rflags.into(),
            seg: seg.into(),
            // The GDT is there for code that enters protected mode.
            gdtr: self.gdtr(),
            idtr: DescriptorTable {
                base: 0,
                limit: (256 * IVT_ENTRY - 1) as u16,
            },
            cr0: self.cr0,
            ..CpuState::default()
        }
    }

    /// The CPU state at the start.
    fn state(&self, rip: u64) -> CpuState {
        let slot = |sel: u16| self.gdt[(sel >> 3) as usize];
        let (cs, ds, sp) = match (self.cpl, self.long) {
            (0, _) => (KERNEL_CS, KERNEL_DS, KERNEL_STACK),
            (_, false) => (USER_CS, USER_DS, USER_STACK),
            (_, true) if self.compat => (USER_CS, USER_DS, USER_STACK),
            (_, true) => (USER_CS64, USER_DS, USER_STACK),
        };
        let data_seg = loaded(ds, slot(ds));
        let mut seg = [data_seg; 6];
        seg[SegReg::Cs as usize] = loaded(cs, slot(cs));
        let mut gpr = self.regs;
        gpr[4] = sp;
        let (cr4, efer) = if self.long {
            (cr4::PAE, efer::LME | efer::LMA | self.efer)
        } else {
            (0, self.efer)
        };
        CpuState {
            gpr,
            rip,
            rflags: self.rflags.into(),
            seg: seg.into(),
            tr: loaded(TSS_SEL, slot(TSS_SEL)),
            gdtr: self.gdtr(),
            idtr: DescriptorTable {
                base: IDT,
                limit: self.idt_limit,
            },
            cr0: self.cr0,
            cr3: PAGE_TABLES,
            cr4,
            efer,
            msr: self.msr,
            ..CpuState::default()
        }
    }
}
