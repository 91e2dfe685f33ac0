//! Checks the OCI `linux.resources` of an `UpdateContainer` request.

use oci_spec::runtime::LinuxResources;

use super::error::ContainerError;

const OP: &str = "update container";

pub fn parse_resources(json: &[u8]) -> Result<LinuxResources, ContainerError> {
    let resources: LinuxResources = serde_json::from_slice(json).map_err(|error| {
        ContainerError::invalid(
            OP,
            format!("resources_json is not an OCI linux.resources object: {error}"),
        )
    })?;
    if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
        if limit == 0 || limit < -1 {
            return Err(ContainerError::invalid(
                OP,
                format!("memory.limit {limit} must be positive (or -1 for none)"),
            ));
        }
    }
    if let Some(pids) = resources.pids() {
        if pids.limit() == 0 || pids.limit() < -1 {
            return Err(ContainerError::invalid(
                OP,
                format!(
                    "pids.limit {} must be positive (or -1 for none)",
                    pids.limit()
                ),
            ));
        }
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_parsed() {
        let resources = parse_resources(
            br#"{"memory":{"limit":268435456},"pids":{"limit":64},"cpu":{"quota":50000,"period":100000}}"#,
        )
        .unwrap();
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(268_435_456)
        );
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 64);
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(50_000));
    }

    #[test]
    fn nonsense_is_invalid() {
        let error = parse_resources(br#"{"memory":{"limit":"lots"}}"#).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "update container: resources_json is not an OCI linux.resources object: "
            ),
            "{error}"
        );
        assert_eq!(
            parse_resources(br#"{"pids":{"limit":0}}"#)
                .unwrap_err()
                .to_string(),
            "update container: pids.limit 0 must be positive (or -1 for none)"
        );
    }
}
