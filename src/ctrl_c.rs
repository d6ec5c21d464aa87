//! Ctrl-C: SIGINT stops the guest instead of killing Popek, so that the run still
//! prints what was asked for (`--stats`, how it ended) before it exits with
//! [`EXIT_INTERRUPTED`]. A second Ctrl-C ends the process at once.
//!
//! SIGINT is blocked and a thread of its own waits for it (sigwait): the request is then
//! made from an ordinary thread, where [`StopRequest::request`] may lock and signal,
//! rather than from a signal handler, where it could not.

use crate::cli::EXIT_INTERRUPTED;
use emu_core::stop::StopRequest;
use std::io;
use std::ptr;
use std::sync::Arc;

/// The signal set holding SIGINT alone.
fn sigint() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t; SIGINT is a valid signal.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}

/// From now on, SIGINT requests `stop`, and a second SIGINT exits with
/// [`EXIT_INTERRUPTED`].
///
/// Call it before the process starts other threads: SIGINT is blocked in the calling
/// thread and in the threads it starts later, so that only the waiting thread takes it.
pub fn stop_on_ctrl_c(stop: Arc<StopRequest>) -> io::Result<()> {
    let set = sigint();
    // SAFETY: `set` is a valid signal set; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let mut signal = 0;
            let mut pressed = false;
            loop {
                // SAFETY: `set` is a valid signal set, blocked in this thread (inherited),
                // and `signal` a valid place for the number of the signal taken.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    return;
                }
                if pressed {
                    std::process::exit(EXIT_INTERRUPTED.into());
                }
                pressed = true;
                stop.request();
            }
        })?;
    Ok(())
}
