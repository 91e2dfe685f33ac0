//! The virtio-fs [`VirtioDevice`]: identity, configuration space and the
//! worker thread serving the hiprio and request queues.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use tracing::{debug, error, info};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::guard::{lock_live, GuardedFs};
use super::policy::{FsLimits, LiveObjects};
use super::serve::serve_request;
use super::{FsCachePolicy, FsConfig, FsError, HIPRIO_QUEUE_SIZE, MAX_TAG_LEN, REQUEST_QUEUE_SIZE};
use crate::device::read_config_bytes;
use crate::queue_loop::{run_event_loop, serve_queue};
use crate::worker::Worker;
use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

const QUEUE_SIZES: [u16; 2] = [HIPRIO_QUEUE_SIZE, REQUEST_QUEUE_SIZE];
/// `struct virtio_fs_config`: `u8 tag[36]; le32 num_request_queues`.
const CONFIG_LEN: usize = MAX_TAG_LEN + 4;
/// Entry/attribute timeouts per cache policy.
const TIMEOUT_AUTO: Duration = Duration::from_secs(1);
const TIMEOUT_ALWAYS: Duration = Duration::from_secs(24 * 60 * 60);

type FsServer = Server<GuardedFs<PassthroughFs<()>>>;

/// A virtio-fs device sharing one host directory under a mount tag.
pub struct FsDevice {
    tag: String,
    shared_dir: PathBuf,
    config_space: [u8; CONFIG_LEN],
    passthrough: Config,
    read_only: bool,
    limits: FsLimits,
    /// Server for the next activation, so that `new` fails early if the
    /// passthrough cannot be set up. Each activation gets a fresh one: a
    /// driver reset forgets every inode and handle.
    next_server: Option<FsServer>,
    /// What the guest holds through the current (or next) server.
    live: Arc<Mutex<LiveObjects>>,
    worker: Option<Worker<()>>,
}

impl FsDevice {
    /// Shares `shared_dir` (resolved to its canonical path now) with the
    /// guest under `tag`, the name the guest mounts (`mount -t virtiofs
    /// <tag> <dir>`).
    pub fn new(tag: &str, shared_dir: PathBuf, config: FsConfig) -> Result<Self, FsError> {
        let config_space = config_space(tag)?;
        let dir_err = |source| FsError::SharedDir {
            path: shared_dir.clone(),
            source,
        };
        // The passthrough re-opens its root by path on every FUSE_INIT:
        // resolve symlinks once, here, with the host's view.
        let root = shared_dir.canonicalize().map_err(dir_err)?;
        if !root.metadata().map_err(dir_err)?.is_dir() {
            return Err(FsError::NotADirectory(shared_dir));
        }
        let root_str = root
            .to_str()
            .ok_or_else(|| FsError::NonUtf8Path(root.clone()))?
            .to_string();
        let passthrough = passthrough_config(root_str, &config);
        let limits = FsLimits {
            max_inodes: config.max_inodes,
            max_handles: config.max_handles,
        };
        let (next_server, live) =
            build_server(&passthrough, config.read_only, limits).map_err(|source| {
                FsError::Passthrough {
                    path: root.clone(),
                    source,
                }
            })?;
        info!(
            "virtio-fs: sharing {} as {tag:?}{}, at most {} inodes and {} open files",
            root.display(),
            if config.read_only { " (read-only)" } else { "" },
            limits.max_inodes,
            limits.max_handles,
        );
        Ok(FsDevice {
            tag: tag.to_string(),
            shared_dir: root,
            config_space,
            passthrough,
            read_only: config.read_only,
            limits,
            next_server: Some(next_server),
            live,
            worker: None,
        })
    }

    /// The inodes and the open files the guest holds on the host now (each
    /// a descriptor of the VMM's; the root is not counted), for tests and
    /// metrics.
    pub fn guest_holds(&self) -> (usize, usize) {
        let live = lock_live(&self.live);
        (live.inodes(), live.handles())
    }

    /// The mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The shared directory (canonical path).
    pub fn shared_dir(&self) -> &std::path::Path {
        &self.shared_dir
    }
}

fn config_space(tag: &str) -> Result<[u8; CONFIG_LEN], FsError> {
    let invalid = |reason| FsError::InvalidTag {
        tag: tag.to_string(),
        reason,
    };
    if tag.is_empty() {
        return Err(invalid("empty"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(invalid("longer than 36 bytes"));
    }
    if tag.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let mut config = [0u8; CONFIG_LEN];
    // NUL-padded; a 36-byte tag has no terminator, which the spec allows.
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[MAX_TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
    Ok(config)
}

fn passthrough_config(root_dir: String, config: &FsConfig) -> Config {
    let (cache_policy, timeout) = match config.cache {
        FsCachePolicy::Never => (CachePolicy::Never, Duration::ZERO),
        FsCachePolicy::Auto => (CachePolicy::Auto, TIMEOUT_AUTO),
        FsCachePolicy::Always => (CachePolicy::Always, TIMEOUT_ALWAYS),
    };
    Config {
        root_dir,
        cache_policy,
        entry_timeout: timeout,
        attr_timeout: timeout,
        writeback: config.writeback && !config.read_only,
        xattr: config.xattr,
        // Import the root at FUSE_INIT; this also enables the passthrough's
        // own name checks.
        do_import: true,
        // Keep O_PATH descriptors per inode; never open_by_handle_at.
        inode_file_handles: false,
        ..Config::default()
    }
}

/// A server on a fresh passthrough, and the counts of what the guest holds
/// through it.
fn build_server(
    passthrough: &Config,
    read_only: bool,
    limits: FsLimits,
) -> io::Result<(FsServer, Arc<Mutex<LiveObjects>>)> {
    let fs = PassthroughFs::<()>::new(passthrough.clone())?;
    let live = Arc::new(Mutex::new(LiveObjects::new(limits)));
    let cache_across_opens = passthrough.cache_policy == CachePolicy::Auto;
    let server = Server::new(GuardedFs::new(
        fs,
        read_only,
        cache_across_opens,
        live.clone(),
    ));
    Ok((server, live))
}

/// Gives the calling thread its own cwd/root/umask, so that the umask the
/// passthrough clears stays in the worker.
fn isolate_fs_attributes() -> io::Result<()> {
    // SAFETY: unshare(CLONE_FS) takes no pointers and only detaches this
    // thread's filesystem attributes from the rest of the process.
    let ret = unsafe { libc::unshare(libc::CLONE_FS) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-fs: ignoring write to read-only config at {offset:#x} ({} bytes)",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        mut queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != QUEUE_SIZES.len() || queue_events.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                queues: queues.len(),
                events: queue_events.len(),
            });
        }
        let server = match self.next_server.take() {
            Some(server) => server,
            None => {
                let (server, live) = build_server(&self.passthrough, self.read_only, self.limits)
                    .map_err(|e| {
                    ActivateError::Backend(format!("virtio-fs {}: {e}", self.tag))
                })?;
                self.live = live;
                server
            }
        };
        let tag = self.tag.clone();
        let worker = Worker::spawn("virtio-fs", move |kill| {
            if let Err(e) = isolate_fs_attributes() {
                error!("virtio-fs {tag}: not serving, cannot isolate the worker's umask: {e}");
                return;
            }
            run_event_loop("virtio-fs", &kill, &queue_events, |index| {
                let (Some(queue), Some(queue_evt)) =
                    (queues.get_mut(index), queue_events.get(index))
                else {
                    return;
                };
                serve_queue("virtio-fs", &mem, queue, queue_evt, &interrupt, |chain| {
                    serve_request(&server, &mem, chain)
                });
            });
        })
        .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}
