//! (in progress)

use super::Handler;
use iced_x86::Instruction;

/// The handler for `ins`, if this family implements it.
pub fn handler(_ins: &Instruction) -> Option<Handler> {
    None
}
