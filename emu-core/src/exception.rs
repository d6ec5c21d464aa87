//! Architectural exceptions: vectors, names and error codes.

use std::fmt;

/// Exception vectors, as the IDT numbers them.
pub mod vector {
    /// #DE: divide error (DIV/IDIV by zero or quotient overflow).
    pub const DE: u8 = 0;
    /// #DB: debug (single step, breakpoints in DR0-DR3).
    pub const DB: u8 = 1;
    /// NMI: non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// #BP: breakpoint (INT3).
    pub const BP: u8 = 3;
    /// #OF: overflow (INTO with OF set).
    pub const OF: u8 = 4;
    /// #BR: BOUND range exceeded.
    pub const BR: u8 = 5;
    /// #UD: invalid opcode.
    pub const UD: u8 = 6;
    /// #NM: device not available (FPU use with CR0.TS or CR0.EM).
    pub const NM: u8 = 7;
    /// #DF: double fault.
    pub const DF: u8 = 8;
    /// #TS: invalid TSS.
    pub const TS: u8 = 10;
    /// #NP: segment not present.
    pub const NP: u8 = 11;
    /// #SS: stack-segment fault.
    pub const SS: u8 = 12;
    /// #GP: general protection.
    pub const GP: u8 = 13;
    /// #PF: page fault.
    pub const PF: u8 = 14;
    /// #MF: x87 floating-point error.
    pub const MF: u8 = 16;
    /// #AC: alignment check.
    pub const AC: u8 = 17;
    /// #MC: machine check.
    pub const MC: u8 = 18;
    /// #XM: SIMD floating-point exception.
    pub const XM: u8 = 19;
}

/// An exception raised by an instruction, with its error code where the vector has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// IDT vector.
    pub vector: u8,
    /// Error code pushed on delivery, for the vectors that push one.
    pub error_code: Option<u32>,
}

impl Exception {
    /// #DE.
    pub const fn divide_error() -> Self {
        Exception {
            vector: vector::DE,
            error_code: None,
        }
    }
    /// #UD.
    pub const fn invalid_opcode() -> Self {
        Exception {
            vector: vector::UD,
            error_code: None,
        }
    }
    /// #GP with an error code (0 when no selector is involved).
    pub const fn general_protection(code: u32) -> Self {
        Exception {
            vector: vector::GP,
            error_code: Some(code),
        }
    }
    /// #SS with an error code.
    pub const fn stack_fault(code: u32) -> Self {
        Exception {
            vector: vector::SS,
            error_code: Some(code),
        }
    }
    /// #TS with an error code (the selector of the TSS or of the stack it named).
    pub const fn invalid_tss(code: u32) -> Self {
        Exception {
            vector: vector::TS,
            error_code: Some(code),
        }
    }
    /// #DB.
    pub const fn debug() -> Self {
        Exception {
            vector: vector::DB,
            error_code: None,
        }
    }
    /// #NP with an error code (the selector of the absent segment).
    pub const fn not_present(code: u32) -> Self {
        Exception {
            vector: vector::NP,
            error_code: Some(code),
        }
    }
    /// #BR (BOUND).
    pub const fn bound_range() -> Self {
        Exception {
            vector: vector::BR,
            error_code: None,
        }
    }
    /// #AC: a misaligned access with alignment checking on (error code 0).
    pub const fn alignment_check() -> Self {
        Exception {
            vector: vector::AC,
            error_code: Some(0),
        }
    }
    /// #BP (INT3).
    pub const fn breakpoint() -> Self {
        Exception {
            vector: vector::BP,
            error_code: None,
        }
    }
    /// #OF (INTO).
    pub const fn overflow() -> Self {
        Exception {
            vector: vector::OF,
            error_code: None,
        }
    }

    /// The mnemonic students see in the manuals, e.g. "#GP".
    pub fn mnemonic(&self) -> &'static str {
        match self.vector {
            vector::DE => "#DE",
            vector::DB => "#DB",
            vector::NMI => "NMI",
            vector::BP => "#BP",
            vector::OF => "#OF",
            vector::BR => "#BR",
            vector::UD => "#UD",
            vector::NM => "#NM",
            vector::DF => "#DF",
            vector::TS => "#TS",
            vector::NP => "#NP",
            vector::SS => "#SS",
            vector::GP => "#GP",
            vector::PF => "#PF",
            vector::MF => "#MF",
            vector::AC => "#AC",
            vector::MC => "#MC",
            vector::XM => "#XM",
            _ => "#??",
        }
    }

    /// The long name, e.g. "general protection".
    pub fn name(&self) -> &'static str {
        match self.vector {
            vector::DE => "divide error",
            vector::DB => "debug",
            vector::NMI => "non-maskable interrupt",
            vector::BP => "breakpoint",
            vector::OF => "overflow",
            vector::BR => "bound range exceeded",
            vector::UD => "invalid opcode",
            vector::NM => "device not available",
            vector::DF => "double fault",
            vector::TS => "invalid TSS",
            vector::NP => "segment not present",
            vector::SS => "stack-segment fault",
            vector::GP => "general protection",
            vector::PF => "page fault",
            vector::MF => "x87 floating-point error",
            vector::AC => "alignment check",
            vector::MC => "machine check",
            vector::XM => "SIMD floating-point exception",
            _ => "reserved vector",
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, vector {})",
            self.mnemonic(),
            self.name(),
            self.vector
        )?;
        if let Some(code) = self.error_code {
            write!(f, " error code {code:#x}")?;
        }
        Ok(())
    }
}
