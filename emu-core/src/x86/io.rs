//! Port I/O: IN and OUT. Each access is an exit to the VMM, which hands it to the device
//! bus; the value of an IN comes back in the exit's buffer.
//!
//! Above the I/O privilege level, a port is usable only if the I/O permission bitmap of
//! the current TSS allows it ([`check_io_permission`]).

use super::ctx::operand_size;
use super::segment::system_type;
use super::system::iopl_allows;
use super::{Ctx, Fault, Handler};
use crate::cpu::Segment;
use crate::exception::Exception;
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic};

/// Offset in a 32/64-bit TSS of the 16-bit offset of the I/O permission bitmap.
const TSS_IOMAP_BASE: u64 = 0x66;
/// Ports per bitmap byte.
const PORTS_PER_BYTE: u16 = 8;

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

/// Whether the program may access `size` ports from `port` (#GP(0) if not): always at
/// CPL <= IOPL; above it, only if the TSS's I/O permission bitmap has a clear bit for
/// each port. The processor reads two bitmap bytes from the port's byte on and refuses
/// if either lies beyond the TSS limit; a 16-bit TSS has no bitmap at all.
pub fn check_io_permission(cx: &mut Ctx<'_>, port: u16, size: u8) -> Result<(), Fault> {
    if iopl_allows(cx)? {
        return Ok(());
    }
    let denied = Fault::from(Exception::general_protection(0));
    let tr = cx.cpu.tr;
    let kind = tr.attr & Segment::TYPE;
    let wide_tss = kind == system_type::TSS_AVAILABLE || kind == system_type::TSS_BUSY;
    let limit = u64::from(tr.limit);
    if !wide_tss || TSS_IOMAP_BASE + 1 > limit {
        return Err(denied);
    }
    let map = cx.read_sys(tr.base.wrapping_add(TSS_IOMAP_BASE), 2)?;
    let offset = map + u64::from(port / PORTS_PER_BYTE);
    if offset + 1 > limit {
        return Err(denied);
    }
    let bits = cx.read_sys(tr.base.wrapping_add(offset), 2)?;
    let wanted = ((1u64 << size) - 1) << (port % PORTS_PER_BYTE);
    if bits & wanted != 0 {
        return Err(denied);
    }
    Ok(())
}

fn port_in(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let port = cx.operand(ins, 1)? as u16;
    let size = operand_size(ins, 0);
    check_io_permission(cx, port, size)?;
    let v = read_port(cx, port, size);
    cx.set_reg(ins.op0_register(), v);
    Ok(())
}

fn port_out(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let port = cx.operand(ins, 0)? as u16;
    let size = operand_size(ins, 1);
    check_io_permission(cx, port, size)?;
    let v = cx.operand(ins, 1)?;
    write_port(cx, port, size, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PORTS_PER_BYTE;
    use crate::cpu::rflags;
    use crate::exception::vector;
    use crate::testkit::{
        busy_tss, Asm, Machine, TSS32_SIZE, TSS_BASE, TSS_IOMAP, TSS_SEL, USER_CS,
    };
    use iced_x86::code_asm::*;

    /// The port the bitmap allows.
    const ALLOWED: u16 = 0x3F8;
    /// Bitmap bytes in the TSS: ports 0-0x3FF, then the terminating all-ones byte.
    const MAP_BYTES: u64 = 0x400 / PORTS_PER_BYTE as u64 + 1;

    /// A CPL-3 guest with IOPL 0 whose TSS bitmap allows only ALLOWED, running `asm`.
    fn user_with_bitmap(asm: Asm) -> Machine {
        let mut m = Machine::protected(asm).user();
        let map = TSS_BASE + TSS32_SIZE;
        m.poke(map, &[0xFF; MAP_BYTES as usize]);
        let bit: u8 = 1 << (ALLOWED % PORTS_PER_BYTE);
        m.poke(map + u64::from(ALLOWED / PORTS_PER_BYTE), &[!bit]);
        m.poke(TSS_BASE + TSS_IOMAP, &(TSS32_SIZE as u16).to_le_bytes());
        let mut tss = busy_tss();
        tss.limit = (TSS32_SIZE + MAP_BYTES - 1) as u32;
        m.set_gdt_entry(TSS_SEL, tss);
        m.state.tr = tss.segment(TSS_SEL);
        m
    }

    /// Runs `m` expecting a #GP(0) from ring 3; returns the ports read before it.
    fn denied(mut m: Machine) -> Vec<u16> {
        let trap = m.run_to_trap();
        assert_eq!((trap.vector, trap.error_code), (vector::GP, Some(0)));
        assert_eq!(trap.cs, USER_CS);
        m.exits.ports_read
    }

    #[test]
    fn the_bitmap_allows_one_port_and_denies_another() {
        let m = user_with_bitmap(|a| {
            a.mov(dx, u32::from(ALLOWED))?;
            a.in_(al, dx)?;
            a.in_(al, 0x80)
        });
        assert_eq!(denied(m), [ALLOWED]);
    }

    #[test]
    fn every_port_of_a_wide_access_must_be_allowed() {
        let m = user_with_bitmap(|a| {
            a.mov(dx, u32::from(ALLOWED))?;
            a.out(dx, ax)
        });
        assert!(denied(m).is_empty());
    }

    #[test]
    fn bitmap_bytes_beyond_the_tss_limit_deny() {
        let m = user_with_bitmap(|a| {
            a.mov(dx, 0xFFFF)?;
            a.in_(al, dx)
        });
        assert!(denied(m).is_empty());
    }

    #[test]
    fn iopl_3_needs_no_bitmap() {
        let mut m = Machine::protected(|a| a.in_(al, 0x80))
            .user()
            .flags(rflags::IOPL);
        let trap = m.run_to_trap();
        // The IN worked; the HLT after it faults.
        assert_eq!(m.exits.ports_read, [0x80]);
        assert_eq!(trap.vector, vector::GP);
    }
}
