//! The ring picture: rings 0-3 drawn as concentric rings with the guest's current ring
//! lit, and a band below them for the VMM. The last ring transition and the last exit
//! to the VMM are drawn as arrows with their causes, bright when new and fading to a
//! trace.

use crate::log::Kind;
use crate::session::View;
use eframe::egui::{self, Align2, Color32, FontId, Pos2, Sense, Stroke, Vec2};
use emu_core::exit::GuestEvent;
use emu_core::trace::EventKind;
use std::time::{Duration, Instant};

/// How long a new arrow takes to fade to its trace.
const FADE: Duration = Duration::from_millis(1500);
/// The trace an old arrow keeps.
const TRACE_ALPHA: f32 = 0.45;

/// What the picture remembers between frames: when it first saw the latest events.
#[derive(Debug, Default)]
pub struct RingAnimation {
    ring_seen: Option<(u64, Instant)>,
    exit_seen: Option<(u64, Instant)>,
}

impl RingAnimation {
    /// How bright an arrow for event `seq` is now; notes when it was first seen.
    fn alpha(slot: &mut Option<(u64, Instant)>, seq: u64) -> f32 {
        let now = Instant::now();
        let seen = match slot {
            Some((s, at)) if *s == seq => *at,
            _ => {
                *slot = Some((seq, now));
                now
            }
        };
        let t = now.duration_since(seen).as_secs_f32() / FADE.as_secs_f32();
        (1.0 - t).max(TRACE_ALPHA)
    }
}

/// The fill of ring `ring`, lit or not.
fn ring_color(ring: u8, lit: bool) -> Color32 {
    match (ring, lit) {
        (_, true) => Color32::from_rgb(250, 200, 60),
        (0, _) => Color32::from_rgb(110, 45, 45),
        (1, _) => Color32::from_rgb(80, 60, 40),
        (2, _) => Color32::from_rgb(55, 70, 45),
        _ => Color32::from_rgb(40, 60, 85),
    }
}

/// Draws the picture for `view`, whose engine runs the guest with `explanation`.
pub fn show(ui: &mut egui::Ui, view: &View, explanation: &str, anim: &mut RingAnimation) {
    let cpl = view.regs.as_ref().map(|r| r.cpl());
    let last_ring = view
        .log
        .entries()
        .iter()
        .rev()
        .find_map(|l| match l.event.kind {
            EventKind::Guest(GuestEvent::RingTransition { from, to, cause }) => {
                Some((l.seq, from, to, cause.to_string()))
            }
            _ => None,
        });
    let last_exit = view
        .log
        .entries()
        .iter()
        .rev()
        .find(|l| Kind::of(&l.event.kind).enters_vmm());
    let width = ui.available_width().clamp(200.0, 360.0);
    let (rect, response) = ui.allocate_exact_size(Vec2::new(width, width + 40.0), Sense::hover());
    let painter = ui.painter_at(rect);
    let outer = width / 2.0 - 6.0;
    let center = Pos2::new(rect.center().x, rect.top() + outer + 4.0);
    let radius = |ring: u8| outer * (0.34 + 0.22 * f32::from(ring));
    let text = ui.visuals().strong_text_color();
    for ring in (0..4u8).rev() {
        let lit = cpl == Some(ring);
        painter.circle(
            center,
            radius(ring),
            ring_color(ring, lit),
            Stroke::new(1.0, Color32::from_gray(20)),
        );
        let label_y = if ring == 0 {
            center.y
        } else {
            center.y - (radius(ring) + radius(ring - 1)) / 2.0
        };
        let name = match ring {
            0 => "ring 0\nkernel",
            3 => "ring 3 user",
            1 => "ring 1",
            _ => "ring 2",
        };
        let color = if lit { Color32::BLACK } else { text };
        painter.text(
            Pos2::new(center.x, label_y),
            Align2::CENTER_CENTER,
            name,
            FontId::proportional(13.0),
            color,
        );
    }
    let band = egui::Rect::from_min_max(
        Pos2::new(rect.left() + 4.0, rect.bottom() - 34.0),
        Pos2::new(rect.right() - 4.0, rect.bottom() - 2.0),
    );
    let exit_alpha = last_exit.map(|l| RingAnimation::alpha(&mut anim.exit_seen, l.seq));
    let band_fill = match exit_alpha {
        Some(a) if a > TRACE_ALPHA => Color32::from_rgb(200, 110, 40).gamma_multiply(a),
        _ => Color32::from_rgb(70, 50, 35),
    };
    painter.rect_filled(band, 4.0, band_fill);
    painter.text(
        band.center(),
        Align2::CENTER_CENTER,
        "VMM (Popek: devices, exits)",
        FontId::proportional(13.0),
        text,
    );
    // The point on ring `ring`'s band at `angle` (radians, 0 = right, clockwise).
    let at = |ring: u8, angle: f32| {
        let r = if ring == 0 {
            radius(0) * 0.5
        } else {
            (radius(ring) + radius(ring - 1)) / 2.0
        };
        center + Vec2::angled(angle) * r
    };
    let mut animating = false;
    if let Some((seq, from, to, cause)) = &last_ring {
        let alpha = RingAnimation::alpha(&mut anim.ring_seen, *seq);
        animating |= alpha > TRACE_ALPHA;
        let color = Color32::from_rgb(90, 220, 120).gamma_multiply(alpha);
        let angle = -0.6;
        let start = at(*from, angle);
        let end = at(*to, angle);
        painter.arrow(start, end - start, Stroke::new(3.0, color));
        painter.text(
            Pos2::new(rect.right() - 4.0, rect.top() + 4.0),
            Align2::RIGHT_TOP,
            format!("{from} -> {to}: {cause}"),
            FontId::proportional(13.0),
            color,
        );
    }
    if let (Some(l), Some(alpha), Some(cpl)) = (last_exit, exit_alpha, cpl) {
        animating |= alpha > TRACE_ALPHA;
        let color = Color32::from_rgb(240, 140, 60).gamma_multiply(alpha);
        let start = at(cpl, std::f32::consts::FRAC_PI_2 + 0.5);
        let end = Pos2::new(start.x, band.top());
        painter.arrow(start, end - start, Stroke::new(3.0, color));
        painter.text(
            Pos2::new(rect.left() + 4.0, band.top() - 4.0),
            Align2::LEFT_BOTTOM,
            exit_name(&l.event.kind),
            FontId::proportional(13.0),
            color,
        );
    }
    if animating {
        ui.ctx().request_repaint();
    }
    let now = match cpl {
        Some(cpl) => format!("Guest in ring {cpl}"),
        None => "No guest".to_string(),
    };
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Image, true, format!("Ring view: {now}"))
    });
    ui.label(now);
    ui.label(match &last_ring {
        Some((_, from, to, cause)) => format!("Last transition: ring {from} -> {to} ({cause})"),
        None => "Last transition: none yet".into(),
    });
    ui.label(match last_exit {
        Some(l) => format!("Last VMM entry: {}", exit_name(&l.event.kind)),
        None => "Last VMM entry: none yet".into(),
    });
    ui.label(explanation);
}

/// A short name for an event that enters the VMM.
fn exit_name(kind: &EventKind) -> String {
    match kind {
        EventKind::Io { port, write, .. } => {
            format!("{} port {port:#x}", if *write { "out" } else { "in" })
        }
        EventKind::Mmio { addr, write, .. } => {
            format!("mmio {} {addr:#x}", if *write { "store" } else { "load" })
        }
        EventKind::Exit(reason) => reason.name().to_string(),
        other => format!("{other:?}"),
    }
}
