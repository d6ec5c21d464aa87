//! Writing to stdout and stderr without panicking.
//!
//! `println!` panics when the write fails: when the reader of a pipe went away (`popek
//! roms | head -1`) or the disk is full (`> /dev/full`). Every write of `popek` goes
//! through here instead and fails with an [`OutputError`], which `main` turns into the
//! exit status: a closed pipe ends quietly, as a tool killed by SIGPIPE would (status
//! [`EXIT_BROKEN_PIPE`](crate::cli::EXIT_BROKEN_PIPE)); any other failure is one error
//! line (status [`EXIT_OUTPUT`](crate::cli::EXIT_OUTPUT)).
//!
//! Output written while the guest runs (its serial output, the trace) cannot return an
//! error to anyone: a [`RunOutput`] keeps the first failure and asks the machine to stop,
//! and the run reports it when it ends.

use emu_core::stop::StopRequest;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Which of the process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "standard output",
            Stream::Stderr => "standard error",
        })
    }
}

/// A write to stdout or stderr failed.
#[derive(Debug)]
pub struct OutputError {
    /// Where.
    pub stream: Stream,
    /// Why.
    pub error: io::Error,
}

impl OutputError {
    /// Whether the reader went away (EPIPE): the conventional quiet end.
    pub fn is_closed_pipe(&self) -> bool {
        self.error.kind() == io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to {}: {}", self.stream, self.error)
    }
}

impl std::error::Error for OutputError {}

/// Writes `args` to `stream` and flushes it.
pub fn write(stream: Stream, args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let result = match stream {
        Stream::Stdout => {
            let mut out = io::stdout().lock();
            out.write_fmt(args).and_then(|()| out.flush())
        }
        Stream::Stderr => io::stderr().lock().write_fmt(args),
    };
    result.map_err(|error| OutputError { stream, error })
}

/// `println!` that returns an [`OutputError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write($crate::output::Stream::Stdout, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that returns an [`OutputError`] instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write($crate::output::Stream::Stderr, format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, outln};

/// What the output written during a run has to tell when the run ends: the first write
/// that failed. Shared by the writers of a run; connected to the machine's stop request,
/// so that a failure ends the run instead of running the guest for nobody.
#[derive(Debug, Default)]
pub struct RunOutput {
    failure: Mutex<Option<OutputError>>,
    stop: OnceLock<Arc<StopRequest>>,
}

impl RunOutput {
    /// A failure slot, not yet connected to a machine.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Stops `stop`'s machine at the first failure (and at once if one happened already).
    pub fn connect(&self, stop: Arc<StopRequest>) {
        let stop = self.stop.get_or_init(|| stop);
        if self.failed() {
            stop.request();
        }
    }

    /// Keeps `error` if it is the first failure, and stops the machine.
    fn fail(&self, error: OutputError) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
        if let Some(stop) = self.stop.get() {
            stop.request();
        }
    }

    /// Whether a write failed.
    pub fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The first failure, if any.
    pub fn take_failure(&self) -> Option<OutputError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Runs a write to `stream`, noting its failure.
    fn note<T>(&self, stream: Stream, result: io::Result<T>) -> io::Result<T> {
        result.inspect_err(|e| {
            let error = io::Error::new(e.kind(), e.to_string());
            self.fail(OutputError { stream, error });
        })
    }

    /// The trace line of an event, written to stderr; after a failure, nothing more.
    pub fn trace(&self, line: fmt::Arguments<'_>) {
        if !self.failed() {
            let written = io::stderr().lock().write_fmt(line);
            let _ = self.note(Stream::Stderr, written);
        }
    }
}

/// The guest's serial output: stdout, its failures noted in a [`RunOutput`]. The UART
/// counts the bytes a failed write loses.
pub struct GuestStdout {
    run: Arc<RunOutput>,
}

impl GuestStdout {
    /// Stdout, failures noted in `run`.
    pub fn new(run: Arc<RunOutput>) -> Self {
        GuestStdout { run }
    }
}

impl Write for GuestStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = io::stdout().write(buf);
        self.run.note(Stream::Stdout, written)
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = io::stdout().flush();
        self.run.note(Stream::Stdout, flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_stops_the_machine() {
        let run = RunOutput::new();
        let stop = Arc::new(StopRequest::new());
        run.connect(Arc::clone(&stop));
        assert!(!run.failed() && !stop.is_requested());
        let closed = || Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe));
        let _ = run.note(Stream::Stderr, closed());
        let _ = run.note(Stream::Stdout, closed());
        assert!(stop.take(), "the failure asked the machine to stop");
        let failure = run.take_failure().expect("kept");
        assert_eq!(failure.stream, Stream::Stderr);
        assert!(failure.is_closed_pipe());
        assert_eq!(
            failure.to_string(),
            "cannot write to standard error: broken pipe"
        );
    }

    #[test]
    fn a_failure_before_the_machine_exists_stops_it_once_connected() {
        let run = RunOutput::new();
        let _ = run.note(
            Stream::Stdout,
            Err::<(), _>(io::Error::from(io::ErrorKind::StorageFull)),
        );
        let stop = Arc::new(StopRequest::new());
        run.connect(Arc::clone(&stop));
        assert!(stop.take());
        assert!(!run.take_failure().unwrap().is_closed_pipe());
    }
}
