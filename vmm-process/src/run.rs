//! Running one VM to its end: the jail and its supervisor, the VM's
//! threads, and the events of the guest (agent ready, panics, power-off),
//! reported on stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_config::VmConfig;
use vmm::console::ConsoleEvent;
use vmm::jail::pid_namespace::Forked;
use vmm::{Vm, VmEvent, VmExit};

use crate::{heap, supervisor, Result, VmmProcessError};

/// What a caller made outside the jail for its VM (a private runtime
/// directory), removed when the VM ends or this process is told to end.
/// Called from outside the jail only, maybe more than once.
pub type Cleanup = Arc<dyn Fn() + Send + Sync>;

/// How to run a VM beyond its configuration.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Give up after this long; `None`: wait for the guest however long.
    pub timeout: Option<Duration>,
    /// The guest was asked to power off once its agent is ready (the
    /// configuration's command line says so): only that is success.
    pub exit_when_ready: bool,
    /// Run when the VM has ended, from outside its jail.
    pub cleanup: Option<Cleanup>,
}

impl RunOptions {
    fn clean_up(&self) {
        if let Some(cleanup) = &self.cleanup {
            cleanup();
        }
    }

    /// `result`, having cleaned up if it is an error.
    fn cleaned_up_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.clean_up();
        }
        result
    }
}

/// Runs the VM `config` describes until it ends. Jailed (the default),
/// this process forks: the parent stays outside as the supervisor and ends
/// the way the VMM did (see [`supervisor`]); only the VMM child returns.
pub fn run(config: &VmConfig, options: &RunOptions) -> Result<()> {
    let started = Instant::now();
    if !config.jail.enabled {
        tracing::warn!(
            "the jail is OFF: the VMM runs with every capability in the host's \
             namespaces (a debugging switch only)"
        );
        let result =
            clean_up_on_termination(options).and_then(|()| run_vm(config, None, options, started));
        options.clean_up();
        return result;
    }
    let plan =
        options.cleaned_up_on_error(vmm::jail::JailPlan::for_vm(config).map_err(Into::into))?;
    // Still one thread: the fork takes everything with it.
    options.cleaned_up_on_error(supervisor::block_signals())?;
    let forked = options.cleaned_up_on_error(
        vmm::jail::pid_namespace::fork_into_new_pid_namespace().map_err(Into::into),
    )?;
    match forked {
        Forked::Supervisor { child } => {
            let result = supervisor::supervise(child, || options.clean_up());
            match options.cleaned_up_on_error(result)? {}
        }
        Forked::Vmm => {
            // The supervisor cleans up, from outside.
            supervisor::unblock_signals()?;
            run_vm(config, Some(&plan), options, started)
        }
    }
}

/// Unjailed (a debugging switch): SIGTERM, SIGINT or SIGHUP end the process
/// as they would, but clean up first (the VM's threads go with the
/// process). The signals are blocked here, before any VM thread exists, so
/// that only the watcher thread takes them.
fn clean_up_on_termination(options: &RunOptions) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let Some(cleanup) = options.cleanup.clone() else {
        return Ok(());
    };
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .map_err(|e| VmmProcessError::host("block termination signals")(e.into()))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let signal = signals.wait().unwrap_or(Signal::SIGTERM);
            cleanup();
            eprintln!("vmrun: {}: stopping the microVM", signal.as_str());
            std::process::exit(128 + signal as i32);
        })
        .map_err(VmmProcessError::host("start the signal thread"))?;
    Ok(())
}

/// The VM itself, in this process (the jail's child, or unjailed).
fn run_vm(
    config: &VmConfig,
    jail: Option<&vmm::jail::JailPlan>,
    options: &RunOptions,
    started: Instant,
) -> Result<()> {
    let deadline = options.timeout.map(|t| started + t);
    heap::use_one_arena();
    let mut vm = Vm::create(config, std::io::stdout())?;
    if let Some(plan) = jail {
        vmm::jail::enter(plan)?;
    }
    vm.run()?;
    if config.seccomp {
        // From here on this thread only relays events and the console.
        vmm::seccomp::confine_current_thread(vmm::seccomp::ThreadKind::Main)?;
    }
    tracing::debug!(cmdline = vm.cmdline(), "guest started");
    if vm.restored() {
        // No boot, so no ready line: the agent serves already.
        eprintln!(
            "vmrun: restored from a snapshot after {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }

    let mut ready = None;
    let mut failure = None;
    let exit = loop {
        match vm.next_event(deadline) {
            None => {
                break Err(VmmProcessError::Guest(format!(
                    "timed out after {} s{}",
                    options.timeout.map_or(0, |t| t.as_secs()),
                    if ready.is_none() {
                        " waiting for the agent"
                    } else {
                        ""
                    }
                )))
            }
            Some(VmEvent::Console(ConsoleEvent::AgentReady)) if ready.is_none() => {
                let at = started.elapsed();
                eprintln!("vmrun: agent ready after {:.2} s", at.as_secs_f64());
                ready = Some(at);
            }
            Some(VmEvent::Console(ConsoleEvent::KernelPanic(line))) => {
                failure.get_or_insert(format!("guest kernel panicked: {line}"));
            }
            Some(VmEvent::Console(ConsoleEvent::AgentFatal(line))) => {
                failure.get_or_insert(format!("guest agent failed: {line}"));
            }
            Some(VmEvent::Console(ConsoleEvent::AgentReady)) => {}
            Some(VmEvent::Exited(exit)) => break Ok(exit),
        }
    };
    vm.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let exit = exit?;
    if let Some(failure) = failure {
        return Err(VmmProcessError::Guest(failure));
    }
    if exit != VmExit::Reset {
        return Err(VmmProcessError::Guest(format!("guest stopped: {exit}")));
    }
    if options.exit_when_ready && ready.is_none() {
        return Err(VmmProcessError::Guest(
            "guest shut down before the agent was ready".to_string(),
        ));
    }
    eprintln!("vmrun: guest shut down after {elapsed:.2} s");
    Ok(())
}
