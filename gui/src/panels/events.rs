//! The bottom of the debugger: the timeline of ring transitions and VMM entries, the
//! trap/exit log with filters, the counts by cause and the rate plot.

use crate::log::{Kind, Logged};
use crate::session::View;
use eframe::egui::{self, Color32, RichText};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};
use emu_core::exception::Exception;
use emu_core::exit::{ExitReason, GuestEvent, RingCause};
use emu_core::trace::EventKind;
use std::collections::HashSet;

/// Events the timeline draws: the latest ones.
const TIMELINE_EVENTS: usize = 4000;

/// The trap log's filters.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Kinds hidden.
    pub hidden: HashSet<Kind>,
    /// Only entries containing this text.
    pub text: String,
}

/// How the timeline groups causes, with their colours.
fn cause_class(kind: &EventKind) -> (&'static str, Color32) {
    match kind {
        EventKind::Guest(GuestEvent::RingTransition { cause, to, .. }) => match cause {
            RingCause::SoftwareInterrupt(_)
            | RingCause::Sysenter
            | RingCause::Syscall
            | RingCause::CallGate => ("system call", Color32::from_rgb(90, 220, 120)),
            RingCause::Exception(_) => ("exception", Color32::from_rgb(240, 80, 80)),
            RingCause::Interrupt(_) => ("interrupt", Color32::from_rgb(90, 150, 250)),
            _ if *to == 3 => ("return to user", Color32::from_gray(170)),
            _ => ("return", Color32::from_gray(170)),
        },
        EventKind::Guest(GuestEvent::Exception { .. }) => {
            ("exception", Color32::from_rgb(240, 80, 80))
        }
        EventKind::Guest(GuestEvent::Interrupt { .. }) => {
            ("interrupt", Color32::from_rgb(90, 150, 250))
        }
        EventKind::Engine(_) => ("engine", Color32::from_rgb(190, 140, 230)),
        _ => ("VMM entry", Color32::from_rgb(240, 150, 60)),
    }
}

/// The timeline: ring transitions at the ring entered, VMM entries at -1, against the
/// instruction count (or, for engines that cannot count, the event's number).
pub fn timeline(ui: &mut egui::Ui, view: &View) {
    let x_name = if view.counts_instructions {
        "instructions"
    } else {
        "event number"
    };
    ui.label(format!(
        "Timeline: ring transitions and VMM entries (x: {x_name})"
    ));
    let mut series: Vec<(&'static str, Color32, Vec<[f64; 2]>)> = Vec::new();
    let entries = view.log.entries();
    for l in entries
        .iter()
        .skip(entries.len().saturating_sub(TIMELINE_EVENTS))
    {
        let y = match &l.event.kind {
            EventKind::Guest(GuestEvent::RingTransition { to, .. }) => f64::from(*to),
            kind if Kind::of(kind).enters_vmm() => -1.0,
            _ => continue,
        };
        let x = if view.counts_instructions {
            l.event.icount as f64
        } else {
            l.seq as f64
        };
        let (name, color) = cause_class(&l.event.kind);
        match series.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, points)) => points.push([x, y]),
            None => series.push((name, color, vec![[x, y]])),
        }
    }
    Plot::new("timeline")
        .height(ui.available_height().min(160.0))
        .legend(Legend::default())
        .include_y(-1.5)
        .include_y(3.5)
        .y_axis_label("ring (-1: VMM)")
        .allow_scroll(false)
        .show(ui, |plot| {
            for (name, color, points) in series {
                plot.points(
                    Points::new(name, PlotPoints::from(points))
                        .color(color)
                        .radius(3.0),
                );
            }
        });
}

/// The rate plot: events per second over time.
pub fn rates(ui: &mut egui::Ui, view: &View) {
    ui.label("Rates (per second)");
    let history = &view.history;
    let lines = [
        ("VMM exits", history.rates(|s| s.exits)),
        ("ring transitions", history.rates(|s| s.rings)),
        ("exceptions", history.rates(|s| s.exceptions)),
        ("interrupts", history.rates(|s| s.interrupts)),
    ];
    Plot::new("rates")
        .height(ui.available_height().max(80.0))
        .legend(Legend::default())
        .x_axis_label("seconds")
        .allow_scroll(false)
        .show(ui, |plot| {
            for (name, points) in lines {
                plot.line(Line::new(name, PlotPoints::from(points)));
            }
        });
}

/// The trap/exit log, newest last, with filters by kind and by text.
pub fn log(ui: &mut egui::Ui, view: &View, filter: &mut LogFilter) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Trap/exit log:");
        for kind in Kind::ALL {
            let mut shown = !filter.hidden.contains(&kind);
            if ui
                .checkbox(&mut shown, kind.name())
                .on_hover_text(kind.explanation())
                .changed()
            {
                if shown {
                    filter.hidden.remove(&kind);
                } else {
                    filter.hidden.insert(kind);
                }
            }
        }
        ui.add(
            egui::TextEdit::singleline(&mut filter.text)
                .hint_text("filter")
                .desired_width(90.0),
        );
    });
    let needle = filter.text.to_lowercase();
    let shown: Vec<&Logged> = view
        .log
        .entries()
        .iter()
        .filter(|l| !filter.hidden.contains(&Kind::of(&l.event.kind)))
        .filter(|l| needle.is_empty() || l.event.to_string().to_lowercase().contains(&needle))
        .collect();
    let kept = view.log.entries().len() as u64;
    if view.log.total() > kept || view.events_dropped > 0 {
        ui.label(format!(
            "{} events, the latest {kept} kept{}",
            view.log.total(),
            if view.events_dropped > 0 {
                format!(
                    "; {} came too fast to show (counted below)",
                    view.events_dropped
                )
            } else {
                String::new()
            }
        ));
    }
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace);
    egui::ScrollArea::both()
        .id_salt("trap log")
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .show_rows(ui, row_height, shown.len(), |ui, rows| {
            for l in &shown[rows] {
                let kind = Kind::of(&l.event.kind);
                let (_, color) = cause_class(&l.event.kind);
                let text = RichText::new(l.event.to_string()).monospace().color(color);
                ui.add(egui::Label::new(text).wrap_mode(egui::TextWrapMode::Extend))
                    .on_hover_text(kind.explanation());
            }
        });
}

/// Counts by cause, from the machine's counters (exact, whatever the log kept).
pub fn counts(ui: &mut egui::Ui, view: &View) {
    ui.label("Counts by cause");
    let c = &view.counters;
    egui::ScrollArea::vertical()
        .id_salt("counts")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            egui::Grid::new("counts grid").striped(true).show(ui, |ui| {
                for ((from, to), n) in &c.ring_transitions {
                    ui.label(format!("ring {from} -> {to}"))
                        .on_hover_text(Kind::Ring.explanation());
                    ui.label(n.to_string());
                    ui.end_row();
                }
                for (vector, n) in &c.exceptions {
                    let e = Exception {
                        vector: *vector,
                        error_code: None,
                    };
                    ui.label(format!("exception {}", e.mnemonic()))
                        .on_hover_text(Kind::Exception.explanation());
                    ui.label(n.to_string());
                    ui.end_row();
                }
                for (vector, n) in &c.interrupts {
                    ui.label(format!("interrupt {vector:#04x}"))
                        .on_hover_text(Kind::Interrupt.explanation());
                    ui.label(n.to_string());
                    ui.end_row();
                }
                for reason in ExitReason::ALL {
                    let n = c.exits(reason);
                    if n == 0 {
                        continue;
                    }
                    ui.label(format!("exit {}", reason.name()))
                        .on_hover_text(exit_explanation(reason));
                    ui.label(n.to_string());
                    ui.end_row();
                }
                for (name, n) in view.engine_counters.iter().filter(|(_, n)| *n != 0) {
                    ui.label(format!("{} {name}", view.engine.unwrap_or("engine")))
                        .on_hover_text(Kind::Engine.explanation());
                    ui.label(n.to_string());
                    ui.end_row();
                }
            });
        });
}

/// One sentence on an exit reason: what the VMM does there.
pub fn exit_explanation(reason: ExitReason) -> &'static str {
    match reason {
        ExitReason::IoIn | ExitReason::IoOut => Kind::Io.explanation(),
        ExitReason::MmioRead | ExitReason::MmioWrite => Kind::Mmio.explanation(),
        ExitReason::Hlt => "HLT: the guest has nothing to do; the VMM waits for the next timer or device interrupt",
        ExitReason::Shutdown => "A triple fault: the guest could not deliver an exception, and the machine shuts down",
        ExitReason::Unsupported => "An instruction Popek does not implement: the run ends",
        ExitReason::Cpuid => "CPUID always exits under VT-x: the VMM decides which processor the guest sees",
        ExitReason::Rdmsr | ExitReason::Wrmsr => "An MSR access the VMM intercepts to keep the host's machine-specific state safe",
        ExitReason::CrAccess => "A control-register write (paging, protection): the VMM tracks it to keep the guest's address space right",
        ExitReason::ExternalInterrupt => "A host interrupt arrived while the guest ran: the processor leaves the guest so the host can handle it",
        ExitReason::Hypercall => "A para-virtualized guest asked the VMM for a service on purpose (a hypercall), instead of trapping on a privileged instruction",
    }
}
