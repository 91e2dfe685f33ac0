//! Linux 64-bit boot protocol: the zero page (`boot_params`) with the e820
//! map, command line and initramfs location.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams, Error};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::ByteValued;

use super::LoadedInitrd;
use crate::memory::{GuestMemory, MemoryMapEntry, CMDLINE_START, ZERO_PAGE_START};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);
// SAFETY: boot_params is a repr(C, packed) struct of integers and arrays of
// integers, so every byte pattern is a valid value.
unsafe impl ByteValued for ZeroPage {}

pub(super) fn write(
    mem: &GuestMemory,
    header: Option<setup_header>,
    map: &[MemoryMapEntry],
    initrd: Option<LoadedInitrd>,
    cmdline_len: usize,
) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(header) = header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START.0 as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: entry.start,
            size: entry.size,
            type_: entry.kind as u32,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&ZeroPage(params), ZERO_PAGE_START),
        mem,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_memory;
    use crate::memory::memory_map;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn zero_page_carries_e820_cmdline_and_initrd() {
        let mem = test_memory(128 << 20);
        let initrd = LoadedInitrd {
            addr: GuestAddress(0x700_0000),
            size: 4321,
        };
        write(&mem, None, &memory_map(128 << 20), Some(initrd), 42).unwrap();
        let page: ZeroPage = mem.read_obj(ZERO_PAGE_START).unwrap();
        let p = page.0;
        assert_eq!({ p.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START.0 as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 4321);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!({ last.addr } + { last.size }, 128 << 20);
    }
}
