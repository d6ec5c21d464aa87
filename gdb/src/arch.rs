//! The register set gdb sees: one 64-bit layout for every guest mode (`target.xml`),
//! and its conversion to and from Popek's [`CpuState`].

use emu_core::cpu::{rflags, CpuState, SegReg};
use gdbstub::arch::Arch;

/// The target description gdb reads (qXfer:features:read): gdb's amd64 core and SSE
/// features, then the segment bases and the system registers.
const TARGET_XML: &str = include_str!("target.xml");

/// Popek's x86-64, as gdb sees it: [`Registers`] laid out as `target.xml` says.
pub enum PopekX86 {}

impl Arch for PopekX86 {
    type Usize = u64;
    type Registers = Registers;
    /// The Z packets' kind (the breakpoint's length in bytes): any value is accepted.
    type BreakpointKind = usize;
    /// Registers are read and written whole (g and G packets) only.
    type RegId = ();

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// CpuState's general registers (encoding order: RAX, RCX, RDX, RBX, RSP, RBP, RSI,
/// RDI, R8-R15) in gdb's order: rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15.
const GPR_ORDER: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
/// The segment registers in gdb's order: cs, ss, ds, es, fs, gs.
const SEG_ORDER: [SegReg; 6] = [
    SegReg::Cs,
    SegReg::Ss,
    SegReg::Ds,
    SegReg::Es,
    SegReg::Fs,
    SegReg::Gs,
];
/// Where FSW keeps TOP, the physical register that is ST(0).
const FSW_TOP_SHIFT: u32 = 11;
/// The x87 tag of an empty register in the full tag word (two bits per register).
const TAG_EMPTY: u16 = 3;
/// The tag of a register holding zero.
const TAG_ZERO: u16 = 1;
/// The tag of a NaN, an infinity, a denormal or an unnormal.
const TAG_SPECIAL: u16 = 2;
/// The tag of a normal number.
const TAG_VALID: u16 = 0;

/// Every register gdb reads and writes, in the order of `target.xml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registers {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15.
    pub gpr: [u64; 16],
    /// RIP (the offset in CS).
    pub rip: u64,
    /// The low 32 bits of RFLAGS.
    pub eflags: u32,
    /// Selectors of cs, ss, ds, es, fs, gs.
    pub seg: [u32; 6],
    /// ST(0)-ST(7), 80 bits each.
    pub st: [[u8; 10]; 8],
    /// fctrl, fstat, ftag (the full tag word), fiseg, fioff, foseg, fooff, fop.
    pub fpu: [u32; 8],
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// fs_base, gs_base, k_gs_base.
    pub bases: [u64; 3],
    /// cr0, cr2, cr3, cr4, cr8, efer.
    pub sys: [u64; 6],
}

/// Indexes of [`Registers::fpu`].
mod fpu {
    pub const FCTRL: usize = 0;
    pub const FSTAT: usize = 1;
    pub const FTAG: usize = 2;
    pub const FISEG: usize = 3;
    pub const FIOFF: usize = 4;
    pub const FOSEG: usize = 5;
    pub const FOOFF: usize = 6;
    pub const FOP: usize = 7;
}

impl Registers {
    /// The registers of `state`.
    pub fn from_state(state: &CpuState) -> Registers {
        let f = &state.fpu;
        let top = (f.fsw >> FSW_TOP_SHIFT) & 7;
        let st = std::array::from_fn(|i| f.regs[(usize::from(top) + i) % 8]);
        let mut fpu = [0u32; 8];
        fpu[fpu::FCTRL] = f.fcw.into();
        fpu[fpu::FSTAT] = f.fsw.into();
        fpu[fpu::FTAG] = full_tag_word(f.ftw, &f.regs).into();
        fpu[fpu::FISEG] = (f.fip >> 32) as u32 & 0xFFFF;
        fpu[fpu::FIOFF] = f.fip as u32;
        fpu[fpu::FOSEG] = (f.fdp >> 32) as u32 & 0xFFFF;
        fpu[fpu::FOOFF] = f.fdp as u32;
        fpu[fpu::FOP] = f.fop.into();
        Registers {
            gpr: GPR_ORDER.map(|i| state.gpr[i]),
            rip: state.rip,
            eflags: state.rflags.get() as u32,
            seg: SEG_ORDER.map(|s| state.seg[s].selector.into()),
            st,
            fpu,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            bases: [
                state.seg[SegReg::Fs].base,
                state.seg[SegReg::Gs].base,
                state.msr.kernel_gs_base,
            ],
            sys: [
                state.cr0, state.cr2, state.cr3, state.cr4, state.cr8, state.efer,
            ],
        }
    }

    /// Writes into `state` what gdb changed: the fields of `self` that differ from
    /// `old` (what `state` read as). A segment selector cannot be changed this way (its
    /// descriptor would have to be loaded too), nor can RFLAGS bits software cannot set.
    pub fn apply(&self, old: &Registers, state: &mut CpuState) -> Result<(), &'static str> {
        if self.seg != old.seg {
            return Err("a segment selector cannot be written: load it from guest code");
        }
        for (i, &reg) in GPR_ORDER.iter().enumerate() {
            state.gpr[reg] = self.gpr[i];
        }
        state.rip = self.rip;
        if self.eflags != old.eflags {
            let value = u64::from(self.eflags);
            let kept = state.rflags.get() & !rflags::WRITABLE;
            state
                .rflags
                .set_all(kept | (value & rflags::WRITABLE) | rflags::FIXED);
        }
        let f = &mut state.fpu;
        if self.st != old.st {
            let top = (f.fsw >> FSW_TOP_SHIFT) & 7;
            for (i, st) in self.st.iter().enumerate() {
                f.regs[(usize::from(top) + i) % 8] = *st;
            }
        }
        if self.fpu != old.fpu {
            f.fcw = self.fpu[fpu::FCTRL] as u16;
            f.fsw = self.fpu[fpu::FSTAT] as u16;
            f.ftw = abridged_tag_word(self.fpu[fpu::FTAG] as u16);
            f.fip =
                (u64::from(self.fpu[fpu::FISEG] & 0xFFFF) << 32) | u64::from(self.fpu[fpu::FIOFF]);
            f.fdp =
                (u64::from(self.fpu[fpu::FOSEG] & 0xFFFF) << 32) | u64::from(self.fpu[fpu::FOOFF]);
            f.fop = self.fpu[fpu::FOP] as u16;
        }
        f.xmm = self.xmm;
        f.mxcsr = self.mxcsr;
        state.seg.set_base(SegReg::Fs, self.bases[0]);
        state.seg.set_base(SegReg::Gs, self.bases[1]);
        state.msr.kernel_gs_base = self.bases[2];
        [
            state.cr0, state.cr2, state.cr3, state.cr4, state.cr8, state.efer,
        ] = self.sys;
        Ok(())
    }

    /// The bytes of the g packet, in `target.xml` order, little-endian.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(G_PACKET_LEN);
        self.gpr.iter().for_each(|r| out.extend(r.to_le_bytes()));
        out.extend(self.rip.to_le_bytes());
        out.extend(self.eflags.to_le_bytes());
        self.seg.iter().for_each(|r| out.extend(r.to_le_bytes()));
        self.st.iter().for_each(|r| out.extend(r));
        self.fpu.iter().for_each(|r| out.extend(r.to_le_bytes()));
        self.xmm.iter().for_each(|r| out.extend(r.to_le_bytes()));
        out.extend(self.mxcsr.to_le_bytes());
        self.bases.iter().for_each(|r| out.extend(r.to_le_bytes()));
        self.sys.iter().for_each(|r| out.extend(r.to_le_bytes()));
        out
    }
}

/// Bytes in a g packet: 16 + 1 registers of 8, eflags and 6 selectors of 4, 8 x87
/// registers of 10, 8 x87 control registers of 4, 16 XMM registers of 16, MXCSR, 3
/// bases and 6 system registers of 8.
const G_PACKET_LEN: usize = 17 * 8 + 7 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 9 * 8;

/// Takes little-endian values off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

impl gdbstub::arch::Registers for Registers {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.bytes().into_iter().for_each(|b| write_byte(Some(b)));
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != G_PACKET_LEN {
            return Err(());
        }
        let mut r = Reader(bytes);
        self.gpr = std::array::from_fn(|_| r.u64());
        self.rip = r.u64();
        self.eflags = r.u32();
        self.seg = std::array::from_fn(|_| r.u32());
        self.st = std::array::from_fn(|_| r.take());
        self.fpu = std::array::from_fn(|_| r.u32());
        self.xmm = std::array::from_fn(|_| u128::from_le_bytes(r.take()));
        self.mxcsr = r.u32();
        self.bases = std::array::from_fn(|_| r.u64());
        self.sys = std::array::from_fn(|_| r.u64());
        Ok(())
    }
}

/// The full x87 tag word (FSTENV's: two bits per physical register) from FXSAVE's
/// abridged one (one bit: in use or not), classifying each register in use by its
/// contents, as the processor does.
fn full_tag_word(abridged: u8, regs: &[[u8; 10]; 8]) -> u16 {
    (0..8).fold(0, |tags, i| {
        let tag = if abridged & (1 << i) == 0 {
            TAG_EMPTY
        } else {
            let reg = &regs[i];
            let exponent = u16::from_le_bytes([reg[8], reg[9]]) & 0x7FFF;
            let mantissa = u64::from_le_bytes(reg[..8].try_into().expect("8 bytes"));
            let integer_bit = mantissa >> 63 != 0;
            match exponent {
                0 if mantissa == 0 => TAG_ZERO,
                0 | 0x7FFF => TAG_SPECIAL,
                _ if !integer_bit => TAG_SPECIAL,
                _ => TAG_VALID,
            }
        };
        tags | tag << (2 * i)
    })
}

/// FXSAVE's abridged tag word from the full one: a register is in use unless empty.
fn abridged_tag_word(full: u16) -> u8 {
    (0..8).fold(0, |bits, i| {
        let in_use = (full >> (2 * i)) & 3 != TAG_EMPTY;
        bits | u8::from(in_use) << i
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdbstub::arch::Registers as _;

    /// The g packet's length is the sum of the bit sizes `target.xml` declares.
    #[test]
    fn g_packet_matches_the_target_description() {
        let bits: usize = TARGET_XML
            .lines()
            .filter(|l| l.trim_start().starts_with("<reg "))
            .map(|l| {
                let at = l.find("bitsize=\"").expect("every reg has a bitsize") + 9;
                l[at..].split('"').next().unwrap().parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(bits / 8, G_PACKET_LEN);
        assert_eq!(Registers::default().bytes().len(), G_PACKET_LEN);
    }

    /// Serializing and deserializing gives back every field, and a register state
    /// read, changed and applied changes exactly that register.
    #[test]
    fn round_trip_and_apply() {
        let mut state = CpuState::multiboot(0x10_0000, 0x2BAD_B002, 0x9000);
        state.fpu.regs[3][9] = 0x40;
        state.fpu.ftw = 0b1000;
        state.cr3 = 0x1000;
        let regs = Registers::from_state(&state);
        assert_eq!(regs.gpr[0], 0x2BAD_B002, "rax first");
        assert_eq!(regs.gpr[1], 0x9000, "then rbx");
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap()));
        let mut back = Registers::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.gdb_deserialize(&bytes[1..]).is_err());

        let mut changed = regs.clone();
        changed.gpr[2] = 7; // rcx
        changed.sys[2] = 0x2000; // cr3
        let mut new = state.clone();
        changed.apply(&regs, &mut new).unwrap();
        assert_eq!(new.gpr[1], 7);
        assert_eq!(new.cr3, 0x2000);
        new.gpr[1] = state.gpr[1];
        new.cr3 = state.cr3;
        assert_eq!(new, state, "nothing else changed");

        changed.seg[0] = 0x23;
        assert!(changed.apply(&regs, &mut new).is_err());
    }

    #[test]
    fn tag_words() {
        let mut regs = [[0u8; 10]; 8];
        regs[1] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0x3F]; // 1.0
        regs[2][9] = 0x7F; // exponent 0x7F00, integer bit clear: unnormal
        regs[2][8] = 0x00;
        let full = full_tag_word(0b0000_0111, &regs);
        assert_eq!(full & 3, TAG_ZERO);
        assert_eq!((full >> 2) & 3, TAG_VALID);
        assert_eq!((full >> 4) & 3, TAG_SPECIAL);
        assert_eq!(full >> 6, 0x3FF, "the rest empty");
        assert_eq!(abridged_tag_word(full), 0b0000_0111);
    }
}
