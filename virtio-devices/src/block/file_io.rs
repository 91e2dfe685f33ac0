//! Positioned I/O (`pread`/`pwrite`) between a file and guest memory.
//!
//! vm-memory's `File` implementations use `read`/`write` at the file
//! position; the worker wants explicit offsets instead, so that no state is
//! kept in the shared file description and requests cannot interfere.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

/// `file` accessed from `offset` on; each transfer advances the offset.
pub(crate) struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> FileAt<'a> {
    pub(crate) fn new(file: &'a File, offset: u64) -> Self {
        FileAt { file, offset }
    }

    fn file_offset(&self) -> Result<libc::off64_t, VolatileMemoryError> {
        libc::off64_t::try_from(self.offset).map_err(|_| {
            VolatileMemoryError::IOError(io::Error::from_raw_os_error(libc::EOVERFLOW))
        })
    }

    /// Moves past the `n` bytes a successful (non-negative) transfer moved.
    fn advance(&mut self, n: isize) -> usize {
        let n = n.unsigned_abs();
        self.offset = self.offset.saturating_add(n as u64);
        n
    }
}

impl ReadVolatile for FileAt<'_> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let offset = self.file_offset()?;
        let guard = buf.ptr_guard_mut();
        // SAFETY: the fd is valid while `self.file` is borrowed; `guard` keeps
        // the `buf.len()` bytes it points to mapped for the duration of the
        // call, and the kernel writes at most `buf.len()` bytes there.
        let n = unsafe {
            libc::pread64(
                self.file.as_raw_fd(),
                guard.as_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            )
        };
        if n < 0 {
            // A partial transfer may have happened before the error.
            buf.bitmap().mark_dirty(0, buf.len());
            return Err(VolatileMemoryError::IOError(io::Error::last_os_error()));
        }
        let n = self.advance(n);
        buf.bitmap().mark_dirty(0, n);
        Ok(n)
    }
}

impl WriteVolatile for FileAt<'_> {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let offset = self.file_offset()?;
        let guard = buf.ptr_guard();
        // SAFETY: the fd is valid while `self.file` is borrowed; `guard` keeps
        // the `buf.len()` bytes it points to mapped and readable for the
        // duration of the call, and the kernel reads at most that many.
        let n = unsafe {
            libc::pwrite64(
                self.file.as_raw_fd(),
                guard.as_ptr().cast::<libc::c_void>(),
                buf.len(),
                offset,
            )
        };
        if n < 0 {
            return Err(VolatileMemoryError::IOError(io::Error::last_os_error()));
        }
        Ok(self.advance(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use vm_memory::{Bytes, GuestAddress, GuestMemory};
    use vmm_sys_util::tempfile::TempFile;

    use crate::GuestMemoryMmap;

    #[test]
    fn transfers_at_explicit_offsets_without_moving_the_file_position() {
        let tmp = TempFile::new().unwrap();
        let mut file = tmp.into_file();
        file.write_all(&[0u8; 64]).unwrap();
        file.seek(SeekFrom::Start(3)).unwrap();

        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        mem.write_slice(b"abcdefgh", GuestAddress(0x100)).unwrap();
        let src = mem.get_slice(GuestAddress(0x100), 8).unwrap();
        FileAt::new(&file, 40).write_all_volatile(&src).unwrap();

        let mut dst = mem.get_slice(GuestAddress(0x200), 4).unwrap();
        FileAt::new(&file, 42)
            .read_exact_volatile(&mut dst)
            .unwrap();
        let mut back = [0u8; 4];
        mem.read_slice(&mut back, GuestAddress(0x200)).unwrap();
        assert_eq!(&back, b"cdef");

        // The file position is where it was left.
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 61);
        assert_eq!(&rest[37..45], b"abcdefgh");
    }

    #[test]
    fn reading_past_the_end_fails_instead_of_leaving_stale_bytes() {
        let tmp = TempFile::new().unwrap();
        let mut file = tmp.into_file();
        file.write_all(&[7u8; 10]).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let mut dst = mem.get_slice(GuestAddress(0), 16).unwrap();
        assert!(FileAt::new(&file, 0).read_exact_volatile(&mut dst).is_err());
        // An offset that does not fit off64_t is refused, not wrapped.
        let mut dst = mem.get_slice(GuestAddress(0), 1).unwrap();
        assert!(FileAt::new(&file, u64::MAX)
            .read_volatile(&mut dst)
            .is_err());
    }
}
