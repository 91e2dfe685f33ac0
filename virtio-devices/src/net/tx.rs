//! One transmit chain: checked and gathered into one packet (virtio-net
//! header and frame) for the tap.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory, GuestMemoryError};

use super::header::{check_guest_header, HeaderError};
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::GuestMemoryMmap;

/// Why a transmit chain is not sent.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// A device-writable descriptor: transmit buffers are read-only.
    #[error("descriptor {addr:#x}+{len} is device-writable in a transmit chain")]
    WriteOnly {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A descriptor outside guest memory.
    #[error("descriptor {addr:#x}+{len} is not in guest memory")]
    BadAddress {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain ends on a descriptor that says there is more: a loop, a
    /// next index beyond the table, a bad indirect table.
    #[error("the chain is cut short (a loop, a bad next index or indirect table)")]
    Truncated,
    /// No descriptor at all.
    #[error("the chain is empty")]
    Empty,
    /// Less than a header.
    #[error("{0} bytes is shorter than the {VNET_HDR_LEN}-byte header")]
    TooShort(usize),
    /// More than [`MAX_PACKET_LEN`].
    #[error("the chain holds more than {MAX_PACKET_LEN} bytes")]
    TooLong,
    /// The header asks for an offload that was not negotiated.
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    /// Reading guest memory failed.
    #[error("reading guest memory failed: {0}")]
    Memory(#[source] GuestMemoryError),
}

/// Copies the packet of `chain` into `buf` (at least [`MAX_PACKET_LEN`]
/// bytes) and returns its length, header included, once every descriptor
/// and the header are found good. `acked` are the negotiated features.
pub fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
    acked: u64,
) -> Result<usize, TxError> {
    let limit = buf.len().min(MAX_PACKET_LEN);
    let mut len = 0usize;
    let mut more = None;
    for desc in chain {
        more = Some(desc.has_next());
        let (addr, desc_len) = (desc.addr(), desc.len());
        if desc.is_write_only() {
            return Err(TxError::WriteOnly {
                addr: addr.0,
                len: desc_len,
            });
        }
        let end = len
            .checked_add(desc_len as usize)
            .filter(|&end| end <= limit)
            .ok_or(TxError::TooLong)?;
        if !mem.check_range(addr, desc_len as usize) {
            return Err(TxError::BadAddress {
                addr: addr.0,
                len: desc_len,
            });
        }
        // `len..end` lies within `buf`: `end <= limit <= buf.len()`.
        let dst = buf.get_mut(len..end).ok_or(TxError::TooLong)?;
        mem.read_slice(dst, addr).map_err(TxError::Memory)?;
        len = end;
    }
    match more {
        None => return Err(TxError::Empty),
        Some(true) => return Err(TxError::Truncated),
        Some(false) => {}
    }
    if len < VNET_HDR_LEN {
        return Err(TxError::TooShort(len));
    }
    check_guest_header(&buf[..len], acked)?;
    Ok(len)
}
