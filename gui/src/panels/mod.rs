//! The panels of the window, each drawing from the latest [`crate::session::View`].

pub mod code;
pub mod console;
pub mod events;
pub mod memory;
pub mod registers;
pub mod rings;
pub mod virtio;

use eframe::egui::Color32;

/// The colour of what changed since the last stop, and of the current instruction.
pub const CHANGED: Color32 = Color32::from_rgb(255, 170, 0);
