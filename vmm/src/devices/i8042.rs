//! The i8042 keyboard controller, only for its reset line: the guest's
//! `reboot=k` (and a panic with `panic=1`) writes 0xfe to port 0x64, which
//! ends the VM.

use vm_superio::I8042Device;

use super::BusDevice;

/// The data port; the command port is 4 above.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Ports from the data port through the command port.
pub const PORT_COUNT: u64 = 5;

/// vm-superio's i8042 behind the bus.
pub struct I8042<T: vm_superio::Trigger + Send> {
    device: I8042Device<T>,
}

impl<T: vm_superio::Trigger + Send> I8042<T> {
    /// An i8042 that calls `reset` when the guest pulses the reset line.
    pub fn new(reset: T) -> Self {
        Self {
            device: I8042Device::new(reset),
        }
    }
}

impl<T: vm_superio::Trigger + Send> BusDevice for I8042<T> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.device.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(value), Ok(offset)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(err) = self.device.write(offset, *value) {
            tracing::warn!(?err, "i8042: cannot signal the reset");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);
    impl vm_superio::Trigger for Count {
        type E = ();
        fn trigger(&self) -> Result<(), ()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn reset_command_triggers_the_reset() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut dev = I8042::new(Count(count.clone()));
        dev.write(0, &[0xfe]); // data port: no reset
        assert_eq!(count.load(Ordering::SeqCst), 0);
        dev.write(4, &[0xfe]); // command port: pulse reset
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
