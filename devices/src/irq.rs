//! Interrupt requests from devices, held until the interrupt controller takes them.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

/// How many IRQ lines a PC has: the inputs of its two cascaded 8259 PICs.
const IRQ_COUNT: usize = 16;

/// The lines' shared state: which lines were raised since the last take, and how often
/// each was raised in total (for tests and statistics; edges between two takes merge).
#[derive(Debug, Default)]
struct Lines {
    pending: AtomicU16,
    raised: [AtomicU64; IRQ_COUNT],
}

/// Edge-triggered interrupt requests raised by devices, collected until the board moves
/// them into the PIC ([`PcDevices::deliver_pending_irqs`](crate::PcDevices::deliver_pending_irqs)).
///
/// A cheap cloneable handle: devices raise lines from whatever thread runs them while the
/// engine takes the pending set from its own.
#[derive(Debug, Clone, Default)]
pub struct IrqLines {
    lines: Arc<Lines>,
}

impl IrqLines {
    /// Sixteen lines, none pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals an edge on line `irq`: it stays pending until [`take_pending`](Self::take_pending).
    ///
    /// # Panics
    /// If `irq` is not in `0..=15`: lines are wired by the board, never chosen by the guest.
    pub fn raise(&self, irq: u8) {
        self.lines.raised[index(irq)].fetch_add(1, Ordering::Relaxed);
        // Release pairs with the Acquire in `take_pending`, so whoever sees the bit also
        // sees the device state written before the raise.
        self.lines.pending.fetch_or(1 << irq, Ordering::Release);
    }

    /// The lines raised since the last call (bit `n` for IRQ `n`), clearing them.
    pub fn take_pending(&self) -> u16 {
        self.lines.pending.swap(0, Ordering::AcqRel)
    }

    /// The lines raised since the last take, left pending.
    pub fn pending(&self) -> u16 {
        self.lines.pending.load(Ordering::Acquire)
    }

    /// Makes `lines` (bit `n` for IRQ `n`) the pending set, as a restore does; the raise
    /// counts are left alone, as these edges were counted where they were raised.
    pub fn set_pending(&self, lines: u16) {
        self.lines.pending.store(lines, Ordering::Release);
    }

    /// How many times line `irq` has been raised since the lines were made.
    ///
    /// # Panics
    /// If `irq` is not in `0..=15`.
    pub fn raised_count(&self, irq: u8) -> u64 {
        self.lines.raised[index(irq)].load(Ordering::Relaxed)
    }

    /// A handle that raises line `irq` only, for a device wired to it.
    ///
    /// # Panics
    /// If `irq` is not in `0..=15`.
    pub fn line(&self, irq: u8) -> IrqLine {
        // Refuse a missing line now, while the board is wired, not at the first interrupt.
        index(irq);
        IrqLine {
            lines: self.clone(),
            irq,
        }
    }
}

/// One IRQ line of an [`IrqLines`], handed to the device wired to it so the device need
/// not know its board's wiring.
#[derive(Debug, Clone)]
pub struct IrqLine {
    lines: IrqLines,
    irq: u8,
}

/// vm-superio's device models signal their interrupt output through `Trigger`.
impl vm_superio::Trigger for IrqLine {
    /// Raising a line is a bit flip that cannot fail.
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.lines.raise(self.irq);
        Ok(())
    }
}

/// The array index of line `irq`, panicking with a clear message for a line a PC lacks.
fn index(irq: u8) -> usize {
    let i = usize::from(irq);
    assert!(
        i < IRQ_COUNT,
        "IRQ {irq} does not exist: a PC has IRQ 0..=15"
    );
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_superio::Trigger;

    #[test]
    fn raised_lines_stay_pending_until_taken() {
        let irqs = IrqLines::new();
        assert_eq!(irqs.take_pending(), 0);

        irqs.raise(4);
        irqs.clone().raise(15);
        irqs.raise(4);
        assert_eq!(irqs.take_pending(), 1 << 4 | 1 << 15);
        assert_eq!(irqs.take_pending(), 0);
        assert_eq!(irqs.raised_count(4), 2);
        assert_eq!(irqs.raised_count(15), 1);
        assert_eq!(irqs.raised_count(0), 0);
    }

    #[test]
    fn a_line_handle_raises_its_own_line() {
        let irqs = IrqLines::new();
        let com1 = irqs.line(4);
        com1.trigger().unwrap();
        assert_eq!(irqs.take_pending(), 1 << 4);
        assert_eq!(irqs.raised_count(4), 1);
    }

    #[test]
    #[should_panic(expected = "IRQ 16 does not exist")]
    fn lines_past_15_do_not_exist() {
        IrqLines::new().line(16);
    }
}
