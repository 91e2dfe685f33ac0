//! One virtio-blk request: split the descriptor chain, validate it against
//! the disk and guest memory, execute it and write the status byte.

use std::fs::File;
use std::io;

use tracing::{debug, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError, ReadVolatile, VolatileMemoryError,
    WriteVolatile,
};

use super::file_io::FileAt;
use super::{MAX_REQUEST_BYTES, MAX_SEGMENTS, SECTOR_SIZE};
use crate::GuestMemoryMmap;

/// Length of the request header: `le32 type; le32 reserved; le64 sector`.
const HEADER_LEN: u32 = 16;
/// Length of the `GET_ID` answer.
pub(crate) const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;

/// The disk as the worker sees it.
pub(crate) struct Disk {
    pub(crate) file: File,
    pub(crate) capacity_sectors: u64,
    pub(crate) read_only: bool,
    pub(crate) id: [u8; ID_LEN],
}

/// Why a request failed; each maps to a status byte.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("the header is not a readable descriptor of at least {HEADER_LEN} bytes")]
    BadHeader,
    #[error("failed to read the request header: {0}")]
    ReadHeader(#[source] GuestMemoryError),
    #[error("more than {MAX_SEGMENTS} data descriptors")]
    TooManySegments,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("write request on a read-only disk")]
    ReadOnly,
    #[error("data descriptor at {0:#x} points the wrong way for this request")]
    WrongDirection(u64),
    #[error("{0} bytes of data exceed the per-request limit")]
    TooLarge(u64),
    #[error("data length {0} is not a multiple of the sector size")]
    Unaligned(u64),
    #[error("sector {sector} + {len} bytes lies beyond the capacity of {capacity} sectors")]
    OutOfRange {
        sector: u64,
        len: u64,
        capacity: u64,
    },
    #[error("data descriptor {addr:#x}+{len} is not in guest memory")]
    BadBuffer { addr: u64, len: u32 },
    #[error("guest memory access failed: {0}")]
    GuestMemory(#[source] GuestMemoryError),
    #[error("transfer between the disk image and guest memory failed: {0}")]
    Transfer(#[source] VolatileMemoryError),
    #[error("disk image I/O failed: {0}")]
    Io(#[source] io::Error),
}

impl RequestError {
    /// Failures of the image file rather than of the request.
    fn is_host_failure(&self) -> bool {
        matches!(self, RequestError::Io(_) | RequestError::Transfer(_))
    }

    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A descriptor chain split into header, data and status.
struct Layout {
    header: Descriptor,
    data: Vec<Descriptor>,
    /// More data descriptors than [`MAX_SEGMENTS`] (the extra ones were not
    /// kept).
    too_many_segments: bool,
    status_addr: GuestAddress,
}

/// Why a chain cannot be answered at all.
#[derive(Debug, thiserror::Error)]
enum LayoutError {
    #[error("the descriptor chain is empty or unreadable")]
    Empty,
    #[error("the last descriptor is not a writable status byte")]
    NoStatus,
}

impl Layout {
    fn split(chain: DescriptorChain<&GuestMemoryMmap>) -> Result<Self, LayoutError> {
        let mut descs = chain;
        let header = descs.next().ok_or(LayoutError::Empty)?;
        let mut data = Vec::new();
        let mut too_many_segments = false;
        let mut last = None;
        for desc in descs {
            if let Some(prev) = last.replace(desc) {
                if data.len() < MAX_SEGMENTS as usize {
                    data.push(prev);
                } else {
                    too_many_segments = true;
                }
            }
        }
        let status = last.ok_or(LayoutError::NoStatus)?;
        if !status.is_write_only() || status.len() == 0 {
            return Err(LayoutError::NoStatus);
        }
        // The status is the final byte of the chain.
        let status_addr = status
            .addr()
            .checked_add(u64::from(status.len()) - 1)
            .ok_or(LayoutError::NoStatus)?;
        Ok(Layout {
            header,
            data,
            too_many_segments,
            status_addr,
        })
    }

    fn data_len(&self) -> u64 {
        self.data.iter().map(|d| u64::from(d.len())).sum()
    }
}

/// What a request moves, for rate limiting: the length of its data
/// descriptors (all but the first, the header, and the last, the status),
/// read from the descriptors alone, before anything is checked.
pub(crate) fn data_bytes(chain: &DescriptorChain<&GuestMemoryMmap>) -> u64 {
    let mut lens = chain.clone().map(|desc| u64::from(desc.len()));
    if lens.next().is_none() {
        return 0;
    }
    let mut data = 0u64;
    let mut previous = None;
    for len in lens {
        if let Some(previous) = previous.replace(len) {
            data = data.saturating_add(previous);
        }
    }
    data
}

/// Serves one chain; returns the used length (bytes written to the guest,
/// status byte included), 0 if the chain could not be answered.
pub(crate) fn process_chain(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let layout = match Layout::split(chain) {
        Ok(layout) => layout,
        Err(e) => {
            debug!("virtio-blk: dropping request: {e}");
            return 0;
        }
    };
    let (status, written) = match execute(disk, mem, &layout) {
        Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
        Err(e) => {
            if e.is_host_failure() {
                warn!("virtio-blk: request failed: {e}");
            } else {
                // The guest's doing: not worth more than debug (it could
                // flood the log).
                debug!("virtio-blk: request refused: {e}");
            }
            (e.status(), 0)
        }
    };
    // Written after the data: once the driver sees the status the request is
    // complete.
    if let Err(e) = mem.write_obj(status, layout.status_addr) {
        debug!("virtio-blk: failed to write the status byte: {e}");
        return 0;
    }
    // `written` is at most MAX_REQUEST_BYTES (or ID_LEN), far below u32::MAX.
    u32::try_from(written).map_or(0, |w| w + 1)
}

/// Validates and executes a request; returns the number of data bytes
/// written into guest memory.
fn execute(disk: &Disk, mem: &GuestMemoryMmap, layout: &Layout) -> Result<u64, RequestError> {
    if layout.header.is_write_only() || layout.header.len() < HEADER_LEN {
        return Err(RequestError::BadHeader);
    }
    let header_addr = layout.header.addr();
    let request_type = mem
        .read_obj::<u32>(header_addr)
        .map(u32::from_le)
        .map_err(RequestError::ReadHeader)?;
    let sector = header_addr
        .checked_add(8)
        .ok_or(RequestError::BadHeader)
        .and_then(|addr| mem.read_obj::<u64>(addr).map_err(RequestError::ReadHeader))
        .map(u64::from_le)?;

    if layout.too_many_segments {
        return Err(RequestError::TooManySegments);
    }
    match request_type {
        VIRTIO_BLK_T_IN => {
            let offset = check_data(disk, mem, layout, sector, true)?;
            read_disk(disk, mem, &layout.data, offset)?;
            Ok(layout.data_len())
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only {
                return Err(RequestError::ReadOnly);
            }
            let offset = check_data(disk, mem, layout, sector, false)?;
            write_disk(disk, mem, &layout.data, offset)?;
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            disk.file.sync_data().map_err(RequestError::Io)?;
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => write_id(disk, mem, &layout.data),
        other => Err(RequestError::Unsupported(other)),
    }
}

/// Checks the data descriptors of an IN (`device_writes`) or OUT request and
/// returns the byte offset in the image where the transfer starts.
fn check_data(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    layout: &Layout,
    sector: u64,
    device_writes: bool,
) -> Result<u64, RequestError> {
    for desc in &layout.data {
        if desc.is_write_only() != device_writes {
            return Err(RequestError::WrongDirection(desc.addr().0));
        }
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(RequestError::BadBuffer {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
    }
    let len = layout.data_len();
    if len > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge(len));
    }
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::Unaligned(len));
    }
    let out_of_range = || RequestError::OutOfRange {
        sector,
        len,
        capacity: disk.capacity_sectors,
    };
    let offset = sector.checked_mul(SECTOR_SIZE).ok_or_else(out_of_range)?;
    let end = offset.checked_add(len).ok_or_else(out_of_range)?;
    if end > disk.capacity_sectors.saturating_mul(SECTOR_SIZE) {
        return Err(out_of_range());
    }
    Ok(offset)
}

fn read_disk(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    data: &[Descriptor],
    offset: u64,
) -> Result<(), RequestError> {
    let mut file = FileAt::new(&disk.file, offset);
    for desc in data {
        for slice in mem.get_slices(desc.addr(), desc.len() as usize) {
            let mut slice = slice.map_err(RequestError::GuestMemory)?;
            file.read_exact_volatile(&mut slice)
                .map_err(RequestError::Transfer)?;
        }
    }
    Ok(())
}

fn write_disk(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    data: &[Descriptor],
    offset: u64,
) -> Result<(), RequestError> {
    let mut file = FileAt::new(&disk.file, offset);
    for desc in data {
        for slice in mem.get_slices(desc.addr(), desc.len() as usize) {
            let slice = slice.map_err(RequestError::GuestMemory)?;
            file.write_all_volatile(&slice)
                .map_err(RequestError::Transfer)?;
        }
    }
    Ok(())
}

/// Writes the device ID into the (writable) data descriptors, at most
/// [`ID_LEN`] bytes; returns how many were written.
fn write_id(disk: &Disk, mem: &GuestMemoryMmap, data: &[Descriptor]) -> Result<u64, RequestError> {
    let mut remaining = &disk.id[..];
    for desc in data {
        if remaining.is_empty() {
            break;
        }
        if !desc.is_write_only() {
            return Err(RequestError::WrongDirection(desc.addr().0));
        }
        let n = remaining.len().min(desc.len() as usize);
        mem.write_slice(&remaining[..n], desc.addr())
            .map_err(RequestError::GuestMemory)?;
        remaining = &remaining[n..];
    }
    Ok((ID_LEN - remaining.len()) as u64)
}
