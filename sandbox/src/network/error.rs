//! What setting up a pod's network on the host can fail with. Every error
//! names the network namespace (its file) and, where there is one, the link
//! and the operation, so that a failed pod start reads as a sentence in
//! containerd's log without a second look at the host.

use std::io;
use std::path::{Path, PathBuf};

/// An error of the pod network's host side.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The namespace file cannot be opened (usually: it does not exist).
    #[error("network namespace {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The file is not a network namespace.
    #[error("{} is not a network namespace: {why}", path.display())]
    NotNetns { path: PathBuf, why: String },
    /// The thread that works in the namespace could not be started, enter
    /// it, or start its runtime or netlink socket.
    #[error("network namespace {}: {what}: {source}", path.display())]
    Thread {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    /// The thread that works in the namespace panicked.
    #[error("network namespace {}: the netlink thread panicked", path.display())]
    Panicked { path: PathBuf },
    /// A netlink request failed: `op` on `object` (a link, "links",
    /// "routes"), with the kernel's errno where it gave one.
    #[error("network namespace {}: {op} ({object}): {source}", netns.display())]
    Netlink {
        netns: PathBuf,
        op: &'static str,
        object: String,
        source: io::Error,
    },
    /// A link of the pod that the guest cannot be given.
    #[error("network namespace {}: link {link}: {why}", netns.display())]
    UnsupportedLink {
        netns: PathBuf,
        link: String,
        why: String,
    },
    /// A route of the pod that the guest cannot be given.
    #[error("network namespace {}: route {route}: {why}", netns.display())]
    UnsupportedRoute {
        netns: PathBuf,
        route: String,
        why: String,
    },
    /// The tap an interface is to be connected with is not there (the VMM
    /// makes it in the pod's namespace when it starts).
    #[error(
        "network namespace {}: there is no tap {tap} for {link} (the VMM creates it)",
        netns.display()
    )]
    MissingTap {
        netns: PathBuf,
        tap: String,
        link: String,
    },
}

impl NetworkError {
    /// The errno of the failed system or netlink call, if there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Open { source, .. }
            | Self::Thread { source, .. }
            | Self::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// A netlink failure of `op` on `object` in `netns`.
    pub(crate) fn netlink(
        netns: &Path,
        op: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> Self {
        let netns = netns.to_path_buf();
        let object = object.into();
        move |err| Self::Netlink {
            netns,
            op,
            object,
            source: netlink_io_error(err),
        }
    }
}

/// The kernel's errno of a netlink error (`ENODEV`…), or the library's
/// description of anything else (a malformed answer).
pub(crate) fn netlink_io_error(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(message) if message.code.is_some() => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// Whether `err` is the kernel's `errno`.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}
