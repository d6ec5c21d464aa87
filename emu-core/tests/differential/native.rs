//! Runs an instruction sequence on the host CPU, in 64-bit mode.
//!
//! The sequence runs inside a function whose prologue and epilogue are assembled at run
//! time: the prologue loads the registers and RFLAGS from a [`Regs`] block, the
//! sequence follows, and the epilogue stores them back and returns. The sequence comes
//! already encoded, for [`Jit::body_address`], so the caller can run the very same
//! bytes elsewhere. Code and scratch buffer are two adjacent pages, below 4 GiB (a
//! 32-bit register then holds the buffer's address, and the 0x67-prefixed addressing of
//! sequences encoded from 32-bit code reaches it) or far above it.

use iced_x86::code_asm::*;
use iced_x86::IcedError;
use std::io;

/// Registers in and out of a native run.
#[repr(C)]
#[derive(Debug)]
pub struct Regs {
    /// RAX..R15 in encoding order; RSP (index 4) is neither loaded nor stored.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
}

const PAGE: usize = 4096;
/// Where the pages are mapped if that range is free: the same address from run to run
/// keeps the buffer address (a register value, and RIP-relative targets) the same, so a
/// failing seed reproduces.
const LOW_HINT: usize = 0x3EED_0000;
/// The same beyond 4 GiB, with nonzero indices at every level of the page tables.
const HIGH_HINT: usize = 0x3EED_0000_0000;
/// Offset of `Regs::rflags`.
const RFLAGS_AT: i32 = 16 * 8;

/// The registers the prologue loads and the epilogue stores, with their slot in
/// [`Regs::gpr`]. RDI, which holds the `Regs` pointer, comes last on the way in.
const LOADED: [(AsmRegister64, i32); 15] = [
    (rax, 0),
    (rcx, 1),
    (rdx, 2),
    (rbx, 3),
    (rbp, 5),
    (rsi, 6),
    (r8, 8),
    (r9, 9),
    (r10, 10),
    (r11, 11),
    (r12, 12),
    (r13, 13),
    (r14, 14),
    (r15, 15),
    (rdi, 7),
];
/// The callee-saved registers among them (the System V ABI's, bar RSP).
const CALLEE_SAVED: [AsmRegister64; 6] = [rbx, rbp, r12, r13, r14, r15];

/// A code page and a data page.
pub struct Jit {
    base: *mut u8,
    /// Bytes of prologue at the start of the code page.
    prologue: usize,
    epilogue: Vec<u8>,
}

impl Jit {
    /// Maps the two pages, below 4 GiB if `low`, and writes the prologue.
    pub fn new(low: bool) -> io::Result<Self> {
        let (hint, placement) = if low {
            (LOW_HINT, libc::MAP_32BIT)
        } else {
            (HIGH_HINT, 0)
        };
        // SAFETY: an anonymous private mapping; without MAP_FIXED the address is only a
        // hint, so no existing memory is affected. MAP_32BIT keeps the fallback of a low
        // mapping in the low 2 GiB.
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | placement,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base: *mut u8 = p.cast();
        assert!(
            !low || base as u64 + 2 * PAGE as u64 <= 1 << 32,
            "MAP_32BIT maps low"
        );
        // The prologue and epilogue are position-independent.
        let prologue = prologue().map_err(io::Error::other)?;
        let epilogue = epilogue().map_err(io::Error::other)?;
        // SAFETY: the code page is ours and still writable; the prologue is a few dozen
        // bytes.
        unsafe { std::ptr::copy_nonoverlapping(prologue.as_ptr(), base, prologue.len()) };
        Ok(Jit {
            base,
            prologue: prologue.len(),
            epilogue,
        })
    }

    /// Where the sequence starts: its encoding must be for this address.
    pub fn body_address(&self) -> u64 {
        self.base as u64 + self.prologue as u64
    }

    /// The address of the scratch buffer (the data page).
    pub fn scratch_address(&self) -> u64 {
        self.base as u64 + PAGE as u64
    }

    fn protect_code(&self, prot: libc::c_int) -> io::Result<()> {
        // SAFETY: the first page of our own mapping; nothing else lives there.
        if unsafe { libc::mprotect(self.base.cast(), PAGE, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `body` (64-bit code encoded for [`Jit::body_address`] that neither branches
    /// nor touches RSP, DF or memory other than the scratch buffer) on `regs`, with the
    /// scratch buffer holding `scratch` before and after.
    pub fn run(&mut self, body: &[u8], regs: &mut Regs, scratch: &mut [u8]) -> io::Result<()> {
        let end = self.prologue + body.len() + self.epilogue.len();
        assert!(end <= PAGE, "sequence too long for one page");
        assert!(scratch.len() <= PAGE);
        self.protect_code(libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: both pages are ours and writable; the lengths were checked above.
        unsafe {
            let at = self.base.add(self.prologue);
            std::ptr::copy_nonoverlapping(body.as_ptr(), at, body.len());
            let at = at.add(body.len());
            std::ptr::copy_nonoverlapping(self.epilogue.as_ptr(), at, self.epilogue.len());
            std::ptr::copy_nonoverlapping(scratch.as_ptr(), self.base.add(PAGE), scratch.len());
        }
        self.protect_code(libc::PROT_READ | libc::PROT_EXEC)?;
        // SAFETY: the page now holds a complete function with the C calling convention
        // (see `prologue` and `epilogue`): it saves and restores the callee-saved
        // registers, keeps RSP balanced, leaves DF clear, and the body only touches
        // registers and the scratch page. x86 keeps instruction fetch coherent with the
        // stores above.
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

/// The start of `extern "C" fn(regs: *mut Regs)`: saves what the body may clobber
/// that the caller keeps, then loads `regs`.
fn prologue() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    for r in CALLEE_SAVED {
        a.push(r)?;
    }
    // The Regs pointer: RDI is a guest register, so it waits on the stack.
    a.push(rdi)?;
    a.push(qword_ptr(rdi + RFLAGS_AT))?;
    a.popfq()?;
    for (r, slot) in LOADED {
        a.mov(r, qword_ptr(rdi + slot * 8))?;
    }
    a.assemble(0)
}

/// The end of the function: stores the registers back in `regs` and returns.
fn epilogue() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    // Nothing below changes a flag before PUSHFQ.
    a.xchg(qword_ptr(rsp), rdi)?;
    for (r, slot) in &LOADED[..LOADED.len() - 1] {
        a.mov(qword_ptr(rdi + slot * 8), *r)?;
    }
    a.pushfq()?;
    a.pop(qword_ptr(rdi + RFLAGS_AT))?;
    a.pop(qword_ptr(rdi + 7 * 8))?;
    for r in CALLEE_SAVED.iter().rev() {
        a.pop(*r)?;
    }
    a.ret()?;
    a.assemble(0)
}
