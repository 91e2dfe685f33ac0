//! virtio-fs tests: a simulated guest driver sends real FUSE messages
//! through the device's virtqueues in test guest memory, against a temporary
//! shared directory.

#![allow(clippy::unwrap_used)]

mod client;
mod escape;
mod hostile;
mod limits;
mod ops;
mod read_only;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::test_utils::DriverQueue;
use crate::{GuestMemoryMmap, IrqTrigger, VirtioDevice};

const MEM_SIZE: usize = 16 << 20;
const HIPRIO_ADDR: u64 = 0;
const REQUEST_ADDR: u64 = 0x1_0000;
/// Where requests are written (device-readable), up to 4 MiB.
pub(crate) const IN_ADDR: u64 = 0x10_0000;
/// Where replies go (device-writable), up to 4 MiB.
pub(crate) const OUT_ADDR: u64 = 0x60_0000;
/// Reply buffer size for ordinary requests.
pub(crate) const OUT_LEN: u32 = 64 * 1024;
pub(crate) const HIPRIO: usize = 0;
pub(crate) const REQUEST: usize = 1;

/// One descriptor: guest address, length, device-writable.
pub(crate) type Desc = (u64, u32, bool);

pub(crate) fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A shared directory and a device serving it.
pub(crate) fn share(config: FsConfig) -> (TempDir, FsDevice) {
    let dir = TempDir::new_with_prefix("/tmp/vmrun-fs-").unwrap();
    let dev = FsDevice::new("share", dir.as_path().to_path_buf(), config).unwrap();
    (dir, dev)
}

/// The guest side of the fs device's two queues.
pub(crate) struct FuseDriver<'a> {
    pub(crate) mem: &'a GuestMemoryMmap,
    queues: [DriverQueue<'a>; 2],
    evts: [EventFd; 2],
    next: [u16; 2],
    next_unique: u64,
    pub(crate) irq: Arc<IrqTrigger>,
}

impl<'a> FuseDriver<'a> {
    /// Activates `dev` on fresh queues in `mem` (no FUSE_INIT yet).
    pub(crate) fn activate(mem: &'a GuestMemoryMmap, dev: &mut FsDevice) -> Self {
        let queues = [
            DriverQueue::new(mem, HIPRIO_ADDR, HIPRIO_QUEUE_SIZE),
            DriverQueue::new(mem, REQUEST_ADDR, REQUEST_QUEUE_SIZE),
        ];
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        dev.activate(
            mem.clone(),
            irq.clone(),
            queues.iter().map(|q| q.create_queue()).collect(),
            evts.iter().map(|e| e.try_clone().unwrap()).collect(),
        )
        .unwrap();
        FuseDriver {
            mem,
            queues,
            evts,
            next: [0, 0],
            next_unique: 1,
            irq,
        }
    }

    /// Activates `dev` and performs FUSE_INIT.
    pub(crate) fn mount(mem: &'a GuestMemoryMmap, dev: &mut FsDevice) -> Self {
        let mut drv = Self::activate(mem, dev);
        drv.init();
        drv
    }

    pub(crate) fn unique(&mut self) -> u64 {
        self.next_unique += 1;
        self.next_unique
    }

    /// Submits a chain made of `descs` on `queue`, waits until the device
    /// returns it and gives back the used length.
    pub(crate) fn submit(&mut self, queue: usize, descs: &[Desc]) -> u32 {
        let q = &self.queues[queue];
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            q.set_desc(i as u16, addr, len, flags as u16, i as u16 + 1);
        }
        let pos = self.next[queue];
        q.publish(pos, 0);
        self.next[queue] = pos.wrapping_add(1);
        self.evts[queue].write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while q.used_idx() != self.next[queue] {
            assert!(Instant::now() < deadline, "request was not completed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (id, len) = q.used_elem(pos);
        assert_eq!(id, 0, "unexpected descriptor returned");
        len
    }

    /// Sends raw request bytes with a reply buffer of `out_len` bytes;
    /// returns the used length and the reply buffer's first `used` bytes.
    pub(crate) fn send_raw(&mut self, request: &[u8], out_len: u32) -> (u32, Vec<u8>) {
        self.mem
            .write_slice(request, GuestAddress(IN_ADDR))
            .unwrap();
        // Poison the reply area so that stale bytes are not mistaken for a
        // reply.
        self.mem
            .write_slice(&[0xa5; 64], GuestAddress(OUT_ADDR))
            .unwrap();
        let used = self.submit(
            REQUEST,
            &[
                (IN_ADDR, request.len() as u32, false),
                (OUT_ADDR, out_len, true),
            ],
        );
        (used, self.read_mem(OUT_ADDR, used as usize))
    }

    pub(crate) fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

/// A host path's inode number.
pub(crate) fn host_ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().ino()
}
