//! The guest initramfs: the agent as `/init`, the directories it mounts
//! over, `/dev/console`, and busybox for commands run in the guest root.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::cpio::{CpioError, CpioWriter, EntryKind};

/// Busybox applets linked into /bin: what `vmrun run -- CMD` users and the
/// tests reach for. Kept short: every entry is unpacked by the (slow,
/// emulated on software KVM) guest kernel at each boot.
pub const APPLETS: &[&str] = &[
    "[",
    "awk",
    "basename",
    "cat",
    "chmod",
    "chown",
    "cp",
    "cut",
    "date",
    "dd",
    "df",
    "dirname",
    "echo",
    "env",
    "false",
    "find",
    "free",
    "grep",
    "head",
    "hostname",
    "id",
    "kill",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mknod",
    "mount",
    "mv",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "stty",
    "sync",
    "tail",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "tty",
    "umount",
    "uname",
    "wc",
    "xargs",
    "yes",
];

const DIRECTORIES: &[&str] = &["bin", "dev", "etc", "proc", "run", "sys", "tmp", "var"];

/// What goes into the initramfs.
pub struct InitramfsSpec {
    /// The static agent binary, installed as /init.
    pub agent: PathBuf,
    /// A static busybox, installed as /bin/busybox, if any.
    pub busybox: Option<PathBuf>,
}

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cpio(#[from] CpioError),
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the uncompressed newc archive to `output` (atomically: a partial
/// archive never replaces a good one).
pub fn build(spec: &InitramfsSpec, output: &Path) -> Result<(), InitramfsError> {
    let agent = read(&spec.agent)?;
    let busybox = spec.busybox.as_deref().map(read).transpose()?;

    let tmp = output.with_extension("tmp");
    let file = fs::File::create(&tmp).map_err(|source| InitramfsError::Create {
        path: tmp.clone(),
        source,
    })?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in DIRECTORIES {
        let perm = if *dir == "tmp" { 0o1777 } else { 0o755 };
        cpio.add(dir, perm, &EntryKind::Directory)?;
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    cpio.add(
        "dev/console",
        0o600,
        &EntryKind::CharDevice { major: 5, minor: 1 },
    )?;
    cpio.add("init", 0o755, &EntryKind::File(agent))?;
    if let Some(busybox) = busybox {
        cpio.add("bin/busybox", 0o755, &EntryKind::File(busybox))?;
        for applet in APPLETS {
            cpio.add(
                &format!("bin/{applet}"),
                0o777,
                &EntryKind::Symlink("busybox".into()),
            )?;
        }
    }
    cpio.finish()?;
    fs::rename(&tmp, output).map_err(|source| InitramfsError::Create {
        path: output.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_agent_is_named_in_the_error() {
        let spec = InitramfsSpec {
            agent: PathBuf::from("/nonexistent/vmrun-agent"),
            busybox: None,
        };
        let out = std::env::temp_dir().join("vmrun-initramfs-missing.cpio");
        let err = build(&spec, &out).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/vmrun-agent"),
            "{err}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn archive_holds_init_console_and_applets() {
        let dir = std::env::temp_dir().join(format!("vmrun-initramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let agent = dir.join("agent");
        let busybox = dir.join("busybox");
        fs::write(&agent, b"AGENT-BINARY").unwrap();
        fs::write(&busybox, b"BUSYBOX-BINARY").unwrap();
        let out = dir.join("initramfs.cpio");
        build(
            &InitramfsSpec {
                agent,
                busybox: Some(busybox),
            },
            &out,
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("AGENT-BINARY"));
        assert!(text.contains("bin/sh\0"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!\0"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
