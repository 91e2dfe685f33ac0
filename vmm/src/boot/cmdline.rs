//! Kernel command-line assembly.

use linux_loader::cmdline::Cmdline;

use crate::compat::CompatProfile;
use crate::memory::CMDLINE_MAX_SIZE;

/// vmrun's base command line: serial console, reset through the i8042 (which
/// ends the VM), reboot one second after a panic, no probing for hardware the
/// VM does not have, and a quiet console (every byte printed is a VM exit).
pub const BASE_CMDLINE: &[&str] = &[
    "console=ttyS0",
    "reboot=k",
    "panic=1",
    "nomodules",
    "i8042.noaux",
    "quiet",
];

/// Errors assembling the command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line: cannot add {word:?}: {source}")]
    Insert {
        word: String,
        source: linux_loader::cmdline::Error,
    },
}

/// Builds the command line: base words, then the host profile's words, then
/// the devices' entries, then the caller's extra words (so a user can
/// override, e.g. `loglevel=7` after `quiet`).
pub fn build(
    profile: &CompatProfile,
    devices: &[String],
    extra: &[String],
) -> Result<Cmdline, CmdlineError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|source| CmdlineError::Insert {
        word: String::new(),
        source,
    })?;
    let words = BASE_CMDLINE
        .iter()
        .copied()
        .chain(profile.cmdline.iter().copied())
        .chain(devices.iter().map(String::as_str))
        .chain(extra.iter().map(String::as_str));
    for word in words {
        cmdline
            .insert_str(word)
            .map_err(|source| CmdlineError::Insert {
                word: word.to_string(),
                source,
            })?;
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn hardware_kvm_gets_no_compat_flags() {
        let c = build(&CompatProfile::NONE, &[], &[]).unwrap();
        let t = text(&c);
        assert!(t.starts_with("console=ttyS0 reboot=k panic=1"), "{t}");
        assert!(!t.contains("vmrun."), "{t}");
        assert!(!t.contains("noxsave"), "{t}");
    }

    #[test]
    fn pvm_profile_devices_and_extra_words_follow_in_order() {
        let devices = vec!["virtio_mmio.device=4K@0xd0000000:5".to_string()];
        let extra = vec!["loglevel=7".to_string()];
        let t = text(&build(&CompatProfile::PVM, &devices, &extra).unwrap());
        let compat = t.find("vmrun.syscall_pf_fixup").unwrap();
        let dev = t.find("virtio_mmio.device=").unwrap();
        let user = t.find("loglevel=7").unwrap();
        assert!(
            t.contains("noxsave clearcpuid=popcnt,smap,erms,fsrm"),
            "{t}"
        );
        assert!(compat < dev && dev < user, "{t}");
    }

    #[test]
    fn overlong_command_line_is_an_error_naming_the_word() {
        let extra = vec!["x".repeat(CMDLINE_MAX_SIZE)];
        let err = build(&CompatProfile::NONE, &[], &extra).unwrap_err();
        assert!(err.to_string().contains("xxxx"), "{err}");
    }
}
