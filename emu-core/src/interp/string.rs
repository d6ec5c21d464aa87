//! String instructions: MOVS STOS LODS CMPS SCAS INS OUTS, with REP, REPE and REPNE.
//!
//! The source is `seg:[SI]` (DS unless overridden), the destination always `ES:[DI]`;
//! the address size picks SI/ESI/RSI, DI/EDI/RDI and the count CX/ECX/RCX, and DF the
//! direction. A repeated instruction runs at most [`REP_CHUNK`] iterations per call (and
//! no more than the instruction budget has left: each iteration counts as an instruction)
//! and then asks to be executed again (RIP back on itself), so a guest-chosen count of
//! four billion neither hangs the run loop nor escapes the instruction budget. The registers
//! are updated after every iteration, which is what makes such a restart — or a fault
//! part-way through — architecturally exact.

use super::sse::probe_write;
use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::DF;
use crate::cpu::SegReg;
use crate::x86::ctx::seg_of;
use crate::x86::flags::{size_mask, FlagOp};
use crate::x86::io::{check_io_permission, read_port, write_port};
use crate::x86::mmu::Access;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

const MOVS: u8 = 0;
const STOS: u8 = 1;
const LODS: u8 = 2;
const CMPS: u8 = 3;
const SCAS: u8 = 4;
const INS: u8 = 5;
const OUTS: u8 = 6;

/// Iterations a repeated instruction runs before it yields to the run loop (which then
/// checks the budget and stop requests and executes it again).
const REP_CHUNK: u64 = 1024;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    // MOVSD and CMPSD are also SSE2 mnemonics; only the string forms belong here.
    Walk::of(ins)?;
    Some(match ins.mnemonic() {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => string::<MOVS>,
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => string::<STOS>,
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => string::<LODS>,
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => string::<CMPS>,
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => string::<SCAS>,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => string::<INS>,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => string::<OUTS>,
        _ => return None,
    })
}

/// The registers a string instruction walks with, chosen by its address size.
struct Walk {
    si: Register,
    di: Register,
    count: Register,
}

impl Walk {
    const A16: Walk = Walk {
        si: Register::SI,
        di: Register::DI,
        count: Register::CX,
    };
    const A32: Walk = Walk {
        si: Register::ESI,
        di: Register::EDI,
        count: Register::ECX,
    };
    const A64: Walk = Walk {
        si: Register::RSI,
        di: Register::RDI,
        count: Register::RCX,
    };

    /// The walk of a string instruction (the decoder names the address size in its
    /// string operands), or None if `ins` has no string operand.
    fn of(ins: &Instruction) -> Option<&'static Walk> {
        (0..ins.op_count()).find_map(|i| match ins.op_kind(i) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => Some(&Self::A16),
            OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(&Self::A32),
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(&Self::A64),
            _ => None,
        })
    }
}

/// Whether SI advances (the instruction reads the source string).
fn uses_si(op: u8) -> bool {
    matches!(op, MOVS | LODS | CMPS | OUTS)
}

/// Whether DI advances (the instruction touches the destination string).
fn uses_di(op: u8) -> bool {
    matches!(op, MOVS | STOS | CMPS | SCAS | INS)
}

/// The instruction's register operand: the accumulator of STOS/LODS/SCAS, DX of INS/OUTS.
fn register_operand(ins: &Instruction) -> Register {
    (0..ins.op_count())
        .find(|&i| ins.op_kind(i) == OpKind::Register)
        .map_or(Register::None, |i| ins.op_register(i))
}

/// One iteration: the memory and port accesses, then SI/DI stepped by `step`. On `Err`
/// nothing has been committed.
fn iterate<const OP: u8>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    walk: &Walk,
    size: u8,
    step: u64,
) -> Result<(), Fault> {
    // Each string is checked only when used: STOS works with DS unusable.
    let src = |cx: &Ctx<'_>| {
        let seg = seg_of(ins.memory_segment());
        cx.seg_addr(seg, cx.reg(walk.si), size.into(), Access::Read)
    };
    // The destination cannot be overridden.
    let dst = |cx: &Ctx<'_>, access| cx.seg_addr(SegReg::Es, cx.reg(walk.di), size.into(), access);
    let reg = register_operand(ins);
    match OP {
        MOVS => {
            let v = cx.read(src(cx)?, size)?;
            cx.write(dst(cx, Access::Write)?, size, v)?;
        }
        STOS => {
            let v = cx.reg(reg);
            cx.write(dst(cx, Access::Write)?, size, v)?;
        }
        LODS => {
            let v = cx.read(src(cx)?, size)?;
            cx.set_reg(reg, v);
        }
        CMPS | SCAS => {
            let a = if OP == CMPS {
                cx.read(src(cx)?, size)?
            } else {
                cx.reg(reg)
            };
            let b = cx.read(dst(cx, Access::Read)?, size)?;
            let mask = size_mask(size);
            let (a, b) = (a & mask, b & mask);
            cx.cpu
                .rflags
                .set(FlagOp::Sub, size, a, b, a.wrapping_sub(b));
        }
        INS => {
            // The port read has effects: the port's permission, then the destination's
            // segment and page, must allow it before it happens.
            let port = cx.reg(reg) as u16;
            check_io_permission(cx, port, size)?;
            let at = dst(cx, Access::Write)?;
            probe_write(cx, at, size.into())?;
            let v = read_port(cx, port, size);
            cx.write(at, size, v)?;
        }
        _ => {
            let port = cx.reg(reg) as u16;
            check_io_permission(cx, port, size)?;
            let v = cx.read(src(cx)?, size)?;
            write_port(cx, port, size, v);
        }
    }
    if uses_si(OP) {
        let si = cx.reg(walk.si).wrapping_add(step);
        cx.set_reg(walk.si, si);
    }
    if uses_di(OP) {
        let di = cx.reg(walk.di).wrapping_add(step);
        cx.set_reg(walk.di, di);
    }
    Ok(())
}

/// Whether REPE/REPNE CMPS/SCAS stop after this comparison.
fn compare_ends(cx: &Ctx<'_>, ins: &Instruction, op: u8) -> bool {
    if op != CMPS && op != SCAS {
        return false;
    }
    let zf = cx.cpu.rflags.zf();
    if ins.has_repne_prefix() {
        zf
    } else {
        !zf
    }
}

/// Any string instruction, repeated or not.
fn string<const OP: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let walk = Walk::of(ins).ok_or(Fault::Unsupported)?;
    let size = ins.memory_size().size() as u8;
    let step = if cx.cpu.rflags.control(DF) {
        (size as u64).wrapping_neg()
    } else {
        size as u64
    };
    // REPNE on a non-comparing instruction repeats it just as REP does.
    if !ins.has_rep_prefix() && !ins.has_repne_prefix() {
        return iterate::<OP>(cx, ins, walk, size, step);
    }
    // Each iteration counts as an instruction (as QEMU's icount counts them), so the
    // budget bounds the work a REP does; the run loop counts the last one.
    let room = cx.budget_end.saturating_sub(cx.icount).clamp(1, REP_CHUNK);
    let mut done = 0;
    let result = rep_chunk::<OP>(cx, ins, walk, size, step, room, &mut done);
    if done > 1 {
        cx.icount += done - 1;
        // The run loop must look at the budget again before the next instruction.
        cx.end_block = true;
    }
    result
}

/// Runs up to `room` iterations of a repeated string instruction, counting them in `done`.
fn rep_chunk<const OP: u8>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    walk: &Walk,
    size: u8,
    step: u64,
    room: u64,
    done: &mut u64,
) -> Result<(), Fault> {
    while *done < room {
        if cx.reg(walk.count) == 0 {
            return Ok(());
        }
        iterate::<OP>(cx, ins, walk, size, step)?;
        *done += 1;
        let left = cx.reg(walk.count).wrapping_sub(1);
        cx.set_reg(walk.count, left);
        if cx.reg(walk.count) == 0 || compare_ends(cx, ins, OP) {
            return Ok(());
        }
        // The VMM wants to stop, or the iteration overwrote cached code: the block must
        // end here, and the rest of the run has to come from a fresh decode.
        if cx.stop.is_some() || cx.end_block {
            break;
        }
    }
    // Iterations remain: leave RIP on this instruction so it runs again.
    cx.cpu.rip = ins.ip();
    cx.end_block = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::REP_CHUNK;
    use crate::cpu::rflags::{CF, DF, SF, ZF};
    use crate::cpu::SegReg;
    use crate::exit::StopReason;
    use crate::testkit::{Machine, CODE_BASE, DATA, MMIO_STOP, RAM_SIZE, RAX, RCX, RDI, RDX, RSI};

    /// Where string destinations go in these tests.
    const DEST: u64 = DATA + 0x100;
    /// A16 REP MOVSB, hand-encoded: the assembler picks the address size from the mode.
    const A16_REP_MOVSB: [u8; 3] = [0x67, 0xF3, 0xA4];
    /// MOVSB with an FS override.
    const FS_MOVSB: [u8; 2] = [0x64, 0xA4];
    /// REPNE (F2) MOVSB: repeats like REP.
    const REPNE_MOVSB: [u8; 2] = [0xF2, 0xA4];

    #[test]
    fn rep_movsb_copies_forward() {
        let mut m = Machine::new(|a| a.rep().movsb()).regs(&[(RSI, DATA), (RDI, DEST), (RCX, 5)]);
        m.poke(DATA, b"hello!");
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DEST, 6), b"hello\0");
        assert_eq!(
            (st.gpr[RSI], st.gpr[RDI], st.gpr[RCX]),
            (DATA + 5, DEST + 5, 0)
        );
    }

    #[test]
    fn rep_movsd_copies_backward_with_df() {
        let mut m = Machine::new(|a| a.rep().movsd())
            .regs(&[(RSI, DATA + 8), (RDI, DEST + 8), (RCX, 3)])
            .flags(DF);
        m.poke(DATA, &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]);
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DEST, 13), &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0]);
        assert_eq!((st.gpr[RSI], st.gpr[RDI]), (DATA - 4, DEST - 4));
    }

    #[test]
    fn source_segment_can_be_overridden_but_destination_is_es() {
        const FS_BASE: u64 = 0x300;
        const ES_BASE: u64 = 0x500;
        let mut m = Machine::with_bytes(&FS_MOVSB).regs(&[(RSI, DATA), (RDI, DATA)]);
        m.state.seg.modify(SegReg::Fs, |s| s.base = FS_BASE);
        m.state.seg.modify(SegReg::Es, |s| s.base = ES_BASE);
        m.poke(DATA, &[0x11]);
        m.poke(FS_BASE + DATA, &[0x22]);
        m.run_to_halt();
        assert_eq!(m.bytes(ES_BASE + DATA, 1), [0x22]);
        assert_eq!(m.bytes(DATA, 1), [0x11], "DS:EDI is not the destination");
    }

    #[test]
    fn address_size_16_walks_si_di_cx_only() {
        let mut m = Machine::with_bytes(&A16_REP_MOVSB).regs(&[
            (RSI, 0xFFFF_FFFF),
            (RDI, 0xAAAA_0020),
            (RCX, 0x5555_0002),
        ]);
        m.poke(0xFFFF, &[7]);
        m.poke(0, &[8]);
        let st = m.run_to_halt().clone();
        // SI wraps from 0xFFFF to 0 within 16 bits; the upper halves stay.
        assert_eq!(m.bytes(0x20, 2), [7, 8]);
        assert_eq!(st.gpr[RSI], 0xFFFF_0001);
        assert_eq!(st.gpr[RDI], 0xAAAA_0022);
        assert_eq!(st.gpr[RCX], 0x5555_0000);
    }

    #[test]
    fn repne_prefix_repeats_movs_like_rep() {
        let mut m = Machine::with_bytes(&REPNE_MOVSB).regs(&[(RSI, DATA), (RDI, DEST), (RCX, 3)]);
        m.poke(DATA, b"abc");
        m.run_to_halt();
        assert_eq!(m.bytes(DEST, 3), b"abc");
    }

    #[test]
    fn rep_stos_and_lods() {
        let mut m =
            Machine::new(|a| a.rep().stosd()).regs(&[(RAX, 0xDEAD_BEEF), (RDI, DEST), (RCX, 2)]);
        let st = m.run_to_halt().clone();
        assert_eq!(
            m.bytes(DEST, 8),
            [0xEF, 0xBE, 0xAD, 0xDE, 0xEF, 0xBE, 0xAD, 0xDE]
        );
        assert_eq!(st.gpr[RDI], DEST + 8);

        let mut m = Machine::new(|a| a.lodsw()).regs(&[(RAX, 0x5555_0000), (RSI, DATA)]);
        m.poke(DATA, &[0x34, 0x12]);
        let st = m.run_to_halt();
        assert_eq!((st.gpr[RAX], st.gpr[RSI]), (0x5555_1234, DATA + 2));
    }

    #[test]
    fn rep_with_a_zero_count_does_nothing() {
        let mut m = Machine::new(|a| a.rep().stosb()).regs(&[(RAX, 0xFF), (RDI, DEST), (RCX, 0)]);
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DEST, 1), [0]);
        assert_eq!(st.gpr[RDI], DEST);
    }

    #[test]
    fn repe_cmpsb_stops_at_the_first_difference() {
        let mut m = Machine::new(|a| a.repe().cmpsb()).regs(&[(RSI, DATA), (RDI, DEST), (RCX, 10)]);
        m.poke(DATA, b"abcX");
        m.poke(DEST, b"abcY");
        let st = m.run_to_halt();
        assert_eq!(
            (st.gpr[RSI], st.gpr[RDI], st.gpr[RCX]),
            (DATA + 4, DEST + 4, 6)
        );
        // 'X' - 'Y' borrows and is negative.
        assert_eq!(st.rflags & (ZF | CF | SF), CF | SF);
    }

    #[test]
    fn repe_cmpsb_runs_out_of_count_on_equal_strings() {
        let mut m = Machine::new(|a| a.repe().cmpsb()).regs(&[(RSI, DATA), (RDI, DEST), (RCX, 3)]);
        m.poke(DATA, b"abc");
        m.poke(DEST, b"abc");
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RCX], 0);
        assert_eq!(st.rflags & ZF, ZF);
    }

    #[test]
    fn repne_scasb_is_strlen() {
        let mut m =
            Machine::new(|a| a.repne().scasb()).regs(&[(RAX, 0), (RDI, DATA), (RCX, 0xFFFF_FFFF)]);
        m.poke(DATA, b"hello\0");
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RDI], DATA + 6);
        assert_eq!(st.gpr[RCX], 0xFFFF_FFFF - 6);
        assert_eq!(st.rflags & ZF, ZF);
    }

    #[test]
    fn repne_scasb_gives_up_at_the_count() {
        let mut m = Machine::new(|a| a.repne().scasb()).regs(&[
            (RAX, u64::from(b'z')),
            (RDI, DATA),
            (RCX, 3),
        ]);
        m.poke(DATA, b"hello");
        let st = m.run_to_halt();
        assert_eq!((st.gpr[RDI], st.gpr[RCX]), (DATA + 3, 0));
        assert_eq!(st.rflags & ZF, 0);
    }

    #[test]
    fn scasd_compares_eax_with_the_destination() {
        let mut m = Machine::new(|a| a.scasd()).regs(&[(RAX, 1), (RDI, DATA)]);
        m.poke(DATA, &2u32.to_le_bytes());
        let st = m.run_to_halt();
        assert_eq!(st.rflags & (ZF | CF | SF), CF | SF);
        assert_eq!(st.gpr[RDI], DATA + 4);
    }

    #[test]
    fn rep_movsq_in_64_bit_mode() {
        let mut m = Machine::new64(|a| a.rep().movsq()).regs(&[(RSI, DATA), (RDI, DEST), (RCX, 2)]);
        m.poke(DATA, &[9; 16]);
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DEST, 16), [9; 16]);
        assert_eq!(st.gpr[RDI], DEST + 16);
    }

    #[test]
    fn rep_outsb_and_insw_go_through_the_vmm() {
        const PORT: u64 = 0x3F8;
        let mut m = Machine::new(|a| a.rep().outsb()).regs(&[(RSI, DATA), (RDX, PORT), (RCX, 3)]);
        m.poke(DATA, b"abc");
        m.run_to_halt();
        let out: Vec<_> = m
            .exits
            .port_output
            .iter()
            .map(|(p, d)| (*p, d.clone()))
            .collect();
        assert_eq!(
            out,
            [
                (0x3F8, vec![b'a']),
                (0x3F8, vec![b'b']),
                (0x3F8, vec![b'c'])
            ]
        );

        let mut m = Machine::new(|a| a.rep().insw()).regs(&[(RDI, DEST), (RDX, PORT), (RCX, 2)]);
        m.exits.port_input.extend([1, 2, 3, 4]);
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DEST, 4), [1, 2, 3, 4]);
        assert_eq!(st.gpr[RDI], DEST + 4);
    }

    #[test]
    fn ins_reads_no_port_when_its_destination_is_refused() {
        // ES ends below DEST: the port read (which has effects on devices) must not
        // happen before the #GP.
        const PORT: u64 = 0x3F8;
        let mut m = Machine::new(|a| a.insb()).regs(&[(RDI, DEST), (RDX, PORT)]);
        m.state
            .seg
            .modify(SegReg::Es, |s| s.limit = (DEST - 1) as u32);
        m.exits.port_input.push_back(0x42);
        let (vector, _) = m.run_to_exception();
        assert_eq!(vector, crate::exception::vector::GP);
        assert_eq!(m.exits.port_input, [0x42], "the port was read");
    }

    #[test]
    fn rep_longer_than_a_chunk_completes() {
        let count = REP_CHUNK * 2 + 17;
        let mut m =
            Machine::new(|a| a.rep().stosb()).regs(&[(RAX, 0xAB), (RDI, DEST), (RCX, count)]);
        let st = m.run_to_halt().clone();
        assert_eq!((st.gpr[RDI], st.gpr[RCX]), (DEST + count, 0));
        assert!(m.bytes(DEST, count as usize).iter().all(|&b| b == 0xAB));
        assert_eq!(m.bytes(DEST + count, 1), [0]);
    }

    #[test]
    fn a_huge_rep_count_stays_within_the_budget() {
        const BUDGET: u64 = 3;
        let mut m = Machine::new(|a| a.rep().stosb()).regs(&[(RDI, DATA), (RCX, 0xFFFF_FFFF)]);
        assert_eq!(m.run_for(BUDGET), StopReason::Budget);
        // Every iteration counts against the budget.
        let done = BUDGET;
        assert_eq!(m.state.gpr[RDI], DATA + done);
        assert_eq!(m.state.gpr[RCX], 0xFFFF_FFFF - done);
        assert_eq!(m.state.rip, CODE_BASE, "stopped on the REP, to resume it");
    }

    #[test]
    fn a_stop_request_mid_rep_leaves_it_resumable() {
        // The third byte lands past the end of RAM: an MMIO write, after which the VMM
        // asks to stop.
        let start = RAM_SIZE as u64 - 2;
        let mut m = Machine::new(|a| a.rep().stosb()).regs(&[(RAX, 0x5A), (RDI, start), (RCX, 5)]);
        m.exits.stop_on_mmio_write = true;
        assert_eq!(m.run(), MMIO_STOP);
        assert_eq!((m.state.gpr[RDI], m.state.gpr[RCX]), (start + 3, 2));
        assert_eq!(m.state.rip, CODE_BASE);

        m.exits.stop_on_mmio_write = false;
        m.run_to_halt();
        assert_eq!((m.state.gpr[RDI], m.state.gpr[RCX]), (start + 5, 0));
        let mmio: Vec<_> = m.exits.mmio_writes.iter().map(|(a, _)| *a).collect();
        assert_eq!(mmio, [start + 2, start + 3, start + 4]);
        assert_eq!(m.bytes(start, 2), [0x5A, 0x5A]);
    }

    #[test]
    fn a_write_next_to_code_does_not_end_the_chunk() {
        // Data on the page that holds the REP, but not on its bytes: no self-modifying
        // code, so the REP runs on as plain stores, one budgeted instruction each.
        const IN_CODE_PAGE: u64 = CODE_BASE + 0x800;
        let mut m =
            Machine::new(|a| a.rep().stosb()).regs(&[(RAX, 0x77), (RDI, IN_CODE_PAGE), (RCX, 5)]);
        assert_eq!(m.run_for(5), StopReason::Budget);
        assert_eq!((m.state.gpr[RDI], m.state.gpr[RCX]), (IN_CODE_PAGE + 5, 0));
        m.run_to_halt();
        assert_eq!(m.bytes(IN_CODE_PAGE, 6), [0x77, 0x77, 0x77, 0x77, 0x77, 0]);
    }

    #[test]
    fn rep_stos_over_the_following_code_is_seen() {
        // Two NOPs overwrite the UD2 after the REP STOSB, which was decoded in the same
        // block: the block must end and be decoded afresh.
        const NOP: u64 = 0x90;
        const REP_STOSB_LEN: u64 = 2;
        let mut m = Machine::new(|a| {
            a.rep().stosb()?;
            a.ud2()
        })
        .regs(&[(RAX, NOP), (RDI, CODE_BASE + REP_STOSB_LEN), (RCX, 2)]);
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RCX], 0);
    }
}
