//! The decoded-block cache.
//!
//! A block is a run of decoded instructions that starts at a guest RIP and ends at the
//! first control transfer or instruction that changes how later code runs (the facts of
//! [`crate::x86::opcode`]), at a page boundary, or after [`MAX_BLOCK_OPS`] instructions.
//! It never spans more than the page it starts on (plus the tail of an instruction that
//! straddles into the next page), so a write to a page invalidates exactly the blocks
//! decoded from it.

use super::{dispatch, Fault, Handler};
use crate::cpu::SegReg;
use crate::memory::CodeWatch;
use crate::x86::ctx::{Ctx, PAGE_SHIFT, PAGE_SIZE};
use crate::x86::decode;
use crate::x86::mmu::Access;
use crate::x86::opcode;
use iced_x86::{Decoder, DecoderError, Instruction};
use std::cell::Cell;
use std::collections::HashMap;

/// Longest block, in instructions: bounds decode work done ahead of execution.
const MAX_BLOCK_OPS: usize = 64;
/// Longest x86 instruction, in bytes.
const MAX_INSN_LEN: usize = 15;
/// Entries of the direct-mapped lookup table in front of the hash map.
const FAST_ENTRIES: usize = 4096;
/// When this many blocks are cached, start afresh rather than grow without bound.
const MAX_BLOCKS: usize = 1 << 16;

/// One decoded instruction and its handler.
pub struct Op {
    /// Executes the instruction.
    pub exec: Handler,
    /// The decoded instruction (IP-relative fields already resolved by the decoder).
    pub ins: Instruction,
}

/// What identifies decoded code: where it is, the RIP it was decoded at (branch targets
/// are absolute) and the code bitness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    rip: u64,
    phys: u64,
    bitness: u32,
}

/// A decoded block.
pub struct Block {
    /// Its instructions, in order.
    pub ops: Box<[Op]>,
    key: Key,
    /// Successors seen recently: block chaining, so a hot loop skips the lookup.
    links: [Cell<Link>; 2],
}

/// A remembered successor: while the cache is in `epoch`, a block that ran to its end
/// and left RIP at `rip` goes on with block `id`.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    epoch: u64,
    rip: u64,
    id: u32,
}

/// Copies code bytes from guest-physical memory. Outside RAM the bytes come from the
/// MMIO bus (the BIOS ROM at the top of memory) or read as open bus (0xFF).
fn copy_code(cx: &mut Ctx<'_>, pa: u64, out: &mut [u8]) {
    let in_ram = usize::try_from(pa)
        .ok()
        .filter(|&p| p < cx.ram.len())
        .map(|p| out.len().min(cx.ram.len() - p))
        .unwrap_or(0);
    if in_ram > 0 {
        let p = pa as usize;
        cx.ram.read(p as u64, &mut out[..in_ram]);
    }
    for (i, byte) in out.iter_mut().enumerate().skip(in_ram) {
        *byte = cx.read_phys(pa.wrapping_add(i as u64), 1) as u8;
    }
}

/// Decoded blocks by key, with the pages they were decoded from.
#[derive(Default)]
pub struct BlockCache {
    blocks: Vec<Option<Block>>,
    free: Vec<u32>,
    map: HashMap<Key, u32>,
    by_page: HashMap<u64, Vec<u32>>,
    fast: Vec<Option<u32>>,
    /// Links are valid only in the epoch they were made in. A new epoch starts whenever
    /// anything ends a block early — every change of mode, CS, paging or code does — so
    /// a link never outlives the conditions it was made under.
    epoch: u64,
    /// Changes whenever blocks are dropped (and their ids may be reused): what another
    /// engine keeps by block id (the translator's host code) is good only while this
    /// stays the same.
    generation: u64,
    /// Blocks decoded so far: each marked more RAM as code.
    built: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCache({} blocks)", self.map.len())
    }
}

impl BlockCache {
    /// Forgets every link (something ended a block early).
    #[inline]
    pub fn new_epoch(&mut self) {
        self.epoch += 1;
    }

    /// Changes whenever blocks are dropped: ids handed out before then may name other
    /// blocks now.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many blocks were decoded so far (each marks RAM as code).
    pub fn built(&self) -> u64 {
        self.built
    }

    /// The block `from` is linked to for RIP `rip`, in this epoch.
    #[inline(always)]
    pub fn chained(&self, from: u32, rip: u64) -> Option<u32> {
        let links = &self.blocks.get(from as usize)?.as_ref()?.links;
        // Two links, unrolled: this is the hot path of every chained loop.
        let (a, b) = (links[0].get(), links[1].get());
        if a.rip == rip && a.epoch == self.epoch {
            Some(a.id)
        } else if b.rip == rip && b.epoch == self.epoch {
            Some(b.id)
        } else {
            None
        }
    }

    /// Remembers that `from`, run to its end, went on at `rip` with block `to`.
    #[cold]
    fn link(&self, from: u32, rip: u64, to: u32) {
        if let Some(block) = &self.blocks[from as usize] {
            block.links[1].set(block.links[0].get());
            block.links[0].set(Link {
                epoch: self.epoch,
                rip,
                id: to,
            });
        }
    }

    /// A live block by id.
    #[inline(always)]
    pub fn block(&self, id: u32) -> &Block {
        match self.blocks.get(id as usize) {
            Some(Some(block)) => block,
            _ => unreachable!("ids handed out name live blocks"),
        }
    }

    /// The id of the block at the CPU's current RIP, decoding it if needed, and linked
    /// from block `from` (which ran to its end just before) for next time. Always
    /// inlined: the run loop calls it once per block it cannot chain to.
    #[inline(always)]
    pub fn lookup_or_build(&mut self, cx: &mut Ctx<'_>, from: Option<u32>) -> Result<u32, Fault> {
        // Decoding may have to flush the cache to make room, which starts a new epoch
        // and renumbers the blocks: `from` is then gone, and nothing is linked.
        let epoch = self.epoch;
        let rip = cx.cpu.rip;
        let bitness = cx.cpu.code_bitness();
        let lin = cx.cpu.seg[SegReg::Cs].base.wrapping_add(rip);
        let lin = if bitness == 64 {
            lin
        } else {
            lin & 0xFFFF_FFFF
        };
        let user = cx.cpu.cpl() == 3;
        cx.check_canonical(lin)?;
        let phys = cx.translate(lin, Access::Exec, user)?;
        let key = Key { rip, phys, bitness };
        if self.fast.is_empty() {
            self.fast = vec![None; FAST_ENTRIES];
        }
        let slot = ((rip ^ (rip >> 12)) as usize) & (FAST_ENTRIES - 1);
        // The fast table may name a dropped or reused slot: the block's key decides.
        let hit = self.fast[slot].filter(|&id| {
            self.blocks[id as usize]
                .as_ref()
                .is_some_and(|b| b.key == key)
        });
        let id = match hit {
            Some(id) => id,
            None => {
                let id = match self.map.get(&key) {
                    Some(&id) => id,
                    None => self.build(cx, key, lin, user)?,
                };
                self.fast[slot] = Some(id);
                id
            }
        };
        if let Some(from) = from.filter(|_| self.epoch == epoch) {
            self.link(from, rip, id);
        }
        Ok(id)
    }

    fn build(&mut self, cx: &mut Ctx<'_>, key: Key, lin: u64, user: bool) -> Result<u32, Fault> {
        if self.map.len() >= MAX_BLOCKS {
            self.flush(cx.code);
        }
        let in_page = PAGE_SIZE - (key.phys as usize & (PAGE_SIZE - 1));
        // The bytes after the window: the start of the next linear page, for one
        // instruction straddling out of it. That page may be unmapped: then only an
        // instruction that really needs its bytes faults.
        let (window, next) = if key.phys >= cx.ram.len() as u64 && in_page > 2 * MAX_INSN_LEN {
            // Code outside RAM (a ROM) is fetched over the bus a byte at a time: decode
            // only a few instructions' worth, followed by the same page's next bytes.
            let window = 2 * MAX_INSN_LEN;
            (window, Ok(key.phys.wrapping_add(window as u64)))
        } else {
            (
                in_page,
                cx.translate(lin.wrapping_add(in_page as u64), Access::Exec, user),
            )
        };
        let in_page = window;
        let tail = if next.is_ok() { MAX_INSN_LEN - 1 } else { 0 };
        let mut bytes = vec![0u8; in_page + tail];
        copy_code(cx, key.phys, &mut bytes[..in_page]);
        if let Ok(next_pa) = next {
            copy_code(cx, next_pa, &mut bytes[in_page..]);
        }
        let mut decoder = Decoder::with_ip(key.bitness, &bytes, key.rip, decode::options());
        let mut ops = Vec::new();
        let mut pages = vec![key.phys >> PAGE_SHIFT];
        // Bytes decoded into the block so far.
        let mut end = 0;
        while ops.len() < MAX_BLOCK_OPS && (decoder.position() as usize) < in_page {
            let ins = decode::next(&mut decoder, &bytes, key.bitness);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                // It runs into the unmapped next page: the fetch faults there, when
                // execution gets to it.
                match next {
                    Err(fault) if ops.is_empty() => return Err(fault),
                    _ => break,
                }
            }
            end = decoder.position();
            let straddles = end > in_page;
            ops.push(Op {
                exec: dispatch::handler(&ins),
                ins,
            });
            if straddles {
                if let Ok(next_pa) = next {
                    pages.push(next_pa >> PAGE_SHIFT);
                }
                break;
            }
            // A control transfer, or an instruction that may change how what follows
            // runs (the opcode table says which); INVALID is a control transfer (#UD).
            if opcode::facts(ins.code()).ends_block {
                break;
            }
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.blocks.push(None);
                (self.blocks.len() - 1) as u32
            }
        };
        self.blocks[id as usize] = Some(Block {
            ops: ops.into_boxed_slice(),
            key,
            links: Default::default(),
        });
        self.map.insert(key, id);
        self.built += 1;
        for page in pages {
            self.by_page.entry(page).or_default().push(id);
        }
        cx.code.mark(key.phys, end.min(in_page));
        if let (true, Ok(next_pa)) = (end > in_page, next) {
            cx.code.mark(next_pa, end - in_page);
        }
        Ok(id)
    }

    /// Drops the blocks decoded from code that was overwritten since the last call: by
    /// the guest (self-modifying code), a device or a debugger. Rare: kept out of the
    /// run loop.
    #[cold]
    #[inline(never)]
    pub fn invalidate_written(&mut self, code: &CodeWatch) {
        self.new_epoch();
        let written = code.take_written();
        if written.all {
            self.flush(code);
            return;
        }
        self.generation += 1;
        for page in written.pages {
            for id in self.by_page.remove(&page).unwrap_or_default() {
                if let Some(block) = self.blocks[id as usize].take() {
                    self.map.remove(&block.key);
                    self.free.push(id);
                }
            }
        }
    }

    /// Drops every block.
    pub fn flush(&mut self, code: &CodeWatch) {
        *self = BlockCache {
            fast: vec![None; FAST_ENTRIES],
            epoch: self.epoch + 1,
            generation: self.generation + 1,
            built: self.built,
            ..BlockCache::default()
        };
        code.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_BLOCKS;
    use crate::testkit::{Machine, CODE_BASE, RAX};
    use iced_x86::code_asm::*;

    /// Distance between the jumps below: each is a block of its own.
    const STRIDE: u64 = 16;

    #[test]
    fn more_distinct_blocks_than_the_cache_holds_run_on() {
        // A chain of short jumps, each to the next one STRIDE bytes on, then INC EAX and
        // HLT: more blocks than fit, so the cache flushes itself while the block that
        // just ran (and would link its successor) was decoded before the flush.
        let jumps = MAX_BLOCKS as u64 + MAX_BLOCKS as u64 / 4;
        let mut m = Machine::flat32(|a| a.nop());
        let jmp_next = [0xEB, (STRIDE - 2) as u8];
        for i in 0..jumps {
            m.poke(CODE_BASE + i * STRIDE, &jmp_next);
        }
        m.assemble(32, CODE_BASE + jumps * STRIDE, |a| a.inc(eax));
        assert_eq!(m.run_to_halt().gpr[RAX], 1);
    }
}
