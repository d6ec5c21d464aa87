//! `--stats`: the machine's counters as text.
//!
//! Every list is short, whatever the guest did: a guest that touches every port or a
//! million MMIO addresses gets the [`MAX_LINES`] busiest of each list, in order, and one
//! line summing the rest.

use emu_core::exit::ExitReason;
use emu_core::machine::{Machine, RunOutcome};
use emu_core::pv::PvCounters;
use emu_core::trace::{AccessCount, AddressCounts};
use std::fmt::Write as _;

/// The most lines one list (ports, MMIO addresses, exception or interrupt vectors, ring
/// changes) prints, besides the line that sums the rest.
pub const MAX_LINES: usize = 12;

/// The counters, as `--stats` prints them.
pub fn stats(machine: &Machine, outcome: &RunOutcome) -> String {
    let c = &machine.vmm.counters;
    let secs = outcome.wall.as_secs_f64();
    let mips = if secs > 0.0 {
        outcome.instructions as f64 / secs / 1e6
    } else {
        0.0
    };
    let mut s = format!(
        "engine        {}\nstop          {}\ninstructions  {}\nwall time     {:.3} ms\nhost cpu      {:.3} ms\nspeed         {:.1} MIPS\n",
        machine.engine_name(),
        first_line(&outcome.stop.to_string()),
        outcome.instructions,
        secs * 1e3,
        outcome.host_cpu.as_secs_f64() * 1e3,
        mips,
    );
    // KVM handles the VT-x-only exits in the kernel: only the interpreter's VT-x model
    // shows them, so they are listed apart.
    let list = |vtx_only: bool| -> Vec<String> {
        ExitReason::ALL
            .iter()
            .filter(|r| r.vtx_only() == vtx_only && c.exits(**r) > 0)
            .map(|r| format!("{} {}", r.name(), c.exits(*r)))
            .collect()
    };
    let mut exits = list(false).join(", ");
    let vtx = list(true);
    if !vtx.is_empty() {
        exits += &format!("; VT-x only: {}", vtx.join(", "));
    }
    s += &format!("exits         {} ({exits})\n", c.total_exits());
    hypercalls(&mut s, &c.pv);
    accesses(
        &mut s,
        "port",
        "ports",
        c.ports.iter().map(|(&p, &n)| (format!("{p:#06x}"), n)),
        (AccessCount::default(), ""),
    );
    mmio(&mut s, &c.mmio);
    counts(
        &mut s,
        "exception",
        "vectors",
        c.exceptions.iter().map(|(v, &n)| (format!("{v:>3}"), n)),
    );
    counts(
        &mut s,
        "interrupt",
        "vectors",
        c.interrupts.iter().map(|(v, &n)| (format!("{v:#04x}"), n)),
    );
    counts(
        &mut s,
        "ring",
        "changes",
        c.ring_transitions
            .iter()
            .map(|((from, to), &n)| (format!("{from} -> {to} "), n)),
    );
    for (name, n) in machine.engine_counters() {
        let _ = writeln!(s, "{:<13} {n} {name}", machine.engine_name());
    }
    s
}

/// The hypercall lines, by cause, when the guest made any: calls and failed calls per
/// hypercall, then the events the VMM delivered through the guest's callback.
fn hypercalls(s: &mut String, pv: &PvCounters) {
    if pv.total() == 0 {
        return;
    }
    let _ = writeln!(
        s,
        "hypercalls    {} ({} failed, {} event callbacks)",
        pv.total(),
        pv.errors(),
        pv.callbacks
    );
    for (name, n) in pv.by_name() {
        let _ = writeln!(
            s,
            "hypercall {name:<15} {} calls, {} failed",
            n.calls, n.errors
        );
    }
}

/// The MMIO lines: the busiest addresses, then the rest, including the accesses to
/// addresses past those counted apart.
fn mmio(s: &mut String, counts: &AddressCounts) {
    let past = format!(
        ", and all past the first {} the guest touched",
        AddressCounts::CAPACITY
    );
    accesses(
        s,
        "mmio",
        "addresses",
        counts.iter().map(|(a, n)| (format!("{a:#x}"), n)),
        (counts.others(), &past),
    );
}

/// Lines of reads and writes by key: the [`MAX_LINES`] busiest, in key order, and one
/// line for the rest plus `uncounted`, accesses no key was kept for (and what they are).
fn accesses(
    s: &mut String,
    what: &str,
    plural: &str,
    entries: impl Iterator<Item = (String, AccessCount)>,
    uncounted: (AccessCount, &str),
) {
    let (shown, rest) = busiest(entries.collect(), AccessCount::total);
    for (key, n) in shown {
        let _ = writeln!(s, "{what} {key}   {} reads, {} writes", n.reads, n.writes);
    }
    let (mut sum, past) = uncounted;
    for (_, n) in &rest {
        sum.merge(*n);
    }
    if sum.total() > 0 {
        let past = if uncounted.0.total() > 0 { past } else { "" };
        let _ = writeln!(
            s,
            "{what} others   {} reads, {} writes ({} more {plural}{past})",
            sum.reads,
            sum.writes,
            rest.len(),
        );
    }
}

/// Lines of one count by key: the [`MAX_LINES`] largest, in key order, and one line
/// for the rest.
fn counts(s: &mut String, what: &str, plural: &str, entries: impl Iterator<Item = (String, u64)>) {
    let (shown, rest) = busiest(entries.collect(), |n| *n);
    for (key, n) in shown {
        let _ = writeln!(s, "{what} {key}  {n}");
    }
    if !rest.is_empty() {
        let sum: u64 = rest.iter().map(|(_, n)| n).sum();
        let _ = writeln!(s, "{what} others  {sum} ({} more {plural})", rest.len());
    }
}

/// Counter lines before formatting: a key's text and its count, in key order.
type Entries<T> = Vec<(String, T)>;

/// Splits `entries` (in key order) into the [`MAX_LINES`] with the largest `weight`,
/// still in key order, and the rest.
fn busiest<T>(entries: Entries<T>, weight: impl Fn(&T) -> u64) -> (Entries<T>, Entries<T>) {
    if entries.len() <= MAX_LINES {
        return (entries, Vec::new());
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // The heaviest first; among equals, the first in key order.
    order.sort_by_key(|&i| (std::cmp::Reverse(weight(&entries[i].1)), i));
    let mut keep = vec![false; entries.len()];
    for &i in &order[..MAX_LINES] {
        keep[i] = true;
    }
    let (mut shown, mut rest) = (Vec::new(), Vec::new());
    for (entry, keep) in entries.into_iter().zip(keep) {
        if keep {
            shown.push(entry);
        } else {
            rest.push(entry);
        }
    }
    (shown, rest)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_keeps_the_heaviest_in_key_order() {
        let entries: Vec<_> = (0..20u64)
            .map(|k| (format!("{k:02}"), (k * 7) % 20))
            .collect();
        let (shown, rest) = busiest(entries, |n| *n);
        assert_eq!(shown.len(), MAX_LINES);
        assert_eq!(rest.len(), 20 - MAX_LINES);
        let lightest_shown = shown.iter().map(|(_, n)| *n).min().unwrap();
        assert!(rest.iter().all(|(_, n)| *n <= lightest_shown));
        assert!(shown.windows(2).all(|w| w[0].0 < w[1].0), "{shown:?}");
    }

    #[test]
    fn a_sweep_of_ports_prints_a_dozen_lines_and_the_rest() {
        let entries = (0..=u16::MAX).map(|p| {
            (
                format!("{p:#06x}"),
                AccessCount {
                    reads: 1,
                    writes: u64::from(p == 0x3f8),
                },
            )
        });
        let mut s = String::new();
        accesses(
            &mut s,
            "port",
            "ports",
            entries,
            (AccessCount::default(), ""),
        );
        assert_eq!(s.lines().count(), MAX_LINES + 1, "{s}");
        // The busiest, and the first of the rest in port order.
        assert!(s.contains("\nport 0x03f8   1 reads, 1 writes\n"), "{s}");
        assert!(s.starts_with("port 0x0000   1 reads, 0 writes\n"), "{s}");
        assert!(
            s.ends_with(&format!(
                "port others   {} reads, 0 writes ({} more ports)\n",
                65536 - MAX_LINES,
                65536 - MAX_LINES
            )),
            "{s}"
        );
    }
}
