//! The real window: `popek gui rings --run --screenshot` under Xvfb, with eframe's glow
//! renderer on Mesa's software OpenGL. The screenshot lands in the build folder
//! (`target/gui-rings.png`) for people to look at; the test checks that it is a PNG of
//! the whole window with the ring picture drawn.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An Xvfb server, killed when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Xvfb on a free display it picks itself (`-displayfd`), or None if there is no
/// Xvfb on this host.
fn xvfb() -> Option<Xvfb> {
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1600x1000x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let number = line.trim();
    assert!(!number.is_empty(), "Xvfb did not say which display it took");
    Some(Xvfb {
        display: format!(":{number}"),
        child,
    })
}

/// Where the screenshot goes: `target/gui-rings.png`.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the tests' temporary folder is inside target/")
        .join("gui-rings.png")
}

#[test]
fn the_window_runs_rings_and_saves_a_screenshot() {
    let Some(x) = xvfb() else {
        eprintln!("skipped: Xvfb not installed (apt-get install xvfb)");
        return;
    };
    let path = screenshot_path();
    let _ = std::fs::remove_file(&path);
    let mut popek = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["gui", "rings", "--run", "--screenshot"])
        .arg(&path)
        .env("DISPLAY", &x.display)
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("popek starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = popek.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = popek.kill();
            panic!("popek gui did not close after its screenshot");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut popek.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "popek gui failed: {status}\n{stderr}");
    let file = std::fs::File::open(&path).expect("the screenshot was written");
    let decoder = png::Decoder::new(BufReader::new(file));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1500, 950), "the whole window");
    // The lit ring (the guest's current one) is drawn in its own yellow.
    let lit = pixels
        .chunks(frame.line_size / frame.width as usize)
        .filter(|p| p[0] == 250 && p[1] == 200 && p[2] == 60)
        .count();
    assert!(
        lit > 1000,
        "the ring picture is drawn with a ring lit ({lit} pixels)"
    );
}

#[test]
fn without_a_display_it_says_so_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["gui", "hello"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("popek starts");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("popek: error: no X11 display: DISPLAY is not set"),
        "{stderr}"
    );
}
