//! The disassembly around RIP, breakpoints in the gutter.

use super::CHANGED;
use crate::disasm;
use crate::session::{Command, View};
use eframe::egui::{self, Color32, RichText, Sense, Stroke, Vec2};
use emu_core::x86::opcode::Sensitivity;

/// Draws the disassembly of `view`; a click in the gutter sends a breakpoint toggle.
/// When RIP differs from `shown_rip` the current line is scrolled into view (and
/// `shown_rip` updated), so the user can scroll freely while it stays.
pub fn show(
    ui: &mut egui::Ui,
    view: &View,
    shown_rip: &mut Option<u64>,
    commands: &mut Vec<Command>,
) {
    let Some(regs) = &view.regs else {
        return;
    };
    let rip = regs.code_address();
    ui.label(format!(
        "Disassembly around RIP (ring {}, {}-bit code)",
        regs.cpl(),
        regs.code_bitness()
    ))
    .on_hover_text(
        "Red: privileged (traps outside ring 0); violet: sensitive but not privileged (does \
         not trap: binary translation rewrites it); blue: checked against IOPL",
    );
    if view.disasm.is_empty() {
        ui.label(format!("no code can be read at {rip:#x}"));
    }
    egui::ScrollArea::vertical()
        .id_salt("disassembly")
        .show(ui, |ui| {
            for line in &view.disasm {
                ui.horizontal(|ui| {
                    let set = view.breakpoints.contains(&line.addr);
                    if gutter(ui, line.addr, set).clicked() {
                        commands.push(Command::ToggleBreakpoint(line.addr));
                    }
                    let current = line.addr == rip;
                    let text = format!(
                        "{} {:08x}  {:<20} {}",
                        if current { "=>" } else { "  " },
                        line.addr,
                        line.bytes,
                        line.text
                    );
                    let mut rich = RichText::new(text).monospace();
                    if current {
                        rich = rich.color(CHANGED).strong();
                    } else if let Some(color) = sensitivity_color(line.sensitivity) {
                        rich = rich.color(color);
                    }
                    let label = ui
                        .add(egui::Label::new(rich).wrap_mode(egui::TextWrapMode::Extend))
                        .on_hover_text(disasm::explain(line.sensitivity));
                    if current && *shown_rip != Some(rip) {
                        label.scroll_to_me(Some(egui::Align::Center));
                        *shown_rip = Some(rip);
                    }
                });
            }
        });
}

/// The colour of instructions a VMM must care about: red if privileged, violet if
/// sensitive without being privileged, blue if IOPL-checked.
fn sensitivity_color(sensitivity: Option<Sensitivity>) -> Option<Color32> {
    match sensitivity? {
        Sensitivity::None => None,
        Sensitivity::Privileged => Some(Color32::from_rgb(240, 100, 100)),
        Sensitivity::Unprivileged => Some(Color32::from_rgb(200, 120, 250)),
        Sensitivity::IoplChecked => Some(Color32::from_rgb(110, 170, 250)),
    }
}

/// The breakpoint gutter of the line at `addr`: a red dot where a breakpoint is set, a
/// ring on hover where one can be.
fn gutter(ui: &mut egui::Ui, addr: u64, set: bool) -> egui::Response {
    let size = ui.text_style_height(&egui::TextStyle::Monospace);
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(size), Sense::click());
    let red = Color32::from_rgb(220, 50, 50);
    let radius = size * 0.32;
    if set {
        ui.painter().circle_filled(rect.center(), radius, red);
    } else if response.hovered() {
        ui.painter()
            .circle_stroke(rect.center(), radius, Stroke::new(1.5, red));
    }
    let label = format!(
        "{} breakpoint at {addr:08x}",
        if set { "Clear" } else { "Set" }
    );
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
    response.on_hover_text(if set {
        "Remove the breakpoint"
    } else {
        "Stop before this instruction (a breakpoint)"
    })
}
