//! The virtio queue view: for each device its counters, and for each queue the
//! descriptor table, the available and used rings with their indices, and the chains
//! the driver made available that the device has not taken yet.

use devices::virtio::{QueueView, VirtioView};
use eframe::egui::{self, RichText};

/// Descriptor flag names, as the virtio spec spells them.
fn flag_names(flags: u16) -> String {
    let names = [(1, "NEXT"), (2, "WRITE"), (4, "INDIRECT")];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    set.join("|")
}

/// Draws every device of `views`.
pub fn show(ui: &mut egui::Ui, views: &[VirtioView]) {
    if views.is_empty() {
        ui.label(
            "No virtio devices on this machine. Attach some when starting the GUI, as with \
             `popek run`: `popek gui net --device net`, `popek gui disk --device virtio`.",
        );
        return;
    }
    egui::ScrollArea::vertical()
        .id_salt("virtio")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for device in views {
                let c = &device.counters;
                ui.label(
                    RichText::new(format!(
                        "virtio-{}: status {:#x}, {} notifications, {} interrupts, {} buffers used, {} bytes, {} errors",
                        device.name,
                        device.status,
                        c.notifications,
                        c.interrupts,
                        c.used_buffers,
                        c.bytes,
                        c.errors
                    ))
                    .strong(),
                )
                .on_hover_text(
                    "A notification is the driver's write to QueueNotify: an exit to the VMM; \
                     an interrupt is the device telling the driver it used buffers",
                );
                for queue in &device.queues {
                    self::queue(ui, &device.name, queue);
                }
                ui.separator();
            }
        });
}

/// One queue.
fn queue(ui: &mut egui::Ui, device: &str, q: &QueueView) {
    let idx = |i: Option<u16>| i.map_or("unreadable".into(), |i| i.to_string());
    ui.label(format!(
        "{device} queue {}: size {} (max {}){}, avail idx {}, used idx {}, device next avail {}",
        q.index,
        q.regs.size,
        q.max_size,
        if q.regs.ready { "" } else { ", not ready" },
        idx(q.avail_idx),
        idx(q.used_idx),
        q.regs.next_avail
    ))
    .on_hover_text(
        "avail idx counts the chains the driver made available, used idx those the device \
         gave back; the device takes entries up to avail idx",
    );
    if !q.regs.ready {
        return;
    }
    let size = q.avail_ring.len().max(1);
    let ring = |entries: Vec<String>, upto: Option<u16>| -> String {
        let upto = upto.map_or(0, |u| usize::from(u) % size);
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if i == upto {
                    format!("[{e}]")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let avail: Vec<String> = q
        .avail_ring
        .iter()
        .map(|e| e.map_or("?".into(), |h| h.to_string()))
        .collect();
    let used: Vec<String> = q
        .used_ring
        .iter()
        .map(|e| e.map_or("?".into(), |u| format!("{}:{}", u.id, u.len)))
        .collect();
    ui.label(RichText::new(format!("  avail ring: {}", ring(avail, q.avail_idx))).monospace())
        .on_hover_text("Chain heads the driver offers; [ ] marks where it writes next");
    ui.label(RichText::new(format!("  used ring:  {}", ring(used, q.used_idx))).monospace())
        .on_hover_text(
            "head:bytes written, as the device returned them; [ ] marks where it writes next",
        );
    let flights: Vec<String> = q
        .in_flight
        .iter()
        .map(|chain| {
            chain
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    ui.label(format!(
        "  in flight: {}",
        if flights.is_empty() {
            "none".to_string()
        } else {
            flights.join(", ")
        }
    ));
    egui::CollapsingHeader::new(format!("{device} queue {} descriptor table", q.index)).show(
        ui,
        |ui| {
            egui::Grid::new((device, q.index))
                .striped(true)
                .show(ui, |ui| {
                    for h in ["#", "addr", "len", "flags", "next"] {
                        ui.label(RichText::new(h).strong());
                    }
                    ui.end_row();
                    for (i, d) in q.descriptors.iter().enumerate() {
                        ui.label(i.to_string());
                        match d {
                            Some(d) => {
                                ui.label(RichText::new(format!("{:#x}", d.addr)).monospace());
                                ui.label(d.len.to_string());
                                ui.label(flag_names(d.flags));
                                ui.label(d.next.to_string());
                            }
                            None => {
                                ui.label("unreadable");
                            }
                        }
                        ui.end_row();
                    }
                });
        },
    );
}
