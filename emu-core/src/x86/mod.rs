//! The x86 architecture, shared by every software engine.

pub mod opcode;
pub mod paging;
