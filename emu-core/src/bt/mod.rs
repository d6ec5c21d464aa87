//! The binary translator (`--engine bt`): guest code translated block by block into
//! host x86-64 code, which runs the guest's registers in host registers and its
//! arithmetic flags in the host's flags.
//!
//! It shares everything but the execution of a block with the interpreter: the same
//! decoded blocks (cached by guest-physical address and mode, dropped when their code
//! is written, by the guest or from outside), the same run loop (budget, interrupts,
//! the stop request, debugging — which runs in the interpreter), the same handlers for
//! what it does not translate. A block's host code is made the first time the block
//! runs in a state it can translate: 64-bit mode, or 32-bit protected mode on flat
//! segments (base 0, 4 GiB limits), with no alignment checking. In any other state the interpreter runs
//! the block. See [`translate`] for what is translated and [`jit`] for how host code
//! is entered, how it reaches guest memory and how it calls out.

mod jit;
mod translate;
pub mod virt;

use crate::cpu::{cr0, efer, rflags, CpuState, SegReg, Segment};
use crate::engine::{DebugConfig, Engine, EngineError};
use crate::exit::{DropCause, EngineEvent, ExitHandler, StopReason};
use crate::interp::cache::BlockCache;
use crate::interp::{run_block, Interpreter};
use crate::memory::GuestRam;
use crate::x86::spt::SptStats;
use crate::x86::Ctx;
use dynasmrt::AssemblyOffset;
use jit::{exit, host_flags, Code, JitCtx, NO_LINK};
use translate::Translator;
use virt::{Virt, VirtStats};

/// When the code buffer holds this much, start afresh. Small: every commit of new code
/// changes the protection of the whole buffer, which costs by its size.
const MAX_CODE: usize = 1 << 20;

/// Counters of the translator, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BtStats {
    /// Blocks translated into host code: the translation cache's misses.
    pub blocks: u64,
    /// Times the run loop found a block's host code already made.
    pub hits: u64,
    /// Guest instructions translated (copied or rewritten).
    pub translated: u64,
    /// Guest instructions left to the interpreter in translated blocks.
    pub called_out: u64,
    /// Call-outs run.
    pub callouts: u64,
    /// Times host code was entered from the run loop.
    pub entries: u64,
    /// Branches patched to jump straight to their next block.
    pub chained: u64,
    /// Times all host code was dropped because guest code it was made from was written
    /// (by the guest, a device or a debugger).
    pub code_written: u64,
    /// Times all host code was dropped because the code buffer was full.
    pub buffer_full: u64,
    /// Blocks run by the interpreter because the CPU was in a state not translated.
    pub interpreted_blocks: u64,
}

impl BtStats {
    /// How many times every translation was dropped: a code buffer is good while this
    /// stays the same.
    fn flushes(&self) -> u64 {
        self.code_written + self.buffer_full
    }
}

/// What generated code's call-outs reach while a run is in progress.
pub struct Runtime {
    /// The run's context (`*mut Ctx<'_>`).
    cx: *mut (),
    /// The decoded blocks.
    cache: *const BlockCache,
    /// Instruction count at entry, and the instructions the run may retire.
    base: u64,
    room: usize,
    callouts: u64,
    /// The ring-compression model, and what it counts.
    virt: Virt,
    virt_stats: *mut VirtStats,
}

/// A branch that exited to the run loop, to patch once the block it leads to is found.
#[derive(Debug, Clone, Copy)]
struct PendingLink {
    /// The code buffer the slot is in (the flush count when it was made): a flush in
    /// between frees it.
    buffer: u64,
    slot: u64,
    rip: u64,
    icount: u64,
    delivered: u64,
}

/// The translating engine.
pub struct Bt {
    /// The interpreter: the vCPU, the decoded blocks and the run loop are its.
    interp: Interpreter,
    /// Host code of what runs translated.
    native: Native,
}

/// Host code, by decoded block.
struct Native {
    code: Option<Code>,
    jc: Box<JitCtx>,
    translator: Translator,
    /// Host entry per decoded block id.
    entries: Vec<Option<AssemblyOffset>>,
    /// Where each block's host code ends (for listings).
    ends: Vec<usize>,
    /// The decoded cache's generation the entries belong to.
    generation: u64,
    /// Blocks decoded when the inline TLB last lost its fast writes.
    built: u64,
    /// The TLB generation and CPL the inline TLB was filled under.
    tlb_key: (u64, u8),
    pending: Option<PendingLink>,
    stats: BtStats,
    virt: Virt,
    virt_stats: VirtStats,
}

impl std::fmt::Debug for Bt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bt({:?})", self.native.stats)
    }
}

impl Default for Bt {
    fn default() -> Self {
        Self::new()
    }
}

impl Bt {
    /// A translator with a zeroed CPU; give it a state with [`Engine::set_state`].
    pub fn new() -> Self {
        Self::with_virt(Virt::None)
    }

    /// A translator running the guest kernel as `virt` says (ring compression).
    pub fn with_virt(virt: Virt) -> Self {
        let mut bt = Bt {
            interp: Interpreter::new(),
            native: Native {
                code: None,
                jc: JitCtx::new(),
                translator: Translator::default(),
                entries: Vec::new(),
                ends: Vec::new(),
                generation: u64::MAX,
                built: 0,
                tlb_key: (u64::MAX, 0),
                pending: None,
                stats: BtStats::default(),
                virt,
                virt_stats: VirtStats::default(),
            },
        };
        bt.install_shadow_paging();
        bt
    }

    /// Under ring compression, gives the vCPU shadow page tables: the VMM's MMU runs on
    /// them, not on the guest's tables (see [`crate::x86::spt`]).
    fn install_shadow_paging(&mut self) {
        if self.native.virt != Virt::None {
            self.interp.vcpu_mut().spt = Some(Box::default());
        }
    }

    /// What shadow paging did (zero without `--virt`).
    pub fn spt_stats(&self) -> SptStats {
        self.interp
            .vcpu()
            .spt
            .as_ref()
            .map(|s| s.stats)
            .unwrap_or_default()
    }

    /// The translator's counters.
    pub fn stats(&self) -> BtStats {
        let t = &self.native.translator;
        BtStats {
            translated: t.translated,
            called_out: t.called_out,
            ..self.native.stats
        }
    }
}

/// Whether generated code can run in this state: 64-bit mode, or 32-bit protected
/// mode (not compatibility mode, not virtual-8086) with CS, SS, DS and ES flat with
/// base 0 and a 32-bit stack; no alignment checking. (In 64-bit mode CS, SS, DS and ES
/// have no base and no limit; FS and GS, which have a base, are called out.)
fn translatable(cpu: &CpuState) -> bool {
    let segs = [SegReg::Cs, SegReg::Ss, SegReg::Ds, SegReg::Es];
    let alignment_checks =
        cpu.cr0 & cr0::AM != 0 && cpu.rflags.control(rflags::AC) && cpu.cpl() == 3;
    if alignment_checks {
        return false;
    }
    if cpu.efer & efer::LMA != 0 {
        return cpu.code_bitness() == 64;
    }
    cpu.cr0 & cr0::PE != 0
        && !cpu.rflags.control(rflags::VM)
        && cpu.code_bitness() == 32
        && cpu.seg[SegReg::Ss].attr & Segment::DB != 0
        && segs
            .iter()
            .all(|&s| cpu.seg[s].base == 0 && (s == SegReg::Cs || !cpu.seg.needs_checks(s)))
        && cpu.seg[SegReg::Cs].limit == u32::MAX
}

impl Native {
    /// Drops every translation.
    fn flush(&mut self) {
        self.code = None;
        self.entries.clear();
        self.ends.clear();
        self.pending = None;
    }

    /// Drops every translation for `cause`, counted and traced.
    fn drop_all(&mut self, cx: &mut Ctx<'_>, cause: DropCause) {
        self.flush();
        match cause {
            DropCause::CodeWritten => self.stats.code_written += 1,
            DropCause::BufferFull => self.stats.buffer_full += 1,
        }
        cx.exits
            .engine_event(EngineEvent::TranslationsDropped { cause }, cx.icount);
    }

    /// Brings the translations and the inline TLB in line with the decoded cache and
    /// the MMU.
    fn sync(&mut self, cx: &mut Ctx<'_>, cache: &BlockCache) {
        if cache.generation() != self.generation {
            self.generation = cache.generation();
            if !self.entries.is_empty() {
                self.drop_all(cx, DropCause::CodeWritten);
            }
        }
        if cache.built() != self.built {
            // New code was marked: a fast write entry may point into it.
            self.built = cache.built();
            self.jc.flush_tlb_writes();
        }
        let key = (cx.cpu.tlb.generation(), cx.cpu.cpl());
        if key.1 != self.tlb_key.1 {
            self.jc.flush_tlb();
        } else if key.0 != self.tlb_key.0 {
            self.jc.follow_tlb(&cx.cpu.tlb, self.tlb_key.0);
        }
        self.tlb_key = key;
    }

    /// Runs at most `room` instructions of block `id` in the interpreter (under the
    /// ring-compression model, as call-outs run).
    fn interpret(
        &mut self,
        cx: &mut Ctx<'_>,
        cache: &BlockCache,
        id: u32,
        room: usize,
    ) -> Option<u32> {
        let (virt, stats) = (self.virt, &mut self.virt_stats);
        run_block(cx, cache, id, room, |cx, op| {
            virt::execute(virt, stats, cx, op)
        })
    }

    /// The host entry of block `id`, translating it if needed.
    fn entry(&mut self, cx: &mut Ctx<'_>, cache: &BlockCache, id: u32) -> Option<AssemblyOffset> {
        if let Some(Some(e)) = self.entries.get(id as usize) {
            self.stats.hits += 1;
            return Some(*e);
        }
        if self.code.as_ref().is_some_and(|c| c.len() > MAX_CODE) {
            self.drop_all(cx, DropCause::BufferFull);
        }
        if self.code.is_none() {
            self.code = Some(Code::new().ok()?);
        }
        let code = self.code.as_mut()?;
        let entry = self.translator.block(code, id, cache.block(id))?;
        self.stats.blocks += 1;
        if self.entries.len() <= id as usize {
            self.entries.resize(id as usize + 1, None);
        }
        self.entries[id as usize] = Some(entry);
        self.ends.resize(self.entries.len(), 0);
        self.ends[id as usize] = code.len();
        let block = &cache.block(id).ops;
        let event = EngineEvent::BlockTranslated {
            rip: block.first().map_or(cx.cpu.rip, |op| op.ins.ip()),
            instructions: block.len() as u32,
            host_bytes: (code.len() - entry.0) as u32,
        };
        cx.exits.engine_event(event, cx.icount);
        Some(entry)
    }
}

impl Native {
    /// Runs block `id` as the interpreter's run loop asks (see
    /// [`Interpreter::run_with`]): its host code where the state allows, else the
    /// interpreter.
    fn run(
        &mut self,
        cx: &mut Ctx<'_>,
        cache: &mut BlockCache,
        id: u32,
        room: usize,
    ) -> Option<u32> {
        // What shadow paging did since the last block (fetching this one included).
        cx.report_shadow_faults();
        let pending = self.pending.take();
        let ops_len = cache.block(id).ops.len();
        if !translatable(cx.cpu) || room < ops_len {
            self.stats.interpreted_blocks += u64::from(room >= ops_len);
            return self.interpret(cx, cache, id, room);
        }
        self.sync(cx, cache);
        let Some(entry) = self.entry(cx, cache, id) else {
            return self.interpret(cx, cache, id, room);
        };
        let code = self.code.as_mut()?;
        let buffer = self.stats.flushes();
        if let Some(link) = pending.filter(|l| {
            l.buffer == buffer
                && l.rip == cx.cpu.rip
                && l.icount == cx.icount
                && l.delivered == cx.delivered
        }) {
            code.patch(link.slot, entry);
            self.stats.chained += 1;
        }
        // Enter host code with the guest registers and flags in the context.
        let jc = &mut *self.jc;
        jc.gpr = cx.cpu.gpr;
        jc.flags = host_flags(cx.cpu.rflags.get());
        jc.remain = room as i64;
        let mut rt = Runtime {
            cx: (cx as *mut Ctx<'_>).cast(),
            cache,
            base: cx.icount,
            room,
            callouts: 0,
            virt: self.virt,
            virt_stats: &mut self.virt_stats,
        };
        jc.run = &mut rt;
        self.stats.entries += 1;
        code.enter(jc, entry);
        jc.run = std::ptr::null_mut();
        self.stats.callouts += rt.callouts;
        cx.cpu.gpr = jc.gpr;
        cx.cpu.rflags.set_arith(jc.flags);
        if jc.exit_kind != exit::SYNCED {
            cx.icount = rt.base + (rt.room as i64 - jc.remain) as u64;
            cx.cpu.rip = jc.exit_rip;
        }
        if cx.code.has_written() {
            // A page walk set accessed or dirty bits in a page holding code.
            cx.end_block = true;
        }
        match jc.exit_kind {
            exit::JUMP => {
                if jc.exit_link != NO_LINK {
                    self.pending = Some(PendingLink {
                        buffer: self.stats.flushes(),
                        slot: jc.exit_link,
                        rip: jc.exit_rip,
                        icount: cx.icount,
                        delivered: cx.delivered,
                    });
                }
                Some(jc.exit_block as u32)
            }
            exit::BUDGET => {
                // Fewer instructions left than the block has: interpret what is left.
                let left = (rt.base + rt.room as u64 - cx.icount) as usize;
                let id = jc.exit_block as u32;
                self.interpret(cx, cache, id, left)
            }
            _ => None,
        }
    }
}

impl Engine for Bt {
    fn name(&self) -> &'static str {
        match self.native.virt {
            Virt::None => "bt",
            Virt::Trap => "bt (virt trap)",
            Virt::Full => "bt (virt full)",
        }
    }

    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, budget: u64) -> StopReason {
        let trace = exits.traces_engine();
        if let Some(spt) = self.interp.vcpu_mut().spt.as_mut() {
            spt.record = trace;
        }
        let native = &mut self.native;
        let stop = self
            .interp
            .run_with(ram, exits, budget, |cx, cache, id, room| {
                native.run(cx, cache, id, room)
            });
        // Faults after the last block (delivering an event, fetching a block).
        let icount = self.interp.instructions_retired();
        if let Some(spt) = self.interp.vcpu_mut().spt.as_mut() {
            spt.report(exits, icount);
        }
        stop
    }

    fn state(&self) -> Result<CpuState, EngineError> {
        self.interp.state()
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError> {
        self.native.pending = None;
        self.interp.set_state(state)?;
        // A new vCPU's TLB counts its generations from zero again: what the inline TLB
        // holds cannot be told stale by them.
        self.native.jc.flush_tlb();
        self.native.tlb_key = (u64::MAX, 0);
        // The vCPU is new, and guest memory may have changed under another engine:
        // shadow tables start empty.
        self.install_shadow_paging();
        Ok(())
    }

    fn instructions_retired(&self) -> u64 {
        self.interp.instructions_retired()
    }

    fn set_debug(&mut self, debug: &DebugConfig) -> Result<(), EngineError> {
        self.interp.set_debug(debug)
    }

    fn show_code(&self, addr: u64) -> Option<String> {
        let native = &self.native;
        let cache = self.interp.cache();
        let code = native.code.as_ref()?;
        let (id, entry) = native.entries.iter().enumerate().find_map(|(id, e)| {
            let e = (*e)?;
            (cache.block(id as u32).ops.first()?.ins.ip() == addr).then_some((id, e))
        })?;
        let end = native.ends[id];
        let mut out = format!("guest block at {addr:#x}:\n");
        for op in cache.block(id as u32).ops.iter() {
            out += &format!("  {:08x}  {}\n", op.ins.ip(), op.ins);
        }
        let host = code.bytes(entry.0..end);
        out += &format!(
            "host code ({} bytes, out-of-line paths included):\n",
            host.len()
        );
        let mut decoder = iced_x86::Decoder::with_ip(64, &host, entry.0 as u64, 0);
        for ins in decoder.iter() {
            out += &format!("  +{:06x}  {ins}\n", ins.ip());
        }
        Some(out)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.stats();
        let mut list: Vec<(String, u64)> = [
            ("blocks translated", s.blocks),
            ("translation cache hits (host code found)", s.hits),
            ("instructions translated", s.translated),
            ("instructions called out", s.called_out),
            ("call-outs run", s.callouts),
            ("host code entries", s.entries),
            ("branches chained", s.chained),
            ("translation flushes: code written", s.code_written),
            ("translation flushes: buffer full", s.buffer_full),
            ("blocks interpreted", s.interpreted_blocks),
        ]
        .into_iter()
        .map(|(name, n)| (name.to_owned(), n))
        .collect();
        if self.native.virt != Virt::None {
            let p = self.spt_stats();
            for (name, n) in [
                (
                    "shadow paging: hidden faults (shadow fills)",
                    p.hidden_faults,
                ),
                (
                    "shadow paging: true faults (reflected to the guest)",
                    p.true_faults,
                ),
                (
                    "shadow paging: trace faults (page-table writes)",
                    p.trace_faults,
                ),
                ("shadow paging: shadow entries dropped", p.entries_dropped),
                ("shadow paging: address spaces built", p.spaces_built),
                ("shadow paging: address spaces reused", p.spaces_reused),
            ] {
                list.push((name.to_owned(), n));
            }
        }
        let v = &self.native.virt_stats;
        for (what, map) in [
            ("trap (privileged, emulated by the VMM)", &v.traps),
            ("VMM call-out (sensitive, rewritten)", &v.callouts),
            ("unseen (sensitive, real CPU's answer)", &v.unseen),
        ] {
            for (m, n) in map {
                list.push((format!("{what}: {m:?}"), *n));
            }
        }
        list
    }
}
