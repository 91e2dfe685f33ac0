//! Where the guest console goes during `vmrun run`: the command's own output
//! owns stdout, so the console is kept as a bounded tail (shown when the
//! guest fails) and optionally streamed to stderr.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Console bytes kept for error reports.
const TAIL_BYTES: usize = 16 * 1024;

/// The shared tail; clone it to read it while the VM writes.
#[derive(Clone, Default)]
pub struct ConsoleTail {
    tail: Arc<Mutex<VecDeque<u8>>>,
    echo: bool,
}

impl ConsoleTail {
    /// A tail that also copies the console to stderr if `echo`.
    pub fn new(echo: bool) -> Self {
        Self {
            tail: Arc::default(),
            echo,
        }
    }

    /// The last bytes the guest printed.
    pub fn contents(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&tail.iter().copied().collect::<Vec<u8>>()).into_owned()
    }
}

impl Write for ConsoleTail {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.echo {
            let _ = io::stderr().write_all(buf);
        }
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend(buf);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let mut tail = ConsoleTail::new(false);
        let reader = tail.clone();
        tail.write_all(&vec![b'a'; TAIL_BYTES]).unwrap();
        tail.write_all(b"end").unwrap();
        let text = reader.contents();
        assert_eq!(text.len(), TAIL_BYTES);
        assert!(text.ends_with("aend"));
    }
}
