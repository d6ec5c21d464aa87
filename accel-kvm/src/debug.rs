//! The debugger's breakpoints, watchpoints and single steps under KVM, through KVM's
//! guest-debug interface (KVM_SET_GUEST_DEBUG): the host's debug registers and trap
//! flag, which KVM keeps from the guest, so the guest's own DR0-DR7 stay its own.
//!
//! x86 has four address slots (DR0-DR3), so at most four breakpoints and watchpoints
//! together; a watched range must be 1, 2, 4 or 8 bytes, aligned to its size; a
//! read watchpoint is a read/write one (x86 cannot watch reads alone), and stops at
//! writes as well.

use emu_core::cpu::{dr6, dr7};
use emu_core::engine::{DebugConfig, EngineError, WatchKind, Watchpoint};
use emu_core::exit::DebugStop;
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP,
};

/// Address slots in the debug registers.
const SLOTS: usize = 4;
/// DR7 R/W field: break on instruction execution.
const RW_EXECUTE: u64 = dr7::RW_EXECUTE;
/// DR7 R/W field: break on data writes.
const RW_WRITE: u64 = dr7::RW_WRITE;
/// DR7 R/W field: break on data reads or writes.
const RW_READ_WRITE: u64 = dr7::RW_READ_WRITE;
/// The DR7 LEN field for 1, 2, 8 and 4 bytes, indexed by the field's value.
const LEN_BYTES: [u64; 4] = dr7::LEN_BYTES;
/// DR7 bit enabling slot 0 globally (slot n: bit 2n + 1).
const GLOBAL_ENABLE: u64 = 1 << 1;

/// What a slot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// An instruction at this linear address.
    Breakpoint(u64),
    /// A range of data.
    Watch(Watchpoint),
}

/// The debug registers for one [`DebugConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestDebug {
    slots: Vec<Slot>,
    /// DR0-DR3, then DR6 (unused) and DR7, as kvm_guest_debug_arch lays them out.
    debugreg: [u64; 8],
}

/// What a debug exit means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugHit {
    /// A single step completed one instruction.
    Step,
    /// A breakpoint or watchpoint.
    Stop(DebugStop),
    /// Nothing of the debugger's fired.
    Ignore,
}

impl GuestDebug {
    /// The debug registers for `config`, or why the hardware cannot hold it.
    pub fn new(config: &DebugConfig) -> Result<GuestDebug, EngineError> {
        let unsupported = |what| EngineError::Unsupported {
            engine: "kvm",
            what,
        };
        let slots: Vec<Slot> = config
            .breakpoints
            .iter()
            .map(|&addr| Slot::Breakpoint(addr))
            .chain(config.watchpoints.iter().map(|&w| Slot::Watch(w)))
            .collect();
        if slots.len() > SLOTS {
            return Err(unsupported(
                "hold more than 4 breakpoints and watchpoints together (x86 has 4 debug registers)",
            ));
        }
        let mut debugreg = [0u64; 8];
        let mut control = dr7::FIXED;
        for (i, slot) in slots.iter().enumerate() {
            let (addr, rw, len) = match *slot {
                Slot::Breakpoint(addr) => (addr, RW_EXECUTE, 0),
                Slot::Watch(w) => {
                    let len = LEN_BYTES
                        .iter()
                        .position(|&n| n == w.len)
                        .filter(|_| w.addr % w.len == 0)
                        .ok_or_else(|| {
                            unsupported("watch a range other than 1, 2, 4 or 8 aligned bytes")
                        })?;
                    let rw = match w.kind {
                        WatchKind::Write => RW_WRITE,
                        WatchKind::Read | WatchKind::Access => RW_READ_WRITE,
                    };
                    (w.addr, rw, len as u64)
                }
            };
            debugreg[i] = addr;
            let shift = dr7::RW_SHIFT + dr7::FIELD_BITS * i as u32;
            control |= GLOBAL_ENABLE << (2 * i) | rw << shift | len << (shift + 2);
        }
        debugreg[7] = control;
        Ok(GuestDebug { slots, debugreg })
    }

    /// Whether there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether a breakpoint is at linear address `addr`.
    pub fn breaks_at(&self, addr: u64) -> bool {
        self.slots.contains(&Slot::Breakpoint(addr))
    }

    /// The KVM_SET_GUEST_DEBUG argument: the slots if `armed`, and single steps if
    /// `step`.
    pub fn control(&self, step: bool, armed: bool) -> kvm_guest_debug {
        let armed = armed && !self.is_empty();
        let mut control = 0;
        if armed {
            control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        }
        if step {
            control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        let mut debug = kvm_guest_debug {
            control,
            ..Default::default()
        };
        if armed {
            debug.arch.debugreg = self.debugreg;
        }
        debug
    }

    /// What the debug exit `exit` reports: DR6 says which slot fired, or that a single
    /// step is done.
    pub fn hit(&self, exit: &kvm_debug_exit_arch) -> DebugHit {
        let fired = (0..self.slots.len()).find(|&i| exit.dr6 & (dr6::B0 << i) != 0);
        match fired.map(|i| self.slots[i]) {
            Some(Slot::Breakpoint(addr)) => DebugHit::Stop(DebugStop::Breakpoint { addr }),
            // DR6 does not say whether the access was a read or a write: a watchpoint
            // for writes only saw a write, the others are reported as reads.
            Some(Slot::Watch(w)) => DebugHit::Stop(DebugStop::Watchpoint {
                addr: w.addr,
                len: w.len,
                write: w.kind == WatchKind::Write,
            }),
            None if exit.dr6 & dr6::BS != 0 => DebugHit::Step,
            None => DebugHit::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_laid_out_as_the_sdm_says() {
        let mut config = DebugConfig::default();
        config.breakpoints.insert(0x10_0000);
        config.watchpoints.insert(Watchpoint {
            addr: 0x2000,
            len: 4,
            kind: WatchKind::Write,
        });
        let debug = GuestDebug::new(&config).unwrap();
        assert_eq!(debug.debugreg[0], 0x10_0000);
        assert_eq!(debug.debugreg[1], 0x2000);
        // G0, G1; slot 0 execute, length 1; slot 1 write (01), length 4 (11).
        assert_eq!(debug.debugreg[7], dr7::FIXED | 0b1010 | 0b1101 << 20);
        let step = kvm_debug_exit_arch {
            dr6: dr6::BS,
            ..Default::default()
        };
        assert_eq!(debug.hit(&step), DebugHit::Step);
        let watch = kvm_debug_exit_arch {
            dr6: dr6::B0 << 1,
            ..Default::default()
        };
        assert_eq!(
            debug.hit(&watch),
            DebugHit::Stop(DebugStop::Watchpoint {
                addr: 0x2000,
                len: 4,
                write: true
            })
        );
    }

    #[test]
    fn what_the_hardware_cannot_hold_is_refused() {
        let mut config = DebugConfig::default();
        config.watchpoints.insert(Watchpoint {
            addr: 0x2001,
            len: 4,
            kind: WatchKind::Write,
        });
        assert!(GuestDebug::new(&config).is_err());
        let mut config = DebugConfig::default();
        config.breakpoints.extend([1, 2, 3, 4, 5]);
        assert!(GuestDebug::new(&config).is_err());
    }
}
