//! The guest's serial console (COM1).

use crate::session::View;
use eframe::egui::{self, RichText};

/// Draws what the guest wrote to its serial port.
pub fn show(ui: &mut egui::Ui, view: &View) {
    ui.label("Serial console (COM1)");
    egui::ScrollArea::vertical()
        .id_salt("serial")
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .show(ui, |ui| {
            ui.label(RichText::new(&view.serial).monospace());
        });
}
