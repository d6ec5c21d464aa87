//! From a decoded block to host code.
//!
//! Each instruction gets one of three treatments:
//!
//! - **copied**: the common integer instructions (MOV, ALU, INC/DEC, NEG/NOT, shifts
//!   and rotates, IMUL/MUL, MOVZX/MOVSX, SETcc, CMOVcc, XCHG, TEST/CMP, BT*, ...) are
//!   re-encoded nearly as they are, with the guest's registers renamed to the host
//!   registers that hold them and a memory operand replaced by `[r10 + rcx]`, the host
//!   address the inline TLB check found. The host computes the flags.
//! - **rewritten**: the stack and control-flow instructions (PUSH, POP, CALL, RET,
//!   LEAVE, JMP, Jcc) become short sequences on the guest stack pointer and exits to
//!   the next block, which are chained (patched to jump straight to it) within a page.
//! - **called out**: everything else (system instructions, string instructions,
//!   division, port I/O, far transfers, anything on a segment with a base or limit)
//!   runs in the interpreter, one instruction at a time, the guest state handed over
//!   through the context.
//!
//! In 64-bit mode the same, with guest RAX..RDI in the host registers that hold EAX..EDI
//! in 32-bit mode, and R8..R15 in the context: an instruction naming one of them gets
//! it in a scratch register (r11, r12) for its duration, loaded before and stored
//! after, which keeps the mapping fixed and costs only where those registers are used.
//! RIP-relative operands have their absolute address computed at translation time.
//! A non-canonical address misses the inline TLB (no entry is ever filled for one), so
//! the slow path calls the instruction out and the interpreter raises #GP or #SS; a
//! branch to a non-canonical target is called out the same way before it commits.
//!
//! A memory operand's slow path (TLB miss, MMIO, page crossing, code page, fault) also
//! ends in a call-out of the whole instruction, which has committed nothing yet: the
//! interpreter then does the access, raises the fault or notes the self-modifying
//! write, exactly as it would have.

use super::jit::{exit, mem_info, off, Code, HOST_GPR, NO_LINK};
use crate::interp::cache::Block;
use crate::x86::ctx::address_size;
use dynasmrt::{dynasm, AssemblyOffset, DynamicLabel, DynasmApi, DynasmLabelApi};
use iced_x86::{
    Code as Op, CodeSize, ConditionCode, Encoder, Instruction, InstructionInfoFactory,
    MemoryOperand, Mnemonic, OpAccess, OpKind, Register,
};

/// How one guest instruction is translated.
enum Plan {
    /// Nothing to do (NOP).
    Nothing,
    /// Re-encoded: the host instruction's bytes (a memory operand already
    /// `[r10 + rcx]`), after the address computation into r10 of `mem` and, with
    /// `access`, its access check (LEA only computes the address). `scratch`: guest
    /// registers held in scratch registers around it. `count_in_cl`: load guest CL
    /// into host CL first.
    Copy {
        bytes: Vec<u8>,
        mem: Option<(Mem, Vec<u8>)>,
        access: bool,
        scratch: Scratch,
        count_in_cl: bool,
    },
    /// LEA into a register the host holds, from registers it holds: the host LEA's
    /// bytes.
    Lea(Vec<u8>),
    /// PUSH of a register or an immediate.
    Push(Value),
    /// POP into a register.
    Pop(Loc),
    /// LEAVE.
    Leave,
    /// CALL rel, to the target.
    Call(u64),
    /// CALL through a register.
    CallReg(Loc),
    /// RET, popping this many more bytes.
    Ret(u16),
    /// JMP rel, to the target.
    Jmp(u64),
    /// JMP through a register.
    JmpReg(Loc),
    /// Jcc, to the target.
    Jcc(ConditionCode, u64),
    /// Runs in the interpreter.
    Callout,
}

/// Where a guest general register is while host code runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// In this host register (x86-64 number): guest RAX..RDI.
    Host(u8),
    /// In the context, `gpr[n]`: guest R8..R15.
    Ctx(usize),
}

/// Where guest register `n` (0..15) is.
fn loc(n: usize) -> Loc {
    if n < 8 {
        Loc::Host(HOST_GPR[n])
    } else {
        Loc::Ctx(n)
    }
}

/// A pushed value.
#[derive(Clone, Copy)]
enum Value {
    Reg(Loc),
    Imm(i32),
}

/// Guest registers kept in the context (R8..R15) that one instruction names, each
/// given a scratch register for the instruction's duration.
#[derive(Default)]
struct Scratch(Vec<Held>);

/// A guest register in a scratch register.
#[derive(Clone, Copy)]
struct Held {
    host: u8,
    guest: usize,
    /// Loaded before the instruction: it reads the register (or writes part of it).
    load: bool,
    /// Stored after: it writes the register.
    store: bool,
}

impl Scratch {
    /// The scratch registers, in the order they are given out.
    const HOST: [u8; 2] = [11, 12];

    /// The scratch register holding guest register `n` of `size` bytes, which the
    /// instruction accesses as `access` says, if one is left.
    fn get(&mut self, n: usize, size: usize, access: OpAccess) -> Option<u8> {
        use OpAccess::*;
        let load = match access {
            Write => size < 4,
            _ => true,
        };
        let store = matches!(access, Write | CondWrite | ReadWrite | ReadCondWrite);
        if let Some(held) = self.0.iter_mut().find(|h| h.guest == n) {
            held.load |= load;
            held.store |= store;
            return Some(held.host);
        }
        let host = *Self::HOST.get(self.0.len())?;
        self.0.push(Held {
            host,
            guest: n,
            load,
            store,
        });
        Some(host)
    }
}

/// A guest memory operand, on host registers.
#[derive(Clone, Copy)]
struct Mem {
    base: Register,
    index: Register,
    scale: u32,
    disp: i64,
    /// An address known at translation time (RIP-relative, or a displacement alone):
    /// then base and index are unused.
    abs: Option<u64>,
    /// Guest registers in the context the address is made of, loaded into r11 (base)
    /// and r12 (index) first.
    load: [Option<usize>; 2],
    /// 64-bit addressing (else 32-bit: the sum wraps at 4 GiB).
    wide: bool,
    /// 64-bit mode: the access check works on 64-bit addresses.
    long: bool,
    /// Bytes accessed.
    size: u32,
    write: bool,
    /// SegReg number (ES 0, SS 2, DS 3).
    seg: u64,
}

/// Code the block needs out of line, emitted after its body.
enum Tail {
    /// An exit to a guest RIP known when translating; `slot` is the rel32 that jumps
    /// here, to patch when chained.
    Exit {
        label: DynamicLabel,
        rip: u64,
        slot: Option<usize>,
    },
    /// The slow path of instruction `index`'s memory operand.
    Slow {
        label: DynamicLabel,
        back: DynamicLabel,
        callout: DynamicLabel,
        info: u64,
    },
    /// Instruction `index` run by the interpreter after its slow path gave up; goes on
    /// at `after` (None: the run must stop there).
    Callout {
        label: DynamicLabel,
        index: usize,
        after: Option<DynamicLabel>,
    },
}

/// The translator's per-engine tools and counts.
pub struct Translator {
    info: InstructionInfoFactory,
    encoder: Encoder,
    /// Instructions copied or rewritten, and called out, so far.
    pub translated: u64,
    pub called_out: u64,
    /// The block being translated is 64-bit code.
    long: bool,
}

impl Default for Translator {
    fn default() -> Self {
        Translator {
            info: InstructionInfoFactory::new(),
            encoder: Encoder::new(64),
            translated: 0,
            called_out: 0,
            long: false,
        }
    }
}

/// The host register of number `num` with `size` bytes (iced's names).
fn sized(num: u8, size: usize) -> Register {
    let n = u32::from(num);
    match size {
        8 => Register::RAX + n,
        4 => Register::EAX + n,
        2 => Register::AX + n,
        // AL, CL, DL, BL, then (after AH..BH) SPL, BPL, SIL, DIL, R8L..R15L.
        _ if n < 4 => Register::AL + n,
        _ => Register::AL + (n + 4),
    }
}

/// The host register standing for a guest general register of any size: the one that
/// holds it, or a scratch register of `scratch` for R8..R15 (which the instruction
/// accesses as `access` says).
fn host_reg(r: Register, scratch: &mut Scratch, access: OpAccess) -> Option<Register> {
    use Register::*;
    match r {
        // The host has no CH of guest RCX's r8.
        AH | DH | BH => return Some(r),
        CH => return Option::None,
        _ if !r.is_gpr() => return Option::None,
        _ => {}
    }
    let host = match loc(r.full_register().number()) {
        Loc::Host(h) => h,
        Loc::Ctx(n) => scratch.get(n, r.size(), access)?,
    };
    Some(sized(host, r.size()))
}

/// Where a guest register of the stack width (32 bits, or 64 in 64-bit mode) is.
fn stack_reg(r: Register, long: bool) -> Option<Loc> {
    let full = if long { r.is_gpr64() } else { r.is_gpr32() };
    full.then(|| loc(r.full_register().number()))
}

/// A branch target the guest can reach: any in 32-bit code, a canonical one in 64-bit
/// code (else the branch raises #GP, which the interpreter does).
fn reachable(target: u64, long: bool) -> bool {
    !long || (target.wrapping_add(1 << 47) >> 48) == 0
}

/// Mnemonics re-encoded as they are: their only implicit registers are EAX and EDX,
/// which the host holds in the same registers, and they cannot fault on the host.
fn copyable(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Mov | Movzx
            | Movsx
            | Add
            | Or
            | Adc
            | Sbb
            | And
            | Sub
            | Xor
            | Cmp
            | Test
            | Inc
            | Dec
            | Neg
            | Not
            | Shl
            | Shr
            | Sar
            | Rol
            | Ror
            | Rcl
            | Rcr
            | Shld
            | Shrd
            | Imul
            | Mul
            | Xchg
            | Bswap
            | Cdq
            | Cqo
            | Cdqe
            | Movsxd
            | Cwde
            | Cbw
            | Cwd
            | Clc
            | Stc
            | Cmc
            | Lahf
            | Sahf
            | Bt
            | Bts
            | Btr
            | Btc
            | Seto
            | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
            | Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// Forms valid in 32-bit code only, and the 64-bit-valid form that means the same.
fn host_code(code: Op) -> Op {
    match code {
        Op::Inc_r32 => Op::Inc_rm32,
        Op::Inc_r16 => Op::Inc_rm16,
        Op::Dec_r32 => Op::Dec_rm32,
        Op::Dec_r16 => Op::Dec_rm16,
        Op::Mov_AL_moffs8 => Op::Mov_r8_rm8,
        Op::Mov_AX_moffs16 => Op::Mov_r16_rm16,
        Op::Mov_EAX_moffs32 => Op::Mov_r32_rm32,
        Op::Mov_moffs8_AL => Op::Mov_rm8_r8,
        Op::Mov_moffs16_AX => Op::Mov_rm16_r16,
        Op::Mov_moffs32_EAX => Op::Mov_rm32_r32,
        Op::Mov_RAX_moffs64 => Op::Mov_r64_rm64,
        Op::Mov_moffs64_RAX => Op::Mov_rm64_r64,
        c => c,
    }
}

impl Translator {
    /// Decides how `ins` is translated.
    fn plan(&mut self, ins: &Instruction) -> Plan {
        if ins.has_lock_prefix() || ins.has_rep_prefix() || ins.has_repne_prefix() {
            return Plan::Callout;
        }
        let long = self.long;
        let reg0 = || {
            (ins.op0_kind() == OpKind::Register)
                .then(|| stack_reg(ins.op0_register(), long))
                .flatten()
        };
        // A direct branch to where the guest can go (else the interpreter's #GP).
        let near = matches!(ins.op0_kind(), OpKind::NearBranch32 | OpKind::NearBranch64)
            && reachable(ins.near_branch_target(), long);
        let target = ins.near_branch_target();
        match ins.code() {
            Op::Nopd | Op::Nopw | Op::Nopq | Op::Nop_rm32 | Op::Nop_rm16 | Op::Nop_rm64 => {
                return Plan::Nothing
            }
            Op::Push_r32 | Op::Push_rm32 | Op::Push_r64 | Op::Push_rm64 => {
                return reg0().map_or(Plan::Callout, |r| Plan::Push(Value::Reg(r)))
            }
            Op::Pushd_imm8 | Op::Pushd_imm32 | Op::Pushq_imm8 | Op::Pushq_imm32 => {
                return Plan::Push(Value::Imm(ins.immediate(0) as i32))
            }
            Op::Pop_r32 | Op::Pop_rm32 | Op::Pop_r64 | Op::Pop_rm64 => {
                return reg0().map_or(Plan::Callout, Plan::Pop)
            }
            Op::Leaved | Op::Leaveq => return Plan::Leave,
            Op::Call_rel32_32 | Op::Call_rel32_64 if near => return Plan::Call(target),
            Op::Call_rm32 | Op::Call_rm64 => return reg0().map_or(Plan::Callout, Plan::CallReg),
            Op::Retnd | Op::Retnq => return Plan::Ret(0),
            Op::Retnd_imm16 | Op::Retnq_imm16 => return Plan::Ret(ins.immediate16()),
            Op::Jmp_rel8_32 | Op::Jmp_rel32_32 | Op::Jmp_rel8_64 | Op::Jmp_rel32_64 if near => {
                return Plan::Jmp(target)
            }
            Op::Jmp_rm32 | Op::Jmp_rm64 => return reg0().map_or(Plan::Callout, Plan::JmpReg),
            _ => {}
        }
        if ins.is_jcc_short_or_near() {
            return if near {
                Plan::Jcc(ins.condition_code(), target)
            } else {
                Plan::Callout
            };
        }
        if ins.mnemonic() == Mnemonic::Lea {
            return self.lea_plan(ins).unwrap_or(Plan::Callout);
        }
        if !copyable(ins.mnemonic()) {
            return Plan::Callout;
        }
        self.copy_plan(ins).unwrap_or(Plan::Callout)
    }

    /// The plan of a LEA: one host LEA where the host holds every register and the
    /// host's address arithmetic gives the guest's result, else the address computed
    /// into r10 and moved to the destination.
    fn lea_plan(&mut self, ins: &Instruction) -> Option<Plan> {
        let mem = self.mem(ins, 0, false)?;
        let dst = ins.op0_register();
        let mut scratch = Scratch::default();
        let host_dst = host_reg(dst, &mut scratch, OpAccess::Write)?;
        // A 64-bit destination of a 32-bit address takes the zero-extended sum.
        let direct = scratch.0.is_empty()
            && mem.load == [None, None]
            && mem.abs.is_none()
            && (mem.wide || dst.size() < 8);
        if direct && (self.long || dst.is_gpr32()) {
            return self.lea(host_dst, &mem).map(Plan::Lea);
        }
        if !self.long {
            return None;
        }
        let code = match dst.size() {
            8 => Op::Mov_r64_rm64,
            4 => Op::Mov_r32_rm32,
            _ => Op::Mov_r16_rm16,
        };
        let mov = Instruction::with2(code, host_dst, sized(10, dst.size())).ok()?;
        Some(Plan::Copy {
            bytes: self.encode(&mov)?,
            mem: Some((mem, self.address(&mem)?)),
            access: false,
            scratch,
            count_in_cl: false,
        })
    }

    /// The plan of a copied instruction, if every operand can be renamed.
    fn copy_plan(&mut self, ins: &Instruction) -> Option<Plan> {
        let shift = matches!(
            ins.mnemonic(),
            Mnemonic::Shl
                | Mnemonic::Shr
                | Mnemonic::Sar
                | Mnemonic::Rol
                | Mnemonic::Ror
                | Mnemonic::Rcl
                | Mnemonic::Rcr
                | Mnemonic::Shld
                | Mnemonic::Shrd
        );
        let mut host = *ins;
        host.set_code(host_code(ins.code()));
        let mut mem = None;
        let mut count_in_cl = false;
        let mut scratch = Scratch::default();
        let info = self.info.info(ins);
        let access: Vec<OpAccess> = (0..ins.op_count()).map(|i| info.op_access(i)).collect();
        let write = info
            .used_memory()
            .first()
            .is_some_and(|m| !matches!(m.access(), OpAccess::Read | OpAccess::CondRead));
        for i in 0..ins.op_count() {
            match ins.op_kind(i) {
                OpKind::Register => {
                    let r = ins.op_register(i);
                    // The count of a shift by CL stays in host CL, loaded first.
                    if shift && r == Register::CL && i + 1 == ins.op_count() {
                        count_in_cl = true;
                    } else {
                        let access = access[i as usize];
                        host.set_op_register(i, host_reg(r, &mut scratch, access)?);
                    }
                }
                OpKind::Memory => {
                    mem = Some(self.mem(ins, ins.memory_size().size() as u32, write)?);
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => {}
                _ => return None,
            }
        }
        // BT* with a register bit offset reaches beyond the operand: the interpreter's.
        let bit_op = matches!(
            ins.mnemonic(),
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
        );
        if mem.is_some() && (count_in_cl || (bit_op && ins.op1_kind() == OpKind::Register)) {
            return None;
        }
        let mem = match mem {
            Some(mem) => {
                host.set_memory_base(Register::R10);
                host.set_memory_index(Register::RCX);
                host.set_memory_index_scale(1);
                host.set_memory_displacement64(0);
                host.set_memory_displ_size(0);
                host.set_segment_prefix(Register::None);
                Some((mem, self.address(&mem)?))
            }
            None => None,
        };
        Some(Plan::Copy {
            bytes: self.encode(&host)?,
            mem,
            access: true,
            scratch,
            count_in_cl,
        })
    }

    /// The memory operand of `ins`, if generated code can address it: through DS, ES
    /// or SS, with 32-bit addressing (or, in 64-bit mode, 64-bit or RIP-relative).
    fn mem(&self, ins: &Instruction, size: u32, write: bool) -> Option<Mem> {
        let seg = match ins.memory_segment() {
            Register::ES => 0,
            Register::SS => 2,
            Register::DS => 3,
            _ => return None,
        };
        let (b, i) = (ins.memory_base(), ins.memory_index());
        let mut mem = Mem {
            base: Register::None,
            index: Register::None,
            scale: ins.memory_index_scale(),
            disp: 0,
            abs: None,
            load: [None, None],
            wide: false,
            long: self.long,
            size,
            write,
            seg,
        };
        if !self.long {
            let addr32 = b.is_gpr32()
                || i.is_gpr32()
                || (b == Register::None && ins.memory_displ_size() == 4);
            if !addr32
                || (b != Register::None && !b.is_gpr32())
                || (i != Register::None && !i.is_gpr32())
            {
                return None;
            }
            mem.disp = i64::from(ins.memory_displacement32() as i32);
            return mem.on_host(b, i);
        }
        // The address size as the interpreter finds it.
        let rip = matches!(b, Register::RIP | Register::EIP);
        let asize = address_size(ins);
        let mask = match asize {
            4 => u64::from(u32::MAX),
            8 => u64::MAX,
            _ => return None,
        };
        mem.wide = asize == 8;
        if (b == Register::None || rip) && i == Register::None {
            // iced folds the next RIP into a RIP-relative displacement.
            mem.abs = Some(ins.memory_displacement64() & mask);
            return Some(mem);
        }
        if rip {
            return None;
        }
        mem.disp = i64::from(ins.memory_displacement64() as i32);
        mem.on_host(b, i)
    }

    /// The bytes of one host instruction made with iced.
    fn encode(&mut self, ins: &Instruction) -> Option<Vec<u8>> {
        let encoded = self.encoder.encode(ins, 0);
        // A failed encoding may leave bytes behind: never hand them to the next one.
        let bytes = self.encoder.take_buffer();
        encoded.ok().map(|_| bytes)
    }

    /// `lea dst, [mem]` on host registers: the guest's address arithmetic (in 32-bit
    /// addressing the 64-bit sum of zero-extended registers, cut to 32 bits, wraps the
    /// same).
    fn lea(&mut self, dst: Register, mem: &Mem) -> Option<Vec<u8>> {
        let displ = if mem.base == Register::None && mem.index == Register::None {
            4
        } else {
            1
        };
        let op = MemoryOperand::new(
            mem.base,
            mem.index,
            mem.scale,
            mem.disp,
            displ,
            false,
            Register::None,
        );
        let code = match dst.size() {
            8 => Op::Lea_r64_m,
            4 => Op::Lea_r32_m,
            _ => Op::Lea_r16_m,
        };
        self.encode(&Instruction::with2(code, dst, op).ok()?)
    }

    /// The computation of `mem`'s address into r10 (after the loads of `mem.load`).
    fn address(&mut self, mem: &Mem) -> Option<Vec<u8>> {
        match mem.abs {
            Some(a) => {
                let mov = match u32::try_from(a) {
                    Ok(a32) => Instruction::with2(Op::Mov_r32_imm32, Register::R10D, a32),
                    Err(_) => Instruction::with2(Op::Mov_r64_imm64, Register::R10, a),
                };
                self.encode(&mov.ok()?)
            }
            None if mem.wide => self.lea(Register::R10, mem),
            None => self.lea(Register::R10D, mem),
        }
    }

    /// Translates block `id`; the offset of its entry.
    pub fn block(&mut self, code: &mut Code, id: u32, block: &Block) -> Option<AssemblyOffset> {
        let ops = &block.ops;
        let n = ops.len();
        let first = &ops.first()?.ins;
        let start = first.ip();
        // Blocks are decoded for one mode: its first instruction says which.
        self.long = first.code_size() == CodeSize::Code64;
        let mut b = Emit {
            code,
            tails: Vec::new(),
            id,
            start,
            long: self.long,
        };
        let entry = b.code.asm.offset();
        let epilogue = b.code.epilogue;
        dynasm!(b.code.asm
            ; .arch x64
            ; lea r14, [r14 - n as i32]
            ; shrx rcx, r14, r13
            ; jrcxz >body
            ; lea r14, [r14 + n as i32]
        );
        b.mov_r11(start);
        dynasm!(b.code.asm
            ; .arch x64
            ; mov [r15 + off::EXIT_RIP], r11
            ; mov QWORD [r15 + off::EXIT_KIND], exit::BUDGET as i32
            ; mov QWORD [r15 + off::EXIT_BLOCK], id as i32
            ; jmp =>epilogue
            ; body:
        );
        let mut ended = false;
        for (index, op) in ops.iter().enumerate() {
            let last = index + 1 == n;
            match self.plan(&op.ins) {
                Plan::Callout => {
                    self.called_out += 1;
                    b.callout(index, !last);
                    ended = last;
                }
                plan => {
                    self.translated += 1;
                    ended = b.plan(plan, &op.ins, index);
                }
            }
            if ended {
                break;
            }
        }
        if !ended {
            b.exit_to(ops[n - 1].ins.next_ip(), None);
        }
        for tail in std::mem::take(&mut b.tails) {
            b.tail(tail);
        }
        b.code.asm.commit().ok()?;
        Some(entry)
    }
}

impl Mem {
    /// The operand with guest base `b` and index `i` (32- or 64-bit registers, or
    /// none) on the host registers that hold them, or r11 and r12 loaded from the
    /// context.
    fn on_host(mut self, b: Register, i: Register) -> Option<Mem> {
        for (k, r) in [b, i].into_iter().enumerate() {
            let host = if r == Register::None {
                Register::None
            } else if r.is_gpr32() || r.is_gpr64() {
                let h = match loc(r.full_register().number()) {
                    Loc::Host(h) => h,
                    Loc::Ctx(n) => {
                        self.load[k] = Some(n);
                        Scratch::HOST[k]
                    }
                };
                Register::RAX + u32::from(h)
            } else {
                return None;
            };
            if k == 0 {
                self.base = host;
            } else {
                self.index = host;
            }
        }
        Some(self)
    }
}

/// The stack slot at the address in r10: 4 bytes, or 8 in 64-bit mode.
fn stack_slot(write: bool, long: bool) -> Mem {
    Mem {
        base: Register::R10,
        index: Register::None,
        scale: 1,
        disp: 0,
        abs: None,
        load: [None, None],
        wide: long,
        long,
        size: if long { 8 } else { 4 },
        write,
        seg: 2,
    }
}

/// The emission of one block.
struct Emit<'a> {
    code: &'a mut Code,
    tails: Vec<Tail>,
    id: u32,
    /// The block's first RIP: branches within its page are chained.
    start: u64,
    /// 64-bit code: the stack and branch targets are 64-bit.
    long: bool,
}

impl Emit<'_> {
    /// What a call-out of instruction `index` passes.
    fn info(&self, index: usize) -> u64 {
        (u64::from(self.id) << 8) | index as u64
    }

    /// Calls instruction `index` out, inline; with `go_on`, the block goes on after it
    /// unless the interpreter says the run must look around.
    fn callout(&mut self, index: usize, go_on: bool) {
        let info = self.info(index) as i32;
        let (thunk, synced) = (self.code.callout_thunk, self.code.exit_synced);
        dynasm!(self.code.asm
            ; .arch x64
            ; mov r11d, info
            ; call =>thunk
        );
        if go_on {
            dynasm!(self.code.asm
                ; .arch x64
                ; jrcxz >go_on
                ; jmp =>synced
                ; go_on:
            );
        } else {
            dynasm!(self.code.asm ; .arch x64 ; jmp =>synced);
        }
    }

    /// `mov r11, v`, in the shortest form.
    fn mov_r11(&mut self, v: u64) {
        match u32::try_from(v) {
            Ok(v) => dynasm!(self.code.asm ; .arch x64 ; mov r11d, v as i32),
            Err(_) => dynasm!(self.code.asm ; .arch x64 ; mov r11, QWORD v as i64),
        }
    }

    /// Loads scratch register `host` with guest register `n` from the context.
    fn load(&mut self, host: u8, n: usize) {
        dynasm!(self.code.asm ; .arch x64 ; mov Rq(host), [r15 + off::gpr(n)]);
    }

    /// Stores scratch register `host` into guest register `n` in the context.
    fn store(&mut self, host: u8, n: usize) {
        dynasm!(self.code.asm ; .arch x64 ; mov [r15 + off::gpr(n)], Rq(host));
    }

    /// r11 = the guest register at `at`, of the stack width.
    fn r11_from(&mut self, at: Loc) {
        match at {
            Loc::Host(r) if self.long => dynasm!(self.code.asm ; .arch x64 ; mov r11, Rq(r)),
            Loc::Host(r) => dynasm!(self.code.asm ; .arch x64 ; mov r11d, Rd(r)),
            Loc::Ctx(n) => self.load(11, n),
        }
    }

    /// In 64-bit mode, calls instruction `index` out (before it commits anything) if
    /// the branch target in r11 is not canonical: the interpreter raises the #GP.
    fn check_target(&mut self, index: usize) {
        if !self.long {
            return;
        }
        let label = self.code.asm.new_dynamic_label();
        // Canonical: r11 + 2^47 below 2^48 (flag-free: LEA, SHRX, JRCXZ).
        dynasm!(self.code.asm
            ; .arch x64
            ; mov rcx, QWORD 1 << 47
            ; lea rcx, [r11 + rcx]
            ; mov r12d, 48
            ; shrx rcx, rcx, r12
            ; jrcxz >ok
            ; jmp =>label
            ; ok:
        );
        self.tails.push(Tail::Callout {
            label,
            index,
            after: None,
        });
    }

    /// r10 = the stack pointer moved by `delta` (in the stack's width).
    fn r10_at_stack(&mut self, base: u8, delta: i32) {
        if self.long {
            dynasm!(self.code.asm ; .arch x64 ; lea r10, [Rq(base) + delta]);
        } else {
            dynasm!(self.code.asm ; .arch x64 ; lea r10d, [Rq(base) + delta]);
        }
    }

    /// RSP (host r9) moved by `delta`, from `base`.
    fn move_stack(&mut self, base: u8, delta: i32) {
        if self.long {
            dynasm!(self.code.asm ; .arch x64 ; lea r9, [Rq(base) + delta]);
        } else {
            dynasm!(self.code.asm ; .arch x64 ; lea r9d, [Rq(base) + delta]);
        }
    }

    /// Emits one planned instruction (not a call-out); true if it ended the block.
    fn plan(&mut self, plan: Plan, ins: &Instruction, index: usize) -> bool {
        let long = self.long;
        let w: i32 = if long { 8 } else { 4 };
        let rsp = HOST_GPR[4];
        match plan {
            Plan::Callout | Plan::Nothing => false,
            Plan::Copy {
                bytes,
                mem,
                access,
                scratch,
                count_in_cl,
            } => {
                if count_in_cl {
                    dynasm!(self.code.asm ; .arch x64 ; mov ecx, r8d);
                }
                let after = mem.and_then(|(mem, addr)| {
                    for (k, n) in mem.load.into_iter().enumerate() {
                        if let Some(n) = n {
                            self.load(Scratch::HOST[k], n);
                        }
                    }
                    self.code.asm.extend(addr);
                    access.then(|| self.access(&mem, index, true)).flatten()
                });
                for h in scratch.0.iter().filter(|h| h.load) {
                    self.load(h.host, h.guest);
                }
                self.code.asm.extend(bytes);
                for h in scratch.0.iter().filter(|h| h.store) {
                    self.store(h.host, h.guest);
                }
                self.define(after);
                false
            }
            Plan::Lea(bytes) => {
                self.code.asm.extend(bytes);
                false
            }
            Plan::Push(v) => {
                self.r10_at_stack(rsp, -w);
                let after = self.access(&stack_slot(true, long), index, true);
                match v {
                    Value::Reg(Loc::Host(r)) if long => {
                        dynasm!(self.code.asm ; .arch x64 ; mov [r10 + rcx], Rq(r))
                    }
                    Value::Reg(Loc::Host(r)) => {
                        dynasm!(self.code.asm ; .arch x64 ; mov [r10 + rcx], Rd(r))
                    }
                    Value::Reg(Loc::Ctx(n)) => {
                        self.load(11, n);
                        dynasm!(self.code.asm ; .arch x64 ; mov [r10 + rcx], r11);
                    }
                    Value::Imm(i) if long => {
                        dynasm!(self.code.asm ; .arch x64 ; mov QWORD [r10 + rcx], i)
                    }
                    Value::Imm(i) => {
                        dynasm!(self.code.asm ; .arch x64 ; mov DWORD [r10 + rcx], i)
                    }
                }
                self.move_stack(rsp, -w);
                self.define(after);
                false
            }
            Plan::Pop(to) => {
                self.r10_at_stack(rsp, 0);
                let after = self.access(&stack_slot(false, long), index, true);
                match to {
                    // POP ESP: the popped value, not the incremented one.
                    Loc::Host(r) if r == rsp && long => {
                        dynasm!(self.code.asm ; .arch x64 ; mov r9, [r10 + rcx])
                    }
                    Loc::Host(r) if r == rsp => {
                        dynasm!(self.code.asm ; .arch x64 ; mov r9d, [r10 + rcx])
                    }
                    Loc::Host(r) => {
                        if long {
                            dynasm!(self.code.asm ; .arch x64 ; mov Rq(r), [r10 + rcx]);
                        } else {
                            dynasm!(self.code.asm ; .arch x64 ; mov Rd(r), [r10 + rcx]);
                        }
                        self.move_stack(rsp, w);
                    }
                    Loc::Ctx(n) => {
                        dynasm!(self.code.asm ; .arch x64 ; mov r11, [r10 + rcx]);
                        self.store(11, n);
                        self.move_stack(rsp, w);
                    }
                }
                self.define(after);
                false
            }
            Plan::Leave => {
                let rbp = HOST_GPR[5];
                self.r10_at_stack(rbp, 0);
                let after = self.access(&stack_slot(false, long), index, true);
                if long {
                    dynasm!(self.code.asm ; .arch x64 ; mov r11, [r10 + rcx]);
                } else {
                    dynasm!(self.code.asm ; .arch x64 ; mov r11d, [r10 + rcx]);
                }
                self.move_stack(rbp, w);
                dynasm!(self.code.asm ; .arch x64 ; mov rbp, r11);
                self.define(after);
                false
            }
            Plan::Call(target) => {
                self.r10_at_stack(rsp, -w);
                self.access(&stack_slot(true, long), index, false);
                self.push_return(ins.next_ip());
                self.move_stack(rsp, -w);
                self.exit_to(target, None);
                true
            }
            Plan::CallReg(r) => {
                if long {
                    self.r11_from(r);
                    self.check_target(index);
                }
                self.r10_at_stack(rsp, -w);
                self.access(&stack_slot(true, long), index, false);
                self.push_return(ins.next_ip());
                // The target again (the access check used r11), before RSP moves.
                self.r11_from(r);
                self.move_stack(rsp, -w);
                self.exit_dynamic();
                true
            }
            Plan::Ret(extra) => {
                self.r10_at_stack(rsp, 0);
                self.access(&stack_slot(false, long), index, false);
                if long {
                    dynasm!(self.code.asm ; .arch x64 ; mov r11, [r10 + rcx]);
                } else {
                    dynasm!(self.code.asm ; .arch x64 ; mov r11d, [r10 + rcx]);
                }
                self.check_target(index);
                self.move_stack(rsp, w + i32::from(extra));
                self.exit_dynamic();
                true
            }
            Plan::Jmp(target) => {
                self.exit_to(target, None);
                true
            }
            Plan::JmpReg(r) => {
                self.r11_from(r);
                self.check_target(index);
                self.exit_dynamic();
                true
            }
            Plan::Jcc(cc, target) => {
                self.exit_to(target, Some(cc));
                self.exit_to(ins.next_ip(), None);
                true
            }
        }
    }

    /// Writes the return address `ret` to the stack slot at r10 + rcx.
    fn push_return(&mut self, ret: u64) {
        if self.long {
            self.mov_r11(ret);
            dynasm!(self.code.asm ; .arch x64 ; mov [r10 + rcx], r11);
        } else {
            dynasm!(self.code.asm ; .arch x64 ; mov DWORD [r10 + rcx], ret as u32 as i32);
        }
    }

    /// Defines the label a call-out goes on at, after the instruction's code.
    fn define(&mut self, after: Option<DynamicLabel>) {
        if let Some(after) = after {
            dynasm!(self.code.asm ; .arch x64 ; =>after);
        }
    }

    /// The inline access check of the address in r10: leaves the host address in
    /// r10 + rcx, or takes the slow path, which calls instruction `index` out when the
    /// access cannot be made directly. With `go_on`, the label to define after the
    /// instruction, where the call-out goes on.
    fn access(&mut self, mem: &Mem, index: usize, go_on: bool) -> Option<DynamicLabel> {
        let slow = self.code.asm.new_dynamic_label();
        let back = self.code.asm.new_dynamic_label();
        let callout = self.code.asm.new_dynamic_label();
        let tag = if mem.write {
            off::TLB_WRITE
        } else {
            off::TLB_READ
        };
        let last = mem.size as i32 - 1;
        if mem.long {
            // The page of the last byte, of a 64-bit address (no wrap: a page past
            // the top is no page).
            dynasm!(self.code.asm
                ; .arch x64
                ; lea r11, [r10 + last]
                ; mov ecx, 12
                ; shrx r11, r11, rcx
            );
        } else {
            // The page of the last byte, of a 32-bit address (which wraps).
            dynasm!(self.code.asm
                ; .arch x64
                ; lea r11d, [r10 + last]
                ; rorx r11, r11, 12
                ; mov r11d, r11d
            );
        }
        dynasm!(self.code.asm
            ; .arch x64
            ; rorx r12, r10, 12
            ; movzx r12d, r12b
            ; mov rcx, [r15 + r12 * 8 + tag]
            ; lea rcx, [rcx + r11]
            ; jrcxz >hit
            ; jmp =>slow
            ; hit:
            ; mov rcx, [r15 + r12 * 8 + off::TLB_ADDEND]
            ; =>back
        );
        let mut info = mem.seg | (u64::from(mem.size) << mem_info::SIZE_SHIFT);
        if mem.write {
            info |= mem_info::WRITE;
        }
        self.tails.push(Tail::Slow {
            label: slow,
            back,
            callout,
            info,
        });
        let after = go_on.then(|| self.code.asm.new_dynamic_label());
        self.tails.push(Tail::Callout {
            label: callout,
            index,
            after,
        });
        after
    }

    /// Leaves for a RIP known now: through a stub that exits, which a branch within
    /// the block's page gets patched past once the next block is translated.
    fn exit_to(&mut self, rip: u64, cc: Option<ConditionCode>) {
        let label = self.code.asm.new_dynamic_label();
        match cc {
            None => dynasm!(self.code.asm ; .arch x64 ; jmp =>label),
            Some(cc) => jcc(self.code, cc, label),
        }
        let same_page = rip >> 12 == self.start >> 12;
        let slot = same_page.then(|| self.code.asm.offset().0 - 4);
        self.tails.push(Tail::Exit { label, rip, slot });
    }

    /// Leaves for the RIP in r11.
    fn exit_dynamic(&mut self) {
        let (epilogue, id) = (self.code.epilogue, self.id as i32);
        dynasm!(self.code.asm
            ; .arch x64
            ; mov [r15 + off::EXIT_RIP], r11
            ; mov QWORD [r15 + off::EXIT_KIND], exit::JUMP as i32
            ; mov QWORD [r15 + off::EXIT_LINK], NO_LINK as i32
            ; mov QWORD [r15 + off::EXIT_BLOCK], id
            ; jmp =>epilogue
        );
    }

    /// Emits out-of-line code.
    fn tail(&mut self, tail: Tail) {
        let (epilogue, id) = (self.code.epilogue, self.id as i32);
        match tail {
            Tail::Exit { label, rip, slot } => {
                let link = slot.map_or(NO_LINK as i64, |s| s as i64);
                dynasm!(self.code.asm ; .arch x64 ; =>label);
                self.mov_r11(rip);
                dynasm!(self.code.asm
                    ; .arch x64
                    ; mov [r15 + off::EXIT_RIP], r11
                    ; mov QWORD [r15 + off::EXIT_KIND], exit::JUMP as i32
                    ; mov r11, QWORD link
                    ; mov [r15 + off::EXIT_LINK], r11
                    ; mov QWORD [r15 + off::EXIT_BLOCK], id
                    ; jmp =>epilogue
                );
            }
            Tail::Slow {
                label,
                back,
                callout,
                info,
            } => {
                let thunk = self.code.mem_thunk;
                dynasm!(self.code.asm
                    ; .arch x64
                    ; =>label
                    ; mov r11d, info as i32
                    ; call =>thunk
                    ; jrcxz >ok
                    ; jmp =>callout
                    ; ok:
                    ; mov rcx, [r15 + off::RET_ADDEND]
                    ; jmp =>back
                );
            }
            Tail::Callout {
                label,
                index,
                after,
            } => {
                dynasm!(self.code.asm ; .arch x64 ; =>label);
                self.callout(index, after.is_some());
                if let Some(after) = after {
                    dynasm!(self.code.asm ; .arch x64 ; jmp =>after);
                }
            }
        }
    }
}

/// Jcc rel32 to `label`.
fn jcc(code: &mut Code, cc: ConditionCode, label: DynamicLabel) {
    let a = &mut code.asm;
    match cc {
        ConditionCode::o => dynasm!(a ; .arch x64 ; jo =>label),
        ConditionCode::no => dynasm!(a ; .arch x64 ; jno =>label),
        ConditionCode::b => dynasm!(a ; .arch x64 ; jb =>label),
        ConditionCode::ae => dynasm!(a ; .arch x64 ; jae =>label),
        ConditionCode::e => dynasm!(a ; .arch x64 ; je =>label),
        ConditionCode::ne => dynasm!(a ; .arch x64 ; jne =>label),
        ConditionCode::be => dynasm!(a ; .arch x64 ; jbe =>label),
        ConditionCode::a => dynasm!(a ; .arch x64 ; ja =>label),
        ConditionCode::s => dynasm!(a ; .arch x64 ; js =>label),
        ConditionCode::ns => dynasm!(a ; .arch x64 ; jns =>label),
        ConditionCode::p => dynasm!(a ; .arch x64 ; jp =>label),
        ConditionCode::np => dynasm!(a ; .arch x64 ; jnp =>label),
        ConditionCode::l => dynasm!(a ; .arch x64 ; jl =>label),
        ConditionCode::ge => dynasm!(a ; .arch x64 ; jge =>label),
        ConditionCode::le => dynasm!(a ; .arch x64 ; jle =>label),
        ConditionCode::g | ConditionCode::None => dynasm!(a ; .arch x64 ; jg =>label),
    }
}
