//! Loading the guest kernel and initramfs and describing the machine to the
//! kernel (PVH start info or Linux zero page, MP table, command line).

pub mod cmdline;
pub mod mptable;
mod pvh;
mod zero_page;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryRegion, ReadVolatile};

use crate::memory::{self, GuestMemory as Mem, CMDLINE_START, HIMEM_START, MMIO_GAP_START};

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode, paging off, EBX = start info.
    Pvh(GuestAddress),
    /// Linux 64-bit boot protocol: long mode, RSI = zero page.
    Linux64(GuestAddress),
}

/// A loaded kernel.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// The bzImage setup header, to be copied into the zero page.
    setup_header: Option<setup_header>,
}

/// Where the initramfs was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedInitrd {
    pub addr: GuestAddress,
    pub size: usize,
}

/// Errors while loading or describing the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load kernel {path}: not an ELF vmlinux ({elf}) nor a bzImage ({bzimage})")]
    LoadKernel {
        path: PathBuf,
        elf: loader::Error,
        bzimage: loader::Error,
    },
    #[error("cannot read initramfs {path}: {source}")]
    ReadInitrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooLarge { path: PathBuf, size: usize },
    #[error("cannot write initramfs into guest memory: {0}")]
    WriteInitrd(vm_memory::GuestMemoryError),
    #[error("cannot write the kernel command line: {0}")]
    WriteCmdline(loader::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error("cannot write boot parameters: {0}")]
    BootParams(linux_loader::configurator::Error),
}

/// Loads an ELF `vmlinux` (PVH entry if the kernel has one) or a bzImage.
pub fn load_kernel(mem: &Mem, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = match Elf::load(mem, None, &mut file, Some(HIMEM_START)) {
        Ok(result) => {
            let entry = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => EntryPoint::Pvh(addr),
                _ => EntryPoint::Linux64(result.kernel_load),
            };
            return Ok(LoadedKernel {
                entry,
                setup_header: None,
            });
        }
        Err(err) => err,
    };
    match BzImage::load(mem, None, &mut file, Some(HIMEM_START)) {
        Ok(result) => Ok(LoadedKernel {
            // The 64-bit entry point sits 0x200 bytes into the protected-mode code.
            entry: EntryPoint::Linux64(result.kernel_load.unchecked_add(0x200)),
            setup_header: result.setup_header,
        }),
        Err(bzimage) => Err(BootError::LoadKernel {
            path: path.to_path_buf(),
            elf,
            bzimage,
        }),
    }
}

/// Copies the initramfs to the top of low memory, page aligned, where the
/// kernel will not overwrite it while unpacking itself.
pub fn load_initrd(mem: &Mem, path: &Path) -> Result<LoadedInitrd, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::ReadInitrd {
        path: path.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::ReadInitrd {
            path: path.to_path_buf(),
            source,
        })?
        .len() as usize;
    let too_large = || BootError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
    };
    let low_end = mem
        .iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|end| *end <= MMIO_GAP_START)
        .max()
        .ok_or_else(too_large)?;
    let addr = low_end
        .checked_sub(size as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= HIMEM_START.0 + (16 << 20))
        .ok_or_else(too_large)?;
    let mut slice = mem
        .get_slice(GuestAddress(addr), size)
        .map_err(BootError::WriteInitrd)?;
    file.read_exact_volatile(&mut slice)
        .map_err(|e| BootError::ReadInitrd {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(LoadedInitrd {
        addr: GuestAddress(addr),
        size,
    })
}

/// Writes everything the kernel reads at boot besides its own image: the
/// command line, the MP table and the PVH start info or Linux zero page.
pub fn write_boot_info(
    mem: &Mem,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<LoadedInitrd>,
    vcpus: u8,
    mem_size: u64,
) -> Result<(), BootError> {
    loader::load_cmdline(mem, CMDLINE_START, cmdline).map_err(BootError::WriteCmdline)?;
    mptable::write(mem, vcpus)?;
    let map = memory::memory_map(mem_size);
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes_with_nul().len())
        .unwrap_or(1);
    match kernel.entry {
        EntryPoint::Pvh(_) => pvh::write(mem, &map, initrd),
        EntryPoint::Linux64(_) => {
            zero_page::write(mem, kernel.setup_header, &map, initrd, cmdline_len)
        }
    }
    .map_err(BootError::BootParams)
}

/// Guest memory written by tests and the loader itself.
#[cfg(test)]
pub(crate) fn test_memory(size: u64) -> Mem {
    memory::create_guest_memory(size).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::Bytes;

    /// A minimal 64-bit ELF with one PT_LOAD segment at 16 MiB and, if
    /// asked, a PVH note (Xen ELF note type 18) pointing at `pvh_entry`.
    fn tiny_elf(pvh_entry: Option<u32>) -> Vec<u8> {
        let code = [0xf4u8; 16]; // hlt
        let load_addr: u64 = 0x100_0000;
        let mut note = Vec::new();
        if let Some(entry) = pvh_entry {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz "Xen\0"
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
        }
        let phnum: u16 = if note.is_empty() { 1 } else { 2 };
        let ph_off = 64u64;
        let data_off = ph_off + 56 * u64::from(phnum);
        let note_off = data_off + code.len() as u64;
        let mut elf = Vec::new();
        elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        elf.extend_from_slice(&[0; 8]);
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&load_addr.to_le_bytes()); // e_entry
        elf.extend_from_slice(&ph_off.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&64u16.to_le_bytes());
        elf.extend_from_slice(&56u16.to_le_bytes());
        elf.extend_from_slice(&phnum.to_le_bytes());
        elf.extend_from_slice(&64u16.to_le_bytes());
        elf.extend_from_slice(&0u16.to_le_bytes());
        elf.extend_from_slice(&0u16.to_le_bytes());
        let mut phdr = |kind: u32, off: u64, addr: u64, size: u64, align: u64| {
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&5u32.to_le_bytes());
            elf.extend_from_slice(&off.to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&align.to_le_bytes());
        };
        phdr(1, data_off, load_addr, code.len() as u64, 0x1000);
        if !note.is_empty() {
            phdr(4, note_off, 0, note.len() as u64, 4);
        }
        elf.extend_from_slice(&code);
        elf.extend_from_slice(&note);
        elf
    }

    fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("vmrun-{}-{name}", std::process::id()));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn loads_elf_with_pvh_note() {
        let mem = test_memory(64 << 20);
        let path = write_temp("pvh.elf", &tiny_elf(Some(0x100_0008)));
        let kernel = load_kernel(&mem, &path).unwrap();
        assert_eq!(kernel.entry, EntryPoint::Pvh(GuestAddress(0x100_0008)));
        let byte: u8 = mem.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(byte, 0xf4);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn loads_elf_without_pvh_note_for_the_64bit_entry() {
        let mem = test_memory(64 << 20);
        let path = write_temp("plain.elf", &tiny_elf(None));
        let kernel = load_kernel(&mem, &path).unwrap();
        assert_eq!(kernel.entry, EntryPoint::Linux64(GuestAddress(0x100_0000)));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn rejects_a_file_that_is_no_kernel_and_names_it() {
        let mem = test_memory(64 << 20);
        let path = write_temp("junk", &[0u8; 4096]);
        let err = load_kernel(&mem, &path).unwrap_err();
        assert!(err.to_string().contains("junk"), "{err}");
        assert!(err.to_string().contains("bzImage"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn initrd_goes_page_aligned_to_the_top_of_memory() {
        let mem = test_memory(64 << 20);
        let path = write_temp("initrd", &[7u8; 5000]);
        let initrd = load_initrd(&mem, &path).unwrap();
        assert_eq!(initrd.size, 5000);
        assert_eq!(initrd.addr.0 % 4096, 0);
        assert!(initrd.addr.0 + 5000 <= 64 << 20);
        let byte: u8 = mem.read_obj(initrd.addr.unchecked_add(4999)).unwrap();
        assert_eq!(byte, 7);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn initrd_larger_than_memory_is_an_error() {
        let mem = test_memory(64 << 20);
        let path = write_temp("big-initrd", &vec![0u8; 60 << 20]);
        let err = load_initrd(&mem, &path).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}
