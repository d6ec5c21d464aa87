//! The comparison view: one ROM run to its end under every engine that can run here,
//! with time, instructions and VMM entries by cause side by side, as a table and as bar
//! charts. The runs go one after another on a thread of their own, each through a
//! machine handle like the debugger's.

use crate::launcher::{EngineInfo, Launcher};
use eframe::egui::{self, RichText};
use egui_extras::{Column, TableBuilder};
use egui_plot::{Bar, BarChart, Legend, Plot};
use emu_core::exit::ExitReason;
use emu_core::machine::control::{MachineHandle, Status};
use std::ffi::OsString;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long one engine may run the ROM before the comparison stops it.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

/// What one engine did with the ROM.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall-clock time from the start of the run to its end.
    pub seconds: f64,
    /// Instructions retired, if the engine counts them.
    pub instructions: Option<u64>,
    /// How the run ended, in the CLI's words.
    pub end: String,
    /// Exits by reason, indexed like [`ExitReason::ALL`].
    pub exits: [u64; ExitReason::COUNT],
    /// Ring transitions.
    pub rings: u64,
    /// Exceptions delivered.
    pub exceptions: u64,
    /// Hardware interrupts delivered.
    pub interrupts: u64,
}

/// One engine's line of the comparison.
#[derive(Debug, Clone)]
pub struct Row {
    /// The engine.
    pub engine: EngineInfo,
    /// What it did, or why it could not run.
    pub result: Result<Measured, String>,
}

/// A comparison, running or done.
pub struct Comparison {
    /// The ROM compared.
    pub rom: OsString,
    rows: Arc<Mutex<Vec<Row>>>,
    done: Arc<Mutex<bool>>,
    /// Why the comparison could not start.
    pub failed: Option<String>,
}

impl Comparison {
    /// Starts running `rom` under every engine of `launcher`, one after another.
    pub fn start(
        launcher: Arc<dyn Launcher>,
        rom: OsString,
        repaint: Box<dyn Fn() + Send>,
    ) -> Comparison {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new(false));
        let mut comparison = Comparison {
            rom: rom.clone(),
            rows: Arc::clone(&rows),
            done: Arc::clone(&done),
            failed: None,
        };
        let spawned = std::thread::Builder::new()
            .name("popek-gui-compare".into())
            .spawn(move || {
                for engine in launcher.engines() {
                    let result = match &engine.unavailable {
                        Some(why) => Err(format!("not available here: {why}")),
                        None => measure(&*launcher, &rom, engine.name),
                    };
                    lock(&rows).push(Row { engine, result });
                    repaint();
                }
                *lock(&done) = true;
                repaint();
            });
        if let Err(e) = spawned {
            *lock(&comparison.done) = true;
            comparison.failed = Some(format!("cannot start the comparison thread: {e}"));
        }
        comparison
    }

    /// The rows so far.
    pub fn rows(&self) -> Vec<Row> {
        lock(&self.rows).clone()
    }

    /// Whether every engine has had its run.
    pub fn done(&self) -> bool {
        *lock(&self.done)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `rom` on `engine` to its end (or [`TIME_LIMIT`]) and measures it.
fn measure(launcher: &dyn Launcher, rom: &OsString, engine: &str) -> Result<Measured, String> {
    let machine = launcher.boot(rom, engine, Box::new(std::io::sink()))?;
    let counts = machine.counts_instructions();
    let (handle, thread) = MachineHandle::spawn(machine, None).map_err(|e| e.to_string())?;
    let outcome = (|| {
        let start = Instant::now();
        handle.resume()?;
        let mut status = handle.wait(TIME_LIMIT)?;
        let seconds = start.elapsed().as_secs_f64();
        if status == Status::Running {
            handle.pause()?;
            status = Status::Finished(emu_core::exit::StopReason::Paused);
        }
        let counters = handle.counters()?;
        let instructions = handle.instructions_retired()?;
        let end = match status {
            Status::Finished(emu_core::exit::StopReason::Paused) => {
                format!("still running after {} s: stopped", TIME_LIMIT.as_secs())
            }
            Status::Finished(reason) => reason.to_string(),
            other => other.to_string(),
        };
        Ok::<_, emu_core::machine::control::ControlError>(Measured {
            seconds,
            instructions: counts.then_some(instructions),
            end: end.lines().next().unwrap_or_default().to_string(),
            exits: counters.exits,
            rings: counters.ring_transitions.values().sum(),
            exceptions: counters.exceptions.values().sum(),
            interrupts: counters.interrupts.values().sum(),
        })
    })()
    .map_err(|e| e.to_string());
    let _ = handle.quit();
    let _ = thread.join();
    outcome
}

/// Draws the comparison view: a button to start one, the table and the bar charts.
pub fn show(ui: &mut egui::Ui, comparison: Option<&Comparison>, start: &mut bool) {
    ui.horizontal(|ui| {
        *start = ui
            .button("Compare engines")
            .on_hover_text(
                "Run the current ROM to its end under every engine there is, one after another",
            )
            .clicked();
        match comparison {
            Some(c) if !c.done() => {
                ui.spinner();
                ui.label(format!("running {} ...", c.rom.to_string_lossy()));
            }
            Some(c) => {
                ui.label(format!("{} under every engine", c.rom.to_string_lossy()));
            }
            None => {
                ui.label("No comparison yet.");
            }
        }
    });
    let Some(comparison) = comparison else {
        return;
    };
    if let Some(why) = &comparison.failed {
        ui.colored_label(egui::Color32::LIGHT_RED, why);
    }
    let rows = comparison.rows();
    table(ui, &rows);
    ui.separator();
    let measured: Vec<(&str, &Measured)> = rows
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|m| (r.engine.name, m)))
        .collect();
    let engine_names: Vec<&str> = measured.iter().map(|(name, _)| *name).collect();
    let reasons: Vec<(usize, ExitReason)> = ExitReason::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| measured.iter().any(|(_, m)| m.exits[*i] > 0))
        .map(|(i, r)| (i, *r))
        .collect();
    let reason_names: Vec<&str> = reasons.iter().map(|(_, r)| r.name()).collect();
    ui.columns(2, |columns| {
        columns[0].label("Time (ms)");
        Plot::new("compare time")
            .height(220.0)
            .allow_scroll(false)
            .x_axis_formatter(|mark, _| category(&engine_names, mark.value))
            .show(&mut columns[0], |plot| {
                for (i, (name, m)) in measured.iter().enumerate() {
                    let bar = Bar::new(i as f64, m.seconds * 1e3).name(*name).width(0.6);
                    plot.bar_chart(BarChart::new(*name, vec![bar]));
                }
            });
        columns[1].label("VMM exits by cause");
        Plot::new("compare exits")
            .height(220.0)
            .legend(Legend::default())
            .allow_scroll(false)
            .x_axis_formatter(|mark, _| category(&reason_names, mark.value))
            .show(&mut columns[1], |plot| {
                let width = 0.8 / measured.len().max(1) as f64;
                for (e, (name, m)) in measured.iter().enumerate() {
                    let bars = reasons
                        .iter()
                        .enumerate()
                        .map(|(slot, (i, reason))| {
                            Bar::new(slot as f64 + e as f64 * width, m.exits[*i] as f64)
                                .name(reason.name())
                                .width(width)
                        })
                        .collect();
                    plot.bar_chart(BarChart::new(*name, bars));
                }
            });
    });
}

/// The name of the bar group at `x` (groups sit at 0, 1, 2 ...), for the axis.
fn category(names: &[&str], x: f64) -> String {
    let slot = x.round();
    if (x - slot).abs() > 1e-6 || slot < 0.0 {
        return String::new();
    }
    names
        .get(slot as usize)
        .map_or_else(String::new, |n| n.to_string())
}

/// The numbers, one engine a row.
fn table(ui: &mut egui::Ui, rows: &[Row]) {
    let columns = [
        "Engine",
        "Technique",
        "Time (ms)",
        "Instructions",
        "VMM exits",
        "Ring transitions",
        "Exceptions",
        "Interrupts",
        "End",
    ];
    TableBuilder::new(ui)
        .id_salt("compare table")
        .striped(true)
        .columns(Column::auto().at_least(70.0), columns.len() - 1)
        .column(Column::remainder())
        .header(20.0, |mut header| {
            for name in columns {
                header.col(|ui| {
                    ui.label(RichText::new(name).strong());
                });
            }
        })
        .body(|mut body| {
            for row in rows {
                body.row(20.0, |mut r| {
                    r.col(|ui| {
                        ui.label(row.engine.name)
                            .on_hover_text(row.engine.explanation);
                    });
                    r.col(|ui| {
                        ui.label(row.engine.technique);
                    });
                    match &row.result {
                        Ok(m) => {
                            let exits: u64 = m.exits.iter().sum();
                            let by_cause: Vec<String> = ExitReason::ALL
                                .iter()
                                .zip(m.exits)
                                .filter(|(_, n)| *n > 0)
                                .map(|(reason, n)| format!("{}: {n}", reason.name()))
                                .collect();
                            let cells = [
                                format!("{:.1}", m.seconds * 1e3),
                                m.instructions
                                    .map_or("not counted".into(), |n| n.to_string()),
                                exits.to_string(),
                                m.rings.to_string(),
                                m.exceptions.to_string(),
                                m.interrupts.to_string(),
                                m.end.clone(),
                            ];
                            for (i, cell) in cells.into_iter().enumerate() {
                                r.col(|ui| {
                                    let label = ui.label(cell);
                                    if i == 2 {
                                        label.on_hover_text(by_cause.join("\n"));
                                    }
                                });
                            }
                        }
                        Err(why) => {
                            r.col(|ui| {
                                ui.label(why);
                            });
                            for _ in 0..6 {
                                r.col(|_| {});
                            }
                        }
                    }
                });
            }
        });
}
