//! Random instruction sequences whose every defined result is the same in 32-bit
//! protected mode and in 64-bit mode, with the flags they leave undefined.
//!
//! The instruction forms are not listed by hand: every iced-x86 `Code` of the families
//! below that is valid in both modes, has an operand size of at most 32 bits and only
//! register, immediate or plain memory operands becomes a candidate. So each form
//! the decoder distinguishes (`add r/m32, imm8` and `add eax, imm32`, `xchg r32, eax`,
//! `imul r32, r/m32, imm8` ...) gets exercised.

use iced_x86::{
    Code, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpCodeOperandKind, OpKind,
    Register, RflagsBits,
};

/// Size of the scratch buffer memory operands point into, in bytes.
pub const MEM_SIZE: usize = 64;
/// The register that holds the scratch buffer's address in sequences with memory
/// operands; such sequences never write it.
pub const MEM_BASE: Register = Register::ESI;
/// Index of [`MEM_BASE`] in encoding order.
pub const MEM_BASE_INDEX: usize = 6;

/// The registers a sequence may use, in encoding order (ESP is the native stack).
const R32: [Register; 7] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::EBP,
    Register::ESI,
    Register::EDI,
];
const R16: [Register; 7] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::BP,
    Register::SI,
    Register::DI,
];
/// The eight legacy byte registers: encodable in both modes without REX.
const R8: [Register; 8] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
];

/// The status flags, as iced-x86 numbers them.
const STATUS: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

/// Documented encodings only: F6 /1 and F7 /1 are undocumented aliases of TEST.
const ALIASES: [Code; 3] = [
    Code::Test_rm8_imm8_F6r1,
    Code::Test_rm16_imm16_F7r1,
    Code::Test_rm32_imm32_F7r1,
];

/// The interpreter's instruction families (one source file each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// alu.rs
    Alu,
    /// shift.rs
    Shift,
    /// muldiv.rs
    MulDiv,
    /// bits.rs
    Bits,
    /// moves.rs
    Moves,
    /// flagops.rs
    FlagOps,
}

impl Family {
    const ALL: [Family; 6] = [
        Family::Alu,
        Family::Shift,
        Family::MulDiv,
        Family::Bits,
        Family::Moves,
        Family::FlagOps,
    ];

    fn of(code: Code) -> Option<Family> {
        use Mnemonic::*;
        Some(match code.mnemonic() {
            Add | Or | Adc | Sbb | And | Sub | Xor | Cmp | Test | Inc | Dec | Neg | Not => {
                Family::Alu
            }
            Rol | Ror | Rcl | Rcr | Shl | Shr | Sar | Shld | Shrd => Family::Shift,
            Mul | Imul | Div | Idiv => Family::MulDiv,
            Bt | Bts | Btr | Btc | Bsf | Bsr => Family::Bits,
            Mov | Movzx | Movsx | Lea | Xchg | Cmpxchg | Xadd | Bswap | Cbw | Cwde | Cwd | Cdq => {
                Family::Moves
            }
            Clc | Stc | Cmc | Lahf | Sahf => Family::FlagOps,
            // SETcc and CMOVcc (Jcc and LOOPcc have branch operands and are filtered out).
            _ if code.condition_code() != iced_x86::ConditionCode::None => Family::Moves,
            _ => return None,
        })
    }
}

/// Width in bits of a register or r/m operand kind.
fn kind_width(kind: OpCodeOperandKind) -> Option<u32> {
    use OpCodeOperandKind as K;
    match kind {
        K::r8_or_mem | K::r8_reg | K::r8_opcode | K::al | K::cl => Some(8),
        K::r16_or_mem | K::r16_reg | K::r16_opcode | K::ax => Some(16),
        K::r32_or_mem | K::r32_reg | K::r32_opcode | K::eax => Some(32),
        _ => None,
    }
}

/// The operand kinds the generator can fill in.
fn supported(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    kind_width(kind).is_some()
        || matches!(
            kind,
            K::imm8 | K::imm8_const_1 | K::imm8sex16 | K::imm8sex32 | K::imm16 | K::imm32 | K::mem
        )
}

/// The candidate instruction forms, by family.
pub struct Table {
    codes: Vec<(Family, Vec<Code>)>,
}

impl Table {
    /// Every usable form; LAHF/SAHF only if the host runs them in 64-bit mode.
    pub fn new(lahf_in_long_mode: bool) -> Self {
        let mut codes: Vec<(Family, Vec<Code>)> =
            Family::ALL.iter().map(|&f| (f, Vec::new())).collect();
        for code in Code::values() {
            let op = code.op_code();
            let usable = op.is_instruction()
                && op.mode32()
                && op.mode64()
                && op.operand_size() != 64
                && op.op_kinds().iter().all(|&k| supported(k))
                && !ALIASES.contains(&code)
                // BSWAP of a 16-bit register is undefined.
                && code != Code::Bswap_r16
                && (lahf_in_long_mode || !matches!(code.mnemonic(), Mnemonic::Lahf | Mnemonic::Sahf));
            if let (true, Some(family)) = (usable, Family::of(code)) {
                let slot = codes.iter_mut().find(|(f, _)| *f == family);
                slot.expect("every family has a slot").1.push(code);
            }
        }
        Table { codes }
    }

    /// How many forms each family has.
    pub fn sizes(&self) -> impl Iterator<Item = (Family, usize)> + '_ {
        self.codes.iter().map(|(f, c)| (*f, c.len()))
    }

    fn codes(&self, family: Family) -> &[Code] {
        &self
            .codes
            .iter()
            .find(|(f, _)| *f == family)
            .expect("slot")
            .1
    }
}

/// A small deterministic generator (xorshift64*), so a seed reproduces a case.
pub struct Rng(u64);

impl Rng {
    /// A generator for this seed (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // SplitMix64 spreads consecutive seeds apart; xorshift must not start at 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A value of `bits` bits, biased towards the edges where flags change.
    fn value(&mut self, bits: u32) -> u32 {
        let mask = (u64::MAX >> (64 - bits)) as u32;
        let sign = 1u32 << (bits - 1);
        let v = match self.below(10) {
            0 => 0,
            1 => 1,
            2 => mask,
            3 => sign,
            4 => sign - 1,
            5 => self.below(16) as u32,
            6 => mask - self.below(16) as u32,
            // Random with the byte boundaries BCD and parity care about.
            7 => self.next() as u32 & 0x0F0F_0F0F,
            _ => self.next() as u32,
        };
        v & mask
    }

    /// A shift or rotate count: around the operand width and the 5-bit count mask.
    fn count(&mut self, width: u32) -> u8 {
        let w = width as u8;
        let any = self.next() as u8;
        self.pick(&[0, 1, 2, w - 1, w, w + 1, 31, 32, 33, any])
    }
}

/// One operand to fill in.
#[derive(Debug, Clone, Copy)]
enum Operand {
    Reg(Register),
    Imm(u64),
    /// `[MEM_BASE + disp]`, inside the scratch buffer.
    Scratch(u32),
    /// A LEA address: 32-bit base and/or index, never accessed.
    Address {
        base: Register,
        index: Register,
        scale: u32,
        disp: u32,
    },
}

/// Builds `code` with these operands.
fn build(code: Code, operands: &[Operand]) -> Instruction {
    let mut ins = Instruction::default();
    ins.set_code(code);
    let kinds = code.op_code().op_kinds();
    assert_eq!(kinds.len(), operands.len(), "{code:?}");
    for (i, (&op, &kind)) in operands.iter().zip(kinds).enumerate() {
        let i = i as u32;
        match op {
            Operand::Reg(r) => {
                ins.set_op_kind(i, OpKind::Register);
                ins.set_op_register(i, r);
            }
            Operand::Imm(v) => {
                use OpCodeOperandKind as K;
                let kind = match kind {
                    K::imm8 | K::imm8_const_1 => OpKind::Immediate8,
                    K::imm8sex16 => OpKind::Immediate8to16,
                    K::imm8sex32 => OpKind::Immediate8to32,
                    K::imm16 => OpKind::Immediate16,
                    K::imm32 => OpKind::Immediate32,
                    _ => panic!("{code:?} operand {i} is not an immediate"),
                };
                ins.set_op_kind(i, kind);
                ins.try_set_immediate_u64(i, v)
                    .expect("immediate kind set above");
            }
            Operand::Scratch(disp) => set_memory(&mut ins, i, MEM_BASE, Register::None, 1, disp),
            Operand::Address {
                base,
                index,
                scale,
                disp,
            } => set_memory(&mut ins, i, base, index, scale, disp),
        }
    }
    ins
}

fn set_memory(
    ins: &mut Instruction,
    i: u32,
    base: Register,
    index: Register,
    scale: u32,
    disp: u32,
) {
    ins.set_op_kind(i, OpKind::Memory);
    ins.set_memory_base(base);
    ins.set_memory_index(index);
    ins.set_memory_index_scale(scale);
    ins.set_memory_displacement64(disp as u64);
    // A hint: the encoder still picks the shortest form that holds the value.
    let disp8 = i8::try_from(disp as i32).is_ok();
    ins.set_memory_displ_size(if disp8 { 1 } else { 4 });
}

/// What an instruction does to the status flags (iced-x86 bit numbering).
#[derive(Debug, Clone, Copy)]
struct Effect {
    read: u32,
    /// Flags it leaves with a defined value.
    defined: u32,
    /// Flags it leaves undefined.
    undefined: u32,
}

/// Whether this instruction's effect on the flags depends on a shift count.
fn counted(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Rol | Ror | Rcl | Rcr | Shl | Shr | Sar | Shld | Shrd)
}

/// Width of operand 0 in bits.
fn op0_width(ins: &Instruction) -> u32 {
    match ins.op0_kind() {
        OpKind::Register => ins.op0_register().size() as u32 * 8,
        _ => ins.memory_size().size() as u32 * 8,
    }
}

/// The count operand of a shift or rotate: the last operand, an immediate or CL.
fn count_of(ins: &Instruction, cl: Option<u8>) -> u32 {
    let last = ins.op_count() - 1;
    match ins.op_kind(last) {
        OpKind::Register => {
            assert_eq!(ins.op_register(last), Register::CL);
            cl.expect("a CL count is always set by the MOV CL before it") as u32
        }
        _ => ins.immediate(last) as u32,
    }
}

impl Effect {
    fn of(ins: &Instruction, cl: Option<u8>) -> Effect {
        let m = ins.mnemonic();
        if !counted(m) {
            let undefined = ins.rflags_undefined() & STATUS;
            return Effect {
                read: ins.rflags_read() & STATUS,
                defined: ins.rflags_modified() & STATUS & !undefined,
                undefined,
            };
        }
        // iced-x86 works out a shift's flags from an immediate count (and takes a
        // rotate through CF by a multiple of its width as a no-op), but not from CL; the
        // SDM rules are applied here to either (vol. 2B, SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR,
        // SHLD, SHRD). A masked count of 0 changes no flag. Otherwise rotates write CF
        // and OF, shifts all six; AF is undefined after a shift, OF after any count but
        // 1, CF after SHL/SHR by the operand width or more.
        let rotate = matches!(
            m,
            Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr
        );
        let read = if matches!(m, Mnemonic::Rcl | Mnemonic::Rcr) {
            RflagsBits::CF
        } else {
            0
        };
        let masked = count_of(ins, cl) & 31;
        if masked == 0 {
            return Effect {
                read,
                defined: 0,
                undefined: 0,
            };
        }
        let modified = if rotate {
            RflagsBits::CF | RflagsBits::OF
        } else {
            STATUS
        };
        let mut undefined = 0;
        if !rotate {
            undefined |= RflagsBits::AF;
        }
        if masked != 1 {
            undefined |= RflagsBits::OF;
        }
        if matches!(m, Mnemonic::Shl | Mnemonic::Shr) && masked >= op0_width(ins) {
            undefined |= RflagsBits::CF;
        }
        Effect {
            read,
            defined: modified & !undefined,
            undefined,
        }
    }
}

/// Follows which status flags are undefined along a sequence.
#[derive(Debug, Clone, Copy, Default)]
struct FlagTracker {
    undefined: u32,
    /// CL when the previous instruction was `mov cl, imm8`: the count of the next one.
    cl: Option<u8>,
}

impl FlagTracker {
    /// Steps over `ins`; false if it reads a flag that is undefined at this point (its
    /// result would then be undefined too).
    fn step(&mut self, ins: &Instruction) -> bool {
        let e = Effect::of(ins, self.cl);
        if e.read & self.undefined != 0 {
            return false;
        }
        self.undefined = (self.undefined & !e.defined) | e.undefined;
        self.cl = (ins.code() == Code::Mov_r8_imm8 && ins.op0_register() == Register::CL)
            .then(|| ins.immediate8());
        true
    }
}

/// Converts iced-x86 flag bits to EFLAGS bits.
fn to_eflags(bits: u32) -> u32 {
    const MAP: [(u32, u32); 6] = [
        (RflagsBits::CF, 1 << 0),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::OF, 1 << 11),
    ];
    MAP.iter()
        .filter(|(iced, _)| bits & iced != 0)
        .map(|(_, eflags)| eflags)
        .sum()
}

/// One generated test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The seed that generated it.
    pub seed: u64,
    /// Instructions in groups that stay together when a failure is shrunk (a shift by CL
    /// and the MOV CL that sets its count, a division and the set-up that keeps it from
    /// faulting).
    pub units: Vec<Vec<Instruction>>,
    /// Initial EAX..EDI (ESP unused; ESI replaced by the buffer address with `memory`).
    pub regs: [u32; 8],
    /// Initial status flags (EFLAGS bits).
    pub flags: u32,
    /// Whether ESI points to a scratch buffer that memory operands use.
    pub memory: bool,
    /// Initial contents of the scratch buffer.
    pub mem: [u8; MEM_SIZE],
}

impl Case {
    /// The instructions, in order.
    pub fn instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.units.iter().flatten()
    }

    /// The status flags (EFLAGS bits) with a defined value at the end, or None if an
    /// instruction reads a flag that is undefined at that point.
    pub fn defined_flags(&self) -> Option<u32> {
        let mut t = FlagTracker::default();
        self.instructions()
            .all(|i| t.step(i))
            .then(|| to_eflags(STATUS & !t.undefined))
    }
}

/// Generates cases from a table of forms.
pub struct Generator<'t> {
    table: &'t Table,
    info: InstructionInfoFactory,
    /// Candidate units rejected because they read a flag left undefined.
    pub rejected: u64,
}

/// The longest sequence, in units.
const MAX_UNITS: usize = 12;

impl<'t> Generator<'t> {
    /// A generator over `table`.
    pub fn new(table: &'t Table) -> Self {
        Generator {
            table,
            info: InstructionInfoFactory::new(),
            rejected: 0,
        }
    }

    /// The case for `seed`.
    pub fn case(&mut self, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let memory = rng.one_in(2);
        // Each sequence mixes a few families, so the families the interpreter lacks
        // leave others testable, and interactions between families are covered too.
        let families: Vec<Family> = loop {
            let f: Vec<Family> = Family::ALL.into_iter().filter(|_| rng.one_in(2)).collect();
            if !f.is_empty() {
                break f;
            }
        };
        let want = 1 + rng.below(MAX_UNITS);
        let mut units = Vec::new();
        let mut tracker = FlagTracker::default();
        for _ in 0..want * 20 {
            if units.len() == want {
                break;
            }
            let family = rng.pick(&families);
            let code = rng.pick(self.table.codes(family));
            let unit = Filler {
                rng: &mut rng,
                memory,
            }
            .unit(code);
            if memory && self.writes_mem_base(&unit) {
                continue;
            }
            let mut t = tracker;
            if unit.iter().all(|i| t.step(i)) {
                tracker = t;
                units.push(unit);
            } else {
                self.rejected += 1;
            }
        }
        let mut regs = [0u32; 8];
        for r in &mut regs {
            *r = rng.value(32);
        }
        let mut mem = [0u8; MEM_SIZE];
        for b in &mut mem {
            *b = rng.value(8) as u8;
        }
        Case {
            seed,
            units,
            regs,
            flags: to_eflags(rng.next() as u32 & STATUS),
            memory,
            mem,
        }
    }

    /// Whether the unit writes the scratch buffer's base register.
    fn writes_mem_base(&mut self, unit: &[Instruction]) -> bool {
        unit.iter().any(|ins| {
            self.info.info(ins).used_registers().iter().any(|u| {
                u.register().full_register32() == MEM_BASE
                    && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
            })
        })
    }
}

/// Fills in the operands of one form.
struct Filler<'r> {
    rng: &'r mut Rng,
    memory: bool,
}

impl Filler<'_> {
    /// `code` with random operands, and whatever must precede it to make its count
    /// known or its division safe.
    fn unit(&mut self, code: Code) -> Vec<Instruction> {
        match code.mnemonic() {
            Mnemonic::Div | Mnemonic::Idiv => self.division(code),
            _ => {
                let ins = self.fill(code);
                let kinds = code.op_code().op_kinds();
                if counted(code.mnemonic()) && kinds.last() == Some(&OpCodeOperandKind::cl) {
                    let count = self.count_for(&ins);
                    let set_cl = build(
                        Code::Mov_r8_imm8,
                        &[Operand::Reg(Register::CL), Operand::Imm(count.into())],
                    );
                    vec![set_cl, ins]
                } else {
                    vec![ins]
                }
            }
        }
    }

    fn reg(&mut self, width: u32) -> Register {
        match width {
            8 => self.rng.pick(&R8),
            16 => self.rng.pick(&R16),
            _ => self.rng.pick(&R32),
        }
    }

    /// A register or (sometimes, in memory sequences) a scratch-buffer operand.
    fn rm(&mut self, width: u32, memory_ok: bool) -> Operand {
        if self.memory && memory_ok && self.rng.one_in(3) {
            let bytes = (width / 8) as usize;
            Operand::Scratch(self.rng.below(MEM_SIZE - bytes + 1) as u32)
        } else {
            Operand::Reg(self.reg(width))
        }
    }

    fn fill(&mut self, code: Code) -> Instruction {
        use OpCodeOperandKind as K;
        let kinds = code.op_code().op_kinds();
        let m = code.mnemonic();
        // BT* with a register bit offset address memory beyond the operand.
        let bit_offset_in_reg = matches!(
            m,
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
        ) && kinds.get(1).and_then(|&k| kind_width(k)).is_some();
        let width = kinds.first().and_then(|&k| kind_width(k)).unwrap_or(32);
        let operands: Vec<Operand> = kinds
            .iter()
            .map(|&kind| match kind {
                K::al => Operand::Reg(Register::AL),
                K::cl => Operand::Reg(Register::CL),
                K::ax => Operand::Reg(Register::AX),
                K::eax => Operand::Reg(Register::EAX),
                K::r8_or_mem | K::r16_or_mem | K::r32_or_mem => {
                    self.rm(kind_width(kind).expect("r/m"), !bit_offset_in_reg)
                }
                K::imm8_const_1 => Operand::Imm(1),
                K::imm8 if counted(m) => Operand::Imm(self.count(m, width).into()),
                K::imm8 | K::imm8sex16 | K::imm8sex32 => Operand::Imm(self.rng.value(8).into()),
                K::imm16 => Operand::Imm(self.rng.value(16).into()),
                K::imm32 => Operand::Imm(self.rng.value(32).into()),
                K::mem => self.address(),
                _ => Operand::Reg(self.reg(kind_width(kind).expect("filtered in Table::new"))),
            })
            .collect();
        build(code, &operands)
    }

    /// A count for a shift or rotate of `width` bits.
    fn count(&mut self, m: Mnemonic, width: u32) -> u8 {
        if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) && width == 16 {
            // A 16-bit double shift by more than 16 has an undefined result; keep the
            // masked count in 0..=16, sometimes with bit 5 set to check the masking.
            let high = if self.rng.one_in(4) { 32 } else { 0 };
            self.rng.below(17) as u8 | high
        } else {
            self.rng.count(width)
        }
    }

    fn count_for(&mut self, ins: &Instruction) -> u8 {
        self.count(ins.mnemonic(), op0_width(ins))
    }

    /// A LEA operand: base and/or index from the usable registers, any scale and
    /// displacement (32-bit address arithmetic in both modes).
    fn address(&mut self) -> Operand {
        let (base, index) = match self.rng.below(3) {
            0 => (self.rng.pick(&R32), Register::None),
            1 => (Register::None, self.rng.pick(&R32)),
            _ => (self.rng.pick(&R32), self.rng.pick(&R32)),
        };
        let disp = match self.rng.below(3) {
            0 => 0,
            1 => self.rng.value(8) as i8 as u32,
            _ => self.rng.value(32),
        };
        Operand::Address {
            base,
            index,
            scale: self.rng.pick(&[1, 2, 4, 8]),
            disp,
        }
    }

    /// DIV or IDIV with the set-up that keeps it from raising #DE whatever the
    /// registers hold: the divisor is forced non-zero (and not -1 for IDIV), and the
    /// high half of the dividend is forced below the divisor (DIV) or to the sign of the
    /// low half (IDIV).
    fn division(&mut self, code: Code) -> Vec<Instruction> {
        let width = kind_width(code.op_code().op_kind(0)).expect("r/m operand");
        let (low, high, or, and, mov, extend) = match width {
            8 => (
                Register::AL,
                Register::AH,
                Code::Or_rm8_imm8,
                Code::And_rm8_imm8,
                Code::Mov_r8_imm8,
                Code::Cbw,
            ),
            16 => (
                Register::AX,
                Register::DX,
                Code::Or_rm16_imm16,
                Code::And_rm16_imm16,
                Code::Mov_r16_imm16,
                Code::Cwd,
            ),
            _ => (
                Register::EAX,
                Register::EDX,
                Code::Or_rm32_imm32,
                Code::And_rm32_imm32,
                Code::Mov_r32_imm32,
                Code::Cdq,
            ),
        };
        let divisor = loop {
            let d = self.rm(width, true);
            if !matches!(d, Operand::Reg(r) if r == low || r == high) {
                break d;
            }
        };
        let top = 1u64 << (width - 1);
        let mut unit = if code.mnemonic() == Mnemonic::Div {
            // divisor >= 2^(w-1) > high half: the quotient fits.
            let h = self.rng.value(width) as u64 & (top - 1);
            vec![
                build(or, &[divisor, Operand::Imm(top)]),
                build(mov, &[Operand::Reg(high), Operand::Imm(h)]),
            ]
        } else {
            // One bit clear and another set: neither 0 nor -1. With a sign-extended
            // dividend |quotient| <= |dividend|, which fits unless it is MIN / -1.
            let clear = self.rng.below(width as usize) as u32;
            let set = (clear + 1 + self.rng.below(width as usize - 1) as u32) % width;
            let mask = (u64::MAX >> (64 - width)) & !(1u64 << clear);
            vec![
                build(and, &[divisor, Operand::Imm(mask)]),
                build(or, &[divisor, Operand::Imm(1 << set)]),
                Instruction::with(extend),
            ]
        };
        unit.push(build(code, &[divisor]));
        unit
    }
}
