//! A bounded byte buffer for guest data that the host socket has not taken
//! yet.

use std::io::{self, Write};

use vm_memory::VolatileSlice;

/// Bytes not written into a [`TxBuf`] because it would overflow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TxBufFull;

/// A FIFO of at most `cap` bytes.
#[derive(Debug)]
pub(crate) struct TxBuf {
    data: Vec<u8>,
    head: usize,
    cap: usize,
}

/// Capacity kept allocated after the buffer drains.
const RETAINED_CAPACITY: usize = 16 * 1024;

impl TxBuf {
    pub(crate) fn new(cap: usize) -> Self {
        TxBuf {
            data: Vec::new(),
            head: 0,
            cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `src`, all or nothing.
    pub(crate) fn push(&mut self, src: &VolatileSlice<'_, ()>) -> Result<(), TxBufFull> {
        let n = src.len();
        if n > self.cap - self.len() {
            return Err(TxBufFull);
        }
        if self.data.len() + n > self.cap {
            self.data.drain(..self.head);
            self.head = 0;
        }
        let old = self.data.len();
        self.data.reserve_exact(n);
        self.data.resize(old + n, 0);
        src.copy_to(&mut self.data[old..]);
        Ok(())
    }

    /// Writes as much as `w` takes without blocking. Returns the number of
    /// bytes written; `WouldBlock` is not an error.
    pub(crate) fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while !self.is_empty() {
            match w.write(&self.data[self.head..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.head += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() {
            self.clear();
        }
        Ok(written)
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.head = 0;
        self.data.shrink_to(RETAINED_CAPACITY);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slice(v: &mut [u8]) -> VolatileSlice<'_, ()> {
        VolatileSlice::from(v)
    }

    /// Takes at most `room` bytes per call, then blocks.
    struct Throttled {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bounded_fifo() {
        let mut b = TxBuf::new(10);
        let mut a = *b"abcdef";
        let mut c = *b"ghijk";
        b.push(&slice(&mut a)).unwrap();
        assert_eq!(b.push(&slice(&mut c)), Err(TxBufFull));
        assert_eq!(b.len(), 6);

        let mut w = Throttled {
            got: Vec::new(),
            room: 4,
        };
        assert_eq!(b.flush_to(&mut w).unwrap(), 4);
        assert_eq!(b.len(), 2);
        // Compaction makes room for 8 more.
        let mut d = *b"12345678";
        b.push(&slice(&mut d)).unwrap();
        assert_eq!(b.len(), 10);
        assert!(b.data.len() <= 10);

        w.room = 100;
        assert_eq!(b.flush_to(&mut w).unwrap(), 10);
        assert!(b.is_empty());
        assert_eq!(w.got, b"abcdef12345678");
    }

    #[test]
    fn write_errors_propagate() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = TxBuf::new(10);
        let mut a = *b"abc";
        b.push(&slice(&mut a)).unwrap();
        assert_eq!(
            b.flush_to(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
