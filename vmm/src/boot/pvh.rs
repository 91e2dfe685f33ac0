//! PVH boot: `hvm_start_info`, its memory map and module list (the initramfs).

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams, Error};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::ByteValued;

use super::LoadedInitrd;
use crate::memory::{
    GuestMemory, MemoryMapEntry, CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START,
};

const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct StartInfo(hvm_start_info);
// SAFETY: hvm_start_info is a repr(C) struct of integers without padding, so
// every byte pattern is a valid value.
unsafe impl ByteValued for StartInfo {}

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct MemmapEntry(hvm_memmap_table_entry);
// SAFETY: hvm_memmap_table_entry is a repr(C) struct of integers without padding.
unsafe impl ByteValued for MemmapEntry {}

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ModlistEntry(hvm_modlist_entry);
// SAFETY: hvm_modlist_entry is a repr(C) struct of integers without padding.
unsafe impl ByteValued for ModlistEntry {}

pub(super) fn write(
    mem: &GuestMemory,
    map: &[MemoryMapEntry],
    initrd: Option<LoadedInitrd>,
) -> Result<(), Error> {
    let entries: Vec<MemmapEntry> = map
        .iter()
        .map(|e| {
            MemmapEntry(hvm_memmap_table_entry {
                addr: e.start,
                size: e.size,
                type_: e.kind as u32,
                reserved: 0,
            })
        })
        .collect();
    let info = StartInfo(hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: PVH_MODLIST_START.0,
        cmdline_paddr: CMDLINE_START.0,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_START.0,
        memmap_entries: entries.len() as u32,
        reserved: 0,
    });
    let mut params = BootParams::new(&info, PVH_INFO_START);
    params.set_sections(&entries, PVH_MEMMAP_START);
    if let Some(initrd) = initrd {
        let module = ModlistEntry(hvm_modlist_entry {
            paddr: initrd.addr.0,
            size: initrd.size as u64,
            cmdline_paddr: 0,
            reserved: 0,
        });
        params.set_modules(&[module], PVH_MODLIST_START);
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_memory;
    use crate::memory::memory_map;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn start_info_points_at_memmap_cmdline_and_initrd() {
        let mem = test_memory(128 << 20);
        let initrd = LoadedInitrd {
            addr: GuestAddress(0x700_0000),
            size: 1234,
        };
        write(&mem, &memory_map(128 << 20), Some(initrd)).unwrap();
        let info: StartInfo = mem.read_obj(PVH_INFO_START).unwrap();
        let info = info.0;
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.cmdline_paddr, CMDLINE_START.0);
        assert_eq!(info.memmap_entries, 3);
        assert_eq!(info.nr_modules, 1);
        let module: ModlistEntry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.0.paddr, module.0.size), (0x700_0000, 1234));
        let last: MemmapEntry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!(last.0.addr + last.0.size, 128 << 20);
        assert_eq!(last.0.type_, 1);
    }
}
