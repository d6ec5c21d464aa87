//! Disassembly around RIP with iced-x86's Intel formatter.

use emu_core::x86::opcode::{self, Sensitivity};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, Instruction, IntelFormatter};

/// One line of the disassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Linear address of the instruction.
    pub addr: u64,
    /// Its bytes, in hex.
    pub bytes: String,
    /// Intel syntax.
    pub text: String,
    /// What running it in a ring other than 0 does (None for undecodable bytes).
    pub sensitivity: Option<Sensitivity>,
}

/// One sentence on what `sensitivity` means for a virtual machine monitor.
pub fn explain(sensitivity: Option<Sensitivity>) -> &'static str {
    match sensitivity {
        None => "Not an instruction: these bytes do not decode",
        Some(Sensitivity::None) => "Behaves the same in every ring: it runs directly, whatever the technique",
        Some(Sensitivity::Privileged) => "Privileged: it faults outside ring 0, so a deprivileged guest kernel traps here and the VMM emulates it (trap and emulate)",
        Some(Sensitivity::IoplChecked) => "I/O-privileged: it faults when CPL > IOPL, so a VMM that keeps IOPL below the guest kernel's ring traps it",
        Some(Sensitivity::Unprivileged) => "Sensitive but not privileged: it reads or changes privileged state without faulting outside ring 0, so trap and emulate cannot catch it and a binary translator must rewrite it (why x86 is not classically virtualizable)",
    }
}

/// How many lines the window shows.
pub const LINES: usize = 24;
/// How many lines before RIP it tries to show.
pub const BEFORE: usize = 6;
/// How far back from RIP it looks for instruction boundaries: x86 code cannot be decoded
/// backwards, so it tries every start in this window and keeps one whose instructions
/// line up with RIP.
pub const LOOKBACK: u64 = 48;
/// Bytes read after RIP: enough for [`LINES`] instructions of typical length.
pub const AHEAD: u64 = 160;

/// Decodes `bytes`, which sit at linear address `base`, as `bitness`-bit code, into at
/// most `max` lines.
pub fn decode(bytes: &[u8], base: u64, bitness: u32, max: usize) -> Vec<Line> {
    let mut decoder = Decoder::with_ip(bitness, bytes, base, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut lines = Vec::new();
    let mut insn = Instruction::default();
    while decoder.can_decode() && lines.len() < max {
        let offset = (decoder.ip() - base) as usize;
        decoder.decode_out(&mut insn);
        // An instruction cut off by the end of what was read is not shown.
        if insn.is_invalid() && !decoder.can_decode() {
            break;
        }
        let mut text = String::new();
        if insn.is_invalid() {
            text.push_str("(bad)");
        } else {
            formatter.format(&insn, &mut text);
        }
        let raw = &bytes[offset..offset + insn.len()];
        lines.push(Line {
            addr: insn.ip(),
            bytes: raw.iter().map(|b| format!("{b:02x}")).collect(),
            text,
            sensitivity: (!insn.is_invalid()).then(|| opcode::facts(insn.code()).sensitivity),
        });
    }
    lines
}

/// The lines around `rip`: `bytes` starts `back` bytes before it. Of the starts whose
/// decoding lands exactly on `rip`, the earliest is taken, then trimmed to [`BEFORE`]
/// lines before RIP; with none, the window starts at RIP.
pub fn around(bytes: &[u8], rip: u64, back: u64, bitness: u32) -> Vec<Line> {
    let base = rip.wrapping_sub(back);
    for start in 0..back {
        let lines = decode(&bytes[start as usize..], base + start, bitness, usize::MAX);
        if let Some(at) = lines.iter().position(|l| l.addr == rip) {
            let first = at.saturating_sub(BEFORE);
            return lines.into_iter().skip(first).take(LINES).collect();
        }
    }
    decode(&bytes[back as usize..], rip, bitness, LINES)
}

/// Where "step over" stops for the instruction in `bytes` at `addr`: after a CALL, an
/// INT n or a REP string instruction, the next instruction; None for the others, which
/// a single step takes.
pub fn step_over_target(bytes: &[u8], addr: u64, bitness: u32) -> Option<u64> {
    let mut decoder = Decoder::with_ip(bitness, bytes, addr, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return None;
    }
    let over = matches!(
        insn.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall | FlowControl::Interrupt
    ) || ((insn.has_rep_prefix() || insn.has_repne_prefix())
        && insn.is_string_instruction());
    over.then(|| insn.next_ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_up_with_rip_after_long_instructions() {
        // mov eax, 0x12345678; mov ebx, 0x9abcdef0; nop; at rip: inc eax; ret
        let code = [
            0xb8, 0x78, 0x56, 0x34, 0x12, 0xbb, 0xf0, 0xde, 0xbc, 0x9a, 0x90, 0x40, 0xc3,
        ];
        let rip = 0x1000 + 11;
        let lines = around(&code, rip, 11, 32);
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "mov eax,12345678h",
                "mov ebx,9ABCDEF0h",
                "nop",
                "inc eax",
                "ret"
            ]
        );
        assert_eq!(lines[3].addr, rip);
        assert_eq!(lines[3].sensitivity, Some(Sensitivity::None));
    }

    #[test]
    fn marks_what_ring_compression_must_handle() {
        // cli (IOPL-checked); mov cr3, eax (privileged); pushfd (sensitive, no fault)
        let code = [0xfa, 0x0f, 0x22, 0xd8, 0x9c];
        let kinds: Vec<_> = decode(&code, 0, 32, 8)
            .into_iter()
            .map(|l| l.sensitivity)
            .collect();
        assert_eq!(
            kinds,
            [
                Some(Sensitivity::IoplChecked),
                Some(Sensitivity::Privileged),
                Some(Sensitivity::Unprivileged)
            ]
        );
    }

    #[test]
    fn steps_over_calls_and_interrupts_only() {
        let call = [0xe8, 0x10, 0x00, 0x00, 0x00];
        assert_eq!(step_over_target(&call, 0x2000, 32), Some(0x2005));
        let int80 = [0xcd, 0x80];
        assert_eq!(step_over_target(&int80, 0x2000, 32), Some(0x2002));
        let rep_movsb = [0xf3, 0xa4];
        assert_eq!(step_over_target(&rep_movsb, 0x2000, 32), Some(0x2002));
        let jmp = [0xeb, 0xfe];
        assert_eq!(step_over_target(&jmp, 0x2000, 32), None);
    }
}
