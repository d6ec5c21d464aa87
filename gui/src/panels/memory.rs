//! The hex view of guest memory, linear (through the guest's page tables) or physical.

use super::CHANGED;
use crate::session::{Command, MemoryRequest, View};
use eframe::egui::{self, text::LayoutJob, Color32, FontId, TextFormat};

/// What the user typed: an address and which kind.
#[derive(Debug, Clone)]
pub struct MemoryInput {
    /// The address, in hex.
    pub addr: String,
    /// Physical rather than linear.
    pub physical: bool,
}

impl Default for MemoryInput {
    fn default() -> Self {
        MemoryInput {
            addr: format!("{:x}", MemoryRequest::FIRST.addr),
            physical: MemoryRequest::FIRST.physical,
        }
    }
}

/// Draws the hex view; a new address sends a command.
pub fn show(ui: &mut egui::Ui, view: &View, input: &mut MemoryInput, commands: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        let label = ui.label("Memory at");
        let edit = ui
            .add(egui::TextEdit::singleline(&mut input.addr).desired_width(120.0))
            .labelled_by(label.id);
        let kind = ui.selectable_value(&mut input.physical, true, "physical")
            | ui.selectable_value(&mut input.physical, false, "virtual");
        let go = ui.button("Show").clicked()
            || (edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)));
        if go || kind.clicked() {
            let digits = input.addr.trim().trim_start_matches("0x");
            match u64::from_str_radix(digits, 16) {
                Ok(addr) => commands.push(Command::Memory(MemoryRequest {
                    addr,
                    physical: input.physical,
                })),
                Err(_) => {
                    input.addr = format!("not hex: {}", input.addr);
                }
            }
        }
    })
    .response
    .on_hover_text(
        "Virtual (linear) addresses are translated through the guest's page tables, as the \
         CPU would translate them; physical ones index guest RAM directly",
    );
    let (Some(request), Some(bytes)) = (&view.memory.request, &view.memory.bytes) else {
        return;
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => {
            ui.colored_label(Color32::LIGHT_RED, e);
            return;
        }
    };
    let font = FontId::monospace(12.0);
    let plain = ui.visuals().text_color();
    let mut job = LayoutJob::default();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let at = row * 16;
        let addr = request.addr.wrapping_add(at as u64);
        job.append(&format!("{addr:08x}  "), 0.0, format(&font, plain));
        for (i, b) in chunk.iter().enumerate() {
            let before = view.memory.before.as_ref().and_then(|v| v.get(at + i));
            let color = if before.is_some_and(|old| old != b) {
                CHANGED
            } else {
                plain
            };
            job.append(&format!("{b:02x} "), 0.0, format(&font, color));
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        job.append(&format!(" {ascii}\n"), 0.0, format(&font, plain));
    }
    egui::ScrollArea::vertical()
        .id_salt("memory")
        .show(ui, |ui| ui.label(job));
}

fn format(font: &FontId, color: Color32) -> TextFormat {
    TextFormat::simple(font.clone(), color)
}
