//! Popek's desktop GUI: a window onto one machine, for students. It is a client of the
//! control plane ([`emu_core::machine::control::MachineHandle`]) only: the machine runs
//! on its own thread, a worker thread talks to it ([`session`]), and the window draws
//! the latest view the worker published, so it never waits for the guest.
//!
//! `popek gui` starts it ([`window::run`]); the tests drive [`PopekApp`] through
//! egui_kittest.

pub mod app;
pub mod compare;
pub mod disasm;
pub mod launcher;
pub mod log;
pub mod panels;
pub mod session;
pub mod window;

pub use app::{Options, PopekApp};
/// The egui the window is built with, for clients and tests.
pub use eframe::egui;
pub use launcher::{EngineInfo, Launcher, RomEntry};
