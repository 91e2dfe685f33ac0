//! The environment every guest process gets from the agent's own: the VMM's
//! host profile may put `GLIBC_TUNABLES` on the kernel command line (PID 1's
//! environment), e.g. to keep glibc off AVX on hosts whose guest kernel
//! cannot preserve AVX state across context switches. Processes and
//! containers get it unless their own environment sets it.

use oci_spec::runtime::Process;

/// The variable passed on.
pub const INHERITED_VAR: &str = "GLIBC_TUNABLES";

/// The agent's value, if it has one.
pub fn agent_value() -> Option<String> {
    std::env::var(INHERITED_VAR).ok()
}

/// Adds the variable to a parsed environment unless already there.
pub fn add_to_pairs(env: &mut Vec<(String, String)>, value: Option<String>) {
    if let Some(value) = value {
        if !env.iter().any(|(key, _)| key == INHERITED_VAR) {
            env.push((INHERITED_VAR.to_owned(), value));
        }
    }
}

/// Adds the variable to an OCI process unless its env sets it.
pub fn add_to_process(process: &mut Process, value: Option<String>) {
    let Some(value) = value else {
        return;
    };
    let mut env = process.env().clone().unwrap_or_default();
    let prefix = format!("{INHERITED_VAR}=");
    if !env.iter().any(|e| e.starts_with(&prefix)) {
        env.push(format!("{prefix}{value}"));
        process.set_env(Some(env));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_get_the_agents_value_unless_set() {
        let mut env = vec![("PATH".to_owned(), "/bin".to_owned())];
        add_to_pairs(&mut env, Some("glibc.cpu.hwcaps=-AVX2".into()));
        assert!(env.contains(&(INHERITED_VAR.into(), "glibc.cpu.hwcaps=-AVX2".into())));
        let mut own = vec![(INHERITED_VAR.to_owned(), "mine".to_owned())];
        add_to_pairs(&mut own, Some("agent".into()));
        assert_eq!(own, vec![(INHERITED_VAR.to_owned(), "mine".to_owned())]);
        let mut none = Vec::new();
        add_to_pairs(&mut none, None);
        assert!(none.is_empty());
    }

    #[test]
    fn oci_processes_get_the_agents_value_unless_set() {
        let mut process = Process::default();
        add_to_process(&mut process, Some("x".into()));
        assert!(process
            .env()
            .as_ref()
            .unwrap()
            .contains(&format!("{INHERITED_VAR}=x")));
        let mut own = Process::default();
        own.set_env(Some(vec![format!("{INHERITED_VAR}=mine")]));
        add_to_process(&mut own, Some("x".into()));
        assert_eq!(
            own.env().as_ref().unwrap(),
            &vec![format!("{INHERITED_VAR}=mine")]
        );
    }
}
