//! virtio-blk tests: a simulated driver submits requests through a virtqueue
//! in test guest memory against a temporary image file.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::test_utils::DriverQueue;
use crate::{
    ActivateError, Bucket, GuestMemoryMmap, IrqTrigger, ManualClock, RateLimit, VirtioDevice,
};
use virtio_queue::QueueT;

const MEM_SIZE: usize = 4 << 20;
const QUEUE_ADDR: u64 = 0;
const HEADER_ADDR: u64 = 0x1_0000;
const DATA_ADDR: u64 = 0x2_0000;
const STATUS_ADDR: u64 = 0x3f_0000;
const IMAGE_SECTORS: u64 = 512;
const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// One descriptor of a request: guest address, length, device-writable.
type Desc = (u64, u32, bool);

/// An image of [`IMAGE_SECTORS`] sectors, sector `n` filled with byte `n`.
fn image() -> TempFile {
    let tmp = TempFile::new().unwrap();
    let mut file = tmp.as_file();
    for sector in 0..IMAGE_SECTORS {
        file.write_all(&[sector as u8; SECTOR_SIZE as usize])
            .unwrap();
    }
    tmp
}

fn image_bytes(tmp: &TempFile, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    tmp.as_file().read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// The driver side of the request queue.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    queue: DriverQueue<'a>,
    irq: Arc<IrqTrigger>,
    evt: EventFd,
    next: u16,
}

fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

impl<'a> Driver<'a> {
    fn activate(mem: &'a GuestMemoryMmap, dev: &mut BlockDevice) -> Self {
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let queue = DriverQueue::new(mem, QUEUE_ADDR, QUEUE_SIZE);
        dev.activate(
            mem.clone(),
            irq.clone(),
            vec![queue.create_queue()],
            vec![evt.try_clone().unwrap()],
        )
        .unwrap();
        Driver {
            mem,
            queue,
            irq,
            evt,
            next: 0,
        }
    }

    /// Submits a chain made of `descs`, waits for the device to return it and
    /// gives back the used length.
    fn submit(&mut self, descs: &[Desc]) -> u32 {
        let q = &self.queue;
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            q.set_desc(i as u16, addr, len, flags as u16, i as u16 + 1);
        }
        q.publish(self.next, 0);
        let pos = self.next;
        self.next = self.next.wrapping_add(1);
        self.evt.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while q.used_idx() != self.next {
            assert!(Instant::now() < deadline, "request was not completed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (id, len) = q.used_elem(pos);
        assert_eq!(id, 0);
        len
    }

    fn write_header(&self, request_type: u32, sector: u64) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&request_type.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem
            .write_slice(&header, GuestAddress(HEADER_ADDR))
            .unwrap();
    }

    /// A standard request: header, data descriptors, 1-byte status. Returns
    /// (used length, status byte).
    fn request(&mut self, request_type: u32, sector: u64, data: &[Desc]) -> (u32, u8) {
        self.write_header(request_type, sector);
        self.mem
            .write_obj(0xffu8, GuestAddress(STATUS_ADDR))
            .unwrap();
        let mut descs = vec![(HEADER_ADDR, 16, false)];
        descs.extend_from_slice(data);
        descs.push((STATUS_ADDR, 1, true));
        let used = self.submit(&descs);
        (used, self.status())
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS_ADDR)).unwrap()
    }

    fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

#[test]
fn identity_features_and_config_space() {
    let tmp = image();
    // Half a sector more: rounded down.
    tmp.as_file()
        .write_all_at(&[1u8; 256], IMAGE_SECTORS * SECTOR_SIZE)
        .unwrap();
    let dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    assert_eq!(dev.device_type(), 2);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE]);
    assert_eq!(dev.capacity_sectors(), IMAGE_SECTORS);
    let features = dev.avail_features();
    assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(features & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(features & (1 << VIRTIO_BLK_F_RO), 0);

    let mut config = [0u8; 16];
    dev.read_config(0, &mut config);
    assert_eq!(
        u64::from_le_bytes(config[0..8].try_into().unwrap()),
        IMAGE_SECTORS
    );
    assert_eq!(
        u32::from_le_bytes(config[8..12].try_into().unwrap()),
        MAX_SEGMENT_SIZE
    );
    assert_eq!(
        u32::from_le_bytes(config[12..16].try_into().unwrap()),
        MAX_SEGMENTS
    );
    // Reads straddling or beyond the end leave the rest untouched.
    let mut tail = [0xaau8; 4];
    dev.read_config(14, &mut tail);
    assert_eq!(tail, [0, 0, 0xaa, 0xaa]);
    dev.read_config(4096, &mut tail);
    assert_eq!(tail, [0, 0, 0xaa, 0xaa]);

    let ro = BlockDevice::new(tmp.as_path().to_path_buf(), true).unwrap();
    assert!(ro.is_read_only());
    assert_ne!(ro.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);

    assert!(matches!(
        BlockDevice::new("/nonexistent/vmrun-image".into(), true),
        Err(BlockError::Open { .. })
    ));
}

#[test]
fn write_then_read_round_trip() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);

    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    drv.mem
        .write_slice(&payload, GuestAddress(DATA_ADDR))
        .unwrap();
    let (used, status) = drv.request(VIRTIO_BLK_T_OUT, 3, &[(DATA_ADDR, 1024, false)]);
    assert_eq!((used, status), (1, S_OK));
    assert_eq!(image_bytes(&tmp, 3 * SECTOR_SIZE, 1024), payload);
    // Neighbouring sectors are untouched.
    assert_eq!(image_bytes(&tmp, 2 * SECTOR_SIZE, 512), vec![2u8; 512]);
    assert_eq!(image_bytes(&tmp, 5 * SECTOR_SIZE, 512), vec![5u8; 512]);

    // Read back into two data descriptors, plus one more sector.
    let (used, status) = drv.request(
        VIRTIO_BLK_T_IN,
        3,
        &[
            (DATA_ADDR + 0x1_0000, 512, true),
            (DATA_ADDR + 0x3_0000, 1024, true),
        ],
    );
    assert_eq!((used, status), (1536 + 1, S_OK));
    assert_eq!(drv.read_mem(DATA_ADDR + 0x1_0000, 512), payload[..512]);
    assert_eq!(drv.read_mem(DATA_ADDR + 0x3_0000, 512), payload[512..]);
    assert_eq!(drv.read_mem(DATA_ADDR + 0x3_0200, 512), vec![5u8; 512]);
    assert_ne!(drv.irq.status() & 1, 0, "used-ring interrupt not raised");

    // The last sector is reachable.
    let (_, status) = drv.request(
        VIRTIO_BLK_T_IN,
        IMAGE_SECTORS - 1,
        &[(DATA_ADDR, 512, true)],
    );
    assert_eq!(status, S_OK);
    assert_eq!(
        drv.read_mem(DATA_ADDR, 512),
        vec![(IMAGE_SECTORS - 1) as u8; 512]
    );
    dev.reset();
}

#[test]
fn flush_and_get_id() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    let id = *dev.device_id();
    assert!(id.iter().any(|&b| b != 0));
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);

    assert_eq!(drv.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, S_OK));

    let (used, status) = drv.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA_ADDR, 64, true)]);
    assert_eq!((used, status), (21, S_OK));
    assert_eq!(drv.read_mem(DATA_ADDR, 20), id);

    // A short buffer gets a truncated ID.
    drv.mem
        .write_slice(&[0xee; 20], GuestAddress(DATA_ADDR))
        .unwrap();
    let (used, status) = drv.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA_ADDR, 8, true)]);
    assert_eq!((used, status), (9, S_OK));
    assert_eq!(drv.read_mem(DATA_ADDR, 8), id[..8]);
    assert_eq!(drv.read_mem(DATA_ADDR + 8, 12), vec![0xee; 12]);

    // GET_ID into a device-readable buffer is refused.
    let (used, status) = drv.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA_ADDR, 20, false)]);
    assert_eq!((used, status), (1, S_IOERR));
    dev.reset();
}

#[test]
fn read_only_disk_refuses_writes() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), true).unwrap();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.mem
        .write_slice(&[0x55; 512], GuestAddress(DATA_ADDR))
        .unwrap();
    let (used, status) = drv.request(VIRTIO_BLK_T_OUT, 1, &[(DATA_ADDR, 512, false)]);
    assert_eq!((used, status), (1, S_IOERR));
    assert_eq!(image_bytes(&tmp, SECTOR_SIZE, 512), vec![1u8; 512]);
    // Reads and flushes still work.
    assert_eq!(
        drv.request(VIRTIO_BLK_T_IN, 1, &[(DATA_ADDR, 512, true)]),
        (513, S_OK)
    );
    assert_eq!(drv.read_mem(DATA_ADDR, 512), vec![1u8; 512]);
    assert_eq!(drv.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, S_OK));
    dev.reset();
}

#[test]
fn sector_ranges_are_checked() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.mem
        .write_slice(&[0x66; 1024], GuestAddress(DATA_ADDR))
        .unwrap();
    let cases: [(u32, u64, u32, bool); 6] = [
        // Starts at the end.
        (VIRTIO_BLK_T_IN, IMAGE_SECTORS, 512, true),
        // Straddles the end.
        (VIRTIO_BLK_T_OUT, IMAGE_SECTORS - 1, 1024, false),
        // sector * 512 overflows.
        (VIRTIO_BLK_T_IN, u64::MAX / 256, 512, true),
        // offset + length overflows.
        (VIRTIO_BLK_T_OUT, u64::MAX / 512, 1024, false),
        // Not a whole number of sectors.
        (VIRTIO_BLK_T_OUT, 0, 100, false),
        (VIRTIO_BLK_T_IN, 0, 513, true),
    ];
    for (request_type, sector, len, writable) in cases {
        let (used, status) = drv.request(request_type, sector, &[(DATA_ADDR, len, writable)]);
        assert_eq!(
            (used, status),
            (1, S_IOERR),
            "type {request_type} sector {sector} len {len}"
        );
    }
    let original: Vec<u8> = (0..IMAGE_SECTORS)
        .flat_map(|s| [s as u8; SECTOR_SIZE as usize])
        .collect();
    let mut now = Vec::new();
    let mut file = File::open(tmp.as_path()).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut now).unwrap();
    assert_eq!(now, original, "a refused request modified the image");

    // Unknown request types are UNSUPP, not IOERR.
    assert_eq!(drv.request(VIRTIO_BLK_T_DISCARD, 0, &[]), (1, S_UNSUPP));
    assert_eq!(drv.request(0xdead_beef, 0, &[]), (1, S_UNSUPP));
    dev.reset();
}

#[test]
fn malformed_chains_are_refused() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    let status = (STATUS_ADDR, 1, true);

    // No status descriptor at all: nothing can be answered.
    drv.write_header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(drv.submit(&[(HEADER_ADDR, 16, false)]), 0);
    // A device-readable or empty last descriptor is no status byte.
    assert_eq!(
        drv.submit(&[(HEADER_ADDR, 16, false), (DATA_ADDR, 512, false)]),
        0
    );
    assert_eq!(
        drv.submit(&[(HEADER_ADDR, 16, false), (STATUS_ADDR, 1, false)]),
        0
    );
    assert_eq!(
        drv.submit(&[(HEADER_ADDR, 16, false), (STATUS_ADDR, 0, true)]),
        0
    );

    // Header problems get IOERR through the status byte.
    drv.mem
        .write_obj(0xffu8, GuestAddress(STATUS_ADDR))
        .unwrap();
    assert_eq!(drv.submit(&[(HEADER_ADDR, 16, true), status]), 1);
    assert_eq!(drv.status(), S_IOERR);
    assert_eq!(drv.submit(&[(HEADER_ADDR, 8, false), status]), 1);
    assert_eq!(drv.status(), S_IOERR);
    assert_eq!(drv.submit(&[(MEM_SIZE as u64, 16, false), status]), 1);
    assert_eq!(drv.status(), S_IOERR);

    // Data descriptors pointing the wrong way.
    drv.mem
        .write_slice(&[0x77; 512], GuestAddress(DATA_ADDR))
        .unwrap();
    assert_eq!(
        drv.request(VIRTIO_BLK_T_IN, 0, &[(DATA_ADDR, 512, false)]),
        (1, S_IOERR)
    );
    assert_eq!(drv.read_mem(DATA_ADDR, 512), vec![0x77; 512]);
    assert_eq!(
        drv.request(VIRTIO_BLK_T_OUT, 0, &[(DATA_ADDR, 512, true)]),
        (1, S_IOERR)
    );
    assert_eq!(image_bytes(&tmp, 0, 512), vec![0u8; 512]);

    // Huge or out-of-memory data descriptors.
    for data in [
        (DATA_ADDR, 0xffff_fe00, true),
        (MEM_SIZE as u64 - 512, 1024, true),
        (u64::MAX - 511, 512, true),
    ] {
        assert_eq!(drv.request(VIRTIO_BLK_T_IN, 0, &[data]), (1, S_IOERR));
    }

    // Too many data descriptors.
    let many: Vec<Desc> = (0..=u64::from(MAX_SEGMENTS))
        .map(|i| (DATA_ADDR + 512 * i, 512, true))
        .collect();
    let (used, status) = drv.request(VIRTIO_BLK_T_IN, 0, &many[..MAX_SEGMENTS as usize]);
    assert_eq!((used, status), (MAX_SEGMENTS * 512 + 1, S_OK));
    assert_eq!(drv.request(VIRTIO_BLK_T_IN, 0, &many), (1, S_IOERR));

    // The status is the last byte of a longer status descriptor.
    drv.write_header(VIRTIO_BLK_T_FLUSH, 0);
    drv.mem
        .write_slice(&[0xff; 4], GuestAddress(STATUS_ADDR))
        .unwrap();
    assert_eq!(
        drv.submit(&[(HEADER_ADDR, 16, false), (STATUS_ADDR, 4, true)]),
        1
    );
    assert_eq!(drv.read_mem(STATUS_ADDR, 4), [0xff, 0xff, 0xff, S_OK]);

    // The device still serves well-formed requests.
    assert_eq!(
        drv.request(VIRTIO_BLK_T_IN, 2, &[(DATA_ADDR, 512, true)]),
        (513, S_OK)
    );
    assert_eq!(drv.read_mem(DATA_ADDR, 512), vec![2u8; 512]);
    dev.reset();
}

#[test]
fn reset_allows_reactivation() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    assert_eq!(drv.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, S_OK));
    assert!(matches!(
        dev.activate(drv.mem.clone(), drv.irq.clone(), vec![], vec![]),
        Err(ActivateError::AlreadyActive)
    ));
    dev.reset();
    assert!(matches!(
        dev.activate(drv.mem.clone(), drv.irq.clone(), vec![], vec![]),
        Err(ActivateError::QueueCount { expected: 1, .. })
    ));
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    assert_eq!(
        drv.request(VIRTIO_BLK_T_IN, 9, &[(DATA_ADDR, 512, true)]),
        (513, S_OK)
    );
    assert_eq!(drv.read_mem(DATA_ADDR, 512), vec![9u8; 512]);
    dev.reset();
}

/// Polls `done` until it holds; a hang guard, not a timing assertion.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Driver<'_> {
    /// Publishes `n` one-sector reads of sector `i` (request `i`: descriptors
    /// 3i..3i+2, data at DATA_ADDR + 512 i, status at STATUS_ADDR + i) at
    /// once, and notifies the device if `kick`.
    fn publish_reads(&mut self, n: u16, kick: bool) {
        for i in 0..n {
            let header = HEADER_ADDR + 16 * u64::from(i);
            let mut bytes = [0u8; 16];
            bytes[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
            bytes[8..16].copy_from_slice(&u64::from(i).to_le_bytes());
            self.mem.write_slice(&bytes, GuestAddress(header)).unwrap();
            let status = STATUS_ADDR + u64::from(i);
            self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
            let d = 3 * i;
            let next = VRING_DESC_F_NEXT as u16;
            let write = VRING_DESC_F_WRITE as u16;
            self.queue.set_desc(d, header, 16, next, d + 1);
            let data = DATA_ADDR + 512 * u64::from(i);
            self.queue.set_desc(d + 1, data, 512, write | next, d + 2);
            self.queue.set_desc(d + 2, status, 1, write, 0);
            self.queue.publish(self.next, d);
            self.next = self.next.wrapping_add(1);
        }
        if kick {
            self.evt.write(1).unwrap();
        }
    }

    /// The status bytes of the first `n` requests of `publish_reads`.
    fn statuses(&self, n: u16) -> Vec<u8> {
        self.read_mem(STATUS_ADDR, usize::from(n))
    }
}

/// A disk limited to 2 KiB at once and 1 MiB/s: four one-sector reads go
/// through, the rest wait in the ring (the guest's notification does not
/// change that) until the clock has earned them; the limit survives a reset.
#[test]
fn a_rate_limited_disk_serves_its_budget_then_what_the_clock_earns() {
    let tmp = image();
    let clock = Arc::new(ManualClock::new());
    let limit = RateLimit {
        bytes: Some(Bucket::new(1 << 20, 2048).unwrap()),
        ops: None,
    };
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false)
        .unwrap()
        .with_rate_limit(limit, clock.clone())
        .unwrap();
    assert_eq!(dev.rate_limit(), limit);
    let throttled = dev.throttle_count();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.publish_reads(8, true);

    // The clock stands still: once the device has refused the fifth, the
    // first four are all it will ever serve.
    wait_until("the fifth read to be refused", || throttled.get() >= 1);
    assert_eq!(drv.queue.used_idx(), 4);
    assert_eq!(
        drv.statuses(8),
        [S_OK, S_OK, S_OK, S_OK, 0xff, 0xff, 0xff, 0xff]
    );
    for i in 0..4u16 {
        assert_eq!(
            drv.read_mem(DATA_ADDR + 512 * u64::from(i), 512),
            vec![i as u8; 512]
        );
    }
    drv.evt.write(1).unwrap();

    // 1 KiB more at 1 MiB/s: two more reads, then the seventh is refused.
    clock.advance(Duration::from_nanos(976_563));
    wait_until("two more reads", || drv.queue.used_idx() == 6);
    let seen = throttled.get();
    wait_until("the seventh read to be refused", || throttled.get() > seen);
    assert_eq!(drv.queue.used_idx(), 6);
    assert_eq!(drv.statuses(8)[4..], [S_OK, S_OK, 0xff, 0xff]);

    // A reset keeps the empty bucket: a new driver gets nothing for free.
    dev.reset();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.publish_reads(3, true);
    let seen = throttled.get();
    wait_until("a refusal after the reset", || throttled.get() > seen);
    assert_eq!(drv.queue.used_idx(), 0);
    // Enough for everything: all of it goes through.
    clock.advance(Duration::from_secs(1));
    wait_until("the three reads", || drv.queue.used_idx() == 3);
    assert_eq!(drv.statuses(3), [S_OK; 3]);
    dev.reset();
}

#[test]
fn an_operations_limit_counts_requests_of_any_size() {
    let tmp = image();
    let clock = Arc::new(ManualClock::new());
    let limit = RateLimit {
        bytes: None,
        ops: Some(Bucket::new(1000, 2).unwrap()),
    };
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false)
        .unwrap()
        .with_rate_limit(limit, clock.clone())
        .unwrap();
    let throttled = dev.throttle_count();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.publish_reads(5, true);
    wait_until("the third request to be refused", || throttled.get() >= 1);
    assert_eq!(drv.queue.used_idx(), 2);
    // Three milliseconds earn three requests, of which the bucket holds two.
    clock.advance(Duration::from_millis(3));
    wait_until("two more", || drv.queue.used_idx() == 4);
    let seen = throttled.get();
    wait_until("the fifth to be refused", || throttled.get() > seen);
    assert_eq!(drv.queue.used_idx(), 4);
    clock.advance(Duration::from_millis(1));
    wait_until("the fifth", || drv.queue.used_idx() == 5);
    dev.reset();
}

/// Without a limit nothing is held back, and requests already in the ring
/// when the device starts (a restored guest's) are served without a
/// notification.
#[test]
fn an_unlimited_disk_serves_everything_including_what_it_finds_at_start() {
    let tmp = image();
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false).unwrap();
    assert!(dev.rate_limit().is_unlimited());
    let throttled = dev.throttle_count();
    let mem = test_mem();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    let queue = DriverQueue::new(&mem, QUEUE_ADDR, QUEUE_SIZE);
    let mut drv = Driver {
        mem: &mem,
        queue,
        irq,
        evt,
        next: 0,
    };
    drv.publish_reads(80, false);
    dev.activate(
        mem.clone(),
        drv.irq.clone(),
        vec![drv.queue.create_queue()],
        vec![drv.evt.try_clone().unwrap()],
    )
    .unwrap();
    wait_until("the reads published before activation", || {
        drv.queue.used_idx() == 80
    });
    assert_eq!(drv.statuses(80), vec![S_OK; 80]);
    assert_eq!(throttled.get(), 0);
    dev.reset();
}

/// A snapshot of a throttled disk restores: the refused requests are still
/// in the ring (the used index is the device's position), and the restored
/// device, whose limiter starts full, serves them without a notification.
#[test]
fn requests_a_throttled_disk_left_in_the_ring_are_served_after_a_restore() {
    let tmp = image();
    let clock = Arc::new(ManualClock::new());
    let limit = RateLimit {
        bytes: None,
        ops: Some(Bucket::new(1, 1).unwrap()),
    };
    let mut dev = BlockDevice::new(tmp.as_path().to_path_buf(), false)
        .unwrap()
        .with_rate_limit(limit, clock.clone())
        .unwrap();
    let throttled = dev.throttle_count();
    let mem = test_mem();
    let mut drv = Driver::activate(&mem, &mut dev);
    drv.publish_reads(3, true);
    wait_until("the second read to be refused", || throttled.get() >= 1);
    assert_eq!(drv.queue.used_idx(), 1);
    // Saved: the worker stops; the next VMM has a device of its own.
    dev.reset();
    drop(dev);
    let mut restored = BlockDevice::new(tmp.as_path().to_path_buf(), false)
        .unwrap()
        .with_rate_limit(
            RateLimit {
                bytes: None,
                ops: Some(Bucket::new(1, 8).unwrap()),
            },
            Arc::new(ManualClock::new()),
        )
        .unwrap();
    let mut queue = drv.queue.create_queue();
    queue.set_next_avail(1);
    queue.set_next_used(1);
    restored
        .activate(
            mem.clone(),
            drv.irq.clone(),
            vec![queue],
            vec![drv.evt.try_clone().unwrap()],
        )
        .unwrap();
    wait_until("the reads left in the ring", || drv.queue.used_idx() == 3);
    assert_eq!(drv.statuses(3), [S_OK; 3]);
    restored.reset();
}
