//! Reads a container's cgroup v2 files: resource usage and OOM kills.
//!
//! Plain file parsing on any directory, so it is tested on fake cgroup
//! directories. A file that does not exist (its controller is not enabled)
//! is an absent value, not an error.

use std::io;
use std::path::Path;

/// Resource usage and limits of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub memory_usage_bytes: Option<u64>,
    /// `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_usec: Option<u64>,
    pub pids_current: Option<u64>,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// A cgroup file that exists but does not read as expected.
#[derive(Debug, thiserror::Error)]
pub enum CgroupFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: unexpected content {content:?}")]
    Malformed { path: String, content: String },
}

impl CgroupStats {
    /// Reads everything there is in `dir`.
    pub fn read(dir: &Path) -> Result<Self, CgroupFileError> {
        let (io_read_bytes, io_write_bytes) = match read_optional(dir, "io.stat")? {
            Some(content) => {
                let (read, written) = parse_io_stat(&content);
                (Some(read), Some(written))
            }
            None => (None, None),
        };
        Ok(Self {
            memory_usage_bytes: read_number(dir, "memory.current")?,
            memory_limit_bytes: read_limit(dir, "memory.max")?.flatten(),
            cpu_usage_usec: read_keyed(dir, "cpu.stat", "usage_usec")?,
            pids_current: read_number(dir, "pids.current")?,
            pids_limit: read_limit(dir, "pids.max")?.flatten(),
            io_read_bytes,
            io_write_bytes,
            oom_kills: oom_kills(dir)?,
        })
    }
}

/// The `oom_kill` count of `memory.events`; `None` without the memory
/// controller. Counts processes the OOM killer killed in the cgroup (and
/// below it).
pub fn oom_kills(dir: &Path) -> Result<Option<u64>, CgroupFileError> {
    read_keyed(dir, "memory.events", "oom_kill")
}

fn read_optional(dir: &Path, name: &str) -> Result<Option<String>, CgroupFileError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(content) => Ok(Some(content)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupFileError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn malformed(dir: &Path, name: &str, content: &str) -> CgroupFileError {
    CgroupFileError::Malformed {
        path: dir.join(name).display().to_string(),
        content: content.trim().to_owned(),
    }
}

fn read_number(dir: &Path, name: &str) -> Result<Option<u64>, CgroupFileError> {
    let Some(content) = read_optional(dir, name)? else {
        return Ok(None);
    };
    content
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| malformed(dir, name, &content))
}

/// A limit file: a number or "max". `Some(None)` is "max".
fn read_limit(dir: &Path, name: &str) -> Result<Option<Option<u64>>, CgroupFileError> {
    let Some(content) = read_optional(dir, name)? else {
        return Ok(None);
    };
    match content.trim() {
        "max" => Ok(Some(None)),
        number => number
            .parse()
            .map(|limit| Some(Some(limit)))
            .map_err(|_| malformed(dir, name, &content)),
    }
}

/// One value of a flat keyed file ("key value" lines).
fn read_keyed(dir: &Path, name: &str, key: &str) -> Result<Option<u64>, CgroupFileError> {
    let Some(content) = read_optional(dir, name)? else {
        return Ok(None);
    };
    for line in content.lines() {
        if let Some((line_key, value)) = line.split_once(' ') {
            if line_key == key {
                return value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| malformed(dir, name, line));
            }
        }
    }
    // Older kernels lack some keys (e.g. oom_kill before 4.13).
    Ok(Some(0))
}

/// Sums `rbytes=` and `wbytes=` over the devices of an `io.stat`
/// ("MAJ:MIN rbytes=N wbytes=N rios=N ..." per line).
fn parse_io_stat(content: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for field in content
        .lines()
        .flat_map(|line| line.split_whitespace().skip(1))
    {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "rbytes" => read = read.saturating_add(value),
            "wbytes" => written = written.saturating_add(value),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;

    fn fake_cgroup(files: &[(&str, &str)]) -> ScratchDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = ScratchDir::new(&format!("cgroup-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn reads_a_full_v2_cgroup() {
        let dir = fake_cgroup(&[
            ("memory.current", "1048576\n"),
            ("memory.max", "268435456\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            (
                "cpu.stat",
                "usage_usec 52000\nuser_usec 40000\nsystem_usec 12000\n",
            ),
            ("pids.current", "3\n"),
            ("pids.max", "64\n"),
            (
                "io.stat",
                "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                 254:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
            ),
        ]);
        let stats = CgroupStats::read(dir.path()).unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                memory_usage_bytes: Some(1_048_576),
                memory_limit_bytes: Some(268_435_456),
                cpu_usage_usec: Some(52_000),
                pids_current: Some(3),
                pids_limit: Some(64),
                io_read_bytes: Some(4196),
                io_write_bytes: Some(8192),
                oom_kills: Some(1),
            }
        );
    }

    #[test]
    fn max_is_no_limit_and_missing_controllers_are_absent() {
        let dir = fake_cgroup(&[
            ("memory.max", "max\n"),
            ("cpu.stat", "usage_usec 7\n"),
            ("pids.max", "max\n"),
        ]);
        let stats = CgroupStats::read(dir.path()).unwrap();
        assert_eq!(stats.memory_limit_bytes, None);
        assert_eq!(stats.pids_limit, None);
        assert_eq!(stats.cpu_usage_usec, Some(7));
        assert_eq!(stats.memory_usage_bytes, None);
        assert_eq!(stats.oom_kills, None);
        assert_eq!(stats.io_read_bytes, None);
    }

    #[test]
    fn garbage_in_a_file_is_an_error_naming_it() {
        let dir = fake_cgroup(&[("pids.current", "lots\n")]);
        let error = CgroupStats::read(dir.path()).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(r#"pids.current: unexpected content "lots""#),
            "{error}"
        );
    }

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let dir = fake_cgroup(&[("memory.events", "oom 3\noom_kill 2\n")]);
        assert_eq!(oom_kills(dir.path()).unwrap(), Some(2));
        let empty = fake_cgroup(&[]);
        assert_eq!(oom_kills(empty.path()).unwrap(), None);
    }
}
