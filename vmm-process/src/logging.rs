//! Where the VMM process's log goes: stderr (the sandbox's console log),
//! filtered by `VMRUN_LOG` (an `EnvFilter`; default `warn`). `vmrun` logs
//! the same way, so one setting serves both.

/// Sends `tracing` events to stderr as `VMRUN_LOG` says. Call once, first.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMRUN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
