//! A process's standard streams on the host side, as containerd hands them
//! over: FIFO paths (what `ctr` and the CRI plugin use), `file://` paths,
//! or `binary://` loggers that read the output from descriptors 3 and 4.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use vmrun_sandbox::SandboxError;

use crate::error::{Result, ShimError};

/// Where one output stream goes.
pub type OutputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// The destinations of a process's stdout and stderr, and the logger
/// process behind a `binary://` URI (kept alive as long as the streams).
pub struct Outputs {
    pub stdout: Option<OutputSink>,
    pub stderr: Option<OutputSink>,
    pub logger: Option<tokio::process::Child>,
}

/// A parsed stdio URI.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    None,
    Fifo(PathBuf),
    File(PathBuf),
    Binary {
        path: PathBuf,
        args: Vec<(String, String)>,
    },
}

fn parse(uri: &str) -> Result<Destination> {
    if uri.is_empty() {
        return Ok(Destination::None);
    }
    let bad = |why: &str| {
        Err(ShimError::InvalidArgument(format!(
            "stdio URI {uri:?}: {why}"
        )))
    };
    match uri.split_once("://") {
        None => Ok(Destination::Fifo(PathBuf::from(uri))),
        Some(("fifo", path)) => Ok(Destination::Fifo(PathBuf::from(path))),
        Some(("file", path)) if path.starts_with('/') => Ok(Destination::File(PathBuf::from(path))),
        Some(("binary", rest)) if rest.starts_with('/') => {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let args = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            Ok(Destination::Binary {
                path: PathBuf::from(path),
                args,
            })
        }
        Some(("file" | "binary", _)) => bad("the path must be absolute"),
        Some((scheme, _)) => bad(&format!("unsupported scheme {scheme:?}")),
    }
}

/// Opens the write end of a FIFO whose reader (containerd) is already
/// there. Read-write, so that opening never blocks and a reader that comes
/// and goes does not turn into EPIPE for the guest's output.
fn open_fifo_writer(path: &Path) -> Result<OutputSink> {
    let sender = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(SandboxError::host(format!(
            "open output FIFO {}",
            path.display()
        )))?;
    Ok(Box::pin(sender))
}

async fn open_file(path: &Path) -> Result<OutputSink> {
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .await
        .map_err(SandboxError::host(format!(
            "open log file {}",
            path.display()
        )))?;
    Ok(Box::pin(file))
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(SandboxError::sys("create a pipe"))?)
}

fn sender_of(fd: OwnedFd) -> Result<OutputSink> {
    let sender =
        pipe::Sender::from_owned_fd(fd).map_err(SandboxError::host("use a logger pipe"))?;
    Ok(Box::pin(sender))
}

/// Starts a containerd logging binary: it reads stdout on fd 3, stderr on
/// fd 4, and closes fd 5 once it is ready.
async fn start_logger(
    path: &Path,
    args: &[(String, String)],
    container_id: &str,
    namespace: &str,
) -> Result<(OutputSink, OutputSink, tokio::process::Child)> {
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let (ready_r, ready_w) = pipe_pair()?;
    let mut command = tokio::process::Command::new(path);
    for (key, value) in args {
        command.arg(key);
        if !value.is_empty() {
            command.arg(value);
        }
    }
    command
        .env("CONTAINER_ID", container_id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(false);
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: runs in the forked child before exec; dup2 is
    // async-signal-safe and the descriptors are open in the parent.
    unsafe {
        command.pre_exec(move || {
            for (target, fd) in (3..).zip(fds) {
                // dup2 clears FD_CLOEXEC on the copy.
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(SandboxError::host(format!(
        "start logger {}",
        path.display()
    )))?;
    drop((out_r, err_r, ready_w));
    // The logger signals readiness by closing (or writing to) fd 5.
    let ready = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        nix::unistd::read(&ready_r, &mut byte)
    });
    let _ = ready.await;
    Ok((sender_of(out_w)?, sender_of(err_w)?, child))
}

/// Opens the output destinations of a process.
pub async fn open_outputs(
    stdout: &str,
    stderr: &str,
    container_id: &str,
    namespace: &str,
) -> Result<Outputs> {
    let (out, err) = (parse(stdout)?, parse(stderr)?);
    if let Destination::Binary { path, args } = &out {
        let (stdout, stderr, logger) = start_logger(path, args, container_id, namespace).await?;
        return Ok(Outputs {
            stdout: Some(stdout),
            stderr: Some(stderr),
            logger: Some(logger),
        });
    }
    async fn open(dest: Destination) -> Result<Option<OutputSink>> {
        match dest {
            Destination::None => Ok(None),
            Destination::Fifo(path) => open_fifo_writer(&path).map(Some),
            Destination::File(path) => open_file(&path).await.map(Some),
            Destination::Binary { path, .. } => Err(ShimError::InvalidArgument(format!(
                "binary logger {} for stderr only: give it for stdout too",
                path.display()
            ))),
        }
    }
    Ok(Outputs {
        stdout: open(out).await?,
        stderr: open(err).await?,
        logger: None,
    })
}

/// A stdin FIFO, opened once containerd's writer shows up.
pub struct StdinFifo {
    path: PathBuf,
}

impl StdinFifo {
    pub fn new(uri: &str) -> Result<Option<Self>> {
        match parse(uri)? {
            Destination::None => Ok(None),
            Destination::Fifo(path) => Ok(Some(Self { path })),
            _ => Err(ShimError::InvalidArgument(format!(
                "stdin {uri:?}: only a FIFO can be standard input"
            ))),
        }
    }

    /// Waits for a writer and returns the read end. Ends with EOF once every
    /// writer has closed it (or `release` was called).
    pub async fn open(&self) -> Result<pipe::Receiver> {
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(|e| SandboxError::host("open stdin")(std::io::Error::other(e)))?
            .map_err(SandboxError::host(format!(
                "open stdin FIFO {}",
                self.path.display()
            )))?;
        Ok(
            pipe::Receiver::from_file(file).map_err(SandboxError::host(format!(
                "use stdin FIFO {}",
                self.path.display()
            )))?,
        )
    }

    /// Lets a pending `open` finish (with an immediate EOF) when no writer
    /// will come: CloseIO, or the process is gone.
    pub fn release(&self) {
        // A non-blocking write open succeeds only while our reader is
        // waiting in open(); then it returns at once.
        let _ = pipe::OpenOptions::new().open_sender(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn uris_are_parsed() {
        assert_eq!(parse("").unwrap(), Destination::None);
        assert_eq!(
            parse("/run/c/stdout").unwrap(),
            Destination::Fifo("/run/c/stdout".into())
        );
        assert_eq!(
            parse("file:///var/log/c.log").unwrap(),
            Destination::File("/var/log/c.log".into())
        );
        assert_eq!(
            parse("binary:///usr/bin/logger?id=1&debug").unwrap(),
            Destination::Binary {
                path: "/usr/bin/logger".into(),
                args: vec![("id".into(), "1".into()), ("debug".into(), String::new())]
            }
        );
        let err = parse("http://x").unwrap_err().to_string();
        assert!(err.contains("http"), "{err}");
        assert!(parse("file://relative").is_err());
    }

    fn fifo(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("vmrun-stdio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[tokio::test]
    async fn output_reaches_the_fifo_reader_and_ends_with_eof() {
        let path = fifo("out");
        let mut reader = pipe::OpenOptions::new().open_receiver(&path).unwrap();
        let outputs = open_outputs(path.to_str().unwrap(), "", "c", "ns")
            .await
            .unwrap();
        let mut stdout = outputs.stdout.unwrap();
        assert!(outputs.stderr.is_none());
        stdout.write_all(b"hello\n").await.unwrap();
        drop(stdout);
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello\n");
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn stdin_open_waits_for_a_writer_and_release_ends_it() {
        let path = fifo("in");
        let stdin = StdinFifo::new(path.to_str().unwrap()).unwrap().unwrap();
        let opened = {
            let stdin = StdinFifo { path: path.clone() };
            tokio::spawn(async move { stdin.open().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!opened.is_finished(), "no writer yet");
        stdin.release();
        let mut receiver = opened.await.unwrap().unwrap();
        let mut data = Vec::new();
        receiver.read_to_end(&mut data).await.unwrap();
        assert!(data.is_empty());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn file_uris_append() {
        let path = std::env::temp_dir().join(format!("vmrun-stdio-file-{}", std::process::id()));
        std::fs::write(&path, "old\n").unwrap();
        let uri = format!("file://{}", path.display());
        let outputs = open_outputs(&uri, &uri, "c", "ns").await.unwrap();
        let mut out = outputs.stdout.unwrap();
        out.write_all(b"new\n").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        std::fs::remove_file(path).unwrap();
    }
}
