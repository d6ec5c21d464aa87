//! The binary translator against the interpreter, end to end: every embedded ROM prints
//! the same bytes and exits with the same status under `--engine bt` as under the
//! interpreter, and the same budget stops both at the same instruction.

use std::process::{Command, Output};

fn popek(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs")
}

/// Runs `rom` on `engine` with the extra arguments.
fn run(rom: &str, engine: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", rom, "--engine", engine];
    args.extend_from_slice(extra);
    popek(&args)
}

#[test]
fn every_embedded_rom_prints_the_same_under_bt_as_under_the_interpreter() {
    for rom in test_roms::all() {
        let interp = run(rom.name, "interp", &[]);
        let bt = run(rom.name, "bt", &[]);
        assert!(
            !String::from_utf8_lossy(&bt.stderr).contains("panicked"),
            "{}: bt panicked: {}",
            rom.name,
            String::from_utf8_lossy(&bt.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&interp.stdout),
            String::from_utf8_lossy(&bt.stdout),
            "{}: output",
            rom.name
        );
        assert_eq!(
            interp.status.code(),
            bt.status.code(),
            "{}: exit status",
            rom.name
        );
    }
}

#[test]
fn a_budget_stops_bt_at_the_same_instruction_as_the_interpreter() {
    // Budgets that end inside the loop's translated blocks, and one inside a block.
    for budget in ["1000", "123457", "2000001"] {
        let extra = ["--max-instructions", budget, "--stats"];
        let interp = run("loop", "interp", &extra);
        let bt = run("loop", "bt", &extra);
        let line = |o: &Output| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.starts_with("instructions"))
                .map(str::to_owned)
        };
        assert!(line(&bt).is_some(), "bt printed its counters");
        assert_eq!(line(&interp), line(&bt), "budget {budget}");
        assert_eq!(interp.status.code(), bt.status.code(), "budget {budget}");
        assert_eq!(interp.stdout, bt.stdout, "budget {budget}");
    }
}
