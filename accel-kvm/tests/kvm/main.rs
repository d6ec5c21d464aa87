//! Tests of the KVM engine. Each first checks for /dev/kvm and passes, saying it skipped,
//! on a host without it.

mod common;
mod control;
mod engine;
mod guests;
mod interrupts;
mod step;
mod stop;
mod switch;
mod tables;
