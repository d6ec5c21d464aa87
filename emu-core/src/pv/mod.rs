//! Para-virtualization: the VMM side of Popek's guest ABI (`docs/guest-abi.md`).
//!
//! A guest that knows it runs under Popek (CPUID leaf 0x4000_0000) writes the address
//! of a free page to [`abi::MSR_HYPERCALL_PAGE`]; the VMM fills it with one stub per
//! hypercall, `mov eax, NR; <trap>; ret`, and the guest calls the stubs instead of
//! running privileged instructions. Which trap instruction the stubs hold is the
//! engine's business ([`HypercallTrap`]): the page is rewritten when the machine moves
//! to another engine, and guests never hard-code the trap. That is the lesson of the
//! page.
//!
//! [`Pv`] holds what the guest registered (pages, callback, timer) and the counters;
//! [`hypercall`] does the work of each call, [`mmu`] validates page-table updates.

pub mod abi;
mod guest;
mod hypercall;
mod mmu;

pub use guest::GuestMem;
pub use hypercall::{Outcome, PvHost};

use crate::memory::{CodeWatch, RamView, PAGE_SIZE};
use serde::{Deserialize, Serialize};

/// The instruction a hypercall stub traps to the VMM with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallTrap {
    /// VMCALL (0F 01 C1): what the interpreter (and the binary translator) see as a
    /// hypercall, the instruction VT-x exits on.
    Vmcall,
    /// `out HYPERCALL_PORT, eax; nop` (E7 ib 90): KVM runs VMCALL inside the host
    /// kernel and never shows it to user space, while an OUT to a port nobody in the
    /// kernel claims comes out of KVM_RUN as an I/O exit — the cheapest exit to
    /// Popek's user-space VMM there is.
    PortOut,
}

impl HypercallTrap {
    /// The three bytes of the trap, both forms being as long so that a stub keeps its
    /// layout (and a vCPU stopped inside it its place) across an engine switch.
    pub fn bytes(self) -> [u8; 3] {
        match self {
            HypercallTrap::Vmcall => [0x0F, 0x01, 0xC1],
            HypercallTrap::PortOut => [0xE7, abi::HYPERCALL_PORT, 0x90],
        }
    }
}

/// MOV EAX, imm32.
const MOV_EAX_IMM32: u8 = 0xB8;
/// RET (near).
const RET: u8 = 0xC3;
/// INT3: what fills the rest of each stub, so a jump into its middle stops loudly.
const INT3: u8 = 0xCC;

/// The stub of hypercall `nr`: `mov eax, nr; <trap>; ret`, padded with INT3.
pub fn stub(nr: u32, trap: HypercallTrap) -> [u8; abi::STUB_SIZE] {
    let mut s = [INT3; abi::STUB_SIZE];
    s[0] = MOV_EAX_IMM32;
    s[1..5].copy_from_slice(&nr.to_le_bytes());
    s[5..8].copy_from_slice(&trap.bytes());
    s[8] = RET;
    s
}

/// Hypercalls counted by number, and their failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HypercallCount {
    /// Calls.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
}

/// What the para-virtualization side of the VMM counts. Bounded whatever the guest
/// does: unknown numbers share one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvCounters {
    /// By hypercall number; the last slot counts every unknown number.
    pub hypercalls: [HypercallCount; abi::HC_COUNT as usize + 1],
    /// Events delivered through the guest's callback.
    pub callbacks: u64,
    /// Stub pages written (registration, and rewrites on engine switches).
    pub stub_fills: u64,
}

impl PvCounters {
    /// The slot hypercall `nr` counts in.
    fn slot(&mut self, nr: u32) -> &mut HypercallCount {
        let i = (nr as usize).min(abi::HC_COUNT as usize);
        &mut self.hypercalls[i]
    }

    /// All hypercalls.
    pub fn total(&self) -> u64 {
        self.hypercalls.iter().map(|c| c.calls).sum()
    }

    /// All hypercalls that failed.
    pub fn errors(&self) -> u64 {
        self.hypercalls.iter().map(|c| c.errors).sum()
    }

    /// (name, count) of every hypercall slot that was used, in number order.
    pub fn by_name(&self) -> impl Iterator<Item = (&'static str, HypercallCount)> + '_ {
        self.hypercalls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.calls > 0)
            .map(|(nr, c)| (abi::name(nr as u32), *c))
    }
}

/// What a para-virtualized guest registered with the VMM (saved in snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pv {
    /// Guest-physical address of the hypercall page, once registered.
    pub hypercall_page: Option<u64>,
    /// Guest-physical address of the shared-info page, once registered.
    pub shared_info: Option<u64>,
    /// Linear address of the event callback, once registered.
    pub callback: Option<u32>,
    /// Virtual time (ns) at which the one-shot timer expires, if armed.
    pub timer_deadline: Option<u64>,
    /// The trap the current engine's stubs use: the engine's, not the guest's, so not
    /// saved.
    #[serde(skip)]
    pub trap: Option<HypercallTrap>,
}

impl Pv {
    /// The engine changed: its stubs use `trap`. A registered page is rewritten.
    pub fn set_trap(
        &mut self,
        trap: HypercallTrap,
        ram: RamView<'_>,
        code: &CodeWatch,
        counters: &mut PvCounters,
    ) {
        self.trap = Some(trap);
        if let Some(page) = self.hypercall_page {
            self.fill_stubs(page, ram, code, counters);
        }
    }

    /// RDMSR/WRMSR of [`abi::MSR_HYPERCALL_PAGE`]: false if the access must #GP.
    pub fn msr(
        &mut self,
        write: bool,
        value: &mut u64,
        ram: RamView<'_>,
        code: &CodeWatch,
        counters: &mut PvCounters,
    ) -> bool {
        if !write {
            *value = self.hypercall_page.unwrap_or(0);
            return true;
        }
        let page = *value;
        if page == 0 {
            self.hypercall_page = None;
            return true;
        }
        let in_ram = page
            .checked_add(PAGE_SIZE as u64)
            .is_some_and(|end| end <= ram.len() as u64);
        if !page.is_multiple_of(PAGE_SIZE as u64) || !in_ram {
            return false;
        }
        self.hypercall_page = Some(page);
        self.fill_stubs(page, ram, code, counters);
        true
    }

    /// Writes one stub per hypercall at the start of `page`.
    fn fill_stubs(&self, page: u64, ram: RamView<'_>, code: &CodeWatch, counters: &mut PvCounters) {
        let trap = self.trap.unwrap_or(HypercallTrap::Vmcall);
        let mut bytes = Vec::with_capacity(abi::HC_COUNT as usize * abi::STUB_SIZE);
        for nr in 0..abi::HC_COUNT {
            bytes.extend_from_slice(&stub(nr, trap));
        }
        // The page was checked to lie in RAM when it was registered.
        if ram.write(page, &bytes) {
            code.cpu_write(page, bytes.len());
        }
        counters.stub_fills += 1;
    }
}

// The stubs and the IDT share the page.
const _: () = assert!(abi::HC_COUNT as u64 * abi::STUB_SIZE as u64 <= abi::IDT_OFFSET);
const _: () = assert!(abi::IDT_OFFSET + abi::IDT_SIZE <= PAGE_SIZE as u64);

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    #[test]
    fn stubs_decode_to_mov_trap_ret_on_every_engine() {
        for (trap, want) in [
            (HypercallTrap::Vmcall, Mnemonic::Vmcall),
            (HypercallTrap::PortOut, Mnemonic::Out),
        ] {
            let s = stub(7, trap);
            let mut d = Decoder::with_ip(32, &s, 0, DecoderOptions::NONE);
            let mov = d.decode();
            assert_eq!((mov.mnemonic(), mov.immediate32()), (Mnemonic::Mov, 7));
            assert_eq!(d.decode().mnemonic(), want);
            if trap == HypercallTrap::PortOut {
                assert_eq!(d.decode().mnemonic(), Mnemonic::Nop);
            }
            // RET at the same offset whichever the trap.
            assert_eq!(d.ip(), 8);
            assert_eq!(d.decode().mnemonic(), Mnemonic::Ret);
            assert_eq!(d.decode().mnemonic(), Mnemonic::Int3);
        }
    }
}
