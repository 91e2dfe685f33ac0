//! Writer for the "newc" cpio format, the one the Linux kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).

use std::io::{self, Write};

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// Errors writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry {0:?}: names must be relative, non-empty and without NUL")]
    BadName(String),
    #[error("cpio entry {0:?}: larger than the format's 4 GiB limit")]
    TooLarge(String),
    #[error("cannot write the archive: {0}")]
    Io(#[from] io::Error),
}

/// Streams entries into a newc archive. Entries are written in the order
/// given: a directory must come before what it contains.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// An archive written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// Adds `name` (relative, e.g. `bin/sh`) with permission bits `perm`.
    pub fn add(&mut self, name: &str, perm: u32, kind: &EntryKind) -> Result<(), CpioError> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(CpioError::BadName(name.to_string()));
        }
        let (kind_bits, data, rdev): (u32, &[u8], (u32, u32)) = match kind {
            EntryKind::Directory => (S_IFDIR, &[], (0, 0)),
            EntryKind::File(data) => (S_IFREG, data, (0, 0)),
            EntryKind::Symlink(target) => (S_IFLNK, target.as_bytes(), (0, 0)),
            EntryKind::CharDevice { major, minor } => (S_IFCHR, &[], (*major, *minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(name.into()))?;
        let nlink = if matches!(kind, EntryKind::Directory) {
            2
        } else {
            1
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entry(name, ino, kind_bits | (perm & 0o7777), nlink, size, rdev)?;
        self.write_padded(data)?;
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
    ) -> Result<(), CpioError> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = Vec::with_capacity(110 + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.write_padded(&header)
    }

    fn write_padded(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.written += pad as u64;
        Ok(())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.entry(TRAILER, 0, 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, data) triples: a minimal newc parser.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>, u32, u32)> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap(), 16)
                .unwrap()
        };
        loop {
            assert_eq!(&bytes[..6], MAGIC);
            let mode = field(bytes, 1);
            let size = field(bytes, 6) as usize;
            let (rmaj, rmin) = (field(bytes, 9), field(bytes, 10));
            let namesize = field(bytes, 11) as usize;
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            let pad4 = |n: usize| (n + 3) & !3;
            let data_start = pad4(offset + 110 + namesize) - offset;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = pad4(offset + data_start + size) - offset;
            offset += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode, data, rmaj, rmin));
        }
    }

    #[test]
    fn round_trips_every_kind_with_alignment() {
        let mut w = CpioWriter::new(Vec::new());
        w.add("dev", 0o755, &EntryKind::Directory).unwrap();
        w.add(
            "dev/console",
            0o600,
            &EntryKind::CharDevice { major: 5, minor: 1 },
        )
        .unwrap();
        w.add("init", 0o755, &EntryKind::File(b"abcde".to_vec()))
            .unwrap();
        w.add("bin/sh", 0o777, &EntryKind::Symlink("busybox".into()))
            .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(
            (entries[1].1, entries[1].3, entries[1].4),
            (S_IFCHR | 0o600, 5, 1)
        );
        assert_eq!(entries[2].2, b"abcde");
        assert_eq!(entries[3].1, S_IFLNK | 0o777);
        assert_eq!(entries[3].2, b"busybox");
    }

    #[test]
    fn rejects_absolute_and_empty_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.add("/init", 0o755, &EntryKind::Directory),
            Err(CpioError::BadName(_))
        ));
        assert!(w.add("", 0o755, &EntryKind::Directory).is_err());
    }
}
