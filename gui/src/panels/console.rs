//! The guest's serial console (COM1).

use eframe::egui::{self, RichText};

/// Draws `text`, what the guest wrote to its serial port.
pub fn show(ui: &mut egui::Ui, text: &str) {
    ui.label("Serial console (COM1)");
    egui::ScrollArea::vertical()
        .id_salt("serial")
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.label(RichText::new(text).monospace());
        });
}
