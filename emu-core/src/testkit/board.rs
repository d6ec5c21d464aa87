//! Whole machines (devices and VMM included) on every software engine, for tests whose
//! guests talk to the board.

use super::{EngineMaker, SOFTWARE_ENGINES};
use crate::machine::Machine;
use std::fmt::Debug;

/// A whole machine of `ram_size` bytes on the engine `engine` makes, its COM1 output
/// discarded.
pub fn board(engine: EngineMaker, ram_size: usize) -> Machine {
    Machine::new(ram_size, Box::new(std::io::sink()), engine()).expect("machine builds")
}

/// Runs `run` on a fresh whole machine per software engine. They must agree on what
/// `run` returns, on the final CPU state and on RAM; the first engine's result and
/// machine are returned.
pub fn on_every_engine<T: PartialEq + Debug>(
    ram_size: usize,
    run: impl Fn(&mut Machine) -> T,
) -> (T, Machine) {
    on_each(SOFTWARE_ENGINES, ram_size, run)
}

/// [`on_every_engine`] over the engines `engines` make.
pub fn on_each<T: PartialEq + Debug>(
    engines: &[(&str, EngineMaker)],
    ram_size: usize,
    run: impl Fn(&mut Machine) -> T,
) -> (T, Machine) {
    let ((first, engine), others) = engines.split_first().expect("an engine");
    let mut m = board(*engine, ram_size);
    let result = run(&mut m);
    for &(name, engine) in others {
        let mut other = board(engine, ram_size);
        let pair = format!("{name} and {first}");
        assert_eq!(run(&mut other), result, "{pair}: result");
        assert_eq!(other.cpu_state().ok(), m.cpu_state().ok(), "{pair}: state");
        assert!(other.ram().as_slice() == m.ram().as_slice(), "{pair}: RAM");
    }
    (result, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuState;
    use crate::exit::StopReason;
    use crate::testkit::interpreter;

    #[test]
    fn engines_that_agree_give_one_result() {
        // mov byte [0x2000], 0x5A; out 0xF4, al (the debug exit).
        const CODE: [u8; 9] = [0xC6, 0x05, 0x00, 0x20, 0x00, 0x00, 0x5A, 0xE6, 0xF4];
        let twice = [
            ("interp", interpreter as EngineMaker),
            ("again", interpreter),
        ];
        let (stop, m) = on_each(&twice, 1 << 20, |m| {
            m.ram_mut().as_mut_slice()[0x1000..][..CODE.len()].copy_from_slice(&CODE);
            let mut state = CpuState::multiboot(0x1000, 0, 0);
            state.gpr[0] = 3;
            m.set_cpu_state(&state).unwrap();
            m.run(100).stop
        });
        assert_eq!(stop, StopReason::Exited(3));
        assert_eq!(m.ram().as_slice()[0x2000], 0x5A);
    }
}
