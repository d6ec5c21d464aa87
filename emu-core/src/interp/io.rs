//! Port I/O: IN and OUT. Each access is an exit to the VMM, which hands it to the device
//! bus; the value of an IN comes back in the exit's buffer.

use super::ctx::operand_size;
use super::{Ctx, Fault, Handler};
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::In => port_in,
        Mnemonic::Out => port_out,
        _ => return None,
    })
}

/// Reads `size` bytes from `port` through the VMM (all ones if nobody answers).
pub fn read_port(cx: &mut Ctx<'_>, port: u16, size: u8) -> u64 {
    let mut buf = [0xFFu8; 4];
    cx.exit(VmExit::IoIn {
        port,
        data: &mut buf[..size as usize],
    });
    u32::from_le_bytes(buf) as u64
}

/// Writes the low `size` bytes of `v` to `port` through the VMM.
pub fn write_port(cx: &mut Ctx<'_>, port: u16, size: u8, v: u64) {
    let bytes = (v as u32).to_le_bytes();
    cx.exit(VmExit::IoOut {
        port,
        data: &bytes[..size as usize],
    });
}

fn port_in(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let port = cx.operand(ins, 1)? as u16;
    let size = operand_size(ins, 0);
    let v = read_port(cx, port, size);
    cx.set_reg(ins.op0_register(), v);
    Ok(())
}

fn port_out(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let port = cx.operand(ins, 0)? as u16;
    let size = operand_size(ins, 1);
    let v = cx.operand(ins, 1)?;
    write_port(cx, port, size, v);
    Ok(())
}
