//! Names the VMM's build by its source: a digest of the code that decides
//! what a VM's saved state means (this crate, the devices, the VM
//! configuration) and of the locked dependency versions. A snapshot's key
//! and its "VMM version" carry it, so a VMM built from other code never
//! restores a snapshot whose state it may read differently, while a debug
//! and a release build of the same code share one.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What the digest covers, relative to this crate.
const INPUTS: [&str; 4] = [
    "src",
    "../virtio-devices/src",
    "../vm-config/src",
    "../Cargo.lock",
];

fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn files_under(path: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(with_path(path))? {
            files_under(&entry.map_err(with_path(path))?.path(), files)?;
        }
    } else {
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// Sets `VMRUN_VMM_SOURCE_DIGEST` for the crate.
pub fn emit() -> io::Result<()> {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    for input in INPUTS {
        let path = crate_dir.join(input);
        println!("cargo:rerun-if-changed={}", path.display());
        files_under(&path, &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let content = std::fs::read(file).map_err(with_path(file))?;
        let relative = file.strip_prefix(&crate_dir).unwrap_or(file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    let digest: String = hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=VMRUN_VMM_SOURCE_DIGEST={digest}");
    Ok(())
}
