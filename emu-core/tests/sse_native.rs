//! Differential test of the SSE/SSE2 and x87-control instructions against the host
//! CPU: each instruction runs on the same random inputs natively (in a buffer of
//! host code) and on each software engine (in 64-bit mode), and the results must agree.
//!
//! The input is a whole x87/SSE state as an FXSAVE image, two general registers and a
//! block of memory that RDX points into. Natively a small harness FXRSTORs the input,
//! runs the instruction and FXSAVEs the result (restoring the test thread's own state
//! around it); the engine starts from the same image through
//! `FpuState::from_fxsave`. Compared: the XMM and ST registers, FCW, FSW, the tag
//! word, MXCSR, RAX, RCX and the memory block.
#![cfg(target_arch = "x86_64")]

use emu_core::cpu::{cr0, cr4, efer, fxsave, rflags, CpuState, FpuState, Segment};
use emu_core::exit::StopReason;
use emu_core::machine::Machine;
use emu_core::testkit::board::board;
use emu_core::testkit::{EngineMaker, SOFTWARE_ENGINES};
use iced_x86::code_asm::*;
use std::mem::offset_of;

/// Guest RAM for the engine side.
const RAM: usize = 4 << 20;
/// Guest-physical (and linear: identity-mapped) address of the 4-level PML4.
const PML4: u64 = 0x1000;
/// The page-directory-pointer table, mapping the first GiB with one 1 GiB page.
const PDPT: u64 = 0x2000;
/// Where the instruction under test goes in the guest.
const CODE: u64 = 0x10_0000;
/// Where the memory block goes in the guest (16-byte aligned, like the host's).
const MEM: u64 = 0x20_0000;
/// Largest offset of RDX into the memory block.
const MAX_OFFSET: u64 = 64;
/// Bytes of memory the instructions may touch through RDX (two FXSAVE areas past
/// the largest offset).
const MEM_BYTES: usize = MAX_OFFSET as usize + 2 * fxsave::SIZE;
/// Random inputs per instruction.
const ROUNDS: usize = 200;
/// Page-table entry bits: present, writable, page size (a 1 GiB leaf).
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// Large page.
const PTE_PS: u64 = 1 << 7;
/// The FXSAVE bytes whose contents are implementation-specific: FOP, FIP and FDP
/// (AMD processors store them only while an x87 exception is pending; others keep
/// the CS/DS selectors or deprecate them) and MXCSR_MASK (AMD adds the bit of its
/// misaligned-SSE mode).
const FX_HOST_SPECIFIC: [std::ops::Range<usize>; 2] = [
    fxsave::FOP..fxsave::MXCSR,
    fxsave::MXCSR_MASK..fxsave::MXCSR_MASK + 4,
];

/// What the native harness works on. The layout is the harness's contract: it
/// addresses every field relative to the pointer it is given.
#[repr(C, align(16))]
#[derive(Clone, PartialEq, Eq, Debug)]
struct Block {
    /// The x87/SSE state to load, then the state the instruction left.
    fx: [u8; fxsave::SIZE],
    /// The test thread's own x87/SSE state, saved around the instruction.
    host: [u8; fxsave::SIZE],
    /// RAX and RCX in and out.
    gpr: [u64; 2],
    /// RDX = address of `mem` + this offset.
    mem_offset: u64,
    /// Padding keeping `mem` 16-byte aligned.
    _pad: u64,
    /// The memory RDX points into.
    mem: [u8; MEM_BYTES],
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A 16-bit value that is often at an edge (0, ±1, the signed limits, small), so
    /// compares see equal lanes and saturation sees both sides.
    fn edgy16(&mut self) -> u16 {
        let r = self.next();
        match r % 8 {
            0 => 0,
            1 => 0xFFFF,
            2 => 0x7FFF,
            3 => 0x8000,
            4 => (r >> 8) as u16 & 0xFF,
            5 => ((r >> 8) as u16 & 0xFF).wrapping_neg(),
            _ => (r >> 16) as u16,
        }
    }

    fn xmm(&mut self) -> u128 {
        (0..8).fold(0, |v, i| v | u128::from(self.edgy16()) << (16 * i))
    }
}

/// Emits instructions into an assembler.
type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// One instruction (or a short sequence) under test.
struct Case {
    name: &'static str,
    /// Emits the instruction(s); they may use RAX, RCX, every XMM register and
    /// memory at [RDX].
    emit: Emit,
    /// Alignment RDX keeps in the memory block (16 for instructions that demand it).
    align: u64,
    /// Adjusts the random input (small shift counts, valid MXCSR images, ...).
    prep: fn(&mut Rng, &mut Block),
    /// Offsets from RDX at which the case stores FXSAVE images.
    fxsave_at: &'static [usize],
}

fn no_prep(_: &mut Rng, _: &mut Block) {}

/// A register-only or aligned-memory case.
fn case(name: &'static str, emit: Emit) -> Case {
    Case {
        name,
        emit,
        align: 16,
        prep: no_prep,
        fxsave_at: &[],
    }
}

/// A case whose memory operand may sit at any byte offset.
fn unaligned(name: &'static str, emit: Emit) -> Case {
    Case {
        align: 1,
        ..case(name, emit)
    }
}

/// A case with its own input adjustment.
fn prepared(name: &'static str, emit: Emit, prep: fn(&mut Rng, &mut Block)) -> Case {
    Case {
        prep,
        ..case(name, emit)
    }
}

/// Shift counts from 0 to past the widest lane, in the low quadword of XMM2.
fn small_count_in_xmm2(rng: &mut Rng, b: &mut Block) {
    let at = fxsave::XMM + 2 * fxsave::SLOT;
    let count = rng.next() % 80;
    b.fx[at..at + 8].copy_from_slice(&count.to_le_bytes());
}

/// The memory RDX points to.
fn at_rdx(b: &mut Block) -> &mut [u8] {
    &mut b.mem[b.mem_offset as usize..]
}

/// A valid MXCSR value at [RDX].
fn mxcsr_in_mem(rng: &mut Rng, b: &mut Block) {
    let v = rng.next() as u32 & emu_core::cpu::MXCSR_MASK;
    at_rdx(b)[..4].copy_from_slice(&v.to_le_bytes());
}

/// A valid FXSAVE image at [RDX].
fn fxsave_image_in_mem(rng: &mut Rng, b: &mut Block) {
    let mut img = [0u8; fxsave::SIZE];
    random_fx_image(rng, &mut img);
    at_rdx(b)[..fxsave::SIZE].copy_from_slice(&img);
}

/// The x87 status word with no exception pending, so waiting instructions go ahead.
fn nothing_pending(_: &mut Rng, b: &mut Block) {
    b.fx[fxsave::FSW] &= !0xBF;
    b.fx[fxsave::FSW + 1] &= !0x80;
}

fn cases() -> Vec<Case> {
    vec![
        // Moves.
        case("movd xmm1, eax", |a| a.movd(xmm1, eax)),
        case("movd ecx, xmm2", |a| a.movd(ecx, xmm2)),
        unaligned("movd xmm9, [rdx]", |a| a.movd(xmm9, dword_ptr(rdx))),
        unaligned("movd [rdx], xmm10", |a| a.movd(dword_ptr(rdx), xmm10)),
        case("movq xmm1, rax", |a| a.movq(xmm1, rax)),
        case("movq rcx, xmm14", |a| a.movq(rcx, xmm14)),
        case("movq xmm3, xmm4", |a| a.movq(xmm3, xmm4)),
        unaligned("movq xmm5, [rdx]", |a| a.movq(xmm5, qword_ptr(rdx))),
        unaligned("movq [rdx], xmm6", |a| a.movq(qword_ptr(rdx), xmm6)),
        case("movdqa xmm1, xmm2", |a| a.movdqa(xmm1, xmm2)),
        case("movdqa xmm11, [rdx]", |a| a.movdqa(xmm11, xmmword_ptr(rdx))),
        case("movdqa [rdx], xmm12", |a| a.movdqa(xmmword_ptr(rdx), xmm12)),
        unaligned("movdqu xmm1, [rdx]", |a| a.movdqu(xmm1, xmmword_ptr(rdx))),
        unaligned("movdqu [rdx], xmm2", |a| a.movdqu(xmmword_ptr(rdx), xmm2)),
        case("movaps xmm7, [rdx]", |a| a.movaps(xmm7, xmmword_ptr(rdx))),
        case("movaps [rdx], xmm8", |a| a.movaps(xmmword_ptr(rdx), xmm8)),
        unaligned("movups xmm3, [rdx]", |a| a.movups(xmm3, xmmword_ptr(rdx))),
        unaligned("movups [rdx], xmm4", |a| a.movups(xmmword_ptr(rdx), xmm4)),
        case("movapd xmm5, xmm13", |a| a.movapd(xmm5, xmm13)),
        unaligned("movupd [rdx], xmm15", |a| a.movupd(xmmword_ptr(rdx), xmm15)),
        case("movss xmm1, xmm2", |a| a.movss(xmm1, xmm2)),
        unaligned("movss xmm1, [rdx]", |a| a.movss(xmm1, dword_ptr(rdx))),
        unaligned("movss [rdx], xmm3", |a| a.movss(dword_ptr(rdx), xmm3)),
        case("movsd xmm4, xmm5", |a| a.movsd_2(xmm4, xmm5)),
        unaligned("movsd xmm4, [rdx]", |a| a.movsd_2(xmm4, qword_ptr(rdx))),
        unaligned("movsd [rdx], xmm6", |a| a.movsd_2(qword_ptr(rdx), xmm6)),
        unaligned("movlps xmm1, [rdx]", |a| a.movlps(xmm1, qword_ptr(rdx))),
        unaligned("movlps [rdx], xmm2", |a| a.movlps(qword_ptr(rdx), xmm2)),
        unaligned("movhps xmm3, [rdx]", |a| a.movhps(xmm3, qword_ptr(rdx))),
        unaligned("movhps [rdx], xmm4", |a| a.movhps(qword_ptr(rdx), xmm4)),
        unaligned("movlpd xmm5, [rdx]", |a| a.movlpd(xmm5, qword_ptr(rdx))),
        unaligned("movhpd [rdx], xmm6", |a| a.movhpd(qword_ptr(rdx), xmm6)),
        case("movhlps xmm1, xmm2", |a| a.movhlps(xmm1, xmm2)),
        case("movlhps xmm9, xmm3", |a| a.movlhps(xmm9, xmm3)),
        case("movntdq [rdx], xmm1", |a| a.movntdq(xmmword_ptr(rdx), xmm1)),
        case("movntps [rdx], xmm2", |a| a.movntps(xmmword_ptr(rdx), xmm2)),
        unaligned("movnti [rdx], eax", |a| a.movnti(dword_ptr(rdx), eax)),
        unaligned("movnti [rdx], rcx", |a| a.movnti(qword_ptr(rdx), rcx)),
        // Logic.
        case("pxor xmm1, xmm2", |a| a.pxor(xmm1, xmm2)),
        case("pxor xmm0, xmm0", |a| a.pxor(xmm0, xmm0)),
        case("pxor xmm1, [rdx]", |a| a.pxor(xmm1, xmmword_ptr(rdx))),
        case("por xmm10, xmm2", |a| a.por(xmm10, xmm2)),
        case("pand xmm1, xmm11", |a| a.pand(xmm1, xmm11)),
        case("pandn xmm1, xmm2", |a| a.pandn(xmm1, xmm2)),
        case("xorps xmm1, xmm2", |a| a.xorps(xmm1, xmm2)),
        case("xorpd xmm1, xmm2", |a| a.xorpd(xmm1, xmm2)),
        case("andps xmm1, xmm2", |a| a.andps(xmm1, xmm2)),
        case("andpd xmm1, [rdx]", |a| a.andpd(xmm1, xmmword_ptr(rdx))),
        case("orps xmm1, xmm2", |a| a.orps(xmm1, xmm2)),
        case("orpd xmm1, xmm2", |a| a.orpd(xmm1, xmm2)),
        case("andnps xmm1, xmm2", |a| a.andnps(xmm1, xmm2)),
        case("andnpd xmm1, xmm2", |a| a.andnpd(xmm1, xmm2)),
        // Packed arithmetic and compares.
        case("paddb", |a| a.paddb(xmm1, xmm2)),
        case("paddw", |a| a.paddw(xmm3, xmm4)),
        case("paddd", |a| a.paddd(xmm5, xmm6)),
        case("paddq", |a| a.paddq(xmm7, xmm8)),
        case("paddd [rdx]", |a| a.paddd(xmm5, xmmword_ptr(rdx))),
        case("psubb", |a| a.psubb(xmm1, xmm2)),
        case("psubw", |a| a.psubw(xmm1, xmm2)),
        case("psubd", |a| a.psubd(xmm1, xmm2)),
        case("psubq", |a| a.psubq(xmm1, xmm15)),
        case("paddsb", |a| a.paddsb(xmm1, xmm2)),
        case("paddsw", |a| a.paddsw(xmm1, xmm2)),
        case("paddusb", |a| a.paddusb(xmm1, xmm2)),
        case("paddusw", |a| a.paddusw(xmm1, xmm2)),
        case("psubsb", |a| a.psubsb(xmm1, xmm2)),
        case("psubsw", |a| a.psubsw(xmm1, xmm2)),
        case("psubusb", |a| a.psubusb(xmm1, xmm2)),
        case("psubusw", |a| a.psubusw(xmm1, xmm2)),
        case("pcmpeqb", |a| a.pcmpeqb(xmm1, xmm2)),
        case("pcmpeqw", |a| a.pcmpeqw(xmm1, xmm2)),
        case("pcmpeqd", |a| a.pcmpeqd(xmm1, xmm2)),
        case("pcmpeqd xmm3, xmm3", |a| a.pcmpeqd(xmm3, xmm3)),
        case("pcmpgtb", |a| a.pcmpgtb(xmm1, xmm2)),
        case("pcmpgtw", |a| a.pcmpgtw(xmm1, xmm2)),
        case("pcmpgtd", |a| a.pcmpgtd(xmm1, xmm2)),
        case("pminub", |a| a.pminub(xmm1, xmm2)),
        case("pmaxub", |a| a.pmaxub(xmm1, xmm2)),
        case("pminsw", |a| a.pminsw(xmm1, xmm2)),
        case("pmaxsw", |a| a.pmaxsw(xmm1, xmm2)),
        case("pmullw", |a| a.pmullw(xmm1, xmm2)),
        case("pmulhw", |a| a.pmulhw(xmm1, xmm2)),
        case("pmulhuw", |a| a.pmulhuw(xmm1, xmm2)),
        case("pmuludq", |a| a.pmuludq(xmm1, xmm2)),
        case("pavgb", |a| a.pavgb(xmm1, xmm2)),
        case("pavgw", |a| a.pavgw(xmm1, xmm2)),
        case("psadbw", |a| a.psadbw(xmm1, xmm2)),
        case("pmaddwd", |a| a.pmaddwd(xmm1, xmm2)),
        // Shifts.
        case("psllw imm 3", |a| a.psllw(xmm1, 3)),
        case("psllw imm 16", |a| a.psllw(xmm1, 16)),
        case("pslld imm 31", |a| a.pslld(xmm1, 31)),
        case("psllq imm 63", |a| a.psllq(xmm1, 63)),
        case("psrlw imm 15", |a| a.psrlw(xmm1, 15)),
        case("psrld imm 7", |a| a.psrld(xmm1, 7)),
        case("psrlq imm 200", |a| a.psrlq(xmm1, 200)),
        case("psraw imm 4", |a| a.psraw(xmm1, 4)),
        case("psraw imm 40", |a| a.psraw(xmm1, 40)),
        case("psrad imm 31", |a| a.psrad(xmm1, 31)),
        prepared("psllw xmm", |a| a.psllw(xmm1, xmm2), small_count_in_xmm2),
        prepared("pslld xmm", |a| a.pslld(xmm1, xmm2), small_count_in_xmm2),
        prepared("psllq xmm", |a| a.psllq(xmm1, xmm2), small_count_in_xmm2),
        prepared("psrlw xmm", |a| a.psrlw(xmm1, xmm2), small_count_in_xmm2),
        prepared("psrld xmm", |a| a.psrld(xmm1, xmm2), small_count_in_xmm2),
        prepared("psrlq xmm", |a| a.psrlq(xmm1, xmm2), small_count_in_xmm2),
        prepared("psraw xmm", |a| a.psraw(xmm1, xmm2), small_count_in_xmm2),
        prepared("psrad xmm", |a| a.psrad(xmm1, xmm2), small_count_in_xmm2),
        case("psrad huge xmm count", |a| a.psrad(xmm1, xmm2)),
        case("pslldq 0", |a| a.pslldq(xmm1, 0)),
        case("pslldq 5", |a| a.pslldq(xmm1, 5)),
        case("pslldq 16", |a| a.pslldq(xmm1, 16)),
        case("psrldq 8", |a| a.psrldq(xmm1, 8)),
        case("psrldq 15", |a| a.psrldq(xmm12, 15)),
        // Shuffles, unpacks, packs.
        case("pshufd 1b", |a| a.pshufd(xmm1, xmm2, 0x1B)),
        case("pshufd 4e self", |a| a.pshufd(xmm1, xmm1, 0x4E)),
        case("pshufd [rdx]", |a| a.pshufd(xmm1, xmmword_ptr(rdx), 0xD8)),
        case("pshuflw", |a| a.pshuflw(xmm1, xmm2, 0x93)),
        case("pshufhw", |a| a.pshufhw(xmm1, xmm2, 0x39)),
        case("shufps", |a| a.shufps(xmm1, xmm2, 0xB4)),
        case("shufpd", |a| a.shufpd(xmm1, xmm2, 0x2)),
        case("shufpd 1", |a| a.shufpd(xmm1, xmm2, 0x1)),
        case("punpcklbw", |a| a.punpcklbw(xmm1, xmm2)),
        case("punpcklwd", |a| a.punpcklwd(xmm1, xmm2)),
        case("punpckldq", |a| a.punpckldq(xmm1, xmm2)),
        case("punpcklqdq", |a| a.punpcklqdq(xmm1, xmm2)),
        case("punpckhbw", |a| a.punpckhbw(xmm1, xmm2)),
        case("punpckhwd", |a| a.punpckhwd(xmm1, xmm2)),
        case("punpckhdq", |a| a.punpckhdq(xmm1, xmm2)),
        case("punpckhqdq", |a| a.punpckhqdq(xmm1, xmm2)),
        case("punpcklbw [rdx]", |a| a.punpcklbw(xmm1, xmmword_ptr(rdx))),
        case("unpcklps", |a| a.unpcklps(xmm1, xmm2)),
        case("unpckhps", |a| a.unpckhps(xmm1, xmm2)),
        case("unpcklpd", |a| a.unpcklpd(xmm1, xmm2)),
        case("unpckhpd", |a| a.unpckhpd(xmm1, xmm2)),
        case("packsswb", |a| a.packsswb(xmm1, xmm2)),
        case("packssdw", |a| a.packssdw(xmm1, xmm2)),
        case("packuswb", |a| a.packuswb(xmm1, xmm2)),
        case("pmovmskb eax", |a| a.pmovmskb(eax, xmm1)),
        case("pmovmskb rcx", |a| a.pmovmskb(rcx, xmm9)),
        case("movmskps", |a| a.movmskps(eax, xmm2)),
        case("movmskpd", |a| a.movmskpd(ecx, xmm3)),
        case("pextrw", |a| a.pextrw(eax, xmm1, 5)),
        case("pinsrw eax", |a| a.pinsrw(xmm1, eax, 3)),
        unaligned("pinsrw [rdx]", |a| a.pinsrw(xmm1, word_ptr(rdx), 14)),
        // MXCSR.
        unaligned("stmxcsr", |a| a.stmxcsr(dword_ptr(rdx))),
        prepared("ldmxcsr", |a| a.ldmxcsr(dword_ptr(rdx)), mxcsr_in_mem),
        // x87 control.
        case("fninit", |a| a.fninit()),
        unaligned("fnstcw", |a| a.fnstcw(word_ptr(rdx))),
        Case {
            align: 1,
            ..prepared(
                "fldcw; fnstsw",
                |a| {
                    a.fldcw(word_ptr(rdx))?;
                    a.fnstsw(word_ptr(rdx + 2))
                },
                nothing_pending,
            )
        },
        unaligned("fnstsw", |a| a.fnstsw(word_ptr(rdx))),
        case("fnstsw ax", |a| a.fnstsw(ax)),
        case("fnclex", |a| a.fnclex()),
        prepared("fwait", |a| a.wait(), nothing_pending),
        // FXSAVE/FXRSTOR, both forms.
        Case {
            fxsave_at: &[0],
            ..case("fxsave64", |a| a.fxsave64(ptr(rdx)))
        },
        Case {
            fxsave_at: &[0],
            ..case("fxsave", |a| a.fxsave(ptr(rdx)))
        },
        prepared("fxrstor64", |a| a.fxrstor64(ptr(rdx)), fxsave_image_in_mem),
        prepared("fxrstor", |a| a.fxrstor(ptr(rdx)), fxsave_image_in_mem),
        Case {
            fxsave_at: &[fxsave::SIZE],
            ..prepared(
                "fxrstor64; fninit; fxsave64",
                |a| {
                    a.fxrstor64(ptr(rdx))?;
                    a.fninit()?;
                    a.fxsave64(ptr(rdx + fxsave::SIZE as i32))
                },
                fxsave_image_in_mem,
            )
        },
    ]
}

/// A random FXSAVE image FXRSTOR accepts: MXCSR within the mask, edgy XMM values.
fn random_fx_image(rng: &mut Rng, img: &mut [u8; fxsave::SIZE]) {
    for chunk in img.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    let mxcsr = rng.next() as u32 & emu_core::cpu::MXCSR_MASK;
    img[fxsave::MXCSR..fxsave::MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    for i in 0..16 {
        let at = fxsave::XMM + i * fxsave::SLOT;
        img[at..at + 16].copy_from_slice(&rng.xmm().to_le_bytes());
    }
}

/// Executable host memory holding one harness.
struct NativeCode {
    base: *mut libc::c_void,
    len: usize,
}

impl NativeCode {
    fn new(code: &[u8]) -> Self {
        let len = code.len().next_multiple_of(4096);
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        // SAFETY: `base` is a fresh writable mapping of `len >= code.len()` bytes that
        // nothing else references.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), base.cast::<u8>(), code.len()) };
        // SAFETY: `base`/`len` are exactly the mapping made above.
        let rc = unsafe { libc::mprotect(base, len, libc::PROT_READ | libc::PROT_EXEC) };
        assert_eq!(rc, 0, "mprotect");
        NativeCode { base, len }
    }

    /// Runs the harness on `block`.
    fn run(&self, block: &mut Block) {
        // SAFETY: the mapping holds a complete harness assembled for this ABI: it takes
        // one pointer argument (RDI), touches only the `Block` it points to (and the
        // offset into its `mem` the test chose), clobbers only caller-saved registers
        // (RAX, RCX, RDX, R11, the XMM and x87 registers) and restores the thread's own
        // x87/SSE control state (FXRSTOR of what it saved) before returning.
        let f: extern "C" fn(*mut Block) = unsafe { std::mem::transmute(self.base) };
        f(block);
    }
}

impl Drop for NativeCode {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The instruction bytes of a case.
fn case_bytes(c: &Case) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("assembler");
    (c.emit)(&mut a).expect("assemble case");
    a.assemble(CODE).expect("encode case")
}

/// The native harness around a case's bytes (see the module comment).
fn harness(bytes: &[u8]) -> Vec<u8> {
    let fx = offset_of!(Block, fx) as i32;
    let host = offset_of!(Block, host) as i32;
    let gpr = offset_of!(Block, gpr) as i32;
    let off = offset_of!(Block, mem_offset) as i32;
    let mem = offset_of!(Block, mem) as i32;
    let mut a = CodeAssembler::new(64).expect("assembler");
    let asm = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(r11, rdi)?;
        a.fxsave64(ptr(r11 + host))?;
        a.fxrstor64(ptr(r11 + fx))?;
        a.mov(rax, qword_ptr(r11 + gpr))?;
        a.mov(rcx, qword_ptr(r11 + gpr + 8))?;
        a.lea(rdx, ptr(r11 + mem))?;
        a.add(rdx, qword_ptr(r11 + off))?;
        a.db(bytes)?;
        a.mov(qword_ptr(r11 + gpr), rax)?;
        a.mov(qword_ptr(r11 + gpr + 8), rcx)?;
        a.fxsave64(ptr(r11 + fx))?;
        a.fxrstor64(ptr(r11 + host))?;
        a.ret()
    };
    asm(&mut a).expect("assemble harness");
    a.assemble(0).expect("encode harness")
}

/// A 64-bit machine: identity-mapped first GiB, CR4.OSFXSR set, flat segments.
fn long_mode_machine(engine: EngineMaker) -> Machine {
    let mut m = board(engine, RAM);
    let ram = m.ram_mut().as_mut_slice();
    ram[PML4 as usize..PML4 as usize + 8].copy_from_slice(&(PDPT | PTE_P | PTE_RW).to_le_bytes());
    ram[PDPT as usize..PDPT as usize + 8].copy_from_slice(&(PTE_P | PTE_RW | PTE_PS).to_le_bytes());
    m
}

fn long_mode_state(b: &Block) -> CpuState {
    let code = Segment {
        attr: Segment::TYPE_CODE_RX
            | Segment::CODE_DATA
            | Segment::PRESENT
            | Segment::LONG
            | Segment::GRANULARITY,
        ..Segment::flat32(0x08, Segment::TYPE_CODE_RX)
    };
    let data = Segment::flat32(0x10, Segment::TYPE_DATA_RW);
    let mut st = CpuState {
        rip: CODE,
        rflags: rflags::FIXED.into(),
        seg: [data, code, data, data, data, data].into(),
        cr0: cr0::PE | cr0::ET | cr0::PG,
        cr3: PML4,
        cr4: cr4::PAE | cr4::OSFXSR,
        efer: efer::LME | efer::LMA,
        fpu: FpuState::from_fxsave(&b.fx),
        ..Default::default()
    };
    st.gpr[0] = b.gpr[0];
    st.gpr[1] = b.gpr[1];
    st.gpr[2] = MEM + b.mem_offset;
    st
}

/// Runs a case on the engine of `m`, leaving the results in `b` as the harness does.
fn interpret(m: &mut Machine, bytes: &[u8], b: &mut Block) {
    let ram = m.ram_mut().as_mut_slice();
    ram[CODE as usize..CODE as usize + bytes.len()].copy_from_slice(bytes);
    ram[CODE as usize + bytes.len()] = 0xF4; // hlt
    ram[MEM as usize..MEM as usize + MEM_BYTES].copy_from_slice(&b.mem);
    m.set_cpu_state(&long_mode_state(b)).unwrap();
    let outcome = m.run(100);
    assert_eq!(
        outcome.stop,
        StopReason::Halted,
        "the engine did not finish"
    );
    let st = m.cpu_state().unwrap();
    b.gpr = [st.gpr[0], st.gpr[1]];
    b.fx = st.fpu.to_fxsave();
    b.mem
        .copy_from_slice(&m.ram().as_slice()[MEM as usize..MEM as usize + MEM_BYTES]);
}

/// The block with the implementation-specific bytes of its FXSAVE images blanked.
fn comparable(b: &Block, c: &Case) -> Block {
    let mut b = b.clone();
    b.host = [0; fxsave::SIZE];
    // The harness's FXSAVE leaves the reserved bytes alone; `to_fxsave` zeroes them.
    b.fx[fxsave::LONG_END..].fill(0);
    for range in FX_HOST_SPECIFIC {
        b.fx[range.clone()].fill(0);
        for &at in c.fxsave_at {
            let area = b.mem_offset as usize + at;
            b.mem[area + range.start..area + range.end].fill(0);
        }
    }
    b
}

#[test]
fn sse_and_x87_control_match_the_host_cpu() {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let mut machines: Vec<_> = SOFTWARE_ENGINES
        .iter()
        .map(|&(name, engine)| (name, long_mode_machine(engine)))
        .collect();
    let mut failures = Vec::new();
    for c in cases() {
        let bytes = case_bytes(&c);
        let native = NativeCode::new(&harness(&bytes));
        for round in 0..ROUNDS {
            let mut input = Box::new(Block {
                fx: [0; fxsave::SIZE],
                host: [0; fxsave::SIZE],
                gpr: [rng.next(), rng.next()],
                mem_offset: (rng.next() % MAX_OFFSET) & !(c.align - 1),
                _pad: 0,
                mem: [0; MEM_BYTES],
            });
            random_fx_image(&mut rng, &mut input.fx);
            for chunk in input.mem.chunks_exact_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            (c.prep)(&mut rng, &mut input);
            let mut host = input.clone();
            native.run(&mut host);
            let host = comparable(&host, &c);
            let differs = machines.iter_mut().find_map(|(engine, m)| {
                let mut emu = input.clone();
                interpret(m, &bytes, &mut emu);
                let emu = comparable(&emu, &c);
                (host != emu).then(|| describe(engine, c.name, round, &input, &host, &emu))
            });
            if let Some(failure) = differs {
                failures.push(failure);
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What differs between the host's and an engine's results.
fn describe(
    engine: &str,
    name: &str,
    round: usize,
    input: &Block,
    host: &Block,
    emu: &Block,
) -> String {
    let mut s = format!("{name} on {engine} (round {round}):");
    if host.gpr != emu.gpr {
        s += &format!(
            "\n  rax/rcx: input {:x?} host {:x?} interp {:x?}",
            input.gpr, host.gpr, emu.gpr
        );
    }
    let diff = |what: &str, from: &[u8], a: &[u8], b: &[u8]| {
        let bytes: Vec<String> = (0..a.len())
            .filter(|&i| a[i] != b[i])
            .take(24)
            .map(|i| format!("[{i}] {:02x}->{:02x}/{:02x}", from[i], a[i], b[i]))
            .collect();
        if bytes.is_empty() {
            String::new()
        } else {
            format!("\n  {what} (input->host/interp): {}", bytes.join(" "))
        }
    };
    s += &diff("state", &input.fx, &host.fx, &emu.fx);
    s += &diff("memory", &input.mem, &host.mem, &emu.mem);
    s
}
