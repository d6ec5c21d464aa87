//! From a decoded instruction to the handler that executes it.
//!
//! Each family module answers for the mnemonics it implements; the first that knows the
//! instruction wins. An instruction no family knows is reported as unsupported — a
//! missing feature of Popek, not a guest error — while an undecodable one raises #UD.

use super::{
    alu, bcd, bits, control, far, flagops, fpu, io, moves, muldiv, shift, sse, stack, string,
    sysinstr, system,
};
use super::{Ctx, Fault, Handler};
use crate::exception::Exception;
use iced_x86::Instruction;

/// The handler for `ins`.
pub fn handler(ins: &Instruction) -> Handler {
    if ins.is_invalid() {
        return invalid_opcode;
    }
    alu::handler(ins)
        .or_else(|| far::handler(ins))
        .or_else(|| control::handler(ins))
        .or_else(|| moves::handler(ins))
        .or_else(|| stack::handler(ins))
        .or_else(|| shift::handler(ins))
        .or_else(|| muldiv::handler(ins))
        .or_else(|| bcd::handler(ins))
        .or_else(|| bits::handler(ins))
        // Before string: MOVSD with XMM operands is SSE2's, not the string move.
        .or_else(|| sse::handler(ins))
        .or_else(|| fpu::handler(ins))
        .or_else(|| string::handler(ins))
        .or_else(|| flagops::handler(ins))
        .or_else(|| io::handler(ins))
        .or_else(|| system::handler(ins))
        .or_else(|| sysinstr::handler(ins))
        .unwrap_or(unsupported)
}

fn invalid_opcode(_: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    Err(Exception::invalid_opcode().into())
}

fn unsupported(_: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    Err(Fault::Unsupported)
}
