//! Address ranges to devices, for port I/O and MMIO exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reached through a bus. Offsets are relative to the device's base.
pub trait BusDevice: Send {
    /// Fills `data` with what the device answers at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles the guest writing `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors registering a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
}

type Shared = Arc<Mutex<dyn BusDevice>>;

/// A set of non-overlapping `[base, base + len)` ranges, each owned by a device.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, Shared)>,
}

impl Bus {
    /// Registers `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: Shared) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::Overlap { base, len })?;
        let before = self.ranges.range(..end).next_back();
        if let Some((b, (l, _))) = before {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Shared)> {
        let (base, (len, device)) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= *len).then_some((offset, device))
    }

    /// Routes a guest read; reads of nothing return all ones, as on real
    /// hardware with no device decoding the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr, data.len()) {
            Some((offset, device)) => lock(device).read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Routes a guest write; writes to nothing are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((offset, device)) = self.find(addr, data.len()) {
            lock(device).write(offset, data);
        }
    }
}

/// Locks a device even if a thread panicked while holding it: device state is
/// kept consistent per access, and a VMM that stops serving the guest is worse.
fn lock(device: &Shared) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_relative_offsets() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        bus.write(0x3f8, b"x");
        assert_eq!(dev.lock().unwrap().writes, vec![(0, vec![b'x'])]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones_and_writes_dropped() {
        let bus = Bus::default();
        let mut data = [0u8; 4];
        bus.read(0x80, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0x80, &[1]);
    }

    #[test]
    fn access_straddling_the_end_of_a_range_is_not_routed() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::default();
        bus.insert(0x1000, 0x10, dev.clone()).unwrap();
        bus.write(0x100e, &[1, 2, 3, 4]);
        assert!(dev.lock().unwrap().writes.is_empty());
        let mut data = [0u8; 8];
        bus.read(u64::MAX - 2, &mut data);
        assert_eq!(data, [0xff; 8]);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::default();
        bus.insert(0x1000, 0x10, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        let again = Arc::new(Mutex::new(Recorder::default()));
        assert!(bus.insert(0x1008, 0x10, again.clone()).is_err());
        assert!(bus.insert(0xff8, 0x10, again.clone()).is_err());
        assert!(bus.insert(0x1010, 0, again.clone()).is_err());
        assert!(bus.insert(0x1010, 0x10, again).is_ok());
    }
}
