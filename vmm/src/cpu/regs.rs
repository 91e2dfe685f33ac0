//! Initial vCPU state: segments and control registers for the chosen entry
//! (PVH's 32-bit protected mode or Linux's 64-bit long mode), general
//! registers, FPU, and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Address, Bytes, GuestAddress};

use crate::boot::EntryPoint;
use crate::memory::{
    GuestMemory, BOOT_STACK_POINTER, GDT_START, IDT_START, PDE_START, PDPTE_START, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Errors writing the boot structures the registers point at.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write {what} at {addr:#x}: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// One GDT descriptor from flags, base and limit, in the hardware layout.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << (56 - 24))
        | (((flags as u64) & 0x0000_f0ff) << 40)
        | (((limit as u64) & 0x000f_0000) << (48 - 16))
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
}

/// The KVM segment register a GDT descriptor at `index` stands for.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let granular = (entry >> 55) & 1 == 1;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT: null, code, data, TSS. PVH starts in 32-bit protected
/// mode, Linux's 64-bit entry in long mode.
pub fn boot_gdt(entry: EntryPoint) -> [u64; 4] {
    let code = match entry {
        EntryPoint::Pvh(_) => gdt_entry(0xc09b, 0, 0xfffff),
        EntryPoint::Linux64(_) => gdt_entry(0xa09b, 0, 0xfffff),
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemory,
    what: &'static str,
    value: T,
    addr: GuestAddress,
) -> Result<(), RegsError> {
    mem.write_obj(value, addr)
        .map_err(|source| RegsError::Write {
            what,
            addr: addr.0,
            source,
        })
}

/// Writes the GDT, IDT and (for long mode) identity page tables, and sets
/// `sregs` to use them.
pub fn setup_sregs(
    mem: &GuestMemory,
    entry: EntryPoint,
    sregs: &mut kvm_sregs,
) -> Result<(), RegsError> {
    let gdt = boot_gdt(entry);
    for (i, descriptor) in gdt.iter().enumerate() {
        write(
            mem,
            "GDT",
            *descriptor,
            GDT_START.unchecked_add(i as u64 * 8),
        )?;
    }
    write(mem, "IDT", 0u64, IDT_START)?;

    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.gdt.base = GDT_START.0;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_START.0;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);

    match entry {
        EntryPoint::Pvh(_) => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryPoint::Linux64(_) => {
            setup_page_tables(mem)?;
            sregs.cr3 = PML4_START.0;
            sregs.cr4 = X86_CR4_PAE;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// Identity-maps the first GiB with 2 MiB pages for the 64-bit entry.
fn setup_page_tables(mem: &GuestMemory) -> Result<(), RegsError> {
    write(mem, "PML4", PDPTE_START.0 | 0x03, PML4_START)?;
    write(mem, "PDPTE", PDE_START.0 | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        write(mem, "PDE", (i << 21) | 0x83, PDE_START.unchecked_add(i * 8))?;
    }
    Ok(())
}

/// General registers at the entry point.
pub fn boot_regs(entry: EntryPoint) -> kvm_regs {
    match entry {
        EntryPoint::Pvh(addr) => kvm_regs {
            rflags: 0x2,
            rip: addr.0,
            rbx: PVH_INFO_START.0,
            ..Default::default()
        },
        EntryPoint::Linux64(addr) => kvm_regs {
            rflags: 0x2,
            rip: addr.0,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START.0,
            ..Default::default()
        },
    }
}

/// FPU defaults after reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&state.regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (r, b) in state.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *r = b as _;
    }
}

/// Routes LINT0 to the legacy PIC (ExtINT) and LINT1 to NMI, as a BIOS would.
pub fn setup_lint(state: &mut kvm_lapic_state) {
    let with_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(state, APIC_LVT0);
    set_lapic_reg(state, APIC_LVT0, with_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(state, APIC_LVT1);
    set_lapic_reg(state, APIC_LVT1, with_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_memory;

    #[test]
    fn gdt_entry_round_trips_through_segment() {
        let code = gdt_entry(0xa09b, 0, 0xfffff);
        let seg = segment(code, 1);
        assert_eq!(seg.selector, 8);
        assert_eq!(seg.l, 1);
        assert_eq!(seg.db, 0);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.present, 1);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.unusable, 0);
        let pvh = segment(gdt_entry(0xc09b, 0, 0xfffff), 1);
        assert_eq!((pvh.l, pvh.db), (0, 1));
    }

    #[test]
    fn pvh_starts_in_protected_mode_without_paging() {
        let mem = test_memory(64 << 20);
        let mut sregs = kvm_sregs::default();
        let entry = EntryPoint::Pvh(GuestAddress(0x100_0000));
        setup_sregs(&mem, entry, &mut sregs).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, 1);
        assert_eq!(sregs.efer, 0);
        let regs = boot_regs(entry);
        assert_eq!((regs.rip, regs.rbx), (0x100_0000, PVH_INFO_START.0));
    }

    #[test]
    fn linux64_starts_in_long_mode_with_identity_map() {
        let mem = test_memory(64 << 20);
        let mut sregs = kvm_sregs::default();
        setup_sregs(
            &mem,
            EntryPoint::Linux64(GuestAddress(0x100_0200)),
            &mut sregs,
        )
        .unwrap();
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, PML4_START.0);
        let pde: u64 = mem.read_obj(PDE_START.unchecked_add(8)).unwrap();
        assert_eq!(pde, (1 << 21) | 0x83);
        let gdt1: u64 = mem.read_obj(GDT_START.unchecked_add(8)).unwrap();
        assert_eq!(gdt1, gdt_entry(0xa09b, 0, 0xfffff));
    }

    #[test]
    fn lint_pins_get_extint_and_nmi() {
        let mut state = kvm_lapic_state::default();
        set_lapic_reg(&mut state, APIC_LVT0, 0x0001_0700);
        setup_lint(&mut state);
        assert_eq!(lapic_reg(&state, APIC_LVT0), 0x0001_0000 | (7 << 8));
        assert_eq!(lapic_reg(&state, APIC_LVT1), 4 << 8);
    }
}
