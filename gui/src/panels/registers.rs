//! The register panel: general registers, RIP, flags as named bits, control registers
//! and the segment registers with their hidden parts; what changed since the stop before
//! is drawn in orange and listed by name.

use super::CHANGED;
use eframe::egui::{self, RichText};
use emu_core::cpu::{efer, rflags, CpuState, SegReg};

/// Names of the general registers in encoding order, without their size prefix.
const GPR: [&str; 8] = ["AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI"];

/// The flags shown as named bits, with what each means.
const FLAGS: [(&str, u64); 9] = [
    ("CF", rflags::CF),
    ("PF", rflags::PF),
    ("AF", rflags::AF),
    ("ZF", rflags::ZF),
    ("SF", rflags::SF),
    ("TF", rflags::TF),
    ("IF", rflags::IF),
    ("DF", rflags::DF),
    ("OF", rflags::OF),
];

/// Reads one register of a state.
type Getter = fn(&CpuState) -> u64;

/// One register as a row: its name, value, and the value at the stop before.
struct Row {
    name: String,
    value: u64,
    before: Option<u64>,
    digits: usize,
    hover: &'static str,
}

/// The registers of `regs`, those different from `baseline` highlighted.
pub fn show(ui: &mut egui::Ui, regs: &CpuState, baseline: Option<&CpuState>) {
    let wide = regs.efer & efer::LMA != 0;
    let (prefix, digits) = if wide { ("R", 16) } else { ("E", 8) };
    let mut rows = Vec::new();
    let gpr_count = if wide { 16 } else { 8 };
    for i in 0..gpr_count {
        let name = match GPR.get(i) {
            Some(n) => format!("{prefix}{n}"),
            None => format!("R{i}"),
        };
        rows.push(Row {
            name,
            value: regs.gpr[i],
            before: baseline.map(|b| b.gpr[i]),
            digits,
            hover: "A general-purpose register",
        });
    }
    rows.push(Row {
        name: format!("{prefix}IP"),
        value: regs.rip,
        before: baseline.map(|b| b.rip),
        digits,
        hover: "The instruction pointer: the offset in CS of the next instruction",
    });
    rows.push(Row {
        name: "RFLAGS".into(),
        value: regs.rflags.get(),
        before: baseline.map(|b| b.rflags.get()),
        digits: 8,
        hover: "Arithmetic results (CF ZF SF OF ...) and control bits (IF: interrupts on)",
    });
    let control: [(&str, Getter, &str); 5] = [
        (
            "CR0",
            |r| r.cr0,
            "PE: protected mode, PG: paging, WP: write-protect for ring 0",
        ),
        (
            "CR2",
            |r| r.cr2,
            "The linear address of the last page fault",
        ),
        (
            "CR3",
            |r| r.cr3,
            "The physical address of the page directory: switching it switches address spaces",
        ),
        (
            "CR4",
            |r| r.cr4,
            "Extensions: PSE (4 MiB pages), PAE, PGE, OSFXSR ...",
        ),
        (
            "EFER",
            |r| r.efer,
            "LME/LMA: long mode, SCE: SYSCALL, NXE: no-execute pages",
        ),
    ];
    for (name, get, hover) in control {
        rows.push(Row {
            name: name.into(),
            value: get(regs),
            before: baseline.map(get),
            digits: 8,
            hover,
        });
    }
    let changed: Vec<&str> = rows
        .iter()
        .filter(|r| r.before.is_some_and(|b| b != r.value))
        .map(|r| r.name.as_str())
        .collect();
    let segments_changed = baseline.is_some_and(|b| b.seg != regs.seg);
    let summary = match (changed.is_empty(), segments_changed) {
        (true, false) => "Changed since the last stop: nothing".to_string(),
        (_, seg) => format!(
            "Changed since the last stop: {}{}",
            changed.join(", "),
            if seg { " and segments" } else { "" }
        ),
    };
    ui.label(summary);
    ui.label(format!(
        "CPL {}, {}-bit code{}",
        regs.cpl(),
        regs.code_bitness(),
        if regs.halted { ", halted" } else { "" }
    ))
    .on_hover_text(
        "The current privilege level, from the low bits of CS: 0 is the kernel, 3 is user code",
    );
    for row in &rows {
        let text = format!("{:<6} {:0width$x}", row.name, row.value, width = row.digits);
        let mut rich = RichText::new(text).monospace();
        if row.before.is_some_and(|b| b != row.value) {
            rich = rich.color(CHANGED);
        }
        ui.label(rich).on_hover_text(row.hover);
    }
    let bits = regs.rflags.get();
    let named: Vec<String> = FLAGS
        .iter()
        .map(|(name, bit)| {
            if bits & bit != 0 {
                name.to_string()
            } else {
                name.to_lowercase()
            }
        })
        .collect();
    ui.label(RichText::new(format!("flags  {}", named.join(" "))).monospace())
        .on_hover_text("Upper case: set; lower case: clear");
    ui.separator();
    let names = ["ES", "CS", "SS", "DS", "FS", "GS"];
    for (name, seg) in names.iter().zip(SegReg::ALL) {
        let s = regs.seg[seg];
        let mut rich = RichText::new(format!(
            "{name} {:04x} base {:08x} limit {:08x} dpl {}",
            s.selector,
            s.base,
            s.limit,
            s.dpl()
        ))
        .monospace();
        if baseline.is_some_and(|b| b.seg[seg] != s) {
            rich = rich.color(CHANGED);
        }
        ui.label(rich).on_hover_text(
            "The selector software loaded, and the hidden part the processor cached from the descriptor table",
        );
    }
    for (name, base, limit) in [
        ("GDTR", regs.gdtr.base, regs.gdtr.limit),
        ("IDTR", regs.idtr.base, regs.idtr.limit),
    ] {
        ui.label(RichText::new(format!("{name} base {base:08x} limit {limit:04x}")).monospace());
    }
    ui.label(
        RichText::new(format!(
            "TR {:04x} base {:08x} limit {:04x}",
            regs.tr.selector, regs.tr.base, regs.tr.limit
        ))
        .monospace(),
    )
    .on_hover_text(
        "The task register: its TSS holds the ring-0 stack a trap from ring 3 switches to",
    );
}
