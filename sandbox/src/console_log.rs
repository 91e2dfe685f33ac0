//! Where a VMM process's output (the guest's serial console and the VMM's
//! own messages) goes: a bounded tail kept in memory for reports of a VM
//! that failed, a log file in the sandbox directory that stops growing at a
//! cap (a guest cannot fill the host's /run), and optionally a copy on
//! stderr (`vmrun run --console`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// Console bytes kept in memory for error reports.
const TAIL_BYTES: usize = 16 * 1024;
/// Lines a report quotes.
const TAIL_LINES: usize = 15;
/// The log file stops here unless told otherwise.
pub const LOG_CAP_BYTES: u64 = 4 << 20;

/// Where a VM's console goes besides the in-memory tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Copy it to stderr.
    pub echo: bool,
    /// The log file stops at this many bytes (then a line saying so).
    pub log_cap_bytes: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            echo: false,
            log_cap_bytes: LOG_CAP_BYTES,
        }
    }
}

struct Inner {
    tail: VecDeque<u8>,
    file: Option<File>,
    written: u64,
    config: ConsoleConfig,
}

/// The console of one VM; clones share it.
#[derive(Clone)]
pub struct ConsoleLog {
    inner: Arc<Mutex<Inner>>,
}

impl ConsoleLog {
    /// A console that writes `file` (up to `config`'s cap) and copies to
    /// stderr if `config` says so.
    pub fn new(file: Option<File>, config: ConsoleConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                tail: VecDeque::with_capacity(TAIL_BYTES),
                file,
                written: 0,
                config,
            })),
        }
    }

    /// Takes in what the VMM printed.
    pub fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.config.echo {
            let _ = io::stderr().write_all(bytes);
        }
        inner.tail.extend(bytes);
        let excess = inner.tail.len().saturating_sub(TAIL_BYTES);
        inner.tail.drain(..excess);
        let room = inner.config.log_cap_bytes.saturating_sub(inner.written);
        let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let Some(file) = inner.file.as_mut() else {
            return;
        };
        let mut result = file.write_all(&bytes[..take]);
        let full = take < bytes.len();
        if full {
            result = result.and_then(|()| {
                file.write_all(b"\n[vmrun: console log full; the rest is not kept]\n")
            });
        }
        inner.written += take as u64;
        // Full, or failing: the file is done with.
        if full || result.is_err() {
            inner.file = None;
        }
    }

    /// The last lines the guest printed.
    pub fn tail(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (front, back) = inner.tail.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        let log = ConsoleLog::new(None, ConsoleConfig::default());
        for i in 0..100 {
            log.append(format!("line {i}\n").as_bytes());
        }
        let tail = log.tail();
        assert!(
            tail.starts_with("line 85\n") && tail.ends_with("line 99"),
            "{tail}"
        );
        log.append(&vec![b'a'; 3 * TAIL_BYTES]);
        assert_eq!(log.tail().len(), TAIL_BYTES);
    }

    #[test]
    fn the_file_stops_at_the_cap() {
        let path = std::env::temp_dir().join(format!("vmrun-console-{}", std::process::id()));
        let log = ConsoleLog::new(Some(File::create(&path).unwrap()), ConsoleConfig::default());
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..6 {
            log.append(&chunk);
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > LOG_CAP_BYTES && len < LOG_CAP_BYTES + 100, "{len}");
        std::fs::remove_file(&path).unwrap();

        let small = ConsoleConfig {
            log_cap_bytes: 1000,
            ..ConsoleConfig::default()
        };
        let log = ConsoleLog::new(Some(File::create(&path).unwrap()), small);
        log.append(&[b'y'; 600]);
        log.append(&[b'y'; 600]);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 1000 && len < 1100, "{len}");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("not kept]\n"));
        std::fs::remove_file(path).unwrap();
    }
}
