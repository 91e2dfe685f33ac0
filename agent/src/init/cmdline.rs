//! The agent's switches on the kernel command line (`/proc/cmdline`).

use tracing::level_filters::LevelFilter;

/// Power off right after printing the ready line (boot smoke tests).
const EXIT_WHEN_READY: &str = "vmrun.exit_when_ready";
/// `vmrun.log=<level>`: how much the agent logs to the console.
const LOG_LEVEL: &str = "vmrun.log=";

/// What the kernel command line asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentOptions {
    pub exit_when_ready: bool,
    /// Booted to be snapshotted ([`crate::TEMPLATE_FLAG`]).
    pub template: bool,
    pub log_level: LevelFilter,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            exit_when_ready: false,
            template: false,
            // The console is a slow emulated serial port: warnings only.
            log_level: LevelFilter::WARN,
        }
    }
}

impl AgentOptions {
    /// Reads the options from a kernel command line; unknown words are
    /// the kernel's or init's business and are ignored, and so is a log
    /// level that does not parse.
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut options = Self::default();
        for word in cmdline.split_ascii_whitespace() {
            if word == EXIT_WHEN_READY || word == "vmrun.exit_when_ready=1" {
                options.exit_when_ready = true;
            } else if word == crate::TEMPLATE_FLAG {
                options.template = true;
            } else if let Some(level) = word.strip_prefix(LOG_LEVEL) {
                if let Ok(level) = level.parse() {
                    options.log_level = level;
                }
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cmdline_has_defaults() {
        let options = AgentOptions::from_cmdline("console=ttyS0 reboot=k panic=1\n");
        assert_eq!(options, AgentOptions::default());
        assert!(!options.exit_when_ready);
    }

    #[test]
    fn exit_when_ready_is_a_whole_word() {
        let with = "console=ttyS0 vmrun.exit_when_ready panic=1";
        assert!(AgentOptions::from_cmdline(with).exit_when_ready);
        assert!(AgentOptions::from_cmdline("vmrun.exit_when_ready=1").exit_when_ready);
        assert!(!AgentOptions::from_cmdline("vmrun.exit_when_ready_not").exit_when_ready);
        assert!(!AgentOptions::from_cmdline("xvmrun.exit_when_ready").exit_when_ready);
    }

    #[test]
    fn log_level_is_read_and_bad_levels_ignored() {
        assert_eq!(
            AgentOptions::from_cmdline("vmrun.log=debug").log_level,
            LevelFilter::DEBUG
        );
        assert_eq!(
            AgentOptions::from_cmdline("vmrun.log=loud").log_level,
            LevelFilter::WARN
        );
    }
}
