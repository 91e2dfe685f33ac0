//! Runtime options containerd passes with Create: which configuration file
//! to use instead of the default one. The CRI plugin sends
//! `runtimeoptions.v1.Options` (`ConfigPath` in the runtime's `options`
//! table), and so does `ctr run --runtime-config-path`.

use std::path::PathBuf;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;

use crate::error::{Result, ShimError};

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// `config_path` in runtimeoptions.v1.Options.
const CONFIG_PATH_FIELD: u32 = 2;

/// The configuration file the options name, if any.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>> {
    let Some(any) = options else { return Ok(None) };
    let bad =
        |e: String| ShimError::InvalidArgument(format!("runtime options {}: {e}", any.type_url));
    let path = if any.type_url.ends_with(RUNTIME_OPTIONS) {
        runtime_options_config_path(&any.value).map_err(|e| bad(e.to_string()))?
    } else {
        tracing::warn!(
            type_url = any.type_url,
            "ignoring runtime options of an unknown type"
        );
        String::new()
    };
    Ok((!path.is_empty()).then(|| PathBuf::from(path)))
}

/// Reads field 2 of a runtimeoptions.v1.Options message; no generated
/// type exists for it in the shim protos.
fn runtime_options_config_path(bytes: &[u8]) -> containerd_shim::protos::protobuf::Result<String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut path = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        let (field, wire_type) = (tag >> 3, tag & 7);
        match wire_type {
            0 => {
                input.read_uint64()?;
            }
            1 => {
                input.read_fixed64()?;
            }
            2 if field == CONFIG_PATH_FIELD => path = input.read_string()?,
            2 => {
                input.read_bytes()?;
            }
            5 => {
                input.read_fixed32()?;
            }
            _ => {
                return Err(containerd_shim::protos::protobuf::Error::from(
                    std::io::Error::other(format!("unsupported wire type {wire_type}")),
                ))
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_options(type_url: &str, config_path: &str) -> Any {
        // field 1 (type_url) and field 2 (config_path), both strings.
        let mut value = vec![0x0a, type_url.len() as u8];
        value.extend_from_slice(type_url.as_bytes());
        value.extend_from_slice(&[0x12, config_path.len() as u8]);
        value.extend_from_slice(config_path.as_bytes());
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn cri_options_name_the_config_file() {
        let any = runtime_options("vmrun", "/etc/vmrun/small.toml");
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/vmrun/small.toml"))
        );
        assert_eq!(config_path(None).unwrap(), None);
        assert_eq!(config_path(Some(&runtime_options("x", ""))).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_type() {
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 0x40, b'x'],
            ..Default::default()
        };
        let err = config_path(Some(&any)).unwrap_err().to_string();
        assert!(err.contains("runtimeoptions.v1.Options"), "{err}");
    }
}
