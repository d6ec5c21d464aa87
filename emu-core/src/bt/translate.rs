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
//! A memory operand's slow path (TLB miss, MMIO, page crossing, code page, fault) also
//! ends in a call-out of the whole instruction, which has committed nothing yet: the
//! interpreter then does the access, raises the fault or notes the self-modifying
//! write, exactly as it would have.

use super::jit::{exit, mem_info, off, Code, HOST_GPR, NO_LINK};
use crate::interp::cache::Block;
use dynasmrt::{dynasm, AssemblyOffset, DynamicLabel, DynasmApi, DynasmLabelApi};
use iced_x86::{
    Code as Op, ConditionCode, Encoder, Instruction, InstructionInfoFactory, MemoryOperand,
    Mnemonic, OpAccess, OpKind, Register,
};

/// How one guest instruction is translated.
enum Plan {
    /// Nothing to do (NOP).
    Nothing,
    /// Re-encoded: the host instruction's bytes (a memory operand already
    /// `[r10 + rcx]`), after the address computation and access check of `mem` if it
    /// has one. `count_in_cl`: load guest CL into host CL first.
    Copy {
        bytes: Vec<u8>,
        mem: Option<(Mem, Vec<u8>)>,
        count_in_cl: bool,
    },
    /// LEA of a 32-bit register: the host LEA's bytes.
    Lea(Vec<u8>),
    /// PUSH of a register (host number) or an immediate.
    Push(Value),
    /// POP into a register (host number; 9 is ESP).
    Pop(u8),
    /// LEAVE.
    Leave,
    /// CALL rel32, to the target.
    Call(u64),
    /// CALL through a register (host number).
    CallReg(u8),
    /// RET, popping this many more bytes.
    Ret(u16),
    /// JMP rel, to the target.
    Jmp(u64),
    /// JMP through a register (host number).
    JmpReg(u8),
    /// Jcc, to the target.
    Jcc(ConditionCode, u64),
    /// Runs in the interpreter.
    Callout,
}

/// A pushed value.
#[derive(Clone, Copy)]
enum Value {
    Reg(u8),
    Imm(u32),
}

/// A guest memory operand, on host registers.
#[derive(Clone, Copy)]
struct Mem {
    base: Register,
    index: Register,
    scale: u32,
    disp: i64,
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
}

impl Default for Translator {
    fn default() -> Self {
        Translator {
            info: InstructionInfoFactory::new(),
            encoder: Encoder::new(64),
            translated: 0,
            called_out: 0,
        }
    }
}

/// The host register holding a guest register of 8, 16 or 32 bits (iced's names).
fn host_reg(r: Register) -> Option<Register> {
    use Register::*;
    Some(match r {
        EAX => EAX,
        ECX => R8D,
        EDX => EDX,
        EBX => EBX,
        ESP => R9D,
        EBP => EBP,
        ESI => ESI,
        EDI => EDI,
        AX => AX,
        CX => R8W,
        DX => DX,
        BX => BX,
        SP => R9W,
        BP => BP,
        SI => SI,
        DI => DI,
        AL => AL,
        CL => R8L,
        DL => DL,
        BL => BL,
        AH => AH,
        DH => DH,
        BH => BH,
        _ => return Option::None,
    })
}

/// The host number of a guest 32-bit register.
fn host_num(r: Register) -> Option<u8> {
    (r.is_gpr32()).then(|| HOST_GPR[r.number()])
}

/// The 64-bit host register holding a guest 32-bit address register.
fn host_addr_reg(r: Register) -> Option<Register> {
    if r == Register::None {
        return Some(Register::None);
    }
    host_num(r).map(|n| Register::RAX + u32::from(n))
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
        c => c,
    }
}

impl Translator {
    /// Decides how `ins` is translated.
    fn plan(&mut self, ins: &Instruction) -> Plan {
        if ins.has_lock_prefix() || ins.has_rep_prefix() || ins.has_repne_prefix() {
            return Plan::Callout;
        }
        let reg0 = || {
            (ins.op0_kind() == OpKind::Register)
                .then(|| host_num(ins.op0_register()))
                .flatten()
        };
        let near32 = ins.op0_kind() == OpKind::NearBranch32;
        match ins.code() {
            Op::Nopd | Op::Nopw | Op::Nop_rm32 | Op::Nop_rm16 => return Plan::Nothing,
            Op::Push_r32 | Op::Push_rm32 => {
                return reg0().map_or(Plan::Callout, |r| Plan::Push(Value::Reg(r)))
            }
            Op::Pushd_imm8 | Op::Pushd_imm32 => {
                return Plan::Push(Value::Imm(ins.immediate(0) as u32))
            }
            Op::Pop_r32 | Op::Pop_rm32 => return reg0().map_or(Plan::Callout, Plan::Pop),
            Op::Leaved => return Plan::Leave,
            Op::Call_rel32_32 => return Plan::Call(ins.near_branch_target()),
            Op::Call_rm32 => return reg0().map_or(Plan::Callout, Plan::CallReg),
            Op::Retnd => return Plan::Ret(0),
            Op::Retnd_imm16 => return Plan::Ret(ins.immediate16()),
            Op::Jmp_rel8_32 | Op::Jmp_rel32_32 => return Plan::Jmp(ins.near_branch_target()),
            Op::Jmp_rm32 => return reg0().map_or(Plan::Callout, Plan::JmpReg),
            _ => {}
        }
        if ins.is_jcc_short_or_near() {
            return if near32 {
                Plan::Jcc(ins.condition_code(), ins.near_branch_target())
            } else {
                Plan::Callout
            };
        }
        if ins.mnemonic() == Mnemonic::Lea {
            let dst = ins.op0_register();
            return match (host_reg(dst), self.mem(ins, 0, false)) {
                (Some(dst), Some(mem)) if dst.is_gpr32() => {
                    self.lea(dst, &mem).map_or(Plan::Callout, Plan::Lea)
                }
                _ => Plan::Callout,
            };
        }
        if !copyable(ins.mnemonic()) {
            return Plan::Callout;
        }
        self.copy_plan(ins).unwrap_or(Plan::Callout)
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
        for i in 0..ins.op_count() {
            match ins.op_kind(i) {
                OpKind::Register => {
                    let r = ins.op_register(i);
                    // The count of a shift by CL stays in host CL, loaded first.
                    if shift && r == Register::CL && i + 1 == ins.op_count() {
                        count_in_cl = true;
                    } else {
                        host.set_op_register(i, host_reg(r)?);
                    }
                }
                OpKind::Memory => {
                    let info = self.info.info(ins);
                    let write = info.used_memory().first().is_some_and(|m| {
                        !matches!(m.access(), OpAccess::Read | OpAccess::CondRead)
                    });
                    mem = Some(self.mem(ins, ins.memory_size().size() as u32, write)?);
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32 => {}
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
                Some((mem, self.lea(Register::R10D, &mem)?))
            }
            None => None,
        };
        Some(Plan::Copy {
            bytes: self.encode(&host)?,
            mem,
            count_in_cl,
        })
    }

    /// The memory operand of `ins`, if generated code can address it: 32-bit
    /// addressing on registers the host holds, through DS, ES or SS.
    fn mem(&self, ins: &Instruction, size: u32, write: bool) -> Option<Mem> {
        let seg = match ins.memory_segment() {
            Register::ES => 0,
            Register::SS => 2,
            Register::DS => 3,
            _ => return None,
        };
        let (b, i) = (ins.memory_base(), ins.memory_index());
        let addr32 =
            b.is_gpr32() || i.is_gpr32() || (b == Register::None && ins.memory_displ_size() == 4);
        if !addr32
            || (b != Register::None && !b.is_gpr32())
            || (i != Register::None && !i.is_gpr32())
        {
            return None;
        }
        Some(Mem {
            base: host_addr_reg(b)?,
            index: host_addr_reg(i)?,
            scale: ins.memory_index_scale(),
            disp: i64::from(ins.memory_displacement32() as i32),
            size,
            write,
            seg,
        })
    }

    /// The bytes of one host instruction made with iced.
    fn encode(&mut self, ins: &Instruction) -> Option<Vec<u8>> {
        let encoded = self.encoder.encode(ins, 0);
        // A failed encoding may leave bytes behind: never hand them to the next one.
        let bytes = self.encoder.take_buffer();
        encoded.ok().map(|_| bytes)
    }

    /// `lea dst32, [mem]` on host registers: the guest's 32-bit address arithmetic
    /// (the 64-bit sum of zero-extended registers, cut to 32 bits, wraps the same).
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
        self.encode(&Instruction::with2(Op::Lea_r32_m, dst, op).ok()?)
    }

    /// Translates block `id`; the offset of its entry.
    pub fn block(&mut self, code: &mut Code, id: u32, block: &Block) -> Option<AssemblyOffset> {
        let ops = &block.ops;
        let n = ops.len();
        let start = ops.first()?.ins.ip();
        let mut b = Emit {
            code,
            tails: Vec::new(),
            id,
            start,
        };
        let entry = b.code.asm.offset();
        let epilogue = b.code.epilogue;
        dynasm!(b.code.asm
            ; .arch x64
            ; lea r14, [r14 - n as i32]
            ; shrx rcx, r14, r13
            ; jrcxz >body
            ; lea r14, [r14 + n as i32]
            ; mov r11d, start as i32
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

/// A stack slot at ESP + `delta`, 4 bytes.
fn stack_slot(write: bool) -> Mem {
    Mem {
        base: Register::R9,
        index: Register::None,
        scale: 1,
        disp: 0,
        size: 4,
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

    /// Emits one planned instruction (not a call-out); true if it ended the block.
    fn plan(&mut self, plan: Plan, ins: &Instruction, index: usize) -> bool {
        match plan {
            Plan::Callout | Plan::Nothing => false,
            Plan::Copy {
                bytes,
                mem,
                count_in_cl,
            } => {
                if count_in_cl {
                    dynasm!(self.code.asm ; .arch x64 ; mov ecx, r8d);
                }
                let after = mem.map(|(mem, lea)| {
                    self.code.asm.extend(lea);
                    self.access(&mem, index, true)
                });
                self.code.asm.extend(bytes);
                self.define(after.flatten());
                false
            }
            Plan::Lea(bytes) => {
                self.code.asm.extend(bytes);
                false
            }
            Plan::Push(v) => {
                dynasm!(self.code.asm ; .arch x64 ; lea r10d, [r9 - 4]);
                let after = self.access(&stack_slot(true), index, true);
                match v {
                    Value::Reg(r) => dynasm!(self.code.asm ; .arch x64 ; mov [r10 + rcx], Rd(r)),
                    Value::Imm(i) => {
                        dynasm!(self.code.asm ; .arch x64 ; mov DWORD [r10 + rcx], i as i32)
                    }
                }
                dynasm!(self.code.asm ; .arch x64 ; lea r9d, [r9 - 4]);
                self.define(after);
                false
            }
            Plan::Pop(r) => {
                dynasm!(self.code.asm ; .arch x64 ; mov r10d, r9d);
                let after = self.access(&stack_slot(false), index, true);
                if r == HOST_GPR[4] {
                    dynasm!(self.code.asm ; .arch x64 ; mov r9d, [r10 + rcx]);
                } else {
                    dynasm!(self.code.asm
                        ; .arch x64
                        ; mov Rd(r), [r10 + rcx]
                        ; lea r9d, [r9 + 4]
                    );
                }
                self.define(after);
                false
            }
            Plan::Leave => {
                dynasm!(self.code.asm ; .arch x64 ; mov r10d, ebp);
                let after = self.access(&stack_slot(false), index, true);
                dynasm!(self.code.asm
                    ; .arch x64
                    ; mov r11d, [r10 + rcx]
                    ; lea r9d, [rbp + 4]
                    ; mov ebp, r11d
                );
                self.define(after);
                false
            }
            Plan::Call(target) => {
                dynasm!(self.code.asm ; .arch x64 ; lea r10d, [r9 - 4]);
                self.access(&stack_slot(true), index, false);
                let ret = ins.next_ip() as u32 as i32;
                dynasm!(self.code.asm
                    ; .arch x64
                    ; mov DWORD [r10 + rcx], ret
                    ; lea r9d, [r9 - 4]
                );
                self.exit_to(target, None);
                true
            }
            Plan::CallReg(r) => {
                dynasm!(self.code.asm ; .arch x64 ; lea r10d, [r9 - 4]);
                self.access(&stack_slot(true), index, false);
                let ret = ins.next_ip() as u32 as i32;
                dynasm!(self.code.asm
                    ; .arch x64
                    ; mov r11d, Rd(r)
                    ; mov DWORD [r10 + rcx], ret
                    ; lea r9d, [r9 - 4]
                );
                self.exit_dynamic();
                true
            }
            Plan::Ret(extra) => {
                dynasm!(self.code.asm ; .arch x64 ; mov r10d, r9d);
                self.access(&stack_slot(false), index, false);
                let pop = 4 + i32::from(extra);
                dynasm!(self.code.asm
                    ; .arch x64
                    ; mov r11d, [r10 + rcx]
                    ; lea r9d, [r9 + pop]
                );
                self.exit_dynamic();
                true
            }
            Plan::Jmp(target) => {
                self.exit_to(target, None);
                true
            }
            Plan::JmpReg(r) => {
                dynasm!(self.code.asm ; .arch x64 ; mov r11d, Rd(r));
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

    /// Defines the label a call-out goes on at, after the instruction's code.
    fn define(&mut self, after: Option<DynamicLabel>) {
        if let Some(after) = after {
            dynasm!(self.code.asm ; .arch x64 ; =>after);
        }
    }

    /// The inline access check of the address in r10d: leaves the host address in
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
        dynasm!(self.code.asm
            ; .arch x64
            ; lea r11d, [r10 + last]
            ; rorx r11, r11, 12
            ; mov r11d, r11d
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

    /// Leaves for the RIP in r11d.
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
                dynasm!(self.code.asm
                    ; .arch x64
                    ; =>label
                    ; mov r11d, rip as i32
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
