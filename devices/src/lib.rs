//! The device model every engine shares.
