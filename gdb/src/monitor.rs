//! `monitor` commands: what Popek knows that gdb's own commands do not show.

use crate::target::PopekTarget;
use crate::{EngineChooser, PAGE};
use emu_core::cpu::{cr0, cr4, efer, rflags, CpuState, SegReg};
use emu_core::exit::{ExitReason, GuestEvent};
use emu_core::machine::{ControlError, MachineHandle};
use emu_core::trace::{Event, EventKind};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter};
use std::fmt::Write;

/// What `monitor help` prints.
const HELP: &str = "\
Popek monitor commands:
  ring             current privilege level, processor mode and paging mode (also: mode)
  trace [N]        the last N ring transitions and exits (default 16), and engine events
                   when popek run --gdb was given --trace engine
  counters         instructions, exits by reason, ring transitions, exceptions, interrupts,
                   and the engine's own counters (the translator's, shadow paging's)
  engine           the engine running the guest
  engine NAME      move the paused guest to another engine (interp, bt, kvm)
  phys ADDR [LEN]  guest-physical memory, in hex (LEN bytes, default 64, at most 4096)
  writephys ADDR BYTE...
                   write bytes (in hex: 90 cc) to guest-physical memory
  walk ADDR        the page-table walk of a linear address, level by level
  disas [ADDR] [N] N instructions (default 8) at linear ADDR (default CS:RIP), decoded in
                   the guest's current mode: gdb's x/i decodes every mode as 64-bit code";

/// How many trace events `trace` shows unless told.
const TRACE_DEFAULT: usize = 16;
/// Bytes `phys` shows unless told.
const PHYS_DEFAULT: usize = 64;
/// The most `phys` shows at once.
const PHYS_MAX: usize = 4096;
/// Instructions `disas` shows unless told.
const DISAS_DEFAULT: usize = 8;
/// The most instructions `disas` shows at once.
const DISAS_MAX: usize = 256;
/// The longest x86 instruction.
const INSN_MAX: usize = 15;

impl MonitorCmd for PopekTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        let text = match std::str::from_utf8(cmd) {
            Ok(cmd) => run(&self.handle, &*self.engines, cmd),
            Err(_) => Err("a monitor command is text".into()),
        };
        let text = match text {
            Ok(text) => text,
            Err(MonitorError::Gone) => return Err("the machine is gone".into()),
            Err(MonitorError::Message(why)) => format!("error: {why}"),
        };
        gdbstub::outputln!(out, "{}", text.trim_end());
        Ok(())
    }
}

/// Why a command printed no result.
#[derive(Debug)]
pub enum MonitorError {
    /// The machine thread is gone: the session ends.
    Gone,
    /// What to tell the user.
    Message(String),
}

impl From<ControlError> for MonitorError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Gone => MonitorError::Gone,
            other => MonitorError::Message(other.to_string()),
        }
    }
}

impl From<String> for MonitorError {
    fn from(why: String) -> Self {
        MonitorError::Message(why)
    }
}

impl From<&str> for MonitorError {
    fn from(why: &str) -> Self {
        MonitorError::Message(why.into())
    }
}

/// Runs the monitor command `cmd`; what it prints.
pub fn run(
    handle: &MachineHandle,
    engines: &EngineChooser,
    cmd: &str,
) -> Result<String, MonitorError> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        [] | ["help"] => Ok(HELP.into()),
        ["ring" | "mode"] => Ok(ring(&handle.registers()?, handle.engine_name()?)),
        ["trace"] => trace(handle, TRACE_DEFAULT),
        ["trace", n] => trace(handle, number(n)? as usize),
        ["counters"] => counters(handle),
        ["engine"] => Ok(format!("engine: {}", handle.engine_name()?)),
        ["engine", name] => {
            let from = handle.engine_name()?;
            handle.switch_engine(engines(name)?)?;
            Ok(format!("engine: {from} -> {}", handle.engine_name()?))
        }
        ["phys", addr] => phys(handle, number(addr)?, PHYS_DEFAULT),
        ["phys", addr, len] => phys(handle, number(addr)?, number(len)? as usize),
        ["writephys", addr, bytes @ ..] if !bytes.is_empty() => {
            let addr = number(addr)?;
            let data = bytes
                .iter()
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| "writephys takes bytes in hex, as in: writephys 0x1000 90 cc")?;
            handle.write_physical(addr, &data)?;
            Ok(format!("wrote {} bytes at physical {addr:#x}", data.len()))
        }
        ["walk", addr] => walk(handle, number(addr)?),
        ["disas"] => disas(handle, None, DISAS_DEFAULT),
        ["disas", addr] => disas(handle, Some(number(addr)?), DISAS_DEFAULT),
        ["disas", addr, n] => disas(handle, Some(number(addr)?), number(n)? as usize),
        _ => Err(format!("unknown monitor command `{cmd}` (monitor help lists them)").into()),
    }
}

/// A number as gdb users write them: 0x-prefixed hex, or decimal.
fn number(word: &str) -> Result<u64, String> {
    let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.map_err(|_| format!("`{word}` is not a number (write 0x1000 or 4096)"))
}

/// The privilege level and modes of `s`.
fn ring(s: &CpuState, engine: &str) -> String {
    let mode = if s.cr0 & cr0::PE == 0 {
        "real mode".to_string()
    } else if s.rflags.control(rflags::VM) {
        "virtual-8086 mode".to_string()
    } else if s.efer & efer::LMA != 0 {
        match s.code_bitness() {
            64 => "64-bit long mode".to_string(),
            bits => format!("{bits}-bit compatibility mode (long mode)"),
        }
    } else {
        format!("{}-bit protected mode", s.code_bitness())
    };
    let paging = if s.cr0 & cr0::PG == 0 {
        "paging off"
    } else if s.efer & efer::LMA != 0 {
        "4-level paging"
    } else if s.cr4 & cr4::PAE != 0 {
        "PAE paging"
    } else {
        "32-bit paging"
    };
    let interrupts = if s.rflags.control(rflags::IF) {
        "interrupts on"
    } else {
        "interrupts off"
    };
    let mut text = format!(
        "ring {}, {mode}, {paging}, {interrupts} (cs {:#06x}, engine {engine})",
        s.cpl(),
        s.seg[SegReg::Cs].selector,
    );
    if s.halted {
        text += "\nhalted: waiting for an interrupt";
    }
    text
}

/// Whether the `trace` command shows this event (engine events are recorded only when
/// asked for).
fn ring_or_exit(e: &Event) -> bool {
    matches!(
        e.kind,
        EventKind::Guest(GuestEvent::RingTransition { .. })
            | EventKind::Exit(_)
            | EventKind::Engine(_)
    )
}

/// The last `n` ring transitions and exits.
fn trace(handle: &MachineHandle, n: usize) -> Result<String, MonitorError> {
    let events = handle.call(move |m| {
        let kept = m.vmm.trace.events().filter(|e| ring_or_exit(e)).count();
        m.vmm
            .trace
            .events()
            .filter(|e| ring_or_exit(e))
            .skip(kept.saturating_sub(n))
            .cloned()
            .collect::<Vec<_>>()
    })?;
    if events.is_empty() {
        return Ok("no ring transition or exit recorded yet".into());
    }
    let mut text = String::new();
    for e in events {
        let _ = writeln!(text, "{e}");
    }
    Ok(text)
}

/// The counters.
fn counters(handle: &MachineHandle) -> Result<String, MonitorError> {
    let c = handle.counters()?;
    let mut text = format!(
        "engine {}, {} instructions retired\n",
        handle.engine_name()?,
        handle.instructions_retired()?
    );
    let _ = write!(text, "exits: {}", c.total_exits());
    for reason in ExitReason::ALL {
        match c.exits(reason) {
            0 => {}
            n => {
                let _ = write!(text, ", {} {n}", reason.name());
            }
        }
    }
    text += "\nring transitions:";
    if c.ring_transitions.is_empty() {
        text += " none";
    }
    for ((from, to), n) in &c.ring_transitions {
        let _ = write!(text, " {from}->{to} {n}");
    }
    text += "\nexceptions:";
    if c.exceptions.is_empty() {
        text += " none";
    }
    for (vector, n) in &c.exceptions {
        let _ = write!(text, " #{vector} {n}");
    }
    text += "\ninterrupts:";
    if c.interrupts.is_empty() {
        text += " none";
    }
    for (vector, n) in &c.interrupts {
        let _ = write!(text, " {vector:#04x} {n}");
    }
    let engine = handle.engine_counters()?;
    if !engine.is_empty() {
        text += "\nengine:";
    }
    for (name, n) in engine {
        let _ = write!(text, "\n  {name}: {n}");
    }
    Ok(text)
}

/// `len` bytes of physical memory at `addr`, 16 to a line.
fn phys(handle: &MachineHandle, addr: u64, len: usize) -> Result<String, MonitorError> {
    if len == 0 || len > PHYS_MAX {
        return Err(format!("phys shows 1 to {PHYS_MAX} bytes").into());
    }
    let bytes = handle.read_physical(addr, len)?;
    let mut text = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(text, "{:#010x}:", addr + 16 * i as u64);
        for b in line {
            let _ = write!(text, " {b:02x}");
        }
        text += "\n";
    }
    Ok(text)
}

/// The page walk of `addr`.
fn walk(handle: &MachineHandle, addr: u64) -> Result<String, MonitorError> {
    let s = handle.registers()?;
    if s.cr0 & cr0::PG == 0 {
        return Ok(format!(
            "paging is off: linear {addr:#x} is physical {addr:#x}"
        ));
    }
    let names: &[&str] = if s.efer & efer::LMA != 0 {
        &["PML4E", "PDPTE", "PDE", "PTE"]
    } else if s.cr4 & cr4::PAE != 0 {
        &["PDPTE", "PDE", "PTE"]
    } else {
        &["PDE", "PTE"]
    };
    let t = handle.translate(addr)?;
    let mut text = format!("linear {addr:#x}, cr3 {:#x}\n", s.cr3);
    for (level, name) in t.levels[..t.depth].iter().zip(names) {
        let _ = writeln!(
            text,
            "  {name:<5} at {:#011x} = {:#018x}",
            level.entry_pa, level.entry
        );
    }
    let mut rights = vec![if t.user { "user" } else { "supervisor" }];
    rights.push(if t.writable { "writable" } else { "read-only" });
    if t.no_exec {
        rights.push("no-execute");
    }
    if t.global {
        rights.push("global");
    }
    if t.dirty {
        rights.push("dirty");
    }
    let _ = write!(
        text,
        "-> physical {:#x} ({} KiB page, {})",
        t.phys,
        (1u64 << t.page_bits) >> 10,
        rights.join(", ")
    );
    Ok(text)
}

/// `n` instructions at linear address `addr` (default: the current instruction),
/// decoded as the current code segment runs them (16-, 32- or 64-bit).
fn disas(handle: &MachineHandle, addr: Option<u64>, n: usize) -> Result<String, MonitorError> {
    if n == 0 || n > DISAS_MAX {
        return Err(format!("disas shows 1 to {DISAS_MAX} instructions").into());
    }
    let s = handle.registers()?;
    let here = s.code_address();
    let start = addr.unwrap_or(here);
    // Read what is mapped of the longest the instructions can be.
    let want = n * INSN_MAX;
    let mut code = Vec::new();
    while code.len() < want {
        let at = start.wrapping_add(code.len() as u64);
        let chunk = (PAGE - (at as usize & (PAGE - 1))).min(want - code.len());
        match handle.read_linear(at, chunk) {
            Ok(bytes) => code.extend(bytes),
            Err(ControlError::Gone) => return Err(MonitorError::Gone),
            Err(_) if !code.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    let bits = s.code_bitness();
    let mut decoder = Decoder::with_ip(bits, &code, start, DecoderOptions::NONE);
    let mut formatter = GasFormatter::new();
    let mut text = format!("{bits}-bit code:\n");
    for insn in decoder.iter().take(n) {
        let mut asm = String::new();
        formatter.format(&insn, &mut asm);
        let offset = (insn.ip() - start) as usize;
        let bytes: Vec<String> = code[offset..(offset + insn.len()).min(code.len())]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mark = if insn.ip() == here { "=>" } else { "  " };
        let _ = writeln!(
            text,
            "{mark} {:#010x}:  {:<24} {asm}",
            insn.ip(),
            bytes.join(" ")
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number("0x1f"), Ok(0x1f));
        assert_eq!(number("31"), Ok(31));
        assert!(number("zz").is_err());
    }

    #[test]
    fn ring_and_mode() {
        let s = CpuState::multiboot(0x10_0000, 0x2BAD_B002, 0);
        let text = ring(&s, "interp");
        assert!(
            text.starts_with("ring 0, 32-bit protected mode, paging off, interrupts off"),
            "{text}"
        );
        assert!(ring(&CpuState::reset(), "interp").contains("real mode"));
    }
}
