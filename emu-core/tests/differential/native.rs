//! Runs an instruction sequence on the host CPU, in 64-bit mode.
//!
//! The sequence is wrapped in a function assembled at run time: it loads the registers
//! and RFLAGS from a [`Regs`] block, runs the sequence, stores them back and returns.
//! Code and scratch buffer live in one mapping below 4 GiB, so a 32-bit register can
//! hold the buffer's address and the 0x67-prefixed (32-bit) addressing the 64-bit
//! encoding uses reaches it.

use iced_x86::code_asm::*;
use iced_x86::{IcedError, Instruction};
use std::io;

/// Registers in and out of a native run.
#[repr(C)]
#[derive(Debug)]
pub struct Regs {
    /// RAX..RDI in encoding order; RSP (index 4) is neither loaded nor stored.
    pub gpr: [u64; 8],
    /// RFLAGS.
    pub rflags: u64,
}

const PAGE: usize = 4096;
/// Where the pages are mapped if that range is free.
const ADDRESS_HINT: usize = 0x3EED_0000;
/// Offset of `Regs::rflags`.
const RFLAGS_AT: i32 = 8 * 8;

/// The registers the wrapper loads and stores, with their slot in [`Regs::gpr`]. RDI,
/// which holds the `Regs` pointer, comes last on the way in.
const LOADED: [(AsmRegister64, i32); 7] = [
    (rax, 0),
    (rcx, 1),
    (rdx, 2),
    (rbx, 3),
    (rbp, 5),
    (rsi, 6),
    (rdi, 7),
];

/// A code page and a data page, below 4 GiB.
pub struct Jit {
    base: *mut u8,
}

impl Jit {
    /// Maps the two pages.
    pub fn new() -> io::Result<Self> {
        // SAFETY: an anonymous private mapping; without MAP_FIXED the address is only a
        // hint, so no existing memory is affected. The hint keeps the buffer address (a
        // register value) the same from run to run, so a failing seed reproduces;
        // MAP_32BIT keeps the fallback in the low 2 GiB.
        let p = unsafe {
            libc::mmap(
                ADDRESS_HINT as *mut libc::c_void,
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Jit { base: p.cast() })
    }

    /// The address of the scratch buffer (the data page), which fits in 32 bits.
    pub fn scratch_address(&self) -> u32 {
        let a = self.base as usize + PAGE;
        u32::try_from(a).expect("MAP_32BIT mappings lie below 4 GiB")
    }

    fn protect_code(&self, prot: libc::c_int) -> io::Result<()> {
        // SAFETY: the first page of our own mapping; nothing else lives there.
        if unsafe { libc::mprotect(self.base.cast(), PAGE, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `body` (instructions that are valid in 64-bit mode, that neither branch
    /// nor touch RSP, DF or memory other than the scratch buffer) on `regs`, with the
    /// scratch buffer holding `scratch` before and after.
    pub fn run(
        &mut self,
        body: impl Iterator<Item = Instruction>,
        regs: &mut Regs,
        scratch: &mut [u8],
    ) -> io::Result<()> {
        let code = wrap(body, self.base as u64).map_err(io::Error::other)?;
        assert!(code.len() <= PAGE, "sequence too long for one page");
        assert!(scratch.len() <= PAGE);
        self.protect_code(libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: both pages are ours and writable; the lengths were checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base, code.len());
            std::ptr::copy_nonoverlapping(scratch.as_ptr(), self.base.add(PAGE), scratch.len());
        }
        self.protect_code(libc::PROT_READ | libc::PROT_EXEC)?;
        // SAFETY: the page now holds a complete function with the C calling convention
        // (see `wrap`): it saves and restores the callee-saved registers it uses, keeps
        // RSP balanced, leaves DF clear, and the body only touches registers and the
        // scratch page. x86 keeps instruction fetch coherent with the stores above.
        unsafe {
            let f: extern "C" fn(*mut Regs) = std::mem::transmute(self.base);
            f(regs);
            std::ptr::copy_nonoverlapping(self.base.add(PAGE), scratch.as_mut_ptr(), scratch.len());
        }
        Ok(())
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.base.cast(), 2 * PAGE);
        }
    }
}

/// `extern "C" fn(regs: *mut Regs)` around `body`.
fn wrap(body: impl Iterator<Item = Instruction>, ip: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    // RBX and RBP are callee-saved; the rest the body may clobber are not.
    a.push(rbx)?;
    a.push(rbp)?;
    // The Regs pointer: RDI is a guest register, so it waits on the stack.
    a.push(rdi)?;
    a.push(qword_ptr(rdi + RFLAGS_AT))?;
    a.popfq()?;
    for (r, slot) in LOADED {
        a.mov(r, qword_ptr(rdi + slot * 8))?;
    }
    for ins in body {
        a.add_instruction(ins)?;
    }
    // Nothing below changes a flag before PUSHFQ.
    a.xchg(qword_ptr(rsp), rdi)?;
    for (r, slot) in &LOADED[..6] {
        a.mov(qword_ptr(rdi + slot * 8), *r)?;
    }
    a.pushfq()?;
    a.pop(qword_ptr(rdi + RFLAGS_AT))?;
    a.pop(qword_ptr(rdi + 7 * 8))?;
    a.pop(rbp)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(ip)
}
