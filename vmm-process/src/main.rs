//! `vmrun-vmm --config FILE`: the VMM process of one sandbox, FILE being
//! its `VmConfig` as JSON (the sandbox layer writes it, with the vsock
//! socket the supervisor talks to the agent through). It runs the VM until
//! the guest powers off or it is killed; exit 0 for a guest that powered
//! off, 125 (`VMM_FAILURE`) for a failure, which it explains on stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use vmrun_vmm::{read_config, run, RunOptions, VMM_FAILURE};

const USAGE: &str = "usage: vmrun-vmm --config FILE   (FILE: a VmConfig as JSON)";

/// The configuration file from the arguments (without the program name).
fn config_path(args: impl IntoIterator<Item = OsString>) -> Result<PathBuf, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    match &args[..] {
        [flag, path] if flag == "--config" && !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!("unexpected arguments {args:?}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    vmrun_vmm::log_to_stderr();
    let path = match config_path(std::env::args_os().skip(1)) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("vmrun-vmm: {message}");
            return ExitCode::from(2);
        }
    };
    let result = read_config(&path).and_then(|config| run(&config, &RunOptions::default()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmrun-vmm: {e}");
            ExitCode::from(VMM_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_exactly_a_config_file() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(args(&["--config", "/run/vm.json"])).unwrap(),
            PathBuf::from("/run/vm.json")
        );
        for bad in [
            &[][..],
            &["--config"][..],
            &["--config", ""][..],
            &["/run/vm.json"][..],
            &["--config", "a", "b"][..],
            &["--cpus", "2"][..],
        ] {
            let err = config_path(args(bad)).unwrap_err();
            assert!(
                err.contains("usage: vmrun-vmm --config FILE"),
                "{bad:?}: {err}"
            );
        }
    }
}
