//! The VM configuration file the sandbox layer writes: a `VmConfig` as
//! JSON.

use std::path::Path;

use vm_config::VmConfig;

use crate::{Result, VmmProcessError};

/// Reads the `VmConfig` in `path`; an error names the file and what is
/// wrong with it.
pub fn read_config(path: &Path) -> Result<VmConfig> {
    let bad = |problem: String| VmmProcessError::Config {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_named_with_its_problem() {
        let dir = std::env::temp_dir().join(format!("vmrun-vmm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let err = read_config(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");

        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"vcpus": "two"}"#).unwrap();
        let err = read_config(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("line 1 column"),
            "{err}"
        );

        let good = dir.join("good.json");
        let config = VmConfig {
            vcpus: 1,
            ..VmConfig::default()
        };
        std::fs::write(&good, serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(read_config(&good).unwrap().vcpus, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
