//! The host side of translated code: the context block generated code works on, the
//! code buffer with its shared entry, exit and call-out sequences, and the Rust
//! functions generated code calls when its inline fast paths do not apply.
//!
//! Register convention inside translated code (host x86-64, guest 32- or 64-bit):
//!
//! | host | holds |
//! |---|---|
//! | rax, rdx, rbx, rbp, rsi, rdi | guest RAX, RDX, RBX, RBP, RSI, RDI (same encodings) |
//! | r8, r9 | guest RCX, RSP |
//! | rcx, r10, r11, r12 | scratch (rcx for JRCXZ, the one flag-free branch on a register) |
//! | (the context) | guest R8..R15 (64-bit mode), loaded into r11 or r12 around the one instruction that names them |
//! | r13 | the constant 63 (SHRX by it gives a sign bit without touching flags) |
//! | r14 | instructions the run may still retire |
//! | r15 | the [`JitCtx`] |
//! | host RFLAGS | the guest's arithmetic flags |
//!
//! Guest flags live in host flags, so nothing the translator adds between two guest
//! instructions may change them: the budget check, the TLB check and the branches
//! around them use LEA, RORX, SHRX, MOVZX and JRCXZ only.

use super::Runtime;
use crate::cpu::rflags::ARITH;
use crate::cpu::SegReg;
use crate::interp::cache::BlockCache;
use crate::x86::mmu::{Access, Tlb};
use crate::x86::Ctx;
use dynasmrt::x64::Assembler;
use dynasmrt::{dynasm, AssemblyOffset, DynasmApi, DynasmLabelApi, ExecutableBuffer};
use std::mem::offset_of;

/// Entries of the translator's inline TLB (direct-mapped by linear page).
pub const TLB_ENTRIES: usize = 256;
/// A tag no page has: tags hold the negated page number, and page 2^64 - 1 does not
/// exist.
pub const NO_TAG: u64 = 1;
/// The link slot of an exit that cannot be chained.
pub const NO_LINK: u64 = u64::MAX;

/// Why translated code returned to the dispatcher.
pub mod exit {
    /// A branch left the chain of translated blocks: go on at `exit_rip`, and patch
    /// `exit_link` to jump straight to the block found there.
    pub const JUMP: u64 = 0;
    /// The block at `exit_rip` has more instructions than the run may still retire.
    pub const BUDGET: u64 = 1;
    /// An instruction ran in the interpreter and the run must look around (it ended
    /// the block, faulted, or changed what the run loop watches): the CPU state is the
    /// interpreter's, RIP and the instruction count included.
    pub const SYNCED: u64 = 2;
}

/// What generated code reads and writes: the guest registers while it is not running,
/// its exit, and the inline TLB.
#[repr(C)]
pub struct JitCtx {
    /// Guest RAX..R15, in encoding order. RAX..RDI are here only while generated
    /// code is not running; R8..R15 always.
    pub gpr: [u64; 16],
    /// Guest RFLAGS: only the arithmetic flags are loaded into the host's.
    pub flags: u64,
    /// Instructions the run may still retire (decremented by each block on entry).
    pub remain: i64,
    /// One of [`exit`].
    pub exit_kind: u64,
    /// Where the guest goes on.
    pub exit_rip: u64,
    /// Offset in the code buffer of the rel32 of the branch that exited, or
    /// [`NO_LINK`].
    pub exit_link: u64,
    /// The decoded block whose code exited.
    pub exit_block: u64,
    /// What a slow path hands back: host address minus guest offset.
    pub ret_addend: u64,
    /// Negated page numbers readable through the inline TLB (or [`NO_TAG`]).
    pub tlb_read: [u64; TLB_ENTRIES],
    /// Negated page numbers writable through the inline TLB (or [`NO_TAG`]).
    pub tlb_write: [u64; TLB_ENTRIES],
    /// Host address minus linear address, per entry.
    pub tlb_addend: [u64; TLB_ENTRIES],
    /// The run's context and cache, while generated code runs.
    pub run: *mut Runtime,
}

// SAFETY: `run` is set only for the duration of one `Code::enter` call, on the thread
// that makes it, and is null whenever the engine could move to another thread.
unsafe impl Send for JitCtx {}

/// Offsets into [`JitCtx`] for generated code.
pub mod off {
    use super::*;
    /// `gpr[i]`.
    pub const fn gpr(i: usize) -> i32 {
        (offset_of!(JitCtx, gpr) + 8 * i) as i32
    }
    pub const FLAGS: i32 = offset_of!(JitCtx, flags) as i32;
    pub const REMAIN: i32 = offset_of!(JitCtx, remain) as i32;
    pub const EXIT_KIND: i32 = offset_of!(JitCtx, exit_kind) as i32;
    pub const EXIT_RIP: i32 = offset_of!(JitCtx, exit_rip) as i32;
    pub const EXIT_LINK: i32 = offset_of!(JitCtx, exit_link) as i32;
    pub const EXIT_BLOCK: i32 = offset_of!(JitCtx, exit_block) as i32;
    pub const RET_ADDEND: i32 = offset_of!(JitCtx, ret_addend) as i32;
    pub const TLB_READ: i32 = offset_of!(JitCtx, tlb_read) as i32;
    pub const TLB_WRITE: i32 = offset_of!(JitCtx, tlb_write) as i32;
    pub const TLB_ADDEND: i32 = offset_of!(JitCtx, tlb_addend) as i32;
}

impl JitCtx {
    /// A context with an empty TLB.
    pub fn new() -> Box<Self> {
        Box::new(JitCtx {
            gpr: [0; 16],
            flags: 0,
            remain: 0,
            exit_kind: 0,
            exit_rip: 0,
            exit_link: NO_LINK,
            exit_block: 0,
            ret_addend: 0,
            tlb_read: [NO_TAG; TLB_ENTRIES],
            tlb_write: [NO_TAG; TLB_ENTRIES],
            tlb_addend: [0; TLB_ENTRIES],
            run: std::ptr::null_mut(),
        })
    }

    /// Forgets every inline translation.
    pub fn flush_tlb(&mut self) {
        self.tlb_read.fill(NO_TAG);
        self.tlb_write.fill(NO_TAG);
    }

    /// Brings the inline TLB in line with the vCPU's after it changed since generation
    /// `since`: INVLPG of one page drops that page alone, anything else everything.
    pub fn follow_tlb(&mut self, tlb: &Tlb, since: u64) {
        match tlb.page_dropped_since(since) {
            Some(page) => {
                let i = page as usize & (TLB_ENTRIES - 1);
                if self.tlb_read[i] == page.wrapping_neg() {
                    self.tlb_read[i] = NO_TAG;
                    self.tlb_write[i] = NO_TAG;
                }
            }
            None => self.flush_tlb(),
        }
    }

    /// Forgets every fast write (a page became code).
    pub fn flush_tlb_writes(&mut self) {
        self.tlb_write.fill(NO_TAG);
    }
}

/// Host registers of guest RAX..RDI (x86-64 register numbers); R8..R15 are in the
/// context.
pub const HOST_GPR: [u8; 8] = [0, 8, 2, 3, 9, 5, 6, 7];

/// Bits of a memory slow path's argument.
pub mod mem_info {
    /// The segment register (`SegReg as u64`).
    pub const SEG_MASK: u64 = 7;
    /// Operand size in bytes, shifted.
    pub const SIZE_SHIFT: u32 = 3;
    /// The access writes (or reads and writes).
    pub const WRITE: u64 = 1 << 8;
}

/// The code buffer and the places in it every block uses.
pub struct Code {
    pub asm: Assembler,
    pub prologue: AssemblyOffset,
    pub epilogue: dynasmrt::DynamicLabel,
    pub mem_thunk: dynasmrt::DynamicLabel,
    pub callout_thunk: dynasmrt::DynamicLabel,
    pub exit_synced: dynasmrt::DynamicLabel,
}

/// Signature of the prologue: (context, where to start).
type Enter = extern "sysv64" fn(*mut JitCtx, *const u8);

impl Code {
    /// A fresh buffer holding only the shared sequences.
    pub fn new() -> std::io::Result<Code> {
        let mut asm = Assembler::new()?;
        let epilogue = asm.new_dynamic_label();
        let mem_thunk = asm.new_dynamic_label();
        let callout_thunk = asm.new_dynamic_label();
        let exit_synced = asm.new_dynamic_label();
        let prologue = asm.offset();
        dynasm!(asm
            ; .arch x64
            ; push rbx ; push rbp ; push r12 ; push r13 ; push r14 ; push r15
            // Six pushes and the return address: realign the stack for calls.
            ; sub rsp, 8
            ; mov r15, rdi
            ; mov r11, rsi
            ; mov r13d, 63
            ; mov r14, [r15 + off::REMAIN]
        );
        load_guest(&mut asm);
        dynasm!(asm
            ; .arch x64
            ; jmp r11
            ; =>epilogue
        );
        store_guest(&mut asm);
        dynasm!(asm
            ; .arch x64
            ; mov [r15 + off::REMAIN], r14
            ; add rsp, 8
            ; pop r15 ; pop r14 ; pop r13 ; pop r12 ; pop rbp ; pop rbx
            ; ret
            ; =>exit_synced
            ; mov QWORD [r15 + off::EXIT_KIND], exit::SYNCED as i32
            ; jmp =>epilogue
            // The memory slow path: r10 = offset, r11 = mem_info. Keeps the guest's
            // registers and flags; returns rcx = 0 and the addend in ret_addend when
            // generated code may go on with the access.
            ; =>mem_thunk
            ; pushfq
            ; push rax ; push rdx ; push rsi ; push rdi ; push r8 ; push r9 ; push r10
            ; sub rsp, 8
            ; mov rdi, r15
            ; mov rsi, r10
            ; mov rdx, r11
            ; mov rax, QWORD mem_slow as *const () as i64
            ; call rax
            ; mov rcx, rax
            ; add rsp, 8
            ; pop r10 ; pop r9 ; pop r8 ; pop rdi ; pop rsi ; pop rdx ; pop rax
            ; popfq
            ; ret
            // A call-out: r11 = (block << 8) | index. The guest state goes through the
            // context both ways; rcx = 0 if generated code may go on.
            ; =>callout_thunk
        );
        store_guest(&mut asm);
        dynasm!(asm
            ; .arch x64
            ; sub rsp, 8
            ; mov rdi, r15
            ; mov rsi, r11
            ; mov rdx, r14
            ; mov rax, QWORD callout as *const () as i64
            ; call rax
            ; add rsp, 8
            ; mov rcx, rax
            ; mov r14, [r15 + off::REMAIN]
        );
        load_guest(&mut asm);
        dynasm!(asm
            ; .arch x64
            ; ret
        );
        asm.commit().map_err(std::io::Error::other)?;
        Ok(Code {
            asm,
            prologue,
            epilogue,
            mem_thunk,
            callout_thunk,
            exit_synced,
        })
    }

    /// Bytes of generated code so far.
    pub fn len(&self) -> usize {
        self.asm.offset().0
    }

    /// Runs generated code from `entry` until it exits.
    pub fn enter(&self, ctx: &mut JitCtx, entry: AssemblyOffset) {
        let reader = self.asm.reader();
        let buf: &ExecutableBuffer = &reader.lock();
        // SAFETY: the prologue at `self.prologue` is a function of the `Enter`
        // signature (it saves and restores every callee-saved register and keeps the
        // stack aligned), and `entry` is the start of a block this buffer holds, which
        // only ever returns through the epilogue. The buffer is executable and not
        // written while the lock is held. Generated code touches guest RAM only
        // through TLB entries filled by `mem_slow`, which checks they lie in RAM.
        unsafe {
            let enter: Enter = std::mem::transmute(buf.ptr(self.prologue));
            enter(ctx, buf.ptr(entry));
        }
    }

    /// A copy of the generated code in `range`.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let reader = self.asm.reader();
        let buf: &ExecutableBuffer = &reader.lock();
        buf.get(range).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Makes the branch whose rel32 is at `slot` jump to `target`.
    pub fn patch(&mut self, slot: u64, target: AssemblyOffset) {
        let rel = target.0 as i64 - (slot as i64 + 4);
        let _ = self.asm.alter(|m| {
            m.goto(AssemblyOffset(slot as usize));
            m.push_i32(rel as i32);
        });
    }
}

/// Loads the guest registers and flags from the context (r15).
fn load_guest(asm: &mut Assembler) {
    dynasm!(asm
        ; .arch x64
        ; push QWORD [r15 + off::FLAGS]
        ; popfq
        ; mov rax, [r15 + off::gpr(0)]
        ; mov r8, [r15 + off::gpr(1)]
        ; mov rdx, [r15 + off::gpr(2)]
        ; mov rbx, [r15 + off::gpr(3)]
        ; mov r9, [r15 + off::gpr(4)]
        ; mov rbp, [r15 + off::gpr(5)]
        ; mov rsi, [r15 + off::gpr(6)]
        ; mov rdi, [r15 + off::gpr(7)]
    );
}

/// Stores the guest registers and flags into the context (r15).
fn store_guest(asm: &mut Assembler) {
    dynasm!(asm
        ; .arch x64
        ; mov [r15 + off::gpr(0)], rax
        ; mov [r15 + off::gpr(1)], r8
        ; mov [r15 + off::gpr(2)], rdx
        ; mov [r15 + off::gpr(3)], rbx
        ; mov [r15 + off::gpr(4)], r9
        ; mov [r15 + off::gpr(5)], rbp
        ; mov [r15 + off::gpr(6)], rsi
        ; mov [r15 + off::gpr(7)], rdi
        ; pushfq
        ; pop QWORD [r15 + off::FLAGS]
    );
}

/// The flags image generated code may load: the guest's arithmetic flags and the
/// always-one bit, never TF, DF or AC (the host's own).
pub fn host_flags(guest: u64) -> u64 {
    (guest & ARITH) | 2
}

/// The slow path of a memory operand: checks the access as the interpreter would and,
/// if generated code can make it directly (it lies in one page of RAM, and a write
/// overwrites no code), returns 0 with the addend in `ret_addend` and fills the inline
/// TLB. Anything else returns 1: the instruction then runs in the interpreter, which
/// raises the fault, reaches the device or notes the self-modifying write.
extern "sysv64" fn mem_slow(jc: *mut JitCtx, offset: u64, info: u64) -> u64 {
    // SAFETY: generated code passes the context it was entered with, whose `run`
    // points to the runtime of the run in progress; nothing else uses either while
    // generated code runs.
    let (jc, rt) = unsafe { (&mut *jc, &mut *(*jc).run) };
    // SAFETY: as above: the context of the run in progress, borrowed by nobody else.
    let cx: &mut Ctx<'_> = unsafe { &mut *rt.cx.cast::<Ctx<'_>>() };
    let seg = match info & mem_info::SEG_MASK {
        0 => SegReg::Es,
        2 => SegReg::Ss,
        _ => SegReg::Ds,
    };
    let size = ((info >> mem_info::SIZE_SHIFT) & 0xF) as u32;
    let write = info & mem_info::WRITE != 0;
    let access = if write { Access::Write } else { Access::Read };
    let Ok(at) = cx.seg_addr(seg, offset, size, access) else {
        return 1;
    };
    let lin = at.linear();
    if (lin & 0xFFF) + u64::from(size) > 0x1000 {
        return 1;
    }
    let user = cx.cpu.cpl() == 3;
    let tlb = cx.cpu.tlb.generation();
    let Ok(pa) = cx.translate_probe(lin, access, user) else {
        return 1;
    };
    if cx.cpu.tlb.generation() != tlb {
        // The fill traced a guest page table: no fast write may reach it any more.
        jc.flush_tlb();
    }
    let ram_len = cx.ram.len() as u64;
    if pa.saturating_add(u64::from(size)) > ram_len {
        return 1;
    }
    if write && cx.code.overlaps(pa, size as usize) {
        return 1;
    }
    let host = cx.ram.host_base() as u64 + pa;
    jc.ret_addend = host.wrapping_sub(offset);
    // Segments are flat while generated code runs (and have no base in 64-bit mode):
    // the offset is the linear address.
    let page = lin >> 12;
    let i = page as usize & (TLB_ENTRIES - 1);
    let tag = page.wrapping_neg();
    if jc.tlb_read[i] != tag {
        jc.tlb_write[i] = NO_TAG;
    }
    jc.tlb_read[i] = tag;
    jc.tlb_addend[i] = (host & !0xFFF).wrapping_sub(lin & !0xFFF);
    if write && !cx.code.page_has_code(pa) {
        jc.tlb_write[i] = tag;
    }
    0
}

/// A call-out: runs one instruction of a decoded block in the interpreter, with the
/// guest state handed over through the context. Returns 0 if generated code may go on
/// with the next instruction, else 1 (the state is then the interpreter's).
extern "sysv64" fn callout(jc: *mut JitCtx, info: u64, remain: i64) -> u64 {
    // SAFETY: as in `mem_slow`.
    let (jc, rt) = unsafe { (&mut *jc, &mut *(*jc).run) };
    // What the thunk loads back into r14.
    jc.remain = remain;
    // SAFETY: as in `mem_slow`.
    let cx: &mut Ctx<'_> = unsafe { &mut *rt.cx.cast::<Ctx<'_>>() };
    // SAFETY: the cache outlives the run and generated code does not change it.
    let cache: &BlockCache = unsafe { &*rt.cache };
    let (id, index) = ((info >> 8) as u32, (info & 0xFF) as usize);
    let ops = &cache.block(id).ops;
    // The block took all its instructions off `remain` on entry: those from `index`
    // on have not retired yet.
    let pending = (ops.len() - index) as i64;
    cx.icount = rt.base + (rt.room as i64 - (remain + pending)) as u64;
    cx.cpu.gpr = jc.gpr;
    cx.cpu.rflags.set_arith(jc.flags);
    let op = &ops[index];
    let (tlb, cpl) = (cx.cpu.tlb.generation(), cx.cpu.cpl());
    // SAFETY: the run's counters, borrowed by nobody else while generated code runs.
    let virt_stats = unsafe { &mut *rt.virt_stats };
    let went_on = super::virt::execute(rt.virt, virt_stats, cx, op);
    jc.gpr = cx.cpu.gpr;
    jc.flags = host_flags(cx.cpu.rflags.get());
    rt.callouts += 1;
    if cx.cpu.cpl() != cpl {
        // Entries are filled for one CPL: the inline check does not look at U/S.
        jc.flush_tlb();
    } else if cx.cpu.tlb.generation() != tlb {
        jc.follow_tlb(&cx.cpu.tlb, tlb);
    }
    let until = rt.base + rt.room as u64;
    if cx.next_poll < until {
        // Interrupts must be looked at sooner (a device was accessed, STI): as in the
        // interpreter, the block goes on and the run loop polls before the next one.
        // Take what is left of the budget beyond this block off `room`, so that the
        // next block's budget check leaves for the run loop.
        rt.room -= remain as usize;
        jc.remain = 0;
    }
    let go_on = went_on && cx.cpu.rip == op.ins.next_ip() && !cx.code.has_written();
    u64::from(!go_on)
}
