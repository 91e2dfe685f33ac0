//! Guest physical memory: the fixed x86_64 layout used for booting and the
//! creation of the guest RAM regions.

use std::fs::File;
use std::sync::Arc;

use vm_memory::mmap::FromRangesError;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::snapshot::state::MemoryRegion;

/// Guest memory as every part of the VMM sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Global descriptor table used for the first instructions.
pub const GDT_START: GuestAddress = GuestAddress(0x500);
/// Empty interrupt descriptor table used until the guest installs its own.
pub const IDT_START: GuestAddress = GuestAddress(0x520);
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: GuestAddress = GuestAddress(0x6000);
/// PVH memory map (`hvm_memmap_table_entry` array).
pub const PVH_MEMMAP_START: GuestAddress = GuestAddress(0x6100);
/// PVH module list (the initramfs).
pub const PVH_MODLIST_START: GuestAddress = GuestAddress(0x6f00);
/// Linux boot protocol zero page (`boot_params`).
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack for the 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapped page tables for the 64-bit Linux entry.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Page directory pointer table below `PML4_START`.
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// Page directory (2 MiB pages) covering the first GiB.
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// Kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Room for the kernel command line (x86's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table lives. Memory
/// from here to 1 MiB is not RAM for the guest.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte of high memory, where kernels are loaded.
pub const HIMEM_START: GuestAddress = GuestAddress(0x10_0000);
/// Start of the hole below 4 GiB kept for MMIO devices, LAPIC and IOAPIC.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Where virtio-mmio devices are placed, one 4 KiB window each.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;

/// The RAM regions for `size` bytes of guest memory: one below the MMIO hole
/// and, for large guests, the rest above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > low {
        regions.push((GuestAddress(MMIO_GAP_END), (size - low) as usize));
    }
    regions
}

/// Maps `size` bytes of anonymous guest RAM.
pub fn create_guest_memory(size: u64) -> Result<GuestMemory, FromRangesError> {
    GuestMemoryMmap::from_ranges(&ram_regions(size))
}

/// Why a snapshot's memory file cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot map {len} bytes of the memory file at offset {offset}: {reason}")]
    Mmap {
        offset: u64,
        len: u64,
        reason: String,
    },
    #[error("the memory file's regions do not form a guest memory: {0}")]
    Layout(String),
}

/// Maps a snapshot's memory file as guest RAM, copy-on-write
/// (`MAP_PRIVATE`): pages are read from the file's page cache when the
/// guest touches them, shared by every VM restored from the same file, and
/// copied only when written.
pub fn map_snapshot_memory(file: File, regions: &[MemoryRegion]) -> Result<GuestMemory, MapError> {
    let file = Arc::new(file);
    let mut mapped = Vec::with_capacity(regions.len());
    for region in regions {
        let mmap_err = |reason: String| MapError::Mmap {
            offset: region.file_offset,
            len: region.len,
            reason,
        };
        let len = usize::try_from(region.len).map_err(|e| mmap_err(e.to_string()))?;
        let mapping = MmapRegion::<()>::build(
            Some(FileOffset::from_arc(file.clone(), region.file_offset)),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|e| mmap_err(e.to_string()))?;
        let guest =
            GuestRegionMmap::new(mapping, GuestAddress(region.guest_addr)).ok_or_else(|| {
                MapError::Layout(format!("region at {:#x} overflows", region.guest_addr))
            })?;
        mapped.push(guest);
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|e| MapError::Layout(e.to_string()))
}

/// One entry of the memory map given to the guest (e820 or PVH memmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub start: u64,
    pub size: u64,
    pub kind: MemoryKind,
}

/// Type of a memory map entry, numbered as in e820.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    Ram = 1,
    Reserved = 2,
}

/// The guest's view of its physical memory: low RAM up to the EBDA, the EBDA
/// reserved (it holds the MP table), then RAM from 1 MiB on.
pub fn memory_map(size: u64) -> Vec<MemoryMapEntry> {
    let mut map = vec![
        MemoryMapEntry {
            start: 0,
            size: EBDA_START,
            kind: MemoryKind::Ram,
        },
        MemoryMapEntry {
            start: EBDA_START,
            size: 0x10_0000 - EBDA_START,
            kind: MemoryKind::Reserved,
        },
    ];
    for (start, len) in ram_regions(size) {
        let start = start.0.max(HIMEM_START.0);
        let end = if start == HIMEM_START.0 {
            len as u64
        } else {
            start + len as u64
        };
        if end > start {
            map.push(MemoryMapEntry {
                start,
                size: end - start,
                kind: MemoryKind::Ram,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let regions = ram_regions(4 << 30);
        assert_eq!(regions[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(
            regions[1],
            (
                GuestAddress(MMIO_GAP_END),
                ((4u64 << 30) - MMIO_GAP_START) as usize
            )
        );
    }

    #[test]
    fn memory_map_reserves_the_ebda_and_starts_ram_at_1mib() {
        let map = memory_map(128 << 20);
        assert_eq!(map.len(), 3);
        assert_eq!(map[1].kind, MemoryKind::Reserved);
        assert_eq!(map[2].start, HIMEM_START.0);
        assert_eq!(map[2].start + map[2].size, 128 << 20);
    }

    #[test]
    fn memory_map_of_a_large_guest_has_ram_above_4g() {
        let map = memory_map(5 << 30);
        let last = map.last().copied().expect("entry");
        assert_eq!(last.start, MMIO_GAP_END);
        assert_eq!(
            last.start + last.size,
            MMIO_GAP_END + (5u64 << 30) - MMIO_GAP_START
        );
    }
}
