//! Intel MultiProcessor Specification 1.4 table: how a guest without ACPI
//! finds its CPUs, the IOAPIC and the ISA interrupt routing.
//!
//! The table is assembled as little-endian bytes rather than packed structs,
//! so there is no alignment or padding to reason about.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::memory::EBDA_START;

/// Local APIC address every CPU sees.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC address.
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// IOAPIC input pins routed from the ISA bus.
pub const IRQ_COUNT: u8 = 24;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const MP_SPEC_REV: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
// Family 6 model 15 stepping 11, as Linux only checks the presence.
const CPU_SIGNATURE: u32 = (6 << 8) | (15 << 4) | 11;
const CPU_FEATURE_APIC: u32 = 1 << 9;
const CPU_FEATURE_FPU: u32 = 1;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("MP table: {0} vCPUs do not fit (at most 254)")]
    TooManyCpus(u8),
    #[error("MP table does not fit below 1 MiB ({0} bytes)")]
    TooLarge(usize),
    #[error("MP table: cannot write guest memory at {addr:#x}: {source}")]
    Write {
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and configuration table for `cpus` CPUs,
/// placed at `addr`. Returns the bytes to write there.
pub fn build(cpus: u8, addr: u64) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus + 1;
    let table_addr = addr + 16;

    let mut entries = Vec::new();
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    let bus_id = 0;
    entries.extend_from_slice(&[ENTRY_BUS, bus_id]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    for irq in 0..IRQ_COUNT {
        let kind = if irq == 0 {
            INT_TYPE_EXTINT
        } else {
            INT_TYPE_INT
        };
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, kind, 0, 0, bus_id, irq, ioapic_id, irq]);
    }
    // LINT0 is the legacy PIC's ExtINT, LINT1 the NMI, on every local APIC.
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        bus_id,
        0,
        0xff,
        0,
    ]);
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        bus_id,
        0,
        0xff,
        1,
    ]);
    let entry_count = u16::from(cpus) + 1 + 1 + u16::from(IRQ_COUNT) + 2;

    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    let length = u16::try_from(44 + entries.len())
        .map_err(|_| MpTableError::TooLarge(44 + entries.len()))?;
    header.extend_from_slice(&length.to_le_bytes());
    header.push(MP_SPEC_REV);
    header.push(0); // checksum, below
    header.extend_from_slice(b"VMRUN   ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.extend_from_slice(&[1, MP_SPEC_REV, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);

    let mut out = floating;
    out.extend_from_slice(&table);
    if addr + out.len() as u64 > 0x10_0000 {
        return Err(MpTableError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Writes the MP table for `cpus` CPUs at the start of the EBDA.
pub fn write<M: GuestMemory>(mem: &M, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|source| MpTableError::Write {
            addr: EBDA_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn floating_pointer_and_table_have_valid_checksums() {
        let bytes = build(4, EBDA_START).unwrap();
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(sum(&bytes[..16]), 0);
        let table_ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64;
        assert_eq!(table_ptr, EBDA_START + 16);
        let table = &bytes[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
    }

    #[test]
    fn lists_every_cpu_with_the_first_as_boot_processor() {
        let bytes = build(3, EBDA_START).unwrap();
        let entries = &bytes[16 + 44..];
        let cpus: Vec<&[u8]> = entries.chunks(20).take(3).collect();
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu[0], ENTRY_PROCESSOR);
            assert_eq!(cpu[1] as usize, i);
            assert_eq!(cpu[3] & CPU_BOOTPROCESSOR != 0, i == 0);
        }
        let count = u16::from_le_bytes([bytes[16 + 34], bytes[16 + 35]]);
        assert_eq!(count, 3 + 2 + 24 + 2);
    }

    #[test]
    fn rejects_zero_cpus() {
        assert!(matches!(
            build(0, EBDA_START),
            Err(MpTableError::TooManyCpus(0))
        ));
    }

    #[test]
    fn fits_below_1mib_for_the_largest_guest() {
        assert!(build(16, EBDA_START).unwrap().len() < (0x10_0000 - EBDA_START) as usize);
    }
}
