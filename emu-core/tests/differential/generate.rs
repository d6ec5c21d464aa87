//! Random instruction sequences for a [`Mode`], with the flags they leave undefined.
//!
//! The instruction forms are not listed by hand: every iced-x86 `Code` of the families
//! below that the mode allows and that has only register, immediate or plain memory
//! operands becomes a candidate. So each form the decoder distinguishes (`add r/m32,
//! imm8` and `add eax, imm32`, `xchg r32, eax`, `imul r32, r/m32, imm8` ...) gets
//! exercised.

use emu_core::x86::opcode::rflags_bits;
use iced_x86::{
    Code, Encoder, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpCodeInfo,
    OpCodeOperandKind, OpKind, Register, RflagsBits,
};

/// Size of the scratch buffer memory operands point into, in bytes.
pub const MEM_SIZE: usize = 64;
/// Index, in encoding order, of the register that holds the scratch buffer's address in
/// sequences with memory operands (ESI or RSI); such sequences never write it.
pub const MEM_BASE_INDEX: usize = 6;

/// Where a sequence runs in the interpreter. Natively it always runs in 64-bit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 32-bit protected mode. The host runs the same instructions encoded for 64-bit
    /// mode, so only forms that mean the same there on 32-, 16- and 8-bit registers are
    /// used, with the eight legacy registers, and only their low 32 bits count.
    Protected,
    /// 64-bit mode: both sides run the same bytes at the same addresses, with all
    /// sixteen registers (bar RSP) and all their 64 bits.
    Long,
}

impl Mode {
    /// The code bitness the interpreter decodes with.
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Protected => 32,
            Mode::Long => 64,
        }
    }

    /// How many general-purpose registers the mode has.
    pub fn gprs(self) -> usize {
        match self {
            Mode::Protected => 8,
            Mode::Long => 16,
        }
    }

    /// The register bits that count.
    pub fn reg_mask(self) -> u64 {
        u64::MAX >> (64 - self.bitness())
    }

    /// The register that holds the scratch buffer's address.
    pub fn mem_base(self) -> Register {
        match self {
            Mode::Protected => Register::ESI,
            Mode::Long => Register::RSI,
        }
    }

    /// Whether a form is a candidate in this mode.
    fn allows(self, op: &OpCodeInfo) -> bool {
        match self {
            Mode::Protected => op.mode32() && op.mode64() && op.operand_size() != 64,
            Mode::Long => op.mode64(),
        }
    }

    /// Whether a general-purpose register can be used in this mode: never RSP or SPL
    /// (the host's stack pointer), and in protected mode only what encodes without REX.
    fn has(self, r: Register) -> bool {
        let full = r.full_register();
        let rex_only = full.number() >= 8
            || matches!(
                r,
                Register::SPL | Register::BPL | Register::SIL | Register::DIL
            );
        full != Register::RSP && (self == Mode::Long || !rex_only)
    }
}

/// Whether the host runs LAHF and SAHF in 64-bit mode (CPUID 0x8000_0001 ECX.0): what
/// [`Table::new`] needs to know when the host CPU runs the sequences.
pub fn lahf_in_long_mode() -> bool {
    use std::arch::x86_64::__cpuid;
    // Leaf 0x8000_0000 says whether the extended leaf is there before it is read.
    __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & 1 != 0
}

/// The status flags, as iced-x86 numbers them.
const STATUS: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

/// Documented encodings only: F6 /1 and F7 /1 are undocumented aliases of TEST.
const ALIASES: [Code; 4] = [
    Code::Test_rm8_imm8_F6r1,
    Code::Test_rm16_imm16_F7r1,
    Code::Test_rm32_imm32_F7r1,
    Code::Test_rm64_imm32_F7r1,
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
            Mov | Movzx | Movsx | Movsxd | Lea | Xchg | Cmpxchg | Xadd | Bswap | Cbw | Cwde
            | Cdqe | Cwd | Cdq | Cqo => Family::Moves,
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
        K::r64_or_mem | K::r64_reg | K::r64_opcode | K::rax => Some(64),
        _ => None,
    }
}

/// The operand kinds the generator can fill in.
fn supported(kind: OpCodeOperandKind) -> bool {
    use OpCodeOperandKind as K;
    kind_width(kind).is_some()
        || matches!(
            kind,
            K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
                | K::mem
        )
}

/// The candidate instruction forms, by family, and the registers, of one mode.
pub struct Table {
    mode: Mode,
    codes: Vec<(Family, Vec<Code>)>,
    /// The usable general-purpose registers of 8, 16, 32 and 64 bits.
    regs: [Vec<Register>; 4],
}

impl Table {
    /// Every usable form of `mode`; LAHF/SAHF only if the host runs them in 64-bit mode.
    pub fn new(mode: Mode, lahf_in_long_mode: bool) -> Self {
        let mut codes: Vec<(Family, Vec<Code>)> =
            Family::ALL.iter().map(|&f| (f, Vec::new())).collect();
        for code in Code::values() {
            let op = code.op_code();
            let usable = op.is_instruction()
                && mode.allows(op)
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
        let regs = [8, 16, 32, 64].map(|bits| {
            Register::values()
                .filter(|r| r.is_gpr() && r.size() * 8 == bits && mode.has(*r))
                .collect()
        });
        Table { mode, codes, regs }
    }

    /// The usable registers of `width` bits.
    fn registers(&self, width: u32) -> &[Register] {
        &self.regs[(width / 8).trailing_zeros() as usize]
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
    fn value(&mut self, bits: u32) -> u64 {
        let mask = u64::MAX >> (64 - bits);
        let sign = 1u64 << (bits - 1);
        let v = match self.below(11) {
            0 => 0,
            1 => 1,
            2 => mask,
            3 => sign,
            4 => sign - 1,
            5 => self.below(16) as u64,
            6 => mask - self.below(16) as u64,
            // Random with the byte boundaries BCD and parity care about.
            7 => self.next() & 0x0F0F_0F0F_0F0F_0F0F,
            // A sign-extended half-width value: where sign extension (MOVSX, MOVSXD,
            // CDQE) and the overflow of a widening multiplication change.
            8 => sign_extend(self.next(), bits / 2),
            _ => self.next(),
        };
        v & mask
    }

    /// A 32-bit displacement, sign-extended as iced-x86 keeps it.
    fn displacement(&mut self) -> u64 {
        let bits = if self.one_in(2) { 8 } else { 32 };
        sign_extend(self.value(bits), bits)
    }

    /// A shift or rotate count: around the operand width and the 5-bit count mask (the
    /// 6-bit mask of 64-bit operands is the width).
    fn count(&mut self, width: u32) -> u8 {
        let w = width as u8;
        let any = self.next() as u8;
        self.pick(&[0, 1, 2, w - 1, w, w + 1, 31, 32, 33, any])
    }
}

/// The low `bits` bits of `v`, sign-extended.
fn sign_extend(v: u64, bits: u32) -> u64 {
    ((v << (64 - bits)) as i64 >> (64 - bits)) as u64
}

/// One operand to fill in.
#[derive(Debug, Clone, Copy)]
enum Operand {
    Reg(Register),
    Imm(u64),
    /// `[base + index * scale + disp]`: a scratch-buffer operand or a LEA address. With
    /// RIP as the base, `disp` is the absolute target, as iced-x86 keeps it.
    Memory {
        base: Register,
        index: Register,
        scale: u32,
        disp: u64,
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
                    K::imm8sex64 => OpKind::Immediate8to64,
                    K::imm16 => OpKind::Immediate16,
                    K::imm32 => OpKind::Immediate32,
                    K::imm32sex64 => OpKind::Immediate32to64,
                    K::imm64 => OpKind::Immediate64,
                    _ => panic!("{code:?} operand {i} is not an immediate"),
                };
                ins.set_op_kind(i, kind);
                ins.try_set_immediate_u64(i, v)
                    .expect("immediate kind set above");
            }
            Operand::Memory {
                base,
                index,
                scale,
                disp,
            } => {
                ins.set_op_kind(i, OpKind::Memory);
                ins.set_memory_base(base);
                ins.set_memory_index(index);
                ins.set_memory_index_scale(scale);
                ins.set_memory_displacement64(disp);
                // A hint: the encoder still picks the shortest form that holds the
                // value. Otherwise iced-x86 wants the address size.
                let address_size = base.size().max(index.size()) as u32;
                let disp8 = base != Register::RIP && i8::try_from(disp as i64).is_ok();
                ins.set_memory_displ_size(if disp8 { 1 } else { address_size });
            }
        }
    }
    ins
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
        // SHLD, SHRD). The count is masked to 6 bits for 64-bit operands, else to 5. A
        // masked count of 0 changes no flag. Otherwise rotates write CF and OF, shifts
        // all six; AF is undefined after a shift, OF after any count but 1, CF after
        // SHL/SHR by the operand width or more.
        let rotate = matches!(
            m,
            Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr
        );
        let read = if matches!(m, Mnemonic::Rcl | Mnemonic::Rcr) {
            RflagsBits::CF
        } else {
            0
        };
        let width = op0_width(ins);
        let masked = count_of(ins, cl) & if width == 64 { 63 } else { 31 };
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
        if matches!(m, Mnemonic::Shl | Mnemonic::Shr) && masked >= width {
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

/// One generated test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The seed that generated it.
    pub seed: u64,
    /// Instructions in groups that stay together when a failure is shrunk (a shift by CL
    /// and the MOV CL that sets its count, a division and the set-up that keeps it from
    /// faulting).
    pub units: Vec<Vec<Instruction>>,
    /// Initial general-purpose registers in encoding order, as wide as the mode's (those
    /// the mode lacks are 0; RSP is unused; ESI/RSI is replaced by the buffer address
    /// with `memory`).
    pub regs: [u64; 16],
    /// Initial status flags (EFLAGS bits).
    pub flags: u32,
    /// Whether ESI/RSI points to a scratch buffer that memory operands use.
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
            .then(|| rflags_bits(STATUS & !t.undefined) as u32)
    }
}

/// Generates cases from a table of forms.
pub struct Generator<'t> {
    table: &'t Table,
    /// The scratch buffer's address: the target of RIP-relative operands (64-bit mode).
    scratch: u64,
    info: InstructionInfoFactory,
    /// For the host: checks that a unit has a 64-bit encoding.
    encoder: Encoder,
    /// Candidate units rejected because they read a flag left undefined.
    pub rejected: u64,
}

/// The longest sequence, in units.
const MAX_UNITS: usize = 12;

impl<'t> Generator<'t> {
    /// A generator over `table`, for a scratch buffer at `scratch`.
    pub fn new(table: &'t Table, scratch: u64) -> Self {
        Generator {
            table,
            scratch,
            info: InstructionInfoFactory::new(),
            encoder: Encoder::new(64),
            rejected: 0,
        }
    }

    /// The case for `seed`.
    pub fn case(&mut self, seed: u64) -> Case {
        let mode = self.table.mode;
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
                table: self.table,
                memory,
                scratch: self.scratch,
            }
            .unit(code);
            if (memory && self.writes_mem_base(&unit)) || !self.encodable(&unit) {
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
        let mut regs = [0u64; 16];
        for r in &mut regs[..mode.gprs()] {
            *r = rng.value(mode.bitness());
        }
        let mut mem = [0u8; MEM_SIZE];
        for b in &mut mem {
            *b = rng.value(8) as u8;
        }
        Case {
            seed,
            units,
            regs,
            flags: rflags_bits(rng.next() as u32 & STATUS) as u32,
            memory,
            mem,
        }
    }

    /// Whether the unit writes the scratch buffer's base register.
    fn writes_mem_base(&mut self, unit: &[Instruction]) -> bool {
        unit.iter().any(|ins| {
            self.info.info(ins).used_registers().iter().any(|u| {
                u.register().full_register() == Register::RSI
                    && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
            })
        })
    }

    /// Whether the host can run the unit: AH, CH, DH and BH have no encoding in an
    /// instruction that needs a REX prefix (for a 64-bit operand or another register).
    fn encodable(&mut self, unit: &[Instruction]) -> bool {
        let ok = unit
            .iter()
            .all(|ins| self.encoder.encode(ins, self.scratch).is_ok());
        // Only whether it encodes matters: drop the bytes.
        let _ = self.encoder.take_buffer();
        ok
    }
}

/// Fills in the operands of one form.
struct Filler<'r> {
    rng: &'r mut Rng,
    table: &'r Table,
    memory: bool,
    scratch: u64,
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
        self.rng.pick(self.table.registers(width))
    }

    /// A register or (sometimes, in memory sequences) a scratch-buffer operand.
    fn rm(&mut self, width: u32, memory_ok: bool) -> Operand {
        if self.memory && memory_ok && self.rng.one_in(3) {
            let bytes = (width / 8) as usize;
            let offset = self.rng.below(MEM_SIZE - bytes + 1) as u64;
            self.scratch_operand(offset)
        } else {
            Operand::Reg(self.reg(width))
        }
    }

    /// `offset` bytes into the scratch buffer: from the base register, or in 64-bit
    /// mode sometimes RIP-relative.
    fn scratch_operand(&mut self, offset: u64) -> Operand {
        let mode = self.table.mode;
        if mode == Mode::Long && self.rng.one_in(3) {
            return self.rip_relative(offset);
        }
        Operand::Memory {
            base: mode.mem_base(),
            index: Register::None,
            scale: 1,
            disp: offset,
        }
    }

    /// `[rip + disp]` that reaches `offset` bytes into the scratch buffer: code and
    /// buffer are at the same places on both sides, so the bytes are the same too.
    fn rip_relative(&self, offset: u64) -> Operand {
        Operand::Memory {
            base: Register::RIP,
            index: Register::None,
            scale: 1,
            disp: self.scratch + offset,
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
                K::rax => Operand::Reg(Register::RAX),
                K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                    self.rm(kind_width(kind).expect("r/m"), !bit_offset_in_reg)
                }
                K::imm8_const_1 => Operand::Imm(1),
                K::imm8 if counted(m) => Operand::Imm(self.count(m, width).into()),
                K::imm8 | K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => {
                    Operand::Imm(self.rng.value(8))
                }
                K::imm16 => Operand::Imm(self.rng.value(16)),
                K::imm32 | K::imm32sex64 => Operand::Imm(self.rng.value(32)),
                K::imm64 => Operand::Imm(self.rng.value(64)),
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
    /// displacement. 32-bit address arithmetic in protected mode; in 64-bit mode 64-bit,
    /// 32-bit (with an address-size prefix) or RIP-relative.
    fn address(&mut self) -> Operand {
        let size = match self.table.mode {
            Mode::Long if self.rng.one_in(6) => {
                let offset = self.rng.below(MEM_SIZE) as u64;
                return self.rip_relative(offset);
            }
            Mode::Long if !self.rng.one_in(3) => 64,
            _ => 32,
        };
        let regs = self.table.registers(size);
        let (base, index) = match self.rng.below(3) {
            0 => (self.rng.pick(regs), Register::None),
            1 => (Register::None, self.rng.pick(regs)),
            _ => (self.rng.pick(regs), self.rng.pick(regs)),
        };
        let disp = match self.rng.below(3) {
            0 => 0,
            _ => self.rng.displacement(),
        };
        Operand::Memory {
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
        let (low, high, mov, extend) = match width {
            8 => (Register::AL, Register::AH, Code::Mov_r8_imm8, Code::Cbw),
            16 => (Register::AX, Register::DX, Code::Mov_r16_imm16, Code::Cwd),
            32 => (Register::EAX, Register::EDX, Code::Mov_r32_imm32, Code::Cdq),
            _ => (Register::RAX, Register::RDX, Code::Mov_r64_imm64, Code::Cqo),
        };
        let divisor = loop {
            let d = self.rm(width, true);
            if !matches!(d, Operand::Reg(r) if r == low || r == high) {
                break d;
            }
        };
        let top = width - 1;
        let mut unit = if code.mnemonic() == Mnemonic::Div {
            // divisor >= 2^(w-1) > high half: the quotient fits.
            let h = self.rng.value(width) & ((1 << top) - 1);
            vec![
                force_bit(width, divisor, top, true),
                build(mov, &[Operand::Reg(high), Operand::Imm(h)]),
            ]
        } else {
            // One bit clear and another set: neither 0 nor -1. With a sign-extended
            // dividend |quotient| <= |dividend|, which fits unless it is MIN / -1.
            let clear = self.rng.below(width as usize) as u32;
            let set = (clear + 1 + self.rng.below(width as usize - 1) as u32) % width;
            vec![
                force_bit(width, divisor, clear, false),
                force_bit(width, divisor, set, true),
                Instruction::with(extend),
            ]
        };
        unit.push(build(code, &[divisor]));
        unit
    }
}

/// Sets (`on`) or clears bit `bit` of a `width`-bit operand: with OR/AND, or with
/// BTS/BTR for 64 bits, where no immediate holds every single-bit mask.
fn force_bit(width: u32, operand: Operand, bit: u32, on: bool) -> Instruction {
    let mask = 1u64 << bit;
    let ones = u64::MAX >> (64 - width);
    let (code, imm) = match (width, on) {
        (8, true) => (Code::Or_rm8_imm8, mask),
        (8, false) => (Code::And_rm8_imm8, ones & !mask),
        (16, true) => (Code::Or_rm16_imm16, mask),
        (16, false) => (Code::And_rm16_imm16, ones & !mask),
        (32, true) => (Code::Or_rm32_imm32, mask),
        (32, false) => (Code::And_rm32_imm32, ones & !mask),
        (_, true) => (Code::Bts_rm64_imm8, u64::from(bit)),
        (_, false) => (Code::Btr_rm64_imm8, u64::from(bit)),
    };
    build(code, &[operand, Operand::Imm(imm)])
}
