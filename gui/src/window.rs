//! The real window: eframe with its glow (OpenGL) renderer.

use crate::app::{Options, PopekApp};
use crate::launcher::Launcher;
use eframe::egui::{self, ColorImage};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a screenshot run waits for the guest to end before taking it anyway.
const SCREENSHOT_DEADLINE: Duration = Duration::from_secs(60);
/// How long after the guest ended the screenshot is taken, so the last view is drawn
/// and the ring picture's arrows have settled.
const SCREENSHOT_SETTLE: Duration = Duration::from_millis(2000);

/// Opens the window and returns when it is closed. With `screenshot`, the window runs
/// until the guest ends (and the comparison, if one was asked for), saves a PNG of
/// itself there and closes.
pub fn run(
    launcher: Arc<dyn Launcher>,
    options: Options,
    screenshot: Option<PathBuf>,
) -> Result<(), String> {
    // The window is built for X11 only (no Wayland backend, to keep the build small).
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        return Err(
            "no X11 display: DISPLAY is not set (without a screen, run it under \
                    Xvfb: `Xvfb :1 & DISPLAY=:1 popek gui ...`)"
                .into(),
        );
    }
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Popek")
            .with_inner_size([1500.0, 950.0]),
        ..Default::default()
    };
    let saved: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
    let app = Window {
        app: PopekApp::new(launcher, options),
        screenshot: screenshot.map(|path| Screenshot {
            path,
            opened: Instant::now(),
            ended: None,
            requested: false,
            saved: Arc::clone(&saved),
        }),
    };
    let wanted = app.screenshot.is_some();
    eframe::run_native("Popek", native, Box::new(|_| Ok(Box::new(app))))
        .map_err(|e| format!("cannot open the window: {e}"))?;
    let result = saved.lock().unwrap_or_else(PoisonError::into_inner).take();
    match result {
        Some(result) => result,
        None if wanted => Err("the window closed before the screenshot was taken".into()),
        None => Ok(()),
    }
}

struct Window {
    app: PopekApp,
    screenshot: Option<Screenshot>,
}

/// A screenshot to take once the guest ended.
struct Screenshot {
    path: PathBuf,
    opened: Instant,
    /// When the guest was first seen ended.
    ended: Option<Instant>,
    requested: bool,
    saved: Arc<Mutex<Option<Result<(), String>>>>,
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.show(ui);
        let Some(shot) = &mut self.screenshot else {
            return;
        };
        if shot.requested {
            return;
        }
        if self.app.settled() && shot.ended.is_none() {
            shot.ended = Some(Instant::now());
        }
        let settled = shot.ended.is_some_and(|t| t.elapsed() >= SCREENSHOT_SETTLE);
        if settled || shot.opened.elapsed() >= SCREENSHOT_DEADLINE {
            shot.requested = true;
            let ctx = ui.ctx().clone();
            let path = shot.path.clone();
            let saved = Arc::clone(&shot.saved);
            ui.ctx().request_screenshot(move |image| {
                let result = save_png(&path, &image);
                *saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                ctx.request_repaint();
            });
        }
        // Keep frames coming while waiting, even with nothing changing.
        ui.ctx().request_repaint_after(Duration::from_millis(100));
    }
}

/// Writes `image` to `path` as an RGBA PNG.
pub fn save_png(path: &Path, image: &ColorImage) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write `{}`: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let [width, height] = image.size;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    let bytes: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|p| p.to_srgba_unmultiplied())
        .collect();
    writer.write_image_data(&bytes).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}
