//! vsock packet headers and parsing of guest descriptor chains, on top of
//! `virtio_vsock::packet::VsockPacket`.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{GuestMemory, VolatileSlice};

use super::MAX_PKT_BUF_SIZE;
use crate::GuestMemoryMmap;

/// Size of a vsock packet header.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;

/// Errors parsing a packet from the guest.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The descriptor chain does not hold a valid packet.
    #[error("malformed descriptor chain: {0}")]
    Chain(#[from] virtio_vsock::packet::Error),
    /// An RX buffer without room for payload.
    #[error("RX buffer has no room for data")]
    NoRxData,
}

/// A vsock packet header, decoded into host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// Decodes a header from its little-endian wire form.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |o: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |o: usize| {
            let mut v = [0u8; 4];
            v.copy_from_slice(&b[o..o + 4]);
            u32::from_le_bytes(v)
        };
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        VsockHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header in its little-endian wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn from_packet(pkt: &VsockPacket<'_, ()>) -> Self {
        VsockHeader {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }
}

/// A packet the guest put on the TX queue.
#[derive(Debug)]
pub struct TxPacket<'a> {
    /// The header, copied out of guest memory (so the guest cannot change it
    /// while it is being looked at).
    pub hdr: VsockHeader,
    /// The payload in guest memory, exactly `hdr.len` bytes; `None` if
    /// `hdr.len` is 0.
    pub data: Option<VolatileSlice<'a, ()>>,
}

/// Parses a TX descriptor chain: a device-readable header, optionally followed
/// by (or sharing its descriptor with) a device-readable payload of `hdr.len`
/// bytes, at most [`MAX_PKT_BUF_SIZE`].
pub fn parse_tx<'a, T>(
    mem: &'a GuestMemoryMmap,
    chain: &mut DescriptorChain<T>,
) -> Result<TxPacket<'a>, PacketError>
where
    T: Deref,
    T::Target: GuestMemory,
{
    let pkt = VsockPacket::from_tx_virtq_chain(mem, chain, MAX_PKT_BUF_SIZE)?;
    let hdr = VsockHeader::from_packet(&pkt);
    let data = if hdr.len == 0 {
        None
    } else {
        // from_tx_virtq_chain sizes the data slice to hdr.len.
        pkt.data_slice().copied()
    };
    Ok(TxPacket { hdr, data })
}

/// A guest RX buffer: where the device writes one packet.
#[derive(Debug)]
pub struct RxBuffer<'a> {
    pkt: VsockPacket<'a, ()>,
    data: VolatileSlice<'a, ()>,
}

impl<'a> RxBuffer<'a> {
    /// Parses an RX descriptor chain: a device-writable header buffer followed
    /// by (or sharing its descriptor with) a non-empty device-writable payload
    /// buffer of at most [`MAX_PKT_BUF_SIZE`] bytes when separate.
    pub fn parse<T>(
        mem: &'a GuestMemoryMmap,
        chain: &mut DescriptorChain<T>,
    ) -> Result<Self, PacketError>
    where
        T: Deref,
        T::Target: GuestMemory,
    {
        let pkt = VsockPacket::from_rx_virtq_chain(mem, chain, MAX_PKT_BUF_SIZE)?;
        let data = match pkt.data_slice() {
            Some(d) if !d.is_empty() => *d,
            _ => return Err(PacketError::NoRxData),
        };
        Ok(RxBuffer { pkt, data })
    }

    /// The payload buffer, never empty.
    pub fn data(&self) -> &VolatileSlice<'a, ()> {
        &self.data
    }

    /// Writes the header. Returns the number of bytes the packet takes in the
    /// buffer (header plus `hdr.len`), the length to put in the used ring.
    pub fn write_header(&mut self, hdr: &VsockHeader) -> Result<u32, PacketError> {
        self.pkt.set_header_from_raw(&hdr.to_bytes())?;
        Ok(HEADER_SIZE as u32 + hdr.len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const HDR_ADDR: u64 = 0x1_0000;
    const DATA_ADDR: u64 = 0x2_0000;
    const MEM_SIZE: usize = 0x10_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    fn hdr(len: u32) -> VsockHeader {
        VsockHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 52,
            len,
            type_: 1,
            op: 5,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        }
    }

    fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, 0))
    }

    fn parse_tx_chain(
        mem: &GuestMemoryMmap,
        descs: &[RawDescriptor],
    ) -> Result<(VsockHeader, Vec<u8>), PacketError> {
        let vq = MockSplitQueue::new(mem, 16);
        let mut chain = vq.build_desc_chain(descs).unwrap();
        let pkt = parse_tx(mem, &mut chain)?;
        let data = pkt.data.map_or(Vec::new(), |d| {
            let mut v = vec![0u8; d.len()];
            d.copy_to(&mut v[..]);
            v
        });
        Ok((pkt.hdr, data))
    }

    #[test]
    fn header_round_trip() {
        let h = hdr(12);
        assert_eq!(VsockHeader::from_bytes(&h.to_bytes()), h);
        assert_eq!(&h.to_bytes()[24..28], &12u32.to_le_bytes());
    }

    #[test]
    fn tx_two_descriptors() {
        let m = mem();
        m.write_slice(&hdr(5).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        m.write_slice(b"hello", GuestAddress(DATA_ADDR)).unwrap();
        let (h, data) =
            parse_tx_chain(&m, &[desc(HDR_ADDR, 44, 0), desc(DATA_ADDR, 5, 0)]).unwrap();
        assert_eq!(h, hdr(5));
        assert_eq!(data, b"hello");
    }

    #[test]
    fn tx_single_descriptor_and_header_only() {
        let m = mem();
        m.write_slice(&hdr(3).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        m.write_slice(b"abc", GuestAddress(HDR_ADDR + 44)).unwrap();
        let (h, data) = parse_tx_chain(&m, &[desc(HDR_ADDR, 47, 0)]).unwrap();
        assert_eq!(h.len, 3);
        assert_eq!(data, b"abc");

        m.write_slice(&hdr(0).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        let (h, data) = parse_tx_chain(&m, &[desc(HDR_ADDR, 44, 0)]).unwrap();
        assert_eq!(h.len, 0);
        assert!(data.is_empty());
    }

    #[test]
    fn tx_malformed_chains() {
        let m = mem();
        // Short header descriptor.
        m.write_slice(&hdr(0).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        assert!(parse_tx_chain(&m, &[desc(HDR_ADDR, 43, 0)]).is_err());
        // Header outside guest memory.
        assert!(parse_tx_chain(&m, &[desc(MEM_SIZE as u64 - 20, 44, 0)]).is_err());
        assert!(parse_tx_chain(&m, &[desc(u64::MAX - 10, 44, 0)]).is_err());
        // Write-only header.
        assert!(parse_tx_chain(&m, &[desc(HDR_ADDR, 44, VRING_DESC_F_WRITE)]).is_err());

        // len larger than the data descriptor.
        m.write_slice(&hdr(100).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        assert!(parse_tx_chain(&m, &[desc(HDR_ADDR, 44, 0), desc(DATA_ADDR, 99, 0)]).is_err());
        // len but no data descriptor.
        assert!(parse_tx_chain(&m, &[desc(HDR_ADDR, 44, 0)]).is_err());
        // Data outside guest memory.
        assert!(parse_tx_chain(
            &m,
            &[desc(HDR_ADDR, 44, 0), desc(MEM_SIZE as u64 - 50, 100, 0)]
        )
        .is_err());
        // Write-only data.
        assert!(parse_tx_chain(
            &m,
            &[
                desc(HDR_ADDR, 44, 0),
                desc(DATA_ADDR, 100, VRING_DESC_F_WRITE)
            ]
        )
        .is_err());
        // len above the maximum packet size.
        m.write_slice(
            &hdr(MAX_PKT_BUF_SIZE + 1).to_bytes(),
            GuestAddress(HDR_ADDR),
        )
        .unwrap();
        assert!(parse_tx_chain(
            &m,
            &[
                desc(HDR_ADDR, 44, 0),
                desc(DATA_ADDR, MAX_PKT_BUF_SIZE + 1, 0)
            ]
        )
        .is_err());
        m.write_slice(&hdr(u32::MAX).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        assert!(parse_tx_chain(&m, &[desc(HDR_ADDR, u32::MAX, 0)]).is_err());
    }

    #[test]
    fn tx_looping_chain_terminates() {
        let m = mem();
        m.write_slice(&hdr(8).to_bytes(), GuestAddress(HDR_ADDR))
            .unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        // Descriptor 0 -> 1 -> 0 -> ... : a cycle.
        vq.desc_table()
            .store(
                0,
                RawDescriptor::from(Descriptor::new(HDR_ADDR, 44, VRING_DESC_F_NEXT as u16, 1)),
            )
            .unwrap();
        vq.desc_table()
            .store(
                1,
                RawDescriptor::from(Descriptor::new(DATA_ADDR, 4, VRING_DESC_F_NEXT as u16, 0)),
            )
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        use virtio_queue::QueueT;
        let mut chain = q.pop_descriptor_chain(&m).unwrap();
        // Data descriptor too short for len 8: rejected, and no hang.
        assert!(parse_tx(&m, &mut chain).is_err());
        // Walking the rest of the chain ends at the queue size.
        assert!(chain.count() < 16);
    }

    #[test]
    fn rx_buffers() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let w = VRING_DESC_F_WRITE;
        let mut chain = vq
            .build_desc_chain(&[desc(HDR_ADDR, 44, w), desc(DATA_ADDR, 4096, w)])
            .unwrap();
        let mut rx = RxBuffer::parse(&m, &mut chain).unwrap();
        assert_eq!(rx.data().len(), 4096);
        rx.data().write_slice(b"xyz", 0).unwrap();
        assert_eq!(rx.write_header(&hdr(3)).unwrap(), 47);
        let mut raw = [0u8; 44];
        m.read_slice(&mut raw, GuestAddress(HDR_ADDR)).unwrap();
        assert_eq!(VsockHeader::from_bytes(&raw), hdr(3));

        // One descriptor for header and data (Linux >= 6.2 style).
        let mut chain = vq.build_desc_chain(&[desc(HDR_ADDR, 44 + 100, w)]).unwrap();
        let rx = RxBuffer::parse(&m, &mut chain).unwrap();
        assert_eq!(rx.data().len(), 100);
    }

    #[test]
    fn rx_malformed_buffers() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let w = VRING_DESC_F_WRITE;
        let cases: Vec<Vec<RawDescriptor>> = vec![
            // Read-only header.
            vec![desc(HDR_ADDR, 44, 0), desc(DATA_ADDR, 4096, w)],
            // Short header.
            vec![desc(HDR_ADDR, 40, w), desc(DATA_ADDR, 4096, w)],
            // Header only: no room for data.
            vec![desc(HDR_ADDR, 44, w)],
            // Empty data buffer.
            vec![desc(HDR_ADDR, 44, w), desc(DATA_ADDR, 0, w)],
            // Read-only data.
            vec![desc(HDR_ADDR, 44, w), desc(DATA_ADDR, 4096, 0)],
            // Data buffer too large.
            vec![
                desc(HDR_ADDR, 44, w),
                desc(DATA_ADDR, MAX_PKT_BUF_SIZE + 1, w),
            ],
            // Data outside guest memory.
            vec![desc(HDR_ADDR, 44, w), desc(MEM_SIZE as u64 - 10, 4096, w)],
            // Header outside guest memory.
            vec![desc(MEM_SIZE as u64, 44, w), desc(DATA_ADDR, 4096, w)],
        ];
        for (i, descs) in cases.iter().enumerate() {
            let mut chain = vq.build_desc_chain(descs).unwrap();
            assert!(
                RxBuffer::parse(&m, &mut chain).is_err(),
                "case {i} accepted"
            );
        }
    }
}
