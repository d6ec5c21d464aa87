//! The decoded-block cache.
//!
//! A block is a run of decoded instructions that starts at a guest RIP and ends at the
//! first control transfer, at a page boundary, or after [`MAX_BLOCK_OPS`] instructions.
//! It never spans more than the page it starts on (plus the tail of an instruction that
//! straddles into the next page), so a write to a page invalidates exactly the blocks
//! decoded from it.

use super::ctx::{Ctx, PAGE_SHIFT};
use super::mmu::Access;
use super::{dispatch, Fault, Handler};
use crate::cpu::SegReg;
use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};
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
}

/// Copies code bytes from guest-physical memory; outside RAM reads as open bus (0xFF),
/// which decodes to #UD soon enough.
fn copy_code(cx: &Ctx<'_>, pa: u64, out: &mut [u8]) {
    out.fill(0xFF);
    if let Ok(start) = usize::try_from(pa) {
        if start < cx.ram.len() {
            let n = out.len().min(cx.ram.len() - start);
            out[..n].copy_from_slice(&cx.ram[start..start + n]);
        }
    }
}

/// Decoded blocks by key, with the pages they were decoded from.
#[derive(Default)]
pub struct BlockCache {
    blocks: Vec<Option<Block>>,
    free: Vec<u32>,
    map: HashMap<Key, u32>,
    by_page: HashMap<u64, Vec<u32>>,
    fast: Vec<Option<(Key, u32)>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCache({} blocks)", self.map.len())
    }
}

impl BlockCache {
    /// Number of cached blocks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The block at the CPU's current RIP, decoding it if needed. Always inlined: the
    /// run loop's fast path calls it once per block (the debug path calls it too).
    #[inline(always)]
    pub fn lookup_or_build(&mut self, cx: &mut Ctx<'_>) -> Result<&Block, Fault> {
        let rip = cx.cpu.rip;
        let bitness = cx.cpu.code_bitness();
        let lin = cx.cpu.seg[SegReg::Cs as usize].base.wrapping_add(rip);
        let lin = if bitness == 64 {
            lin
        } else {
            lin & 0xFFFF_FFFF
        };
        let user = cx.cpu.cpl() == 3;
        let phys = cx.translate(lin, Access::Exec, user)?;
        let key = Key { rip, phys, bitness };
        if self.fast.is_empty() {
            self.fast = vec![None; FAST_ENTRIES];
        }
        let slot = ((rip ^ (rip >> 12)) as usize) & (FAST_ENTRIES - 1);
        let id = match self.fast[slot] {
            Some((k, id)) if k == key => id,
            _ => {
                let id = match self.map.get(&key) {
                    Some(&id) => id,
                    None => self.build(cx, key, lin, user)?,
                };
                self.fast[slot] = Some((key, id));
                id
            }
        };
        Ok(self.blocks[id as usize]
            .as_ref()
            .expect("fast table and map hold live blocks"))
    }

    fn build(&mut self, cx: &mut Ctx<'_>, key: Key, lin: u64, user: bool) -> Result<u32, Fault> {
        if self.map.len() >= MAX_BLOCKS {
            self.flush(cx);
        }
        let page_end = ((key.phys >> PAGE_SHIFT) + 1) << PAGE_SHIFT;
        let in_page = (page_end - key.phys) as usize;
        // The rest of this page, then the start of the next linear page, for one
        // instruction straddling out of it. The next page may be unmapped: then only an
        // instruction that really needs its bytes faults.
        let next_lin = lin.wrapping_add(in_page as u64);
        let next = cx.translate(next_lin, Access::Exec, user);
        let tail = if next.is_ok() { MAX_INSN_LEN - 1 } else { 0 };
        let mut bytes = vec![0u8; in_page + tail];
        copy_code(cx, key.phys, &mut bytes[..in_page]);
        if let Ok(next_pa) = next {
            copy_code(cx, next_pa, &mut bytes[in_page..]);
        }
        let mut decoder = Decoder::with_ip(key.bitness, &bytes, key.rip, DecoderOptions::NONE);
        let mut ops = Vec::new();
        let mut pages = vec![key.phys >> PAGE_SHIFT];
        while ops.len() < MAX_BLOCK_OPS && (decoder.position() as usize) < in_page {
            let ins = decoder.decode();
            if decoder.last_error() == DecoderError::NoMoreBytes {
                // It runs into the unmapped next page: the fetch faults there, when
                // execution gets to it.
                match next {
                    Err(fault) if ops.is_empty() => return Err(fault),
                    _ => break,
                }
            }
            let straddles = decoder.position() > in_page;
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
            if ins.is_invalid() || ins.flow_control() != FlowControl::Next {
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
        });
        self.map.insert(key, id);
        for page in pages {
            self.by_page.entry(page).or_default().push(id);
            if let Some(mut bit) = cx.code_pages.get_mut(page as usize) {
                *bit = true;
            }
        }
        Ok(id)
    }

    /// Drops the blocks decoded from pages the guest wrote (self-modifying code).
    pub fn invalidate_written(&mut self, cx: &mut Ctx<'_>) {
        for page in std::mem::take(&mut cx.smc_pages) {
            for id in self.by_page.remove(&page).unwrap_or_default() {
                if let Some(block) = self.blocks[id as usize].take() {
                    self.map.remove(&block.key);
                    self.free.push(id);
                }
            }
            if let Some(mut bit) = cx.code_pages.get_mut(page as usize) {
                *bit = false;
            }
        }
        self.fast.iter_mut().for_each(|e| *e = None);
    }

    fn flush(&mut self, cx: &mut Ctx<'_>) {
        *self = BlockCache {
            fast: vec![None; FAST_ENTRIES],
            ..BlockCache::default()
        };
        cx.code_pages.fill(false);
    }
}
