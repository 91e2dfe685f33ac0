//! A fresh directory for one unit test, removed when dropped (the agent's
//! unit tests need only this much of a temp-dir crate).

use std::fs;
use std::path::{Path, PathBuf};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `name` keeps tests of one process apart; the process id keeps
    /// concurrent test runs apart.
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("vmrun-agent-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("cannot create a scratch directory");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
