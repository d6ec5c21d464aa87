//! The binary translator against the interpreter, end to end: every embedded ROM prints
//! the same bytes and exits with the same status under `--engine bt` (plain, and with
//! full virtualization) as under the interpreter, the same budget stops both at the
//! same instruction, and the `popf` ROM shows what trap-and-emulate cannot hide.

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
        // Plain translation, and full virtualization (ring compression, modelled).
        for extra in [&[][..], &["--virt", "full"][..]] {
            let bt = run(rom.name, "bt", extra);
            let what = format!("{} {extra:?}", rom.name);
            let err = String::from_utf8_lossy(&bt.stderr);
            assert!(!err.contains("panicked"), "{what}: bt panicked: {err}");
            assert_eq!(
                String::from_utf8_lossy(&interp.stdout),
                String::from_utf8_lossy(&bt.stdout),
                "{what}: output"
            );
            assert_eq!(
                interp.status.code(),
                bt.status.code(),
                "{what}: exit status"
            );
        }
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

/// The `popf` ROM's checks, each a sensitive but unprivileged instruction.
const POPF_CHECKS: [&str; 8] = [
    "popf.cli-then-pushf-shows-if-clear",
    "popf.popf-clears-if",
    "popf.sgdt-shows-the-loaded-gdt",
    "popf.sgdt-shows-the-loaded-limit",
    "popf.sidt-shows-the-loaded-idt",
    "popf.smsw-matches-cr0",
    "popf.push-cs-shows-ring-0",
    "popf.mov-from-ss-shows-ring-0",
];

#[test]
fn full_virtualization_hides_the_deprivileged_kernel_and_trap_and_emulate_does_not() {
    let interp = run("popf", "interp", &[]);
    let full = run("popf", "bt", &["--virt", "full", "--stats"]);
    let trap = run("popf", "bt", &["--virt", "trap", "--stats"]);
    let out = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    for check in POPF_CHECKS {
        assert!(
            out(&interp).contains(&format!("PASS {check}\n")),
            "interp: {check}"
        );
        assert!(
            out(&trap).contains(&format!("FAIL {check}:")),
            "trap: {check}"
        );
    }
    // Full virtualization: the same bytes as the interpreter, and the rewritten
    // instructions counted as VMM call-outs.
    assert_eq!(out(&interp), out(&full));
    assert_eq!(
        (interp.status.code(), full.status.code()),
        (Some(0), Some(0))
    );
    assert_eq!(
        trap.status.code(),
        Some(1),
        "the guest saw it was deprivileged"
    );
    let stats = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(stats(&full).contains("VMM call-out (sensitive, rewritten): Popfd"));
    assert!(stats(&full).contains("trap (privileged, emulated by the VMM): Lgdt"));
    assert!(stats(&trap).contains("unseen (sensitive, real CPU's answer): Sgdt"));
}

#[test]
fn virt_without_the_translator_is_refused_in_one_line() {
    let o = popek(&["run", "hello", "--virt", "full"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--virt needs --engine bt"), "{err}");
}

#[test]
fn show_translation_prints_the_guest_block_beside_its_host_code() {
    // The ELF entry point, where the first block starts.
    let image = test_roms::find("hello").expect("embedded").image;
    let entry = u32::from_le_bytes(image[24..28].try_into().unwrap());
    let at = format!("{entry:#x}");
    let o = run("hello", "bt", &["--show-translation", &at]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("guest block at {at}:")), "{err}");
    assert!(err.contains("host code ("), "{err}");
    // The budget check every block starts with.
    assert!(err.contains("shrx rcx,r14,r13"), "{err}");
    let o = run("hello", "interp", &["--show-translation", &at]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --engine bt"));
}

/// The counter `name` in `--stats` output (an engine line "engine  N name").
fn counter(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("engine")?.trim_start();
            let (n, what) = rest.split_once(' ')?;
            (what == name).then(|| n.parse().expect("a count"))
        })
        .unwrap_or_else(|| panic!("no counter {name:?} in:\n{stderr}"))
}

#[test]
fn shadow_page_tables_fill_hidden_faults_trace_writes_and_reflect_true_faults() {
    let interp = run("addrspace", "interp", &[]);
    let out = String::from_utf8_lossy(&interp.stdout).into_owned();
    for check in [
        "addrspace.cr3-back-to-a",
        "addrspace.pte-write-remaps",
        "addrspace.other-space-pte-write-seen",
        "addrspace.other-space-pde-write-seen",
        "addrspace.accessed-set-again",
        "addrspace.missing-page-cr2",
        "addrspace.read-only-error",
    ] {
        assert!(out.contains(&format!("PASS {check}\n")), "interp: {check}");
    }
    assert_eq!(interp.status.code(), Some(0), "{out}");
    for virt in ["full", "trap"] {
        let o = run("addrspace", "bt", &["--virt", virt, "--stats"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), out, "--virt {virt}");
        assert_eq!(o.status.code(), Some(0), "--virt {virt}");
        let err = String::from_utf8_lossy(&o.stderr);
        let n = |name: &str| counter(&err, &format!("shadow paging: {name}"));
        assert!(n("hidden faults (shadow fills)") > 0, "{err}");
        assert!(n("trace faults (page-table writes)") > 0, "{err}");
        assert!(n("shadow entries dropped") > 0, "{err}");
        // The two page faults the ROM takes on purpose, and nothing else.
        assert_eq!(n("true faults (reflected to the guest)"), 2, "{err}");
        assert_eq!(n("address spaces built"), 2, "{err}");
        assert!(n("address spaces reused") >= 2 * 64, "{err}");
    }
    // A write to a traced table is a trace fault when it happens, not at the next fill:
    // the nano ROM's ptemod loop writes a PTE of its live tables (then INVLPG) and never
    // touches the page that PTE maps, so no fill follows.
    let o = run(
        "nano",
        "bt",
        &[
            "--virt",
            "full",
            "--append",
            "op=ptemod iters=100",
            "--stats",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        counter(&err, "shadow paging: trace faults (page-table writes)") >= 1,
        "{err}"
    );
    assert!(
        counter(&err, "shadow paging: shadow entries dropped") >= 1,
        "{err}"
    );
    // Without ring compression the guest's own tables serve: no shadow counters.
    let plain = run("addrspace", "bt", &["--stats"]);
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("shadow paging"));
}

/// The `smc` ROM's checks: code written between (and, once, right before) its runs.
const SMC_CHECKS: [&str; 9] = [
    "smc.patched-immediate",
    "smc.next-instruction",
    "smc.next-instruction-left",
    "smc.branch-retargeted",
    "smc.branch-target-rewritten",
    "smc.generated-code",
    "smc.rep-movs-over-code",
    "smc.data-beside-code",
    "smc.aliased-page",
];

#[test]
fn self_modifying_code_passes_on_every_software_engine_and_bt_retranslates_it() {
    for (engine, extra) in [
        ("interp", &[][..]),
        ("interp", &["--assist", "vtx"][..]),
        ("bt", &[][..]),
        ("bt", &["--virt", "full"][..]),
        ("bt", &["--virt", "trap"][..]),
    ] {
        let o = run("smc", engine, &[extra, &["--stats"]].concat());
        let out = String::from_utf8_lossy(&o.stdout);
        let what = format!("{engine} {extra:?}");
        for check in SMC_CHECKS {
            assert!(out.contains(&format!("PASS {check}\n")), "{what}: {out}");
        }
        assert!(!out.contains("FAIL"), "{what}: {out}");
        assert_eq!(o.status.code(), Some(0), "{what}");
        if engine == "bt" {
            // The code was translated before it was written, and translated again after.
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                counter(&err, "translation flushes: code written") >= 100,
                "{err}"
            );
            assert!(
                counter(&err, "translation cache hits (host code found)") > 0,
                "{err}"
            );
            assert!(counter(&err, "branches chained") > 0, "{err}");
        }
    }
}

/// The `trace: ` lines of a run's stderr (`--trace` prints each event as it happens).
fn trace_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("trace: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn trace_engine_shows_every_block_translated_and_every_flush_for_written_code() {
    let o = run("smc", "bt", &["--trace", "engine", "--stats"]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines = trace_lines(&o);
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count() as u64;
    let blocks = count("translated: ");
    assert!(blocks > 0, "{err}");
    assert_eq!(blocks, counter(&err, "blocks translated"));
    let flushes = count("bt: every translation dropped: guest code was written");
    assert!(flushes >= 100, "{err}");
    assert_eq!(flushes, counter(&err, "translation flushes: code written"));
    // Each flush is followed by the written block translated again, from its new code.
    let i = lines
        .iter()
        .position(|l| l.contains("every translation dropped"))
        .expect("a flush");
    assert!(
        lines[i + 1].contains("bt: block at rip 0x"),
        "{}",
        lines[i + 1]
    );
    // A block's line says where it is and what it became.
    let block = lines.iter().find(|l| l.contains("translated: ")).unwrap();
    assert!(
        (block.contains(" instructions, ") || block.contains(": 1 instruction, "))
            && block.ends_with(" bytes of host code"),
        "{block}"
    );
}

#[test]
fn trace_engine_records_nothing_under_the_interpreter_nor_unless_asked() {
    let o = run("smc", "interp", &["--trace", "engine"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(trace_lines(&o), Vec::<String>::new());
    // Under bt, other kinds asked for: no engine event among them.
    let o = run("smc", "bt", &["--trace", "io"]);
    let lines = trace_lines(&o);
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("bt: ") && !l.contains("shadow paging")),
        "{lines:?}"
    );
}

#[test]
fn trace_engine_shows_shadow_faults_at_the_roms_addresses() {
    // `addrspace.c`: SECOND_VA, the page after the 4 MiB window, faults twice on
    // purpose (missing, then read-only): the only true faults.
    const SECOND_VA: &str = "0x401000";
    let o = run(
        "addrspace",
        "bt",
        &["--virt", "full", "--trace", "engine,exceptions", "--stats"],
    );
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines = trace_lines(&o);
    let having =
        |what: &str| -> Vec<&String> { lines.iter().filter(|l| l.contains(what)).collect() };
    let hidden = having("shadow paging: hidden fault at 0x");
    assert_eq!(
        hidden.len() as u64,
        counter(&err, "shadow paging: hidden faults (shadow fills)")
    );
    let traced = having("shadow paging: trace fault: page table at physical 0x");
    assert!(!traced.is_empty(), "{err}");
    let true_faults = having("shadow paging: true fault at");
    assert_eq!(true_faults.len(), 2, "{true_faults:?}");
    for l in &true_faults {
        assert!(
            l.contains(&format!(
                "true fault at {SECOND_VA} (reflected to the guest)"
            )),
            "{l}"
        );
    }
    // Each true fault comes just before the #PF it is reflected as.
    for (i, l) in lines.iter().enumerate() {
        if l.contains("true fault") {
            assert!(lines[i + 1].contains("exception #PF"), "{}", lines[i + 1]);
        }
    }
    // The deprivileged kernel's privileged instructions trap to the VMM.
    assert!(!having("virt: lgdt at rip 0x").is_empty(), "{err}");
    assert!(!having(": trap (emulated by the VMM)").is_empty(), "{err}");
}
