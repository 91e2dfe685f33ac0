//! The 16550 UART on COM1 (0x3f8, IRQ 4): the guest's console.

use std::io::Write;

use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;
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

/// The UART's registers and receive FIFO, as a snapshot keeps them
/// (vm-superio's `SerialState`, which has no serde support of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

/// A serial device whose state can be saved, whatever its output.
pub trait SavedSerial: Send {
    fn snapshot(&self) -> SerialSnapshot;
}

/// A saved FIFO holds more than a 16550 can.
#[derive(Debug, thiserror::Error)]
#[error("saved serial state has {0} bytes in its receive FIFO, more than a 16550 holds")]
pub struct SerialRestoreError(usize);

impl<W: Write + Send> SerialDevice<W> {
    /// A UART that raises `irq` and writes what the guest sends to `out`.
    pub fn new(irq: IrqLine, out: W) -> Self {
        Self {
            serial: Serial::new(irq, out),
        }
    }

    /// A UART in the saved state `saved`.
    pub fn restore(
        irq: IrqLine,
        out: W,
        saved: &SerialSnapshot,
    ) -> Result<Self, SerialRestoreError> {
        let state = SerialState {
            baud_divisor_low: saved.baud_divisor_low,
            baud_divisor_high: saved.baud_divisor_high,
            interrupt_enable: saved.interrupt_enable,
            interrupt_identification: saved.interrupt_identification,
            line_control: saved.line_control,
            line_status: saved.line_status,
            modem_control: saved.modem_control,
            modem_status: saved.modem_status,
            scratch: saved.scratch,
            in_buffer: saved.in_buffer.clone(),
        };
        let serial = Serial::from_state(&state, irq, vm_superio::serial::NoEvents, out)
            .map_err(|_| SerialRestoreError(saved.in_buffer.len()))?;
        Ok(Self { serial })
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

impl<W: Write + Send> SavedSerial for SerialDevice<W> {
    fn snapshot(&self) -> SerialSnapshot {
        let s = self.serial.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
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
    fn saved_registers_and_fifo_come_back() {
        let irq = || IrqLine(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut serial = SerialDevice::new(irq(), Vec::<u8>::new());
        serial.write(3, &[0x03]); // LCR: 8N1
        serial.write(7, &[0x5a]); // scratch
        serial.enqueue_input(b"xy");
        let saved = serial.snapshot();
        let mut restored = SerialDevice::restore(irq(), Vec::<u8>::new(), &saved).unwrap();
        assert_eq!(restored.snapshot(), saved);
        let mut data = [0u8; 1];
        restored.read(7, &mut data);
        assert_eq!(data, [0x5a]);
        restored.read(0, &mut data);
        assert_eq!(data, [b'x']);
        let too_full = SerialSnapshot {
            in_buffer: vec![0; 1000],
            ..saved
        };
        assert!(SerialDevice::restore(irq(), Vec::<u8>::new(), &too_full).is_err());
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
