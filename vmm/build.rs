//! The VMM's build-time work: the digest that names its build (see
//! `build/source_digest.rs`) and its threads' seccomp filters, compiled
//! from their tables (see `build/seccomp_programs.rs`).

use std::io;

#[path = "build/seccomp_programs.rs"]
mod seccomp_programs;
#[path = "build/source_digest.rs"]
mod source_digest;

/// The tables of system calls (the runtime's own module, shared as is).
#[path = "src/seccomp/filters.rs"]
#[allow(dead_code)]
mod filters;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=build");
    source_digest::emit()?;
    seccomp_programs::emit()
}
