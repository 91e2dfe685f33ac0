//! The guest console as the host sees it: bytes go to an output (stdout),
//! and complete lines are watched for the events the VMM reports on
//! (the agent is ready, the guest kernel panicked).

use std::io::{self, Write};
use std::sync::mpsc::Sender;

use crate::vm::VmEvent;

/// Longest console line kept for matching; the rest of a longer line is
/// still printed but not buffered (the guest decides line lengths).
const MAX_LINE: usize = 4096;

/// The line the agent prints when it serves.
pub const READY_LINE: &str = "vmrun-agent ready";
const PANIC_MARK: &str = "Kernel panic - not syncing";
const AGENT_FATAL_MARK: &str = "vmrun-agent: fatal:";

/// What a console line means to the VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    AgentReady,
    KernelPanic(String),
    AgentFatal(String),
}

/// Classifies one console line.
pub fn classify(line: &str) -> Option<ConsoleEvent> {
    let line = line.trim_end_matches('\r');
    if line.ends_with(READY_LINE) {
        Some(ConsoleEvent::AgentReady)
    } else if let Some(at) = line.find(PANIC_MARK) {
        Some(ConsoleEvent::KernelPanic(line[at..].to_string()))
    } else {
        line.find(AGENT_FATAL_MARK)
            .map(|at| ConsoleEvent::AgentFatal(line[at..].to_string()))
    }
}

/// Writes guest output through to `out` and reports console events.
pub struct ConsoleSink<W: Write> {
    out: W,
    line: Vec<u8>,
    events: Sender<VmEvent>,
}

impl<W: Write> ConsoleSink<W> {
    /// A sink printing to `out` and sending events on `events`.
    pub fn new(out: W, events: Sender<VmEvent>) -> Self {
        Self {
            out,
            line: Vec::with_capacity(256),
            events,
        }
    }

    fn end_line(&mut self) {
        if let Some(event) = classify(&String::from_utf8_lossy(&self.line)) {
            // The receiver only goes away while the VM is torn down.
            let _ = self.events.send(VmEvent::Console(event));
        }
        self.line.clear();
    }
}

impl<W: Write> Write for ConsoleSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        // Console output is best effort: a closed stdout must not stop the guest.
        if self.out.write_all(buf).is_ok() && buf.contains(&b'\n') {
            let _ = self.out.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn classifies_ready_panic_and_fatal_lines() {
        assert_eq!(
            classify("vmrun-agent ready"),
            Some(ConsoleEvent::AgentReady)
        );
        assert_eq!(
            classify("vmrun-agent ready\r"),
            Some(ConsoleEvent::AgentReady)
        );
        assert_eq!(
            classify("[ 3.1] Kernel panic - not syncing: Attempted to kill init!"),
            Some(ConsoleEvent::KernelPanic(
                "Kernel panic - not syncing: Attempted to kill init!".into()
            ))
        );
        assert!(matches!(
            classify("vmrun-agent: fatal: cannot mount /proc"),
            Some(ConsoleEvent::AgentFatal(_))
        ));
        assert_eq!(classify("echo vmrun-agent ready later"), None);
        assert_eq!(classify("hello"), None);
    }

    #[test]
    fn passes_bytes_through_and_reports_complete_lines() {
        let (tx, rx) = channel();
        let mut sink = ConsoleSink::new(Vec::new(), tx);
        sink.write_all(b"boot\nvmrun-agent ").unwrap();
        assert!(rx.try_recv().is_err());
        sink.write_all(b"ready\n").unwrap();
        assert!(matches!(
            rx.try_recv(),
            Ok(VmEvent::Console(ConsoleEvent::AgentReady))
        ));
        assert_eq!(sink.out, b"boot\nvmrun-agent ready\n");
    }

    #[test]
    fn endless_line_does_not_grow_the_buffer() {
        let (tx, _rx) = channel();
        let mut sink = ConsoleSink::new(io::sink(), tx);
        for _ in 0..1000 {
            sink.write_all(&[b'x'; 1024]).unwrap();
        }
        assert_eq!(sink.line.len(), MAX_LINE);
    }
}
