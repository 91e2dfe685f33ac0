//! The system calls each kind of VMM thread may make, as data: one line per
//! call with why it is needed. Taken from what the threads were seen doing
//! (`strace -f` of a restored sandbox running containers with volumes, a
//! disk, exec and stdio, and of a cold boot), plus the thread start and
//! exit calls of the Rust runtime. Anything else kills the VMM.

/// A system call number and why a thread kind needs it.
type Allowed = (i64, &'static str);

/// The kinds of VMM thread, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The VMM's main thread once the VM runs: console output, events,
    /// teardown.
    Main,
    /// A vCPU thread: KVM_RUN and the port/MMIO exits it handles, which
    /// include device activation (it starts the device workers).
    Vcpu,
    /// The virtio-vsock worker: the hybrid vsock Unix sockets.
    Vsock,
    /// A virtio-fs worker: FUSE requests on the shared directory.
    Fs,
    /// A virtio-blk worker: reads and writes of the disk image.
    Block,
    /// The virtio-rng worker: host entropy.
    Rng,
    /// A virtio-net worker: frames between the queues and its tap.
    Net,
    /// The process outside a jailed VMM that waits for it (the VMM
    /// process's supervisor): it runs no guest code and reads nothing the
    /// guest wrote.
    Supervisor,
}

/// What every thread does: memory, locks, its event loop, signals, exit.
const COMMON: &[Allowed] = &[
    (libc::SYS_read, "eventfds, pipes, files"),
    (libc::SYS_write, "eventfds, the console, logs"),
    (libc::SYS_close, "descriptors it is done with"),
    (
        libc::SYS_fcntl,
        "duplicating descriptors (try_clone), their flags",
    ),
    (libc::SYS_futex, "locks, channels, thread joins"),
    (libc::SYS_epoll_wait, "event loops"),
    (libc::SYS_epoll_pwait, "event loops (glibc's epoll_wait)"),
    (libc::SYS_epoll_ctl, "event loops"),
    (
        libc::SYS_epoll_create1,
        "a worker's event loop, made in its thread",
    ),
    (libc::SYS_mmap, "the allocator"),
    (libc::SYS_munmap, "the allocator, thread stacks"),
    (libc::SYS_mremap, "the allocator (growing buffers)"),
    (libc::SYS_mprotect, "the allocator, thread stack guards"),
    (libc::SYS_madvise, "the allocator, freed thread stacks"),
    (libc::SYS_brk, "the allocator"),
    (libc::SYS_rt_sigprocmask, "thread start and exit"),
    (
        libc::SYS_rt_sigreturn,
        "return from the vCPU kick signal handler",
    ),
    (libc::SYS_sigaltstack, "thread start and exit"),
    (libc::SYS_sched_yield, "spin-then-park locks"),
    (
        libc::SYS_sched_getaffinity,
        "the Rust runtime's parallelism query",
    ),
    (libc::SYS_getrandom, "hash map seeds"),
    (libc::SYS_clock_gettime, "timers (vDSO fallback)"),
    (libc::SYS_clock_nanosleep, "sleeps"),
    (libc::SYS_nanosleep, "sleeps"),
    (libc::SYS_gettid, "logs"),
    (
        libc::SYS_getcwd,
        "a panic's backtrace shortens paths with it",
    ),
    (libc::SYS_getpid, "logs"),
    (
        libc::SYS_restart_syscall,
        "a sleep interrupted by the kick signal",
    ),
    (libc::SYS_rseq, "glibc thread start"),
    (libc::SYS_set_robust_list, "glibc thread start"),
    (libc::SYS_prctl, "naming threads"),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_exit_group, "process exit (and abort)"),
    (libc::SYS_rt_sigaction, "abort's default SIGABRT action"),
    (libc::SYS_tgkill, "abort, and kicking a vCPU out of KVM_RUN"),
    (libc::SYS_statx, "std::fs metadata"),
    (libc::SYS_newfstatat, "std::fs metadata"),
    (libc::SYS_fstat, "std::fs metadata"),
];

/// The main thread, once the VM runs.
const MAIN: &[Allowed] = &[
    (libc::SYS_ioctl, "KVM ioctls on the VM while stopping it"),
    (libc::SYS_lseek, "console output to a file"),
    (
        libc::SYS_openat,
        "removing its private runtime directory at exit",
    ),
    (
        libc::SYS_getdents64,
        "removing its private runtime directory at exit",
    ),
    (
        libc::SYS_unlinkat,
        "removing its private runtime directory at exit",
    ),
    (libc::SYS_unlink, "the vsock socket at teardown"),
    (
        libc::SYS_rmdir,
        "removing its private runtime directory at exit",
    ),
];

/// A vCPU thread (and what it passes to the workers it starts).
const VCPU: &[Allowed] = &[
    (
        libc::SYS_ioctl,
        "KVM_RUN, KVM register and interrupt ioctls; TUNSETOFFLOAD when it activates a net device",
    ),
    (libc::SYS_clone3, "starting a device worker on activation"),
    (libc::SYS_clone, "starting a device worker (older glibc)"),
    (libc::SYS_eventfd2, "a worker's kill event"),
    (libc::SYS_epoll_create1, "a worker's event loop"),
    (libc::SYS_dup, "cloning event descriptors for a worker"),
    (libc::SYS_fcntl, "cloning event descriptors for a worker"),
    (libc::SYS_lseek, "console output to a file"),
    (
        libc::SYS_seccomp,
        "a worker it starts installs its own, narrower filter",
    ),
    (
        libc::SYS_timerfd_create,
        "a new rate limiter (blk, rng, net) when the worker that had one panicked",
    ),
];

const VSOCK: &[Allowed] = &[
    (libc::SYS_accept4, "host clients of the hybrid vsock socket"),
    (
        libc::SYS_socket,
        "connecting to a host listener <uds>_<port>",
    ),
    (
        libc::SYS_connect,
        "connecting to a host listener <uds>_<port>",
    ),
    (libc::SYS_recvfrom, "host socket data"),
    (libc::SYS_sendto, "host socket data"),
    (libc::SYS_recvmsg, "host socket data"),
    (libc::SYS_sendmsg, "host socket data"),
    (libc::SYS_shutdown, "half-closing host connections"),
    (
        libc::SYS_unlink,
        "replacing the listening socket after a reset",
    ),
    (
        libc::SYS_bind,
        "re-creating the listening socket after a reset",
    ),
    (
        libc::SYS_listen,
        "re-creating the listening socket after a reset",
    ),
    (libc::SYS_fcntl, "non-blocking sockets"),
    (libc::SYS_ioctl, "FIONBIO on sockets"),
    (libc::SYS_getsockopt, "socket errors"),
];

const FS: &[Allowed] = &[
    (
        libc::SYS_unshare,
        "CLONE_FS: the worker's own umask and cwd",
    ),
    (libc::SYS_umask, "the guest's umask for creates"),
    (
        libc::SYS_openat,
        "opening files and directories beneath the share",
    ),
    (libc::SYS_openat2, "opening beneath the share"),
    (
        libc::SYS_open_by_handle_at,
        "the passthrough's inode handles",
    ),
    (
        libc::SYS_name_to_handle_at,
        "the passthrough's inode handles",
    ),
    (libc::SYS_readlinkat, "READLINK"),
    (libc::SYS_mkdirat, "MKDIR"),
    (libc::SYS_mknodat, "MKNOD (fifos, sockets)"),
    (libc::SYS_symlinkat, "SYMLINK"),
    (libc::SYS_linkat, "LINK"),
    (libc::SYS_unlinkat, "UNLINK, RMDIR"),
    (libc::SYS_renameat2, "RENAME"),
    (libc::SYS_fchmod, "SETATTR mode"),
    (libc::SYS_fchmodat, "SETATTR mode"),
    (libc::SYS_fchownat, "SETATTR owner"),
    (libc::SYS_fchown, "SETATTR owner"),
    (libc::SYS_ftruncate, "SETATTR size"),
    (libc::SYS_utimensat, "SETATTR times"),
    (libc::SYS_fallocate, "FALLOCATE"),
    (libc::SYS_fsync, "FSYNC"),
    (libc::SYS_fdatasync, "FSYNC (data only)"),
    (libc::SYS_fstatfs, "STATFS"),
    (libc::SYS_getdents64, "READDIR"),
    (libc::SYS_lseek, "READDIR offsets, LSEEK"),
    (libc::SYS_pread64, "READ"),
    (libc::SYS_pwrite64, "WRITE"),
    (libc::SYS_preadv, "READ into guest buffers"),
    (libc::SYS_pwritev, "WRITE from guest buffers"),
    (libc::SYS_preadv2, "READ into guest buffers"),
    (libc::SYS_pwritev2, "WRITE from guest buffers"),
    (libc::SYS_fgetxattr, "GETXATTR"),
    (libc::SYS_fsetxattr, "SETXATTR"),
    (libc::SYS_flistxattr, "LISTXATTR"),
    (libc::SYS_fremovexattr, "REMOVEXATTR"),
    (libc::SYS_getxattr, "GETXATTR through /proc/self/fd"),
    (libc::SYS_lgetxattr, "GETXATTR"),
    (libc::SYS_setxattr, "SETXATTR through /proc/self/fd"),
    (libc::SYS_listxattr, "LISTXATTR through /proc/self/fd"),
    (libc::SYS_removexattr, "REMOVEXATTR through /proc/self/fd"),
    (libc::SYS_faccessat, "ACCESS"),
    (libc::SYS_faccessat2, "ACCESS"),
    (libc::SYS_setresuid, "acting as the guest's uid for creates"),
    (libc::SYS_setresgid, "acting as the guest's gid for creates"),
    (libc::SYS_setfsuid, "acting as the guest's uid for creates"),
    (libc::SYS_setfsgid, "acting as the guest's gid for creates"),
    (libc::SYS_capget, "the passthrough's capability checks"),
    (libc::SYS_capset, "the passthrough's capability checks"),
    (libc::SYS_fcntl, "descriptor flags"),
    (libc::SYS_ioctl, "FS_IOC flags queries"),
    (libc::SYS_dup, "descriptors"),
    (libc::SYS_statfs, "STATFS"),
    (libc::SYS_copy_file_range, "COPY_FILE_RANGE"),
    (libc::SYS_flock, "FLOCK"),
];

const BLOCK: &[Allowed] = &[
    (libc::SYS_pread64, "reads of the image"),
    (libc::SYS_pwrite64, "writes of the image"),
    (libc::SYS_preadv, "reads of the image into guest buffers"),
    (libc::SYS_pwritev, "writes of the image from guest buffers"),
    (libc::SYS_fsync, "FLUSH"),
    (libc::SYS_fdatasync, "FLUSH"),
    (libc::SYS_lseek, "the image size"),
    (libc::SYS_fallocate, "DISCARD, WRITE_ZEROES"),
    (
        libc::SYS_timerfd_settime,
        "arming the rate limiter's timer while throttled",
    ),
];

const RNG: &[Allowed] = &[(
    libc::SYS_timerfd_settime,
    "arming the rate limiter's timer while throttled",
)];

/// Frames move with one `read(2)` or `write(2)` on the tap each and the
/// tap is taken out of and put back into the worker's epoll set, all in
/// [`COMMON`]. The tap was opened and its offloads set before the worker
/// started (`TUNSETOFFLOAD` runs in the activating vCPU thread), and so
/// were the rate limiters' timers (reading an expiry is a `read(2)`).
const NET: &[Allowed] = &[(
    libc::SYS_timerfd_settime,
    "arming a rate limiter's timer while throttled",
)];

const SUPERVISOR: &[Allowed] = &[
    (libc::SYS_rt_sigtimedwait, "waiting for SIGCHLD and SIGTERM"),
    (libc::SYS_wait4, "reaping the VMM"),
    (libc::SYS_kill, "killing the VMM when told to stop"),
    (
        libc::SYS_prlimit64,
        "no core dump when ending as the VMM did",
    ),
    (
        libc::SYS_openat,
        "removing its private runtime directory at exit",
    ),
    (
        libc::SYS_getdents64,
        "removing its private runtime directory at exit",
    ),
    (
        libc::SYS_unlinkat,
        "removing its private runtime directory at exit",
    ),
    (
        libc::SYS_rmdir,
        "removing its private runtime directory at exit",
    ),
    (libc::SYS_lseek, "reading /proc/self/mountinfo"),
];

impl ThreadKind {
    /// Every kind, for tests and tools.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Vsock,
        ThreadKind::Fs,
        ThreadKind::Block,
        ThreadKind::Rng,
        ThreadKind::Net,
        ThreadKind::Supervisor,
    ];

    /// The device workers, which vCPU threads start.
    pub const WORKERS: [ThreadKind; 5] = [
        ThreadKind::Vsock,
        ThreadKind::Fs,
        ThreadKind::Block,
        ThreadKind::Rng,
        ThreadKind::Net,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vCPU",
            Self::Vsock => "vsock",
            Self::Fs => "virtio-fs",
            Self::Block => "virtio-blk",
            Self::Rng => "virtio-rng",
            Self::Net => "virtio-net",
            Self::Supervisor => "supervisor",
        }
    }

    /// The kind of the device worker thread called `name`.
    pub fn of_worker(name: &str) -> Option<Self> {
        match name {
            "vsock" => Some(Self::Vsock),
            "virtio-fs" => Some(Self::Fs),
            "virtio-blk" => Some(Self::Block),
            "virtio-rng" => Some(Self::Rng),
            "virtio-net" => Some(Self::Net),
            _ => None,
        }
    }

    fn own(self) -> &'static [Allowed] {
        match self {
            Self::Main => MAIN,
            Self::Vcpu => VCPU,
            Self::Vsock => VSOCK,
            Self::Fs => FS,
            Self::Block => BLOCK,
            Self::Rng => RNG,
            Self::Net => NET,
            Self::Supervisor => SUPERVISOR,
        }
    }

    /// The system calls this kind may make. A vCPU starts the workers, so
    /// it holds theirs too.
    pub fn syscalls(self) -> Vec<Allowed> {
        let mut all: Vec<Allowed> = COMMON.iter().chain(self.own()).copied().collect();
        if self == Self::Vcpu {
            for worker in Self::WORKERS {
                all.extend(worker.own());
            }
        }
        all.sort_by_key(|(nr, _)| *nr);
        all.dedup_by_key(|(nr, _)| *nr);
        all
    }
}
