//! The two files of a snapshot: `state` (a versioned, checksummed
//! encoding of [`SnapshotState`]) and `memory` (guest RAM, sparse), both
//! root-only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vm_memory::{GuestMemory as _, GuestMemoryRegion, MemoryRegionAddress};

use super::state::{MemoryRegion, SnapshotState};
use super::SnapshotError;
use crate::memory::GuestMemory;

/// First bytes of every state file.
const MAGIC: &[u8; 8] = b"VMRUNSNP";
/// Layout of the state file and of [`SnapshotState`]; bump on any change.
pub const FORMAT_VERSION: u32 = 3;
/// magic, format version, payload length, SHA-256 of the payload.
const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// A state file larger than this is not ours (a real one is ~100 KiB).
const MAX_STATE_LEN: u64 = 64 << 20;
/// Unit of the sparse memory file: pages of zeros are left as holes.
const PAGE: usize = 4096;

/// Name of the state file in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// Name of the memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path` for writing, readable and writable by its owner only:
/// snapshot files hold guest memory.
pub(crate) fn create_private(path: &Path) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

/// Writes `state` to `path`.
pub fn write_state(path: &Path, state: &SnapshotState) -> Result<(), SnapshotError> {
    let payload = bincode::serialize(state).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut file = create_private(path)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&Sha256::digest(&payload));
    file.write_all(&header)
        .and_then(|()| file.write_all(&payload))
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

/// Reads and checks the state file at `path`: magic, format version,
/// length and checksum, then decodes it.
pub fn read_state(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > MAX_STATE_LEN {
        return Err(corrupt(format!(
            "{len} bytes is too large for a state file"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    let Some((header, payload)) = bytes.split_at_checked(HEADER_LEN) else {
        return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
    };
    if &header[..8] != MAGIC {
        return Err(corrupt("not a vmrun snapshot state file".into()));
    }
    let field = |range: std::ops::Range<usize>| header[range].to_vec();
    let version = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Mismatch {
            what: "state file format version",
            snapshot: version.to_string(),
            wanted: FORMAT_VERSION.to_string(),
        });
    }
    let declared = u64::from_le_bytes(field(12..20).try_into().unwrap_or_default());
    if declared != payload.len() as u64 {
        return Err(corrupt(format!(
            "truncated: the header declares {declared} bytes of state, the file has {}",
            payload.len()
        )));
    }
    if header[20..52] != Sha256::digest(payload)[..] {
        return Err(corrupt("checksum mismatch".into()));
    }
    bincode::deserialize(payload).map_err(|e| corrupt(format!("cannot decode: {e}")))
}

/// Writes guest RAM to `path`, region after region, leaving pages of zeros
/// as holes (most of a fresh guest's RAM). Returns where each region went.
pub fn write_memory(path: &Path, mem: &GuestMemory) -> Result<Vec<MemoryRegion>, SnapshotError> {
    let mut file = create_private(path)?;
    let mut regions = Vec::new();
    let mut offset = 0u64;
    let zero = [0u8; PAGE];
    for region in mem.iter() {
        let len = region.len();
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|_| SnapshotError::MemoryMapping(region.start_addr().0))?;
        // SAFETY: `host` is the start of a live mapping of `len` bytes owned
        // by `mem`, which outlives this borrow; the vCPUs are stopped and the
        // device workers joined, so nothing writes it meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts(host.cast_const(), len as usize) };
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            if page != &zero[..page.len()] {
                let at = offset + (i * PAGE) as u64;
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.write_all(page))
                    .map_err(io_err(path))?;
            }
        }
        regions.push(MemoryRegion {
            guest_addr: region.start_addr().0,
            len,
            file_offset: offset,
        });
        offset += len;
    }
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))?;
    Ok(regions)
}

/// Opens the memory file read-only and checks that it holds every region.
pub fn open_memory(path: &Path, regions: &[MemoryRegion]) -> Result<File, SnapshotError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let needed = regions
        .iter()
        .map(|r| r.file_offset.saturating_add(r.len))
        .max()
        .unwrap_or(0);
    if len != needed {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            why: format!("memory file is {len} bytes, the snapshot needs {needed}"),
        });
    }
    Ok(file)
}

/// The paths of a snapshot in `dir`.
pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(STATE_FILE), dir.join(MEMORY_FILE))
}
