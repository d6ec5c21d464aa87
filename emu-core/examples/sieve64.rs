//! The translator against the interpreter on 64-bit code: a sieve of Eratosthenes over
//! 64 KiB, once on RAX..RDI (which the translator keeps in host registers) and once on
//! R8..R12 (which it keeps in its context, loaded and stored around each instruction
//! that names them). Prints time per round and the ratio, from runs of N and N + 20
//! rounds (N + 200 on the translator), so start-up cancels out.
//!
//! `cargo run --release -p emu-core --example sieve64`

use emu_core::exit::StopReason;
use emu_core::machine::bt_factory;
use emu_core::testkit::{interpreter, Asm, Machine, RCX};
use iced_x86::code_asm::*;
use std::time::Instant;

/// The sieve's flags, one byte a number.
const ARRAY: u64 = 0x20_0000;
const LIMIT: i32 = 65536;
/// Primes below LIMIT.
const PRIMES: u64 = 6542;
/// Rounds the interpreter times; the translator runs ten times as many.
const ROUNDS: u64 = 20;

/// The sieve on the registers `r`: [array, i, j, count, clear index]; RCX rounds.
fn sieve(a: &mut CodeAssembler, r: [AsmRegister64; 5]) -> Result<(), IcedError> {
    let [array, i, j, count, k] = r;
    let (mut outer, mut clear, mut iloop, mut jloop, mut next) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    a.mov(array, ARRAY)?;
    a.set_label(&mut outer)?;
    a.xor(k, k)?;
    a.set_label(&mut clear)?;
    a.mov(byte_ptr(array + k), 0)?;
    a.inc(k)?;
    a.cmp(k, LIMIT)?;
    a.jb(clear)?;
    a.mov(i, 2u64)?;
    a.xor(count, count)?;
    a.set_label(&mut iloop)?;
    a.cmp(byte_ptr(array + i), 0)?;
    a.jne(next)?;
    a.inc(count)?;
    a.lea(j, ptr(i + i))?;
    a.set_label(&mut jloop)?;
    a.cmp(j, LIMIT)?;
    a.jae(next)?;
    a.mov(byte_ptr(array + j), 1)?;
    a.add(j, i)?;
    a.jmp(jloop)?;
    a.set_label(&mut next)?;
    a.inc(i)?;
    a.cmp(i, LIMIT)?;
    a.jb(iloop)?;
    a.dec(rcx)?;
    a.jnz(outer)
}

/// Seconds to run `rounds` rounds of `asm` on the engine `engine` makes.
fn time(asm: Asm, engine: emu_core::testkit::EngineMaker, rounds: u64, count: usize) -> f64 {
    let mut m = Machine::long(asm).on(engine).regs(&[(RCX, rounds)]);
    let start = Instant::now();
    let stop = m.run_for(u64::MAX);
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(stop, StopReason::Halted);
    assert_eq!(m.state.gpr[count], PRIMES, "the sieve found the primes");
    seconds
}

fn main() {
    let variants: [(&str, Asm, usize); 2] = [
        ("RAX..RDI", |a| sieve(a, [rsi, rdx, rbx, rbp, rdi]), 5),
        ("R8..R12", |a| sieve(a, [r8, r9, r10, r11, r12]), 11),
    ];
    for (name, asm, count) in variants {
        let per_round = |engine, n: u64| {
            (time(asm, engine, n + n / 10, count) - time(asm, engine, n / 10, count)) / n as f64
        };
        let interp = per_round(interpreter, ROUNDS);
        let bt = per_round(bt_factory, ROUNDS * 10);
        println!(
            "sieve64 on {name}: interpreter {:.2} ms/round, bt {:.3} ms/round: bt {:.1} x the interpreter",
            interp * 1e3,
            bt * 1e3,
            interp / bt
        );
    }
}
