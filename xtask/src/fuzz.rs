//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` one after the
//! other, each for a fixed time, and prints per target the runs executed,
//! exec/s, the corpus size and the crashes found.
//!
//! Each target runs as `cargo +nightly fuzz run <target> -- -max_total_time=N
//! -jobs=1 -workers=1`: one libFuzzer worker, so that the fuzzers share the
//! machine with whatever else runs there. Corpora (`fuzz/corpus/<target>`)
//! grow from run to run; crash inputs land in `fuzz/artifacts/<target>`; the
//! libFuzzer output of the last run of each target is kept in
//! `fuzz/logs/<target>.log`. None of these are committed. Inputs in
//! `fuzz/regressions/<target>/` (committed: crashes found and fixed) are run
//! first, on every run, as a second corpus directory libFuzzer reads but
//! does not write.
//!
//! `--dev` builds the targets without optimization (still with the address
//! sanitizer and debug assertions): a cold build takes about a third of the
//! time and the targets run slower, which suits a short smoke run in CI.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (may be repeated); default: all of them.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Cargo target directory of the fuzz build (default: fuzz/target).
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Build without optimization (`cargo fuzz --dev`): quicker to build,
    /// slower to run.
    #[arg(long)]
    dev: bool,
    /// Extra libFuzzer options, after `--` (e.g. `-- -max_len=4096`).
    #[arg(last = true, value_name = "LIBFUZZER_ARGS")]
    libfuzzer_args: Vec<String>,
}

/// What one run of one target did.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .join("fuzz");
    check_setup()?;
    let available = list_targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        available.clone()
    } else {
        for t in &args.targets {
            if !available.contains(t) {
                bail!(
                    "unknown fuzz target {t:?}; the targets are: {}",
                    available.join(", ")
                );
            }
        }
        args.targets.clone()
    };

    // A target directory given to cargo is where the build must go (and
    // where cargo-fuzz must look for it).
    let target_dir = args
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from));
    println!("building the fuzz targets (cargo +nightly fuzz build)...");
    let mut build = cargo_fuzz(&fuzz_dir, "build", target_dir.as_deref(), args.dev);
    let status = build
        .status()
        .context("cannot run cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed ({status})");
    }

    let logs = fuzz_dir.join("logs");
    let mut results = Vec::new();
    for target in &targets {
        println!("fuzzing {target} for {} s...", args.seconds);
        let outcome = run_target(&fuzz_dir, &logs, target, target_dir.as_deref(), args)?;
        results.push((target.clone(), outcome));
    }

    println!();
    println!(
        "{:<16} {:>12} {:>9} {:>8}  crashes",
        "target", "runs", "exec/s", "corpus"
    );
    let mut crashed = 0;
    for (target, o) in &results {
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        let crashes = if o.crashes.is_empty() {
            "0".to_string()
        } else {
            crashed += 1;
            o.crashes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<16} {:>12} {:>9} {:>8}  {crashes}",
            target,
            show(o.stats.runs),
            show(o.stats.exec_per_sec),
            o.corpus
        );
    }
    println!("(libFuzzer output: {})", logs.display());
    if crashed > 0 {
        bail!(
            "{crashed} fuzz target(s) crashed; reproduce with `cargo +nightly fuzz run <target> <crash file>` in fuzz/"
        );
    }
    Ok(())
}

/// Fails with the setup step that is missing: the nightly toolchain
/// (cargo-fuzz builds with `-Zsanitizer`) or cargo-fuzz itself.
fn check_setup() -> anyhow::Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !nightly.is_ok_and(|s| s.success()) {
        bail!(
            "the nightly toolchain is missing (cargo-fuzz needs it): \
             install it with `rustup toolchain install nightly`"
        );
    }
    let fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !fuzz.is_ok_and(|s| s.success()) {
        bail!("cargo-fuzz is missing: install it with `cargo install cargo-fuzz`");
    }
    Ok(())
}

fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str, target_dir: Option<&Path>, dev: bool) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", subcommand])
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        .current_dir(fuzz_dir);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    if dev {
        cmd.arg("--dev");
    }
    // `cargo xtask` runs under the stable toolchain's cargo, which tells
    // its child which cargo and rustc it is; the nightly build must not
    // pick those up.
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    cmd
}

fn list_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = cargo_fuzz(fuzz_dir, "list", None, false)
        .output()
        .context("cannot run cargo +nightly fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo +nightly fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

struct Outcome {
    stats: RunStats,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

fn run_target(
    fuzz_dir: &Path,
    logs: &Path,
    target: &str,
    target_dir: Option<&Path>,
    args: &FuzzArgs,
) -> anyhow::Result<Outcome> {
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let corpus = fuzz_dir.join("corpus").join(target);
    let regressions = fuzz_dir.join("regressions").join(target);
    let before = dir_entries(&artifacts);
    // libFuzzer's jobs mode writes `fuzz-0.log` into its working directory.
    let work = logs.join(format!("{target}.work"));
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = cargo_fuzz(fuzz_dir, "run", target_dir, args.dev);
    cmd.current_dir(&work).arg(target);
    if regressions.is_dir() {
        // Corpus directories given by hand must exist; the first is the
        // one new inputs go to.
        fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        cmd.arg(&corpus).arg(&regressions);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .args(["-jobs=1", "-workers=1"])
        .args(&args.libfuzzer_args)
        .stdout(log.try_clone().context("cannot share the log")?)
        .stderr(log);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo +nightly fuzz run {target}"))?;
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let stats = parse_stats(&output);
    let crashes: Vec<PathBuf> = dir_entries(&artifacts)
        .difference(&before)
        .map(|name| artifacts.join(name))
        .collect();
    if crashes.is_empty() && !status.success() {
        bail!(
            "cargo +nightly fuzz run {target} failed ({status}) without a crash file; see {}",
            log_path.display()
        );
    }
    Ok(Outcome {
        stats,
        corpus: dir_entries(&corpus).len(),
        crashes,
    })
}

fn dir_entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// libFuzzer's status line events (`#123 NEW ...`); a crash report's stack
/// frames (`#12 0x55... in ...`) also start with `#N`.
const STATUS_EVENTS: [&str; 6] = ["INITED", "NEW", "REDUCE", "pulse", "DONE", "RELOAD"];

/// The last libFuzzer status line (`#123 NEW cov: .. exec/s: 456 ..`, or
/// `DONE` at the end) gives the runs and the speed; `Done 123 runs in 2
/// second(s)` the final count.
fn parse_stats(output: &str) -> RunStats {
    let mut stats = RunStats::default();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        let runs = first.strip_prefix('#').and_then(|n| n.parse().ok());
        let words: Vec<&str> = words.collect();
        let is_status = words.first().is_some_and(|w| STATUS_EVENTS.contains(w));
        if let (Some(n), true) = (runs, is_status) {
            stats.runs = Some(n);
            if let Some(i) = words.iter().position(|w| *w == "exec/s:") {
                if let Some(v) = words.get(i + 1).and_then(|v| v.parse().ok()) {
                    stats.exec_per_sec = Some(v);
                }
            }
        } else if first == "Done" {
            if let Some(n) = words.first().and_then(|n| n.parse().ok()) {
                stats.runs = Some(n);
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_the_last_status_line() {
        let out = "INFO: Seed: 1\n\
                   #2\tINITED cov: 157 ft: 157 corp: 1/1b exec/s: 0 rss: 35Mb\n\
                   #70130\tDONE   cov: 869 ft: 3074 corp: 314/10350b lim: 98 exec/s: 3339 rss: 209Mb\n\
                   Done 70130 runs in 21 second(s)\n";
        assert_eq!(
            parse_stats(out),
            RunStats {
                runs: Some(70130),
                exec_per_sec: Some(3339)
            }
        );
        // A crash: no DONE line, the last pulse counts, not the frames of
        // the stack trace after it.
        let out = "#512\tpulse  cov: 10 ft: 1 corp: 3/3b exec/s: 256 rss: 30Mb\n\
                   thread '<unnamed>' panicked at src/lib.rs:1:1:\n\
                   ==4204== ERROR: libFuzzer: deadly signal\n\
                   \x20   #0 0x55606f2b1e61 in __sanitizer_print_stack_trace\n\
                   \x20   #34 0x55606f31c8a0 in main\n";
        assert_eq!(
            parse_stats(out),
            RunStats {
                runs: Some(512),
                exec_per_sec: Some(256)
            }
        );
        assert_eq!(parse_stats(""), RunStats::default());
    }
}
