//! The local APIC of the one processor, in xAPIC mode: its 4 KiB register page at the
//! APIC base (0xFEE0_0000 at reset), reached through the MMIO bus (Intel SDM Vol. 3A,
//! chapter 11).
//!
//! # What it does
//! ID, version, TPR and the priorities it implies (PPR, APR), EOI, LDR and DFR, the
//! spurious-interrupt vector register with the software enable, ISR, TMR and IRR, the
//! error status register, the interrupt command register (fixed IPIs to this processor:
//! the self shorthand, "all including self", or a destination that names it), and the
//! local vector table: the timer (one-shot and periodic, with the divide configuration
//! register), LINT0 (ExtINT: the 8259A's "virtual wire"), LINT1, error, thermal and
//! performance counters (the last two never fire: there is no sensor and no counter).
//!
//! # What it does not
//! x2APIC and the TSC-deadline timer mode are not advertised by CPUID, so their bits are
//! reserved here. IPIs other than fixed and lowest-priority ones (NMI, SMI, INIT,
//! start-up) have no second processor to go to; sent to this one they are dropped.
//! Every source here is edge-triggered, so the TMR stays clear.
//!
//! # Time
//! Like the PIT, the device reads no host clock: the VMM calls [`LocalApic::advance`]
//! with virtual time (nanoseconds) before it dispatches an access and whenever it checks
//! for interrupts. The timer counts the bus clock, 1 GHz (QEMU's choice), through the
//! divider.
//!
//! # Who calls what
//! The VMM asks [`LocalApic::has_interrupt`] and [`LocalApic::acknowledge`] before the
//! 8259A, whose INTR reaches the processor only while [`LocalApic::accepts_pic`] (LINT0
//! unmasked in ExtINT mode, or the APIC globally disabled); the processor's
//! IA32_APIC_BASE writes reach [`LocalApic::set_base_msr`].

use serde::{Deserialize, Serialize};

use crate::bus::{BusDevice, DeviceRequest, OPEN_BUS};

/// The register page's size.
pub const PAGE_SIZE: u64 = 0x1000;
/// The APIC base at reset (IA32_APIC_BASE bits 12 and up).
pub const DEFAULT_BASE: u64 = 0xFEE0_0000;

/// Local APIC ID (bits 24-31).
pub const ID: u64 = 0x20;
/// Version: 0x14 (an integrated APIC), max LVT entry 5 (bits 16-23).
pub const VERSION: u64 = 0x30;
/// Task priority.
pub const TPR: u64 = 0x80;
/// Arbitration priority (read-only).
pub const APR: u64 = 0x90;
/// Processor priority (read-only).
pub const PPR: u64 = 0xA0;
/// End of interrupt (write-only).
pub const EOI: u64 = 0xB0;
/// Remote read (read-only; the P6 remote read is not supported).
pub const RRD: u64 = 0xC0;
/// Logical destination (bits 24-31).
pub const LDR: u64 = 0xD0;
/// Destination format (bits 28-31: flat 1111, cluster 0000).
pub const DFR: u64 = 0xE0;
/// Spurious-interrupt vector: vector, software enable (bit 8), focus check (bit 9).
pub const SVR: u64 = 0xF0;
/// In-service register, eight 32-bit words 16 bytes apart.
pub const ISR: u64 = 0x100;
/// Trigger-mode register, likewise.
pub const TMR: u64 = 0x180;
/// Interrupt-request register, likewise.
pub const IRR: u64 = 0x200;
/// Error status: a write latches the errors seen since the last one.
pub const ESR: u64 = 0x280;
/// Interrupt command, low half: a write sends.
pub const ICR_LOW: u64 = 0x300;
/// Interrupt command, high half: the destination (bits 24-31).
pub const ICR_HIGH: u64 = 0x310;
/// LVT: timer.
pub const LVT_TIMER: u64 = 0x320;
/// LVT: thermal sensor.
pub const LVT_THERMAL: u64 = 0x330;
/// LVT: performance-monitoring counters.
pub const LVT_PERF: u64 = 0x340;
/// LVT: LINT0 pin.
pub const LVT_LINT0: u64 = 0x350;
/// LVT: LINT1 pin.
pub const LVT_LINT1: u64 = 0x360;
/// LVT: error.
pub const LVT_ERROR: u64 = 0x370;
/// Timer initial count: a write (re)starts the timer.
pub const TIMER_INITIAL: u64 = 0x380;
/// Timer current count (read-only).
pub const TIMER_CURRENT: u64 = 0x390;
/// Timer divide configuration (bits 0, 1 and 3).
pub const TIMER_DIVIDE: u64 = 0x3E0;

/// The version register's value: version 0x14, LVT entries 0-5.
pub const VERSION_VALUE: u32 = 0x0005_0014;
/// SVR bit: the APIC is software-enabled.
pub const SVR_ENABLE: u32 = 1 << 8;
/// SVR's writable bits: the vector, the enable and focus-processor checking.
const SVR_WRITABLE: u32 = 0x3FF;
/// An LVT entry's mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// An LVT entry's delivery-status bit (read-only, always idle here).
const LVT_VECTOR: u32 = 0xFF;
/// The LVT timer's periodic-mode bit (bit 18, TSC-deadline, is reserved).
pub const TIMER_PERIODIC: u32 = 1 << 17;
/// LVT delivery mode field (LINT0, LINT1, thermal, perf).
const DELIVERY_MODE: u32 = 7 << 8;
/// Delivery mode: ExtINT, the 8259A's vector.
pub const MODE_EXTINT: u32 = 7 << 8;
/// Delivery mode: NMI.
pub const MODE_NMI: u32 = 4 << 8;
/// Writable bits of each LVT entry, in the order of [`LVT_OFFSETS`]: timer (vector,
/// mask, periodic), thermal and perf (vector, mode, mask), LINT0 and LINT1 (vector,
/// mode, polarity, trigger, mask), error (vector, mask).
const LVT_WRITABLE: [u32; 6] = [
    LVT_VECTOR | LVT_MASKED | TIMER_PERIODIC,
    LVT_VECTOR | DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | DELIVERY_MODE | 1 << 13 | 1 << 15 | LVT_MASKED,
    LVT_VECTOR | DELIVERY_MODE | 1 << 13 | 1 << 15 | LVT_MASKED,
    LVT_VECTOR | LVT_MASKED,
];
/// The LVT registers, in the order of [`LocalApicState::lvt`].
const LVT_OFFSETS: [u64; 6] = [
    LVT_TIMER,
    LVT_THERMAL,
    LVT_PERF,
    LVT_LINT0,
    LVT_LINT1,
    LVT_ERROR,
];
/// Index of the timer in [`LVT_OFFSETS`].
const LVT_TIMER_INDEX: usize = 0;
/// Index of LINT0 in [`LVT_OFFSETS`].
const LVT_LINT0_INDEX: usize = 3;
/// Index of the error entry in [`LVT_OFFSETS`].
const LVT_ERROR_INDEX: usize = 5;

/// ICR delivery mode: fixed.
const ICR_FIXED: u32 = 0;
/// ICR delivery mode: lowest priority (one processor: this one).
const ICR_LOWEST: u32 = 1 << 8;
/// ICR destination mode: logical.
const ICR_LOGICAL: u32 = 1 << 11;
/// ICR's writable bits: vector, delivery and destination mode, level, trigger,
/// shorthand (delivery status, bit 12, reads as idle: delivery is instant).
const ICR_WRITABLE: u32 = 0xFF | DELIVERY_MODE | ICR_LOGICAL | 1 << 14 | 1 << 15 | 3 << 18;
/// ICR destination shorthand (bits 18-19).
const ICR_SHORTHAND_SHIFT: u32 = 18;

/// ESR bit: an IPI was sent with an illegal vector (0-15).
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit: an interrupt with an illegal vector (0-15) was received.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit: an access to a register that does not exist.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// The divide configuration's bits (0, 1 and 3).
const DIVIDE_BITS: u32 = 0b1011;
/// DFR's fixed bits: 0-27 read as ones.
const DFR_FIXED: u32 = 0x0FFF_FFFF;

/// The local APIC's registers, plain data that serializes (a snapshot keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalApicState {
    /// IA32_APIC_BASE as the processor last wrote it (base, global enable, BSP).
    pub base_msr: u64,
    /// The ID register.
    pub id: u32,
    /// Task priority (bits 0-7).
    pub tpr: u32,
    /// Logical destination.
    pub ldr: u32,
    /// Destination format (bits 28-31).
    pub dfr: u32,
    /// Spurious-interrupt vector register.
    pub svr: u32,
    /// In service, bit n for vector n.
    pub isr: [u32; 8],
    /// Trigger mode (level), bit n for vector n.
    pub tmr: [u32; 8],
    /// Requested, bit n for vector n.
    pub irr: [u32; 8],
    /// The error status as last latched (what reads return).
    pub esr: u32,
    /// Errors seen since the last latch.
    pub esr_pending: u32,
    /// ICR low and high.
    pub icr: [u32; 2],
    /// The local vector table: timer, thermal, perf, LINT0, LINT1, error.
    pub lvt: [u32; 6],
    /// The timer's initial count.
    pub timer_initial: u32,
    /// The divide configuration register.
    pub timer_divide: u32,
    /// When the timer's count was last loaded (a write of the initial count, or a
    /// periodic reload), in virtual nanoseconds.
    pub timer_loaded_ns: u64,
    /// The one-shot count reached zero (it then reads zero until reloaded).
    pub timer_expired: bool,
    /// Virtual time as the device last saw it.
    pub now_ns: u64,
}

/// Why a [`LocalApicState`] cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalApicStateError {
    /// A register holds bits the hardware cannot hold.
    #[error("local APIC register {offset:#x} holds {value:#x}, which has reserved bits set")]
    Reserved {
        /// The register's offset.
        offset: u64,
        /// Its value in the state.
        value: u64,
    },
    /// The timer was loaded after the device's own time.
    #[error("local APIC timer loaded at {loaded_ns} ns, after the device's time {now_ns} ns")]
    LoadedInFuture {
        /// The load time.
        loaded_ns: u64,
        /// The device's time.
        now_ns: u64,
    },
}

impl Default for LocalApicState {
    /// The APIC as the processor's reset and PC firmware leave it: enabled in
    /// IA32_APIC_BASE, software-disabled, every LVT entry masked but LINT0, which is
    /// the 8259A's virtual wire (ExtINT), and LINT1, the NMI input.
    fn default() -> Self {
        LocalApicState {
            base_msr: DEFAULT_BASE | BASE_MSR_ENABLE | BASE_MSR_BSP,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: [0; 2],
            lvt: [
                LVT_MASKED,
                LVT_MASKED,
                LVT_MASKED,
                MODE_EXTINT,
                MODE_NMI,
                LVT_MASKED,
            ],
            timer_initial: 0,
            timer_divide: 0,
            timer_loaded_ns: 0,
            timer_expired: false,
            now_ns: 0,
        }
    }
}

/// IA32_APIC_BASE: the global enable.
pub const BASE_MSR_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: bootstrap processor.
pub const BASE_MSR_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE: the page frame.
pub const BASE_MSR_FRAME: u64 = !0xFFF;

/// The local APIC.
#[derive(Debug, Default)]
pub struct LocalApic {
    s: LocalApicState,
}

/// The highest set bit of a 256-bit register, as a vector.
fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find_map(|word| {
        let w = bits[word];
        (w != 0).then(|| (word * 32 + 31 - w.leading_zeros() as usize) as u8)
    })
}

fn set_bit(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector / 32)] |= 1 << (vector % 32);
}

fn clear_bit(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector / 32)] &= !(1 << (vector % 32));
}

/// The priority class of a vector or priority register (bits 4-7).
fn class(v: u32) -> u32 {
    v & 0xF0
}

impl LocalApic {
    /// The APIC at reset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its registers.
    pub fn state(&self) -> LocalApicState {
        self.s.clone()
    }

    /// An APIC holding `state`, after checking it.
    pub fn from_state(state: &LocalApicState) -> Result<Self, LocalApicStateError> {
        let reserved = |offset: u64, value: u64, allowed: u64| {
            if value & !allowed != 0 {
                Err(LocalApicStateError::Reserved { offset, value })
            } else {
                Ok(())
            }
        };
        let s = state;
        reserved(
            0,
            s.base_msr,
            BASE_MSR_FRAME & ((1 << 40) - 1) | BASE_MSR_ENABLE | BASE_MSR_BSP,
        )?;
        reserved(ID, s.id.into(), 0xFF00_0000)?;
        reserved(TPR, s.tpr.into(), 0xFF)?;
        reserved(LDR, s.ldr.into(), 0xFF00_0000)?;
        if s.dfr & DFR_FIXED != DFR_FIXED {
            return Err(LocalApicStateError::Reserved {
                offset: DFR,
                value: s.dfr.into(),
            });
        }
        reserved(SVR, s.svr.into(), SVR_WRITABLE.into())?;
        reserved(ESR, (s.esr | s.esr_pending).into(), 0xEC)?;
        reserved(ICR_LOW, s.icr[0].into(), ICR_WRITABLE.into())?;
        reserved(ICR_HIGH, s.icr[1].into(), 0xFF00_0000)?;
        for ((&offset, &value), &writable) in LVT_OFFSETS.iter().zip(&s.lvt).zip(&LVT_WRITABLE) {
            reserved(offset, value.into(), writable.into())?;
        }
        reserved(TIMER_DIVIDE, s.timer_divide.into(), DIVIDE_BITS.into())?;
        if s.timer_loaded_ns > s.now_ns {
            return Err(LocalApicStateError::LoadedInFuture {
                loaded_ns: s.timer_loaded_ns,
                now_ns: s.now_ns,
            });
        }
        Ok(LocalApic { s: s.clone() })
    }

    /// The guest-physical base of the register page.
    pub fn base(&self) -> u64 {
        self.s.base_msr & BASE_MSR_FRAME
    }

    /// The processor wrote IA32_APIC_BASE (checked by the processor): a new base, or
    /// the global enable turned on or off. Turning it off resets the APIC's registers,
    /// as the SDM says (11.4.3), keeping only what the MSR holds.
    pub fn set_base_msr(&mut self, value: u64) {
        let was_enabled = self.globally_enabled();
        self.s.base_msr = value;
        if was_enabled && !self.globally_enabled() {
            self.s = LocalApicState {
                base_msr: value,
                now_ns: self.s.now_ns,
                lvt: [LVT_MASKED; 6],
                ..LocalApicState::default()
            };
        }
    }

    fn globally_enabled(&self) -> bool {
        self.s.base_msr & BASE_MSR_ENABLE != 0
    }

    fn software_enabled(&self) -> bool {
        self.globally_enabled() && self.s.svr & SVR_ENABLE != 0
    }

    /// Whether the 8259A's INTR reaches the processor: through LINT0 in ExtINT mode
    /// when it is unmasked (the virtual wire), or directly with the APIC off.
    pub fn accepts_pic(&self) -> bool {
        let lint0 = self.s.lvt[LVT_LINT0_INDEX];
        !self.globally_enabled()
            || (lint0 & LVT_MASKED == 0 && lint0 & DELIVERY_MODE == MODE_EXTINT)
    }

    /// The processor priority: the task priority, or the class of the highest vector in
    /// service if that is higher.
    fn ppr(&self) -> u32 {
        let isrv = highest(&self.s.isr).map_or(0, u32::from);
        if class(self.s.tpr) >= class(isrv) {
            self.s.tpr
        } else {
            class(isrv)
        }
    }

    /// The arbitration priority (SDM 11.6.2.1 for the P6 family and later).
    fn apr(&self) -> u32 {
        let isrv = highest(&self.s.isr).map_or(0, u32::from);
        let irrv = highest(&self.s.irr).map_or(0, u32::from);
        if class(self.s.tpr) >= class(irrv) && class(self.s.tpr) > class(isrv) {
            self.s.tpr
        } else {
            class(self.s.tpr).max(class(isrv)).max(class(irrv))
        }
    }

    /// The highest requested vector, if its class is above the processor priority.
    fn deliverable(&self) -> Option<u8> {
        let v = highest(&self.s.irr)?;
        (class(v.into()) > class(self.ppr())).then_some(v)
    }

    /// Whether the APIC has an interrupt for the processor.
    pub fn has_interrupt(&self) -> bool {
        self.globally_enabled() && self.deliverable().is_some()
    }

    /// The processor's interrupt acknowledge: the vector moves from IRR to ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if !self.globally_enabled() {
            return None;
        }
        let v = self.deliverable()?;
        clear_bit(&mut self.s.irr, v);
        set_bit(&mut self.s.isr, v);
        Some(v)
    }

    /// A fixed interrupt with `vector` arrives (from the LVT or an IPI).
    fn accept(&mut self, vector: u8) {
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
        } else {
            set_bit(&mut self.s.irr, vector);
        }
    }

    /// Records an error, and signals it through the error LVT entry if unmasked.
    fn error(&mut self, bit: u32) {
        self.s.esr_pending |= bit;
        let lvt = self.s.lvt[LVT_ERROR_INDEX];
        if lvt & LVT_MASKED == 0 {
            // An illegal vector here is itself an error, and would recurse: drop it.
            let vector = (lvt & LVT_VECTOR) as u8;
            if vector >= 16 {
                set_bit(&mut self.s.irr, vector);
            }
        }
    }

    /// The timer's divisor as a shift: 2, 4, ... 128 from divide values 0-6, 1 from 7.
    fn divide_shift(&self) -> u32 {
        let d = self.s.timer_divide;
        let value = (d & 3) | ((d >> 1) & 4);
        (value + 1) & 7
    }

    /// The length of one count of the timer, in nanoseconds: the divisor, as the bus
    /// clock ticks once a nanosecond.
    fn tick_ns(&self) -> u64 {
        1 << self.divide_shift()
    }

    /// The time the count reaches zero next (the end of the period), if running.
    fn timer_deadline(&self) -> Option<u64> {
        if self.s.timer_initial == 0 || self.s.timer_expired {
            return None;
        }
        let period = u64::from(self.s.timer_initial) * self.tick_ns();
        self.s.timer_loaded_ns.checked_add(period)
    }

    /// When the timer next raises its interrupt (its vector, unmasked) or reloads: lets
    /// the VMM fast-forward a halted processor.
    pub fn next_timer_ns(&self) -> Option<u64> {
        let deadline = self.timer_deadline()?;
        let lvt = self.s.lvt[LVT_TIMER_INDEX];
        (lvt & LVT_MASKED == 0 && self.globally_enabled()).then_some(deadline)
    }

    /// Advances the timer to virtual time `now_ns`, raising its interrupt if the count
    /// reached zero meanwhile (periodic expiries in between merge into one request).
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.s.now_ns {
            return;
        }
        self.s.now_ns = now_ns;
        let Some(deadline) = self.timer_deadline() else {
            return;
        };
        if now_ns < deadline {
            return;
        }
        let lvt = self.s.lvt[LVT_TIMER_INDEX];
        if lvt & TIMER_PERIODIC != 0 {
            let period = deadline - self.s.timer_loaded_ns;
            let periods = (now_ns - self.s.timer_loaded_ns) / period;
            self.s.timer_loaded_ns += periods * period;
        } else {
            self.s.timer_expired = true;
        }
        if lvt & LVT_MASKED == 0 && self.globally_enabled() {
            self.accept((lvt & LVT_VECTOR) as u8);
        }
    }

    /// The timer's current count.
    fn current_count(&self) -> u32 {
        if self.timer_deadline().is_none() {
            return 0;
        }
        let elapsed = (self.s.now_ns - self.s.timer_loaded_ns) / self.tick_ns();
        u64::from(self.s.timer_initial)
            .saturating_sub(elapsed)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Sends the IPI the ICR describes.
    fn send_ipi(&mut self) {
        let [low, high] = self.s.icr;
        let vector = (low & LVT_VECTOR) as u8;
        let mode = low & DELIVERY_MODE;
        let to_self = match (low >> ICR_SHORTHAND_SHIFT) & 3 {
            0 => self.is_destination(high >> 24, low & ICR_LOGICAL != 0),
            1 | 2 => true,
            _ => false,
        };
        if mode != ICR_FIXED && mode != ICR_LOWEST {
            // NMI, SMI, INIT, start-up: for other processors, which there are not.
            return;
        }
        if vector < 16 {
            self.error(ESR_SEND_ILLEGAL_VECTOR);
        } else if to_self {
            self.accept(vector);
        }
    }

    /// Whether an IPI's destination field names this processor.
    fn is_destination(&self, dest: u32, logical: bool) -> bool {
        if !logical {
            return dest == 0xFF || dest == self.s.id >> 24;
        }
        let ldr = self.s.ldr >> 24;
        if dest == 0xFF {
            return true;
        }
        if self.s.dfr >> 28 == 0xF {
            // Flat model: a bit per processor.
            dest & ldr != 0
        } else {
            // Cluster model: the cluster in the high nibble, a bit in the low one.
            dest >> 4 == ldr >> 4 && dest & ldr & 0xF != 0
        }
    }

    /// The 32-bit register at `offset` (16-byte aligned), if it exists and is readable.
    fn read_register(&self, offset: u64) -> Option<u32> {
        let s = &self.s;
        let word = |base: u64| ((offset - base) / 0x10) as usize;
        Some(match offset {
            ID => s.id,
            VERSION => VERSION_VALUE,
            // Write-only, and the P6 remote read that is gone: both read as zero.
            EOI | RRD => 0,
            TPR => s.tpr,
            APR => self.apr(),
            PPR => self.ppr(),
            LDR => s.ldr,
            DFR => s.dfr,
            SVR => s.svr,
            0x100..=0x170 => s.isr[word(ISR)],
            0x180..=0x1F0 => s.tmr[word(TMR)],
            0x200..=0x270 => s.irr[word(IRR)],
            ESR => s.esr,
            ICR_LOW => s.icr[0],
            ICR_HIGH => s.icr[1],
            TIMER_INITIAL => s.timer_initial,
            TIMER_CURRENT => self.current_count(),
            TIMER_DIVIDE => s.timer_divide,
            _ => {
                let i = LVT_OFFSETS.iter().position(|&o| o == offset)?;
                s.lvt[i]
            }
        })
    }

    /// Writes the 32-bit register at `offset`; false if it is not writable.
    fn write_register(&mut self, offset: u64, v: u32) -> bool {
        match offset {
            ID => self.s.id = v & 0xFF00_0000,
            TPR => self.s.tpr = v & 0xFF,
            EOI => {
                if let Some(vector) = highest(&self.s.isr) {
                    clear_bit(&mut self.s.isr, vector);
                    clear_bit(&mut self.s.tmr, vector);
                }
            }
            LDR => self.s.ldr = v & 0xFF00_0000,
            DFR => self.s.dfr = v | DFR_FIXED,
            SVR => {
                self.s.svr = v & SVR_WRITABLE;
                if v & SVR_ENABLE == 0 {
                    // Software-disabled: every LVT entry is masked (SDM 11.4.7.2).
                    for entry in &mut self.s.lvt {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            ESR => self.s.esr = std::mem::take(&mut self.s.esr_pending),
            ICR_LOW => {
                self.s.icr[0] = v & ICR_WRITABLE;
                self.send_ipi();
            }
            ICR_HIGH => self.s.icr[1] = v & 0xFF00_0000,
            TIMER_INITIAL => {
                self.s.timer_initial = v;
                self.s.timer_loaded_ns = self.s.now_ns;
                self.s.timer_expired = false;
            }
            TIMER_DIVIDE => {
                // The count goes on from where it is, at the new rate.
                let left = self.current_count();
                let running = self.timer_deadline().is_some();
                self.s.timer_divide = v & DIVIDE_BITS;
                if running {
                    let done = u64::from(self.s.timer_initial - left) * self.tick_ns();
                    self.s.timer_loaded_ns = self.s.now_ns.saturating_sub(done);
                }
            }
            _ => {
                let Some(i) = LVT_OFFSETS.iter().position(|&o| o == offset) else {
                    return false;
                };
                let mut entry = v & LVT_WRITABLE[i];
                if !self.software_enabled() {
                    entry |= LVT_MASKED;
                }
                self.s.lvt[i] = entry;
            }
        }
        true
    }
}

impl BusDevice for LocalApic {
    /// Registers are 32 bits wide at 16-byte-aligned offsets; a narrower read inside one
    /// gets its bytes, bytes 4-15 of each slot read as zeros.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let slot = offset & !0xF;
        let Some(value) = self.read_register(slot) else {
            self.error(ESR_ILLEGAL_REGISTER);
            data.fill(OPEN_BUS);
            return;
        };
        let wide = u128::from(value).to_le_bytes();
        let at = (offset & 0xF) as usize;
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = wide.get(at + i).copied().unwrap_or(0);
        }
    }

    /// Only aligned 32-bit writes reach a register (the SDM requires them; others are
    /// dropped).
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if offset & 0xF != 0 || data.len() != 4 {
            return None;
        }
        let value = u32::from_le_bytes(data.try_into().unwrap_or([0; 4]));
        if !self.write_register(offset, value) {
            self.error(ESR_ILLEGAL_REGISTER);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_test::{state_proptests, Restorable};
    use proptest::prelude::*;

    fn read(apic: &mut LocalApic, offset: u64) -> u32 {
        let mut data = [0; 4];
        apic.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(apic: &mut LocalApic, offset: u64, value: u32) {
        apic.write(offset, &value.to_le_bytes());
    }

    /// An APIC software-enabled with spurious vector 0xFF.
    fn enabled() -> LocalApic {
        let mut apic = LocalApic::new();
        write(&mut apic, SVR, SVR_ENABLE | 0xFF);
        apic
    }

    #[test]
    fn reset_values_are_the_sdms_and_firmwares() {
        let mut apic = LocalApic::new();
        assert_eq!(read(&mut apic, VERSION), 0x0005_0014);
        assert_eq!(read(&mut apic, SVR), 0xFF);
        assert_eq!(read(&mut apic, DFR), u32::MAX);
        assert_eq!(read(&mut apic, LVT_TIMER), LVT_MASKED);
        assert_eq!(read(&mut apic, LVT_LINT0), MODE_EXTINT);
        assert!(apic.accepts_pic(), "the virtual wire is open");
        assert_eq!(apic.base(), DEFAULT_BASE);
    }

    #[test]
    fn a_self_ipi_is_requested_served_and_ended_by_priority() {
        let mut apic = enabled();
        write(&mut apic, ICR_LOW, 1 << ICR_SHORTHAND_SHIFT | 0x40);
        write(&mut apic, ICR_LOW, 1 << ICR_SHORTHAND_SHIFT | 0x41);
        assert_eq!(
            read(&mut apic, IRR + 0x20),
            0b11,
            "vectors 0x40, 0x41 in IRR"
        );
        write(&mut apic, TPR, 0x40);
        assert!(!apic.has_interrupt(), "class 4 is not above TPR class 4");
        write(&mut apic, TPR, 0x30);
        assert_eq!(apic.acknowledge(), Some(0x41));
        assert_eq!(read(&mut apic, PPR), 0x40, "class of 0x41 in service");
        assert_eq!(read(&mut apic, ISR + 0x20), 0b10);
        assert!(!apic.has_interrupt(), "0x40 waits for the EOI");
        write(&mut apic, EOI, 0);
        assert_eq!(apic.acknowledge(), Some(0x40));
        write(&mut apic, EOI, 0);
        assert_eq!(read(&mut apic, ISR + 0x20), 0);
        assert_eq!(read(&mut apic, PPR), 0x30);
    }

    #[test]
    fn physical_and_logical_destinations_name_this_processor() {
        let mut apic = enabled();
        write(&mut apic, ICR_HIGH, 0);
        write(&mut apic, ICR_LOW, 0x50);
        write(&mut apic, LDR, 0x0100_0000);
        write(&mut apic, ICR_HIGH, 0x0200_0000);
        write(&mut apic, ICR_LOW, ICR_LOGICAL | 0x60);
        write(&mut apic, ICR_HIGH, 0x0300_0000);
        write(&mut apic, ICR_LOW, ICR_LOGICAL | 0x70);
        write(&mut apic, ICR_LOW, 3 << ICR_SHORTHAND_SHIFT | 0x80);
        assert_eq!(read(&mut apic, IRR + 0x20), 1 << 16, "0x50 to ID 0");
        assert_eq!(
            read(&mut apic, IRR + 0x30),
            1 << 16,
            "0x70 to logical 3, not 0x60"
        );
        assert_eq!(read(&mut apic, IRR + 0x40), 0, "all-but-self: nobody");
    }

    #[test]
    fn illegal_vectors_and_registers_are_errors_the_esr_latches() {
        let mut apic = enabled();
        write(&mut apic, LVT_ERROR, 0xE0);
        write(&mut apic, ICR_LOW, 1 << ICR_SHORTHAND_SHIFT | 0x05);
        read(&mut apic, 0x3F0);
        assert_eq!(read(&mut apic, ESR), 0, "not latched yet");
        write(&mut apic, ESR, 0);
        assert_eq!(
            read(&mut apic, ESR),
            ESR_SEND_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER
        );
        assert_eq!(apic.acknowledge(), Some(0xE0), "the error LVT entry fired");
        write(&mut apic, ESR, 0);
        assert_eq!(read(&mut apic, ESR), 0);
    }

    #[test]
    fn the_one_shot_timer_counts_down_through_the_divider_once() {
        let mut apic = enabled();
        write(&mut apic, TIMER_DIVIDE, 0b0001); // divide by 4
        write(&mut apic, LVT_TIMER, 0x30);
        write(&mut apic, TIMER_INITIAL, 1000);
        apic.advance(400);
        assert_eq!(read(&mut apic, TIMER_CURRENT), 900);
        assert_eq!(apic.next_timer_ns(), Some(4000));
        apic.advance(3999);
        assert!(!apic.has_interrupt());
        apic.advance(4000);
        assert_eq!(apic.acknowledge(), Some(0x30));
        assert_eq!(read(&mut apic, TIMER_CURRENT), 0);
        assert_eq!(apic.next_timer_ns(), None, "one shot");
        apic.advance(100_000);
        assert!(!apic.has_interrupt());
    }

    #[test]
    fn the_periodic_timer_reloads_and_a_masked_one_stays_quiet() {
        let mut apic = enabled();
        write(&mut apic, TIMER_DIVIDE, 0b1011); // divide by 1
        write(&mut apic, LVT_TIMER, TIMER_PERIODIC | 0x31);
        write(&mut apic, TIMER_INITIAL, 100);
        apic.advance(250);
        assert_eq!(read(&mut apic, TIMER_CURRENT), 50);
        assert_eq!(apic.acknowledge(), Some(0x31));
        write(&mut apic, EOI, 0);
        assert_eq!(apic.next_timer_ns(), Some(300));
        write(&mut apic, LVT_TIMER, LVT_MASKED | TIMER_PERIODIC | 0x31);
        apic.advance(1000);
        assert!(!apic.has_interrupt());
        assert_eq!(apic.next_timer_ns(), None, "nothing to wake up for");
    }

    #[test]
    fn software_disable_masks_the_lvt_and_closes_the_virtual_wire() {
        let mut apic = enabled();
        write(&mut apic, LVT_TIMER, 0x30);
        write(&mut apic, SVR, 0xFF);
        assert_eq!(read(&mut apic, LVT_TIMER), LVT_MASKED | 0x30);
        assert!(!apic.accepts_pic());
        write(&mut apic, LVT_LINT0, MODE_EXTINT);
        assert_eq!(
            read(&mut apic, LVT_LINT0),
            LVT_MASKED | MODE_EXTINT,
            "stays masked"
        );
    }

    #[test]
    fn global_disable_resets_the_apic_and_passes_the_pic_through() {
        let mut apic = enabled();
        write(&mut apic, ICR_LOW, 1 << ICR_SHORTHAND_SHIFT | 0x40);
        apic.set_base_msr(DEFAULT_BASE | BASE_MSR_BSP);
        assert!(!apic.has_interrupt());
        assert!(apic.accepts_pic());
        apic.set_base_msr(0xFED0_0000 | BASE_MSR_ENABLE | BASE_MSR_BSP);
        assert_eq!(apic.base(), 0xFED0_0000);
        assert_eq!(read(&mut apic, SVR), 0xFF);
        assert_eq!(read(&mut apic, IRR + 0x20), 0);
    }

    /// Something the guest or the VMM does to the APIC.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Read(u64),
        Write(u64, u32),
        Advance(u64),
        Acknowledge,
    }

    impl Restorable for LocalApic {
        type State = LocalApicState;
        type Op = Op;
        type Seen = (Option<u32>, Option<u8>, bool, Option<u64>);

        fn save(&self) -> LocalApicState {
            self.state()
        }

        fn twin(&self, state: &LocalApicState) -> Result<Self, String> {
            LocalApic::from_state(state).map_err(|e| e.to_string())
        }

        fn apply(&mut self, op: &Op) -> Self::Seen {
            let (read_value, vector) = match *op {
                Op::Read(offset) => (Some(read(self, offset)), None),
                Op::Write(offset, v) => {
                    write(self, offset, v);
                    (None, None)
                }
                Op::Advance(ns) => {
                    let now = self.s.now_ns;
                    self.advance(now.saturating_add(ns));
                    (None, None)
                }
                Op::Acknowledge => (None, self.acknowledge()),
            };
            (
                read_value,
                vector,
                self.has_interrupt(),
                self.next_timer_ns(),
            )
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let offset = || (0..0x40u64).prop_map(|slot| slot * 0x10);
        prop_oneof![
            3 => offset().prop_map(Op::Read),
            5 => (offset(), any::<u32>()).prop_map(|(o, v)| Op::Write(o, v)),
            2 => (0..5_000u64).prop_map(Op::Advance),
            2 => Just(Op::Acknowledge),
        ]
    }

    state_proptests!(enabled(), op());
}
