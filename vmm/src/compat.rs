//! Compatibility profile for hosts whose `/dev/kvm` is a software hypervisor.
//!
//! `kvm_pvm` emulates guest kernel code and has gaps (see guest-kernel/README.md):
//! the guest must not use `cmpxchg16b`, `xrstor`, `popcnt` or `clac`, and our
//! guest kernel carries patches that are switched on by command-line flags.
//! On hardware KVM none of this applies, so the profile is off there.

use std::path::Path;

pub use vm_config::CompatMode;

/// The adjustments a host needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompatProfile {
    /// Hide CMPXCHG16B (CPUID.1:ECX bit 13): its emulation fails.
    pub hide_cx16: bool,
    /// Extra kernel command-line words.
    pub cmdline: &'static [&'static str],
}

/// Kernel flags for a `kvm_pvm` host. The `vmrun.*` flags switch on the
/// patches in guest-kernel/patches; the others are upstream options.
const PVM_CMDLINE: &[&str] = &[
    // XRSTOR is not emulated.
    "noxsave",
    // POPCNT and CLAC are not emulated; CPUID masking alone does not stop
    // the kernel from using them. Without ERMS and FSRM the kernel zeroes
    // and copies memory (every fresh page, every copy to or from user
    // space) with `rep stosq`/`movsq` instead of `rep stosb`/`movsb`: the
    // emulation pays per iteration, so that is 8 times fewer (cold boot
    // 68.5 s -> 52.9 s, the demo container ~12 % faster, measured).
    "clearcpuid=popcnt,smap,erms,fsrm",
    // The INT3 self-test of alternatives patching cannot be delivered.
    "vmrun.skip_int3_selftest",
    // FWAIT in fpu__drop() (every exec and exit) is not emulated.
    "vmrun.no_fpu_drop_fwait",
    // User-mode SYSCALL arrives as a page fault at the syscall entry.
    "vmrun.syscall_pf_fixup",
    // Guest user space runs natively and sees the host's CPUID and XCR0
    // (AVX-512 enabled), but the kernel, limited to FXSAVE, does not
    // preserve AVX state across context switches: tasks corrupt each other's
    // vector registers (seen as memory corruption in the agent). Keep glibc
    // (the agent, busybox, and every process the agent starts, which inherit
    // this from PID 1's environment) on SSE code paths. Programs that use
    // AVX without asking glibc remain at risk on such hosts.
    "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX_Fast_Unaligned_Load",
    // Not here: `rodata=off` would save ~10 s of emulated page-table work,
    // but user space then segfaults on kvm_pvm (seen with busybox as init).
];

impl CompatProfile {
    /// No adjustment: hardware KVM.
    pub const NONE: CompatProfile = CompatProfile {
        hide_cx16: false,
        cmdline: &[],
    };

    /// The software-KVM profile.
    pub const PVM: CompatProfile = CompatProfile {
        hide_cx16: true,
        cmdline: PVM_CMDLINE,
    };

    /// Resolves `mode` on this host.
    pub fn for_host(mode: CompatMode) -> CompatProfile {
        Self::resolve(mode, Path::new("/sys/module"))
    }

    /// Resolves `mode` against a `/sys/module`-like directory.
    pub fn resolve(mode: CompatMode, sys_module: &Path) -> CompatProfile {
        match mode {
            CompatMode::Off => Self::NONE,
            CompatMode::Pvm => Self::PVM,
            CompatMode::Auto if sys_module.join("kvm_pvm").exists() => Self::PVM,
            CompatMode::Auto => Self::NONE,
        }
    }

    /// Whether any adjustment applies.
    pub fn is_active(&self) -> bool {
        *self != Self::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("auto".parse(), Ok(CompatMode::Auto));
        assert_eq!("off".parse(), Ok(CompatMode::Off));
        assert_eq!("pvm".parse(), Ok(CompatMode::Pvm));
        let err = "vmx".parse::<CompatMode>().unwrap_err();
        assert!(err.contains("\"vmx\""), "{err}");
    }

    #[test]
    fn auto_detects_kvm_pvm() {
        let dir = std::env::temp_dir().join(format!("vmrun-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            CompatProfile::resolve(CompatMode::Auto, &dir),
            CompatProfile::NONE
        );
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(
            CompatProfile::resolve(CompatMode::Auto, &dir),
            CompatProfile::PVM
        );
        assert_eq!(
            CompatProfile::resolve(CompatMode::Off, &dir),
            CompatProfile::NONE
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn forced_profile_applies_anywhere() {
        let nowhere = Path::new("/nonexistent");
        let profile = CompatProfile::resolve(CompatMode::Pvm, nowhere);
        assert!(profile.hide_cx16);
        assert!(profile.cmdline.contains(&"vmrun.syscall_pf_fixup"));
        assert!(!CompatProfile::resolve(CompatMode::Auto, nowhere).is_active());
    }
}
