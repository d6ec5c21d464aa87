//! Listening for gdb, one session at a time, and what happens between sessions.

use crate::target::{PopekTarget, StopReply};
use crate::EngineChooser;
use emu_core::exit::StopReason;
use emu_core::machine::{ControlError, MachineHandle, Status};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting server looks at the other side: the gdb connection while the
/// guest runs, the machine while no gdb is connected.
const POLL: Duration = Duration::from_millis(20);

/// What a guest does when its gdb connection breaks without a detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisconnect {
    /// It pauses until the next gdb connects.
    Pause,
    /// It runs on without a debugger; the next gdb that connects stops it.
    Run,
}

/// How the debugged machine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The guest finished (it exited, crashed, ...).
    Finished(StopReason),
    /// gdb killed it (`kill`, or gdb quit while attached).
    Killed,
}

/// Why serving stopped before the machine ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting a connection failed.
    #[error("gdb server: cannot accept a connection: {0}")]
    Accept(#[source] std::io::Error),
    /// The machine's control plane failed.
    #[error("gdb server: {0}")]
    Machine(#[from] ControlError),
}

/// Serves gdb on `listener` until the guest ends or gdb kills it. The machine waits
/// paused for the first connection. `log` hears what happens, one line at a time
/// (connections, disconnections).
pub fn serve(
    listener: &TcpListener,
    handle: &MachineHandle,
    engines: Arc<EngineChooser>,
    on_disconnect: OnDisconnect,
    mut log: impl FnMut(&str),
) -> Result<Ended, ServeError> {
    loop {
        let (stream, peer) = match accept(listener, handle)? {
            Ok(connection) => connection,
            Err(reason) => return Ok(Ended::Finished(reason)),
        };
        if let Status::Finished(reason) = handle.pause()? {
            // The guest ended between the look and the pause: nothing left to debug.
            return Ok(Ended::Finished(reason));
        }
        log(&format!("gdb connected from {peer}"));
        let mut target = PopekTarget::new(handle.clone(), Arc::clone(&engines));
        let outcome = GdbStub::new(Buffered::new(stream)).run_blocking::<EventLoop>(&mut target);
        // gdb removes its breakpoints when it detaches, but not when it breaks off.
        match target.clear_debug() {
            Ok(()) | Err(ControlError::Finished(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match outcome {
            Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {}
            Ok(DisconnectReason::Kill) => {
                log("gdb killed the guest");
                handle.quit()?;
                return Ok(Ended::Killed);
            }
            Ok(DisconnectReason::Disconnect) => {
                log("gdb detached: the guest runs on; gdb can connect again");
                run_on(handle)?;
            }
            Err(e) => {
                log(&format!("gdb connection ended: {e}"));
                match on_disconnect {
                    OnDisconnect::Pause => {
                        handle.pause()?;
                        log("the guest is paused until gdb connects again");
                    }
                    OnDisconnect::Run => {
                        run_on(handle)?;
                        log("the guest runs on; gdb can connect again");
                    }
                }
            }
        }
        if let Some(reason) = finished(handle)? {
            return Ok(Ended::Finished(reason));
        }
    }
}

/// Waits for a connection, or for the guest (running undebugged) to finish: why it did.
fn accept(
    listener: &TcpListener,
    handle: &MachineHandle,
) -> Result<Result<(TcpStream, SocketAddr), StopReason>, ServeError> {
    listener.set_nonblocking(true).map_err(ServeError::Accept)?;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false).map_err(ServeError::Accept)?;
                return Ok(Ok((stream, peer)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Some(reason) = finished(handle)? {
                    return Ok(Err(reason));
                }
                std::thread::sleep(POLL);
            }
            // A connection that broke before it was accepted is the client's business.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(ServeError::Accept(e)),
        }
    }
}

/// Why the guest finished, if it did.
fn finished(handle: &MachineHandle) -> Result<Option<StopReason>, ControlError> {
    Ok(match handle.status()? {
        Status::Finished(reason) => Some(reason),
        _ => None,
    })
}

/// Lets a guest run on without a debugger (one that finished stays so). A step gdb
/// left running is ended first: resuming would not change it into a run.
fn run_on(handle: &MachineHandle) -> Result<(), ControlError> {
    handle.pause()?;
    match handle.resume() {
        Ok(()) | Err(ControlError::Finished(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// gdbstub's blocking event loop: waits for the machine to stop, or for gdb to say
/// something (Ctrl-C) while it runs.
enum EventLoop {}

impl BlockingEventLoop for EventLoop {
    type Target = PopekTarget;
    type Connection = Buffered;
    type StopReason = StopReply;

    fn wait_for_stop_reason(
        target: &mut PopekTarget,
        conn: &mut Buffered,
    ) -> Result<Event<StopReply>, WaitForStopReasonError<String, std::io::Error>> {
        loop {
            if let Some(stop) = target
                .poll_stop(POLL)
                .map_err(WaitForStopReasonError::Target)?
            {
                return Ok(Event::TargetStopped(stop));
            }
            if conn
                .peek()
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut PopekTarget) -> Result<Option<StopReply>, String> {
        target.interrupt().map(Some)
    }
}

/// The connection to gdb, its replies gathered and sent whole at each flush: gdbstub
/// writes a byte at a time, and with TCP_NODELAY (which a debugger wants) each byte
/// would go out as a segment of its own.
pub struct Buffered {
    stream: TcpStream,
    out: Vec<u8>,
}

impl Buffered {
    fn new(stream: TcpStream) -> Buffered {
        Buffered {
            stream,
            out: Vec::new(),
        }
    }
}

impl Connection for Buffered {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), std::io::Error> {
        self.out.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), std::io::Error> {
        self.out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), std::io::Error> {
        let out = std::mem::take(&mut self.out);
        Write::write_all(&mut self.stream, &out)?;
        Write::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> Result<(), std::io::Error> {
        self.stream.set_nodelay(true)
    }
}

impl ConnectionExt for Buffered {
    fn read(&mut self) -> Result<u8, std::io::Error> {
        ConnectionExt::read(&mut self.stream)
    }

    fn peek(&mut self) -> Result<Option<u8>, std::io::Error> {
        ConnectionExt::peek(&mut self.stream)
    }
}
