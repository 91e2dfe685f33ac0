//! `/init` of the guest initramfs: the vmrun agent as PID 1.

use std::process::ExitCode;

use vmrun_agent::container;
use vmrun_agent::init::{self, console, power};

fn main() -> ExitCode {
    // The same binary forks containers for the agent, single-threaded.
    if std::env::args_os().nth(1).as_deref() == Some(container::HELPER_ARG.as_ref()) {
        return container::run_helper();
    }
    // reboot(2) would reset whatever machine this runs on: refuse to run
    // anywhere but as a guest's init.
    if std::process::id() != 1 {
        console::report_fatal(&"must run as PID 1 (the init of a vmrun guest)");
        return ExitCode::FAILURE;
    }
    // A panic in PID 1 would panic the kernel; end the VM the usual way,
    // with the reason on the console.
    std::panic::set_hook(Box::new(|panic| {
        console::report_fatal(panic);
        power_off();
    }));

    if let Err(error) = init::run() {
        console::report_fatal(&error);
    }
    power_off();
    ExitCode::FAILURE
}

fn power_off() {
    match power::power_off() {
        Ok(never) => match never {},
        // Returning from main then panics the kernel, which (panic=1) also
        // ends the VM.
        Err(errno) => console::report_fatal(&format_args!("cannot power off: {errno}")),
    }
}
