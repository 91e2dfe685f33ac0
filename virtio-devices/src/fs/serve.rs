//! Serving one FUSE request from a descriptor chain.

use std::io::Write;
use std::time::Instant;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{Server, MAX_BUFFER_SIZE};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use tracing::{debug, trace};
use virtio_queue::DescriptorChain;
use vm_memory::ByteValued;

use crate::GuestMemoryMmap;

/// The most either side of a request may span: a maximal read or write
/// payload (`MAX_BUFFER_SIZE`, 1 MiB) plus one page of headers, matching the
/// server's own limit on `InHeader::len`.
pub(crate) const MAX_MESSAGE_BYTES: usize = MAX_BUFFER_SIZE as usize + 4096;

/// Serves the request in `chain` with `server`; returns the number of reply
/// bytes written into the chain (the used length).
///
/// Both sides of the chain are cut to [`MAX_MESSAGE_BYTES`] before the
/// server sees them. That bounds everything the server sizes from the chain
/// rather than from the message header (the ioctl input buffer, the length of
/// a write, the readdir buffer), whatever the guest puts in the descriptors.
///
/// A request the server cannot decode gets an error reply if the chain has
/// room for one; requests without a reply (FORGET and friends) have none.
pub(crate) fn serve_request<F: FileSystem + Sync>(
    server: &Server<F>,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let mut reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(reader) => reader,
        Err(e) => {
            debug!("virtio-fs: unusable request buffers: {e}");
            return reply_error(mem, chain, 0, libc::EINVAL);
        }
    };
    let mut writer = match VirtioFsWriter::new(mem, chain.clone()) {
        Ok(writer) => writer,
        Err(e) => {
            debug!("virtio-fs: unusable reply buffers: {e}");
            return 0;
        }
    };
    if reader.available_bytes() > MAX_MESSAGE_BYTES {
        // Keeps the first MAX_MESSAGE_BYTES in `reader`, drops the rest.
        let _ = reader.split_at(MAX_MESSAGE_BYTES);
    }
    if writer.available_bytes() > MAX_MESSAGE_BYTES {
        let _ = writer.split_at(MAX_MESSAGE_BYTES);
    }
    // Only used to label an error reply and the trace; the server decodes
    // its own copy.
    let header = reader.clone().read_obj::<InHeader>().unwrap_or_default();
    let unique = header.unique;
    let started = Instant::now();

    match server.handle_message(reader, Writer::from(writer), None, None) {
        // Bounded by the writer, i.e. by MAX_MESSAGE_BYTES.
        Ok(written) => {
            trace!(
                "virtio-fs: request {unique} opcode {} ({} bytes) served in {:?}, {written} bytes back",
                header.opcode,
                header.len,
                started.elapsed()
            );
            u32::try_from(written).unwrap_or(0)
        }
        Err(e) => {
            debug!("virtio-fs: malformed request {unique}: {e}");
            reply_error(mem, chain, unique, errno_for(&e))
        }
    }
}

/// The errno a request the server failed to process is answered with.
fn errno_for(e: &fuse_backend_rs::Error) -> i32 {
    use fuse_backend_rs::Error as E;
    match e {
        E::EncodeMessage(_) | E::FailedToWrite(_) | E::FailedToSplitWriter(_) => libc::EIO,
        E::FailedToRemapID(_) => libc::EPERM,
        _ => libc::EINVAL,
    }
}

/// Writes a bare error reply into the writable part of `chain`; returns the
/// used length (0 if the chain has no room for one).
fn reply_error(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    unique: u64,
    errno: i32,
) -> u32 {
    let header = OutHeader {
        len: std::mem::size_of::<OutHeader>() as u32,
        error: -errno,
        unique,
    };
    let mut writer = match VirtioFsWriter::new(mem, chain) {
        Ok(writer) => writer,
        Err(_) => return 0,
    };
    if writer.available_bytes() < header.as_slice().len() {
        return 0;
    }
    match writer.write_all(header.as_slice()) {
        Ok(()) => header.len,
        Err(e) => {
            debug!("virtio-fs: failed to write an error reply: {e}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use fuse_backend_rs::abi::fuse_abi::{IoctlIn, Opcode, WriteIn};
    use fuse_backend_rs::api::filesystem::{Context, IoctlData, ZeroCopyReader};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::test_utils::DriverQueue;

    /// Records what the server hands it, without any policy in between.
    #[derive(Default)]
    struct Recorder {
        written: AtomicUsize,
        ioctl_called: AtomicBool,
    }

    impl FileSystem for Recorder {
        type Inode = u64;
        type Handle = u64;

        fn write(
            &self,
            _ctx: &Context,
            _inode: u64,
            _handle: u64,
            r: &mut dyn ZeroCopyReader,
            size: u32,
            _offset: u64,
            _lock_owner: Option<u64>,
            _delayed_write: bool,
            _flags: u32,
            _fuse_flags: u32,
        ) -> std::io::Result<usize> {
            let sink = TempFile::new()?;
            let n = r.read_to(&mut sink.into_file(), size as usize, 0)?;
            self.written.store(n, Ordering::SeqCst);
            Ok(n)
        }

        fn ioctl(
            &self,
            _ctx: &Context,
            _inode: u64,
            _handle: u64,
            _flags: u32,
            _cmd: u32,
            _data: IoctlData,
            _out_size: u32,
        ) -> std::io::Result<IoctlData<'_>> {
            self.ioctl_called.store(true, Ordering::SeqCst);
            Err(std::io::Error::from_raw_os_error(libc::ENOTTY))
        }
    }

    const MIB: usize = 1 << 20;
    const IN_ADDR: u64 = 0x10_0000;
    const OUT_ADDR: u64 = 0x80_0000;

    /// Serves `request` (padded with `extra` readable bytes) through a real
    /// descriptor chain; returns the reply header.
    fn serve(server: &Server<Arc<Recorder>>, request: &[u8], extra: usize) -> OutHeader {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let dq = DriverQueue::new(&mem, 0, 16);
        let mut padded = request.to_vec();
        padded.resize(request.len() + extra, 0x11);
        mem.write_slice(&padded, GuestAddress(IN_ADDR)).unwrap();
        dq.set_desc(0, IN_ADDR, padded.len() as u32, VRING_DESC_F_NEXT as u16, 1);
        dq.set_desc(1, OUT_ADDR, 4096, VRING_DESC_F_WRITE as u16, 0);
        dq.publish(0, 0);
        let mut queue = dq.create_queue();
        let chain = queue.pop_descriptor_chain(&mem).unwrap();
        let used = serve_request(server, &mem, chain);
        assert!(used >= 16);
        mem.read_obj(GuestAddress(OUT_ADDR)).unwrap()
    }

    fn message(opcode: Opcode, body: &[u8]) -> Vec<u8> {
        let header = InHeader {
            len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
            opcode: opcode as u32,
            unique: 7,
            nodeid: 1,
            ..Default::default()
        };
        [header.as_slice(), body].concat()
    }

    #[test]
    fn request_side_is_cut_to_the_message_limit() {
        let recorder = Arc::new(Recorder::default());
        let server = Server::new(recorder.clone());
        // The write claims 4 GiB and the chain carries 3 MiB.
        let write = WriteIn {
            size: u32::MAX,
            ..Default::default()
        };
        let reply = serve(&server, &message(Opcode::Write, write.as_slice()), 3 * MIB);
        assert_eq!(reply.error, 0);
        let headers = std::mem::size_of::<InHeader>() + std::mem::size_of::<WriteIn>();
        assert_eq!(
            recorder.written.load(Ordering::SeqCst),
            MAX_MESSAGE_BYTES - headers
        );

        // An ioctl whose input claims more than the cut chain holds never
        // reaches the file system (the server would allocate it first).
        let ioctl = IoctlIn {
            in_size: 2 * MIB as u32,
            ..Default::default()
        };
        let reply = serve(&server, &message(Opcode::Ioctl, ioctl.as_slice()), 3 * MIB);
        assert_eq!(reply.error, -libc::ENOTTY);
        assert_eq!(reply.unique, 7);
        assert!(!recorder.ioctl_called.load(Ordering::SeqCst));
    }
}
