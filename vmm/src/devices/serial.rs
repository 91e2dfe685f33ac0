//! The 16550 UART on COM1 (0x3f8, IRQ 4): the guest's console.

use std::io::Write;

use vm_superio::Serial;

use super::{BusDevice, IrqLine};

/// COM1's port base and IRQ.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// Registers a 16550 decodes.
pub const PORT_COUNT: u64 = 8;

/// vm-superio's 16550 behind the bus, writing guest output to `W`.
pub struct SerialDevice<W: Write + Send> {
    serial: Serial<IrqLine, vm_superio::serial::NoEvents, W>,
}

impl<W: Write + Send> SerialDevice<W> {
    /// A UART that raises `irq` and writes what the guest sends to `out`.
    pub fn new(irq: IrqLine, out: W) -> Self {
        Self {
            serial: Serial::new(irq, out),
        }
    }

    /// Queues host input for the guest to read.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(input).unwrap_or(0)
    }

    /// Where guest output goes.
    pub fn output(&self) -> &W {
        self.serial.writer()
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.serial.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(value), Ok(offset)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(err) = self.serial.write(offset, *value) {
            tracing::warn!(%err, "serial write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn guest_bytes_reach_the_output() {
        let mut serial = SerialDevice::new(
            IrqLine(EventFd::new(EFD_NONBLOCK).unwrap()),
            Vec::<u8>::new(),
        );
        for b in b"hi\n" {
            serial.write(0, &[*b]);
        }
        assert_eq!(serial.output(), b"hi\n");
    }

    #[test]
    fn host_input_is_readable_and_raises_the_irq() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut serial = SerialDevice::new(IrqLine(irq.try_clone().unwrap()), Vec::<u8>::new());
        serial.write(1, &[0x01]); // IER: interrupt when data is available
        assert_eq!(serial.enqueue_input(b"a"), 1);
        let mut data = [0u8; 1];
        serial.read(0, &mut data);
        assert_eq!(data, [b'a']);
        assert!(irq.read().unwrap() >= 1);
    }

    #[test]
    fn odd_offsets_and_empty_accesses_are_harmless() {
        let mut serial = SerialDevice::new(
            IrqLine(EventFd::new(EFD_NONBLOCK).unwrap()),
            Vec::<u8>::new(),
        );
        serial.write(1000, &[1]);
        serial.write(0, &[]);
        let mut empty = [];
        serial.read(0, &mut empty);
        let mut data = [9u8; 2];
        serial.read(7, &mut data);
        assert_eq!(data[1], 0);
    }
}
