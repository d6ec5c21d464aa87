//! The window's contents: the top bar with the ROM, the engine and the run controls,
//! and the tabs (debugger, compare, virtio).

use crate::compare::{self, Comparison};
use crate::launcher::{EngineInfo, Launcher, RomEntry};
use crate::panels::events::{self, LogFilter};
use crate::panels::memory::MemoryInput;
use crate::panels::rings::RingAnimation;
use crate::panels::{code, console, memory, registers, rings, virtio};
use crate::session::{Command, Session, View};
use eframe::egui::{self, Color32, RichText};
use emu_core::machine::control::Status;
use std::ffi::OsString;
use std::sync::Arc;

/// How the window starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A ROM to load at once: an embedded name or a file.
    pub rom: Option<OsString>,
    /// The engine to load it on (an engine's name); the first available one if None.
    pub engine: Option<String>,
    /// Run the ROM as soon as it is loaded.
    pub run: bool,
    /// Open the Compare tab and compare the engines on the ROM at once.
    pub compare: bool,
}

/// The tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Registers, code, memory, rings, log.
    Debugger,
    /// One ROM under every engine.
    Compare,
    /// The virtio queues.
    Virtio,
}

/// The application: what the window shows and remembers between frames.
pub struct PopekApp {
    launcher: Arc<dyn Launcher>,
    roms: Vec<RomEntry>,
    engines: Vec<EngineInfo>,
    /// The ROM field: an embedded name or a path.
    rom: String,
    engine: &'static str,
    session: Option<Session>,
    pending_start: Option<bool>,
    pending_compare: bool,
    tab: Tab,
    filter: LogFilter,
    memory: MemoryInput,
    animation: RingAnimation,
    /// Instructions a second Run may take (None: full speed).
    speed: Option<u64>,
    /// The RIP the disassembly last scrolled to.
    shown_rip: Option<u64>,
    comparison: Option<Comparison>,
}

impl PopekApp {
    /// A window over `launcher`'s ROMs and engines, starting as `options` say.
    pub fn new(launcher: Arc<dyn Launcher>, options: Options) -> PopekApp {
        let roms = launcher.roms();
        let engines = launcher.engines();
        let engine = options
            .engine
            .as_deref()
            .and_then(|name| engines.iter().find(|e| e.name == name))
            .or_else(|| engines.iter().find(|e| e.unavailable.is_none()))
            .or(engines.first())
            .map_or("interp", |e| e.name);
        PopekApp {
            launcher,
            roms,
            engines,
            rom: options
                .rom
                .as_ref()
                .map_or_else(String::new, |r| r.to_string_lossy().into_owned()),
            engine,
            session: None,
            pending_start: options.rom.is_some().then_some(options.run),
            pending_compare: options.compare,
            tab: if options.compare {
                Tab::Compare
            } else {
                Tab::Debugger
            },
            filter: LogFilter::default(),
            memory: MemoryInput::default(),
            animation: RingAnimation::default(),
            speed: None,
            shown_rip: None,
            comparison: None,
        }
    }

    /// Whether nothing runs: the guest (if any) is paused, finished or failed to load,
    /// and the comparison (if any) is done.
    pub fn settled(&self) -> bool {
        let guest = self.session.as_ref().is_none_or(|s| {
            let view = s.view();
            view.error.is_some() || !matches!(view.status, None | Some(Status::Running))
        });
        guest && self.comparison.as_ref().is_none_or(Comparison::done)
    }

    /// Loads the ROM in the ROM field on the chosen engine (a reset if it is loaded).
    fn load(&mut self, ctx: &egui::Context, run: bool) {
        let ctx = ctx.clone();
        self.animation = RingAnimation::default();
        let session = Session::start(
            Arc::clone(&self.launcher),
            OsString::from(self.rom.trim()),
            self.engine.to_string(),
            Box::new(move || ctx.request_repaint()),
            self.speed,
        );
        if run {
            session.send(Command::Run);
        }
        self.session = Some(session);
    }

    /// Draws the whole window.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        if let Some(run) = self.pending_start.take() {
            self.load(ui.ctx(), run);
        }
        if std::mem::take(&mut self.pending_compare) {
            self.start_comparison(ui.ctx());
        }
        let mut commands = Vec::new();
        egui::Panel::top("controls").show(ui, |ui| self.top_bar(ui, &mut commands));
        egui::CentralPanel::default_margins().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.tab, Tab::Debugger, "Debugger");
                ui.selectable_value(&mut self.tab, Tab::Compare, "Compare");
                ui.selectable_value(&mut self.tab, Tab::Virtio, "Virtio");
            });
            ui.separator();
            match self.tab {
                Tab::Debugger => self.debugger(ui, &mut commands),
                Tab::Compare => self.compare(ui),
                Tab::Virtio => match &self.session {
                    Some(session) => virtio::show(ui, &session.view().virtio),
                    None => {
                        ui.label("Load a ROM to see its virtio queues.");
                    }
                },
            }
        });
        if let Some(session) = &self.session {
            for command in commands {
                session.send(command);
            }
        }
    }

    fn engine_info(&self) -> Option<&EngineInfo> {
        self.engines.iter().find(|e| e.name == self.engine)
    }

    fn top_bar(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        ui.horizontal_wrapped(|ui| {
            let rom_label = ui.label("ROM");
            egui::ComboBox::from_id_salt("embedded roms")
                .selected_text("embedded")
                .show_ui(ui, |ui| {
                    for rom in &self.roms {
                        ui.selectable_value(&mut self.rom, rom.name.clone(), &rom.name)
                            .on_hover_text(&rom.summary);
                    }
                })
                .response
                .labelled_by(rom_label.id);
            ui.add(
                egui::TextEdit::singleline(&mut self.rom)
                    .hint_text("ROM name or file")
                    .desired_width(160.0),
            );
            let engine_label = ui.label("Engine");
            egui::ComboBox::from_id_salt("engine")
                .selected_text(self.engine)
                .show_ui(ui, |ui| {
                    for engine in &self.engines {
                        let hover = match &engine.unavailable {
                            Some(why) => format!("Not available here: {why}"),
                            None => engine.explanation.to_string(),
                        };
                        ui.add_enabled_ui(engine.unavailable.is_none(), |ui| {
                            ui.selectable_value(
                                &mut self.engine,
                                engine.name,
                                format!("{} ({})", engine.name, engine.technique),
                            )
                            .on_hover_text(hover);
                        });
                    }
                })
                .response
                .labelled_by(engine_label.id);
            if let Some(info) = self.engine_info() {
                ui.label(RichText::new(info.technique).italics())
                    .on_hover_text(info.explanation);
            }
            if ui
                .button("Load")
                .on_hover_text("Boot the ROM on the engine, paused at its first instruction")
                .clicked()
            {
                self.load(ui.ctx(), false);
            }
            if ui
                .add_enabled(self.session.is_some(), egui::Button::new("Reset"))
                .on_hover_text("Boot the same ROM again from the start")
                .clicked()
            {
                if let Some(s) = &self.session {
                    self.rom = s.rom.to_string_lossy().into_owned();
                    self.engine = self
                        .engines
                        .iter()
                        .find(|e| e.name == s.engine)
                        .map_or(self.engine, |e| e.name);
                }
                self.load(ui.ctx(), false);
            }
        });
        let Some(session) = &self.session else {
            ui.label("Pick a ROM and an engine, then Load.");
            return;
        };
        let view = session.view();
        let status = view.status.clone();
        let running = status == Some(Status::Running) || view.slow_run;
        let paused = matches!(status, Some(Status::Paused(_))) && !running;
        ui.horizontal_wrapped(|ui| {
            let buttons: [(&str, bool, Command, &str); 5] = [
                ("Run", paused, Command::Run, "Run until a breakpoint, a pause or the end"),
                ("Pause", running, Command::Pause, "Stop at the next instruction boundary"),
                ("Step", paused, Command::Step, "Run one instruction"),
                ("Step over", paused, Command::StepOver, "Run one instruction; a CALL, INT n or REP string instruction as a whole"),
                ("Run to ring change", paused, Command::RunToRingChange, "Run until the privilege level changes (a system call, a fault, an IRET to user mode)"),
            ];
            for (label, enabled, command, hover) in buttons {
                if ui
                    .add_enabled(enabled, egui::Button::new(label))
                    .on_hover_text(hover)
                    .clicked()
                {
                    commands.push(command);
                }
            }
            let label = ui.label("Speed");
            let before = self.speed;
            egui::ComboBox::from_id_salt("speed")
                .selected_text(speed_name(self.speed))
                .show_ui(ui, |ui| {
                    for speed in SPEEDS {
                        ui.selectable_value(&mut self.speed, speed, speed_name(speed));
                    }
                })
                .response
                .labelled_by(label.id)
                .on_hover_text("How fast Run goes: slowed down, the guest runs in short steps 30 times a second, so the panels follow every change");
            if self.speed != before {
                commands.push(Command::Speed(self.speed));
            }
            ui.separator();
            ui.label(match &status {
                _ if view.slow_run => format!("Status: running at {}", speed_name(self.speed)),
                Some(status) => format!("Status: {status}"),
                None if view.error.is_some() => "Status: not loaded".into(),
                None => "Status: loading".into(),
            });
            figures(ui, &view);
        });
        if let Some(error) = &view.error {
            ui.label(RichText::new(format!("Error: {error}")).color(Color32::LIGHT_RED));
        }
        if let Some(Status::Finished(reason)) = &status {
            let crashed = !matches!(reason, emu_core::exit::StopReason::Exited(_));
            if crashed {
                ui.label(RichText::new(format!("popek: {reason}")).color(Color32::LIGHT_RED));
            }
        }
    }

    fn debugger(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let Some(session) = &self.session else {
            return;
        };
        let view = session.view();
        let explanation = self.engine_info().map_or("", |e| e.explanation).to_string();
        egui::Panel::bottom("events")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| {
                ui.columns(4, |c| {
                    events::timeline(&mut c[0], &view);
                    events::rates(&mut c[0], &view);
                    events::log(&mut c[1], &view, &mut self.filter);
                    events::counts(&mut c[2], &view);
                    console::show(&mut c[3], &session.serial());
                });
            });
        egui::Panel::left("rings")
            .resizable(true)
            .min_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("ring panel")
                    .show(ui, |ui| {
                        rings::show(ui, &view, &explanation, &mut self.animation);
                    });
            });
        egui::Panel::right("registers")
            .resizable(true)
            .min_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("register panel")
                    .show(ui, |ui| {
                        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                        match &view.regs {
                            Some(regs) => registers::show(ui, regs, view.baseline.as_ref()),
                            None => {
                                ui.label("No registers yet.");
                            }
                        }
                    });
            });
        egui::CentralPanel::default_margins().show(ui, |ui| {
            let half = ui.available_height() * 0.6;
            ui.allocate_ui(egui::vec2(ui.available_width(), half), |ui| {
                code::show(ui, &view, &mut self.shown_rip, commands);
            });
            ui.separator();
            memory::show(ui, &view, &mut self.memory, commands);
        });
    }

    fn compare(&mut self, ui: &mut egui::Ui) {
        let mut start = false;
        compare::show(ui, self.comparison.as_ref(), &mut start);
        if start {
            self.start_comparison(ui.ctx());
        }
    }

    /// Compares the engines on the loaded ROM (or the one in the ROM field).
    fn start_comparison(&mut self, ctx: &egui::Context) {
        let ctx = ctx.clone();
        let rom = self
            .session
            .as_ref()
            .map_or_else(|| OsString::from(self.rom.trim()), |s| s.rom.clone());
        self.comparison = Some(Comparison::start(
            Arc::clone(&self.launcher),
            rom,
            Box::new(move || ctx.request_repaint()),
        ));
    }
}

/// The speeds offered: full, then instructions a second.
const SPEEDS: [Option<u64>; 7] = [
    None,
    Some(1_000_000),
    Some(100_000),
    Some(10_000),
    Some(1_000),
    Some(100),
    Some(10),
];

/// How a speed reads.
fn speed_name(speed: Option<u64>) -> String {
    match speed {
        None => "full speed".into(),
        Some(n) => format!("{n} instructions/s"),
    }
}

/// The live figures: instructions, MIPS, VMM entries per second.
fn figures(ui: &mut egui::Ui, view: &View) {
    if view.counts_instructions {
        ui.label(format!("Instructions retired: {}", view.instructions))
            .on_hover_text("Guest instructions the engine has executed since boot");
        if let Some(rate) = view.history.recent_rate(|s| s.instructions) {
            ui.label(format!("MIPS: {:.1}", rate / 1e6))
                .on_hover_text("Millions of guest instructions per second, over the last second");
        }
    }
    ui.label(format!("VMM exits: {}", view.counters.total_exits()))
        .on_hover_text("Times the guest left for the VMM (port I/O, MMIO, HLT ...)");
    if let Some(rate) = view.history.recent_rate(|s| s.exits) {
        ui.label(format!("exits/s: {rate:.0}"))
            .on_hover_text("VMM entries per second, over the last second: each costs a world switch under hardware assist");
    }
}
