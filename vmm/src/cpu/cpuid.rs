//! Per-vCPU CPUID: what KVM supports, with this vCPU's APIC id and topology,
//! the hypervisor bit, and the host profile's masks.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use crate::compat::CompatProfile;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
/// V2 extended topology (Intel): same layout as 0xB, and the one the guest
/// kernel prefers when present.
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;

const ECX_CX16: u32 = 1 << 13;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Adjusts `cpuid` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `id` of `count`.
pub fn filter(cpuid: &mut CpuId, id: u8, count: u8, profile: &CompatProfile) {
    // Bits needed to number `count` logical CPUs in one package.
    let core_bits = u32::BITS - u32::from(count.saturating_sub(1)).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => features(entry, id, count, profile),
            LEAF_CACHE_PARAMS => {
                // Cores per package - 1 in EAX[31:26]; caches are per core
                // except the last level, shared by the package.
                entry.eax &= 0x3ff;
                entry.eax |= u32::from(count - 1) << 26;
                let level = (entry.eax >> 5) & 0x7;
                if level >= 3 {
                    entry.eax |= u32::from(count - 1) << 14;
                }
            }
            // No PMU: the guest would otherwise probe performance counters.
            LEAF_PERFMON => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => topology(entry, id, count, core_bits),
            _ => {}
        }
    }
}

/// One level of leaf 0xB or 0x1F. KVM passes the host's values through,
/// EDX being the x2APIC id of whichever host CPU ran the ioctl: left alone,
/// the guest would see the host's topology and a snapshot would not match a
/// VM built on another host CPU.
fn topology(entry: &mut kvm_cpuid_entry2, id: u8, count: u8, core_bits: u32) {
    entry.edx = u32::from(id);
    match entry.index {
        // SMT level: one thread per core.
        0 => {
            entry.eax = 0;
            entry.ebx = 1;
            entry.ecx = 1 << 8;
        }
        // Core level: every vCPU is a core of one package.
        1 => {
            entry.eax = core_bits;
            entry.ebx = u32::from(count);
            entry.ecx = (2 << 8) | 1;
        }
        // No further levels (die, module, ...): an invalid level ends the list.
        n => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = n;
        }
    }
}

fn features(entry: &mut kvm_cpuid_entry2, id: u8, count: u8, profile: &CompatProfile) {
    // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package,
    // EBX[15:8] CLFLUSH line size in quadwords.
    entry.ebx = (u32::from(id) << 24) | (u32::from(count) << 16) | (8 << 8);
    entry.ecx |= ECX_HYPERVISOR;
    if count > 1 {
        entry.edx |= EDX_HTT;
    }
    if profile.hide_cx16 {
        entry.ecx &= !ECX_CX16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: ECX_CX16 | 1,
                ebx: 0xffff_ffff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            // As KVM passes it through from a host CPU with x2APIC id 5 in
            // a package of 2 dies.
            kvm_cpuid_entry2 {
                function: 0x1f,
                index: 0,
                eax: 1,
                ebx: 2,
                ecx: 0x100,
                edx: 5,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x1f,
                index: 1,
                eax: 4,
                ebx: 8,
                ecx: 0x201,
                edx: 5,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x1f,
                index: 2,
                eax: 5,
                ebx: 16,
                ecx: 0x502,
                edx: 5,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xa,
                eax: 0x0703_0105,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    fn leaf(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn sets_apic_id_count_and_hypervisor_bit() {
        let mut cpuid = sample();
        filter(&mut cpuid, 3, 4, &CompatProfile::NONE);
        let l1 = leaf(&cpuid, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & ECX_CX16, 0, "hardware KVM keeps cmpxchg16b");
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(leaf(&cpuid, 0xb, 0).edx, 3);
        let core = leaf(&cpuid, 0xb, 1);
        assert_eq!((core.eax, core.ebx), (2, 4));
        assert_eq!(leaf(&cpuid, 0xa, 0).eax, 0);
    }

    #[test]
    fn v2_topology_leaf_is_the_vcpus_not_the_host_cpus() {
        let mut cpuid = sample();
        filter(&mut cpuid, 1, 2, &CompatProfile::NONE);
        let smt = leaf(&cpuid, 0x1f, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 1));
        let core = leaf(&cpuid, 0x1f, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (1, 2, 0x201, 1));
        let die = leaf(&cpuid, 0x1f, 2);
        assert_eq!(
            (die.eax, die.ebx, die.ecx & 0xff00),
            (0, 0, 0),
            "no die level"
        );
    }

    #[test]
    fn pvm_profile_hides_cx16() {
        let mut cpuid = sample();
        filter(&mut cpuid, 0, 1, &CompatProfile::PVM);
        let l1 = leaf(&cpuid, 1, 0);
        assert_eq!(l1.ecx & ECX_CX16, 0);
        assert_eq!(l1.edx & EDX_HTT, 0);
        assert_eq!(leaf(&cpuid, 0xb, 1).eax, 0);
    }
}
