//! Fuzzing at scale, not run by default (`cargo test --release --workspace -- --ignored`):
//! every embedded ROM with random bits flipped, booted as `popek run` boots it and run
//! under an instruction budget. A guest can do anything to itself and nothing to Popek:
//! each mutant is refused with an error or runs until it stops for a reason, and none
//! panics.

use emu_core::exit::StopReason;
use emu_core::machine::Machine;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;
use test_roms::{Boot, Rom};

/// Mutants made of each ROM.
const MUTANTS: u64 = 400;
/// Instructions (and, apart, delivered events) each mutant may run.
const BUDGET: u64 = 2_000_000;
/// Guest RAM, as `popek run` gives by default.
const RAM: usize = 64 << 20;
/// A mutant has 1 to this many bits flipped.
const MAX_FLIPS: u64 = 8;
/// Where the mutants' random numbers start: the run is the same every time.
const SEED: u64 = 0x706F_7065_6B21;

/// SplitMix64: a small, well-mixed generator, enough to pick bits to flip.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `image` with 1 to MAX_FLIPS random bits flipped.
fn mutant(image: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let mut m = image.to_vec();
    for _ in 0..=rng.below(MAX_FLIPS) {
        let bit = rng.below(8 * m.len() as u64);
        m[(bit / 8) as usize] ^= 1 << (bit % 8);
    }
    m
}

/// Boots `image` as `rom` boots and runs it: how it ended, in a few words.
fn run(rom: &Rom, image: &[u8]) -> String {
    let mut machine = Machine::interpreted(RAM, Box::new(std::io::sink())).expect("machine");
    let loaded = match rom.boot {
        Boot::Multiboot => machine.load_multiboot(image, rom.name).map(|_| ()),
        Boot::Bios => machine.load_bios(image),
    };
    if loaded.is_err() {
        return "refused".into();
    }
    let outcome = machine.run(BUDGET);
    assert!(outcome.instructions <= BUDGET, "ran past the budget");
    match outcome.stop {
        StopReason::Budget => "budget".into(),
        StopReason::Exited(_) => "exited".into(),
        StopReason::Halted => "halted".into(),
        StopReason::Shutdown(_) => "triple fault".into(),
        // Which instruction: only those of features CPUID reports may be missing.
        StopReason::Unsupported { what, .. } => {
            let mnemonic = what.split_whitespace().next().unwrap_or_default();
            format!("unsupported {mnemonic}")
        }
        other => other.to_string(),
    }
}

#[test]
#[ignore = "fuzzing at scale: cargo test --release --workspace -- --ignored"]
fn bit_flipped_roms_never_panic() {
    let start = Instant::now();
    let mut rng = SplitMix64(SEED);
    let mut endings: BTreeMap<String, u64> = BTreeMap::new();
    let mut panics = Vec::new();
    for rom in test_roms::all() {
        for n in 0..MUTANTS {
            let image = mutant(rom.image, &mut rng);
            match catch_unwind(AssertUnwindSafe(|| run(rom, &image))) {
                Ok(ending) => *endings.entry(ending).or_default() += 1,
                Err(_) => panics.push(format!("{} mutant {n}", rom.name)),
            }
        }
    }
    println!(
        "{} mutants of {} ROMs in {:?}: {endings:?}, {} panics",
        MUTANTS * test_roms::all().len() as u64,
        test_roms::all().len(),
        start.elapsed(),
        panics.len()
    );
    assert!(panics.is_empty(), "panicked: {panics:?}");
}
