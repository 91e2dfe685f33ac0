//! [`GuardedFs`]: the policy layer between the FUSE server and the
//! passthrough file system.
//!
//! It sees requests after the server decoded them into plain values (so the
//! guest cannot change a request between check and use) and before they
//! touch the host. It enforces the read-only flag, validates entry names
//! independently of the passthrough's own checks, refuses device nodes and
//! `O_TMPFILE`, and caps guest-chosen buffer sizes that the passthrough would
//! allocate up front. Only the operations the passthrough implements are
//! forwarded; locks, ioctl, poll, bmap and DAX mappings keep the trait's
//! ENOSYS/ENOTTY defaults.
//!
//! It also caps the host descriptors the guest can make the passthrough
//! hold ([`FsLimits`](super::policy::FsLimits)): every entry handed to the guest (LOOKUP, MKNOD,
//! MKDIR, SYMLINK, LINK, CREATE, READDIRPLUS) is counted as a lookup and
//! every FORGET and BATCH_FORGET takes lookups back ([`LiveObjects`]), every
//! OPEN, OPENDIR and CREATE handle is counted until released. Past a cap the
//! request fails with ENFILE and the passthrough keeps nothing of it.
//!
//! The worker serves requests one at a time; the counts are behind a mutex
//! all the same, and it is never held across a call into the passthrough.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter, ROOT_ID,
};
use fuse_backend_rs::api::server::MAX_BUFFER_SIZE;

use super::policy::{
    check_access, check_entry_name, check_lookup_name, check_mknod, check_open_flags,
    clamp_xattr_size, host_safe_mode, table_full, LiveObjects,
};

/// `inner` with the share's policy applied.
pub(crate) struct GuardedFs<F> {
    inner: F,
    read_only: bool,
    /// Asked for: keep file data cached across opens while the host file
    /// keeps its size and mtime ([`FsCachePolicy::Auto`](super::FsCachePolicy)).
    cache_across_opens: bool,
    /// ... and granted: the guest kernel took FUSE_AUTO_INVAL_DATA at
    /// FUSE_INIT, so it drops cached data whose file changed on the host.
    keep_cache: AtomicBool,
    live: Arc<Mutex<LiveObjects>>,
}

/// The counts of a [`GuardedFs`], shared with its device (which reads them
/// from another thread); a panic elsewhere while they were held leaves them
/// usable (each update is a single step).
pub(crate) fn lock_live(live: &Mutex<LiveObjects>) -> MutexGuard<'_, LiveObjects> {
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<F> GuardedFs<F> {
    /// `inner` behind the policy, counting into `live` (fresh, with the
    /// share's limits); `cache_across_opens` as the field says.
    pub(crate) fn new(
        inner: F,
        read_only: bool,
        cache_across_opens: bool,
        live: Arc<Mutex<LiveObjects>>,
    ) -> Self {
        GuardedFs {
            inner,
            read_only,
            cache_across_opens,
            keep_cache: AtomicBool::new(false),
            live,
        }
    }

    /// `options` of an open file, with FOPEN_KEEP_CACHE where granted.
    /// Without it the guest kernel drops the file's cached pages at every
    /// open: each exec of a binary on the share would read it again over
    /// FUSE (seconds per exec under a software KVM, measured).
    fn open_options(&self, options: OpenOptions) -> OpenOptions {
        if self.keep_cache.load(Ordering::Relaxed) && !options.contains(OpenOptions::DIRECT_IO) {
            options | OpenOptions::KEEP_CACHE
        } else {
            options
        }
    }

    fn live(&self) -> MutexGuard<'_, LiveObjects> {
        lock_live(&self.live)
    }

    /// Fails with EROFS on a read-only share.
    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::from_raw_os_error(libc::EROFS))
        } else {
            Ok(())
        }
    }
}

impl<F: FileSystem> GuardedFs<F> {
    /// Counts the lookup the passthrough made for `entry`, which is about
    /// to be handed to the guest; a new inode past the cap is handed back
    /// to the passthrough instead and the request fails.
    fn hand_out(&self, ctx: &Context, entry: Entry) -> io::Result<Entry> {
        if self.live().add_lookup(entry.inode) {
            return Ok(entry);
        }
        self.inner.forget(ctx, F::Inode::from(entry.inode), 1);
        Err(table_full())
    }

    /// Counts the handle of a successful open; none (`no_open`) is fine.
    fn count_handle(&self, handle: &Option<F::Handle>) {
        if handle.is_some() {
            self.live().add_handle();
        }
    }

    /// CREATE of a name that exists, without `O_EXCL`: LOOKUP and OPEN,
    /// each counted. (The passthrough's own CREATE keeps the lookup it made
    /// when the open that follows fails, a descriptor no FORGET frees.)
    fn open_existing(
        &self,
        ctx: &Context,
        parent: F::Inode,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<CreateReply<F::Handle>> {
        let entry = self.hand_out(ctx, self.inner.lookup(ctx, parent, name)?)?;
        let room = self.live().check_handle_room();
        let flags = args.flags & !((libc::O_CREAT | libc::O_EXCL) as u32);
        let opened = room.and_then(|()| {
            self.inner
                .open(ctx, F::Inode::from(entry.inode), flags, args.fuse_flags)
        });
        match opened {
            Ok((handle, options, passthrough)) => {
                self.count_handle(&handle);
                Ok((entry, handle, self.open_options(options), passthrough))
            }
            Err(e) => {
                self.live().forget(entry.inode, 1);
                self.inner.forget(ctx, F::Inode::from(entry.inode), 1);
                Err(e)
            }
        }
    }
}

type OpenReply<H> = (Option<H>, OpenOptions, Option<u32>);
type CreateReply<H> = (Entry, Option<H>, OpenOptions, Option<u32>);

impl<F: FileSystem> FileSystem for GuardedFs<F> {
    type Inode = F::Inode;
    type Handle = F::Handle;

    fn init(&self, mut capable: FsOptions) -> io::Result<FsOptions> {
        if self.read_only {
            // Nothing may be cached for writing back later.
            capable.remove(FsOptions::WRITEBACK_CACHE);
        }
        // The passthrough asks for neither, and then the server offers 4 KiB
        // writes: a guest `dd` costs one round trip per page. MAX_PAGES
        // lets a request carry up to 1 MiB, which `serve_request`'s message
        // limit admits.
        let transfer_size = capable & (FsOptions::MAX_PAGES | FsOptions::BIG_WRITES);
        // Cached data may outlive an open only if the kernel invalidates it
        // when a refreshed attribute shows another mtime (it always does on
        // another size): then a host change is seen within the attribute
        // timeout, as metadata changes are.
        let keep_cache = self.cache_across_opens && capable.contains(FsOptions::AUTO_INVAL_DATA);
        self.keep_cache.store(keep_cache, Ordering::Relaxed);
        let mut wanted = self.inner.init(capable)? | transfer_size;
        if keep_cache {
            wanted |= FsOptions::AUTO_INVAL_DATA;
        }
        Ok(wanted)
    }

    fn destroy(&self) {
        // The passthrough drops every inode and handle.
        self.live().clear();
        self.inner.destroy()
    }

    fn lookup(&self, ctx: &Context, parent: F::Inode, name: &CStr) -> io::Result<Entry> {
        check_lookup_name(name)?;
        // `..` of the root is the root: the guest must not see what lies
        // above the share. (The passthrough does the same; this keeps the
        // guarantee independent of it.)
        let parent: u64 = parent.into();
        let name = if parent == ROOT_ID && name.to_bytes() == b".." {
            c"."
        } else {
            name
        };
        let entry = self.inner.lookup(ctx, parent.into(), name)?;
        self.hand_out(ctx, entry)
    }

    fn forget(&self, ctx: &Context, inode: F::Inode, count: u64) {
        let id: u64 = inode.into();
        self.live().forget(id, count);
        self.inner.forget(ctx, F::Inode::from(id), count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(F::Inode, u64)>) {
        let requests: Vec<(u64, u64)> = requests
            .into_iter()
            .map(|(inode, count)| (inode.into(), count))
            .collect();
        {
            let mut live = self.live();
            for &(id, count) in &requests {
                live.forget(id, count);
            }
        }
        self.inner.batch_forget(
            ctx,
            requests
                .into_iter()
                .map(|(id, count)| (F::Inode::from(id), count))
                .collect(),
        )
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: Option<F::Handle>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: F::Inode,
        attr: stat64,
        handle: Option<F::Handle>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.writable()?;
        let mut attr = attr;
        // Inodes are plain numbers that are not Copy: pass them on by value.
        let id: u64 = inode.into();
        if valid.contains(SetattrValid::MODE) {
            // chmod sends the file type along; if not, ask the file.
            let typed = if attr.st_mode & libc::S_IFMT == 0 {
                let (stat, _) = self.inner.getattr(ctx, F::Inode::from(id), None)?;
                attr.st_mode | (stat.st_mode & libc::S_IFMT)
            } else {
                attr.st_mode
            };
            attr.st_mode = host_safe_mode(typed);
        }
        self.inner
            .setattr(ctx, F::Inode::from(id), attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: F::Inode) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: F::Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_entry_name(name)?;
        self.live().check_inode_room()?;
        // The target is stored verbatim and resolved by the guest: the host
        // never follows symlinks inside the share.
        let entry = self.inner.symlink(ctx, linkname, parent, name)?;
        self.hand_out(ctx, entry)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: F::Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_entry_name(name)?;
        check_mknod(mode, rdev)?;
        self.live().check_inode_room()?;
        let entry = self
            .inner
            .mknod(ctx, parent, name, host_safe_mode(mode), rdev, umask)?;
        self.hand_out(ctx, entry)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: F::Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_entry_name(name)?;
        self.live().check_inode_room()?;
        let entry = self
            .inner
            // A directory's setgid is fine (see host_safe_mode); setuid means nothing.
            .mkdir(ctx, parent, name, mode & !libc::S_ISUID, umask)?;
        self.hand_out(ctx, entry)
    }

    fn unlink(&self, ctx: &Context, parent: F::Inode, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_entry_name(name)?;
        self.inner.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: F::Inode, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_entry_name(name)?;
        self.inner.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: F::Inode,
        oldname: &CStr,
        newdir: F::Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        check_entry_name(oldname)?;
        check_entry_name(newname)?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(
        &self,
        ctx: &Context,
        inode: F::Inode,
        newparent: F::Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        self.writable()?;
        check_entry_name(newname)?;
        // The entry is the inode the guest named, which it holds already:
        // one more lookup, no new descriptor.
        let entry = self.inner.link(ctx, inode, newparent, newname)?;
        self.hand_out(ctx, entry)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: F::Inode,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<OpenReply<F::Handle>> {
        check_open_flags(flags, self.read_only)?;
        self.live().check_handle_room()?;
        let (handle, options, passthrough) = self.inner.open(ctx, inode, flags, fuse_flags)?;
        self.count_handle(&handle);
        Ok((handle, self.open_options(options), passthrough))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: F::Inode,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<CreateReply<F::Handle>> {
        self.writable()?;
        check_entry_name(name)?;
        check_open_flags(args.flags, self.read_only)?;
        let args = CreateIn {
            mode: host_safe_mode(args.mode),
            ..args
        };
        {
            let live = self.live();
            live.check_inode_room()?;
            live.check_handle_room()?;
        }
        // Always exclusive in the passthrough, so that its CREATE either
        // makes a new file or fails before it looks anything up; a name that
        // exists is opened here instead unless the guest asked for O_EXCL.
        let exclusive = args.flags & libc::O_EXCL as u32 != 0;
        let parent: u64 = parent.into();
        let created = self.inner.create(
            ctx,
            F::Inode::from(parent),
            name,
            CreateIn {
                flags: args.flags | libc::O_EXCL as u32,
                ..args
            },
        );
        match created {
            Ok((entry, handle, options, passthrough)) => {
                let id = entry.inode;
                match self.hand_out(ctx, entry) {
                    Ok(entry) => {
                        self.count_handle(&handle);
                        Ok((entry, handle, options, passthrough))
                    }
                    // Only if another thread took the last inode since the
                    // check above: the file stays, the guest gets nothing.
                    Err(e) => {
                        if let Some(handle) = handle {
                            let _ = self.inner.release(
                                ctx,
                                F::Inode::from(id),
                                args.flags,
                                handle,
                                false,
                                false,
                                None,
                            );
                        }
                        Err(e)
                    }
                }
            }
            Err(e) if !exclusive && e.raw_os_error() == Some(libc::EEXIST) => {
                self.open_existing(ctx, F::Inode::from(parent), name, args)
            }
            Err(e) => Err(e),
        }
    }

    fn read(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        // A short read is valid FUSE; the guest never asks for more than
        // max_pages (1 MiB) anyway.
        let size = size.min(MAX_BUFFER_SIZE);
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    fn write(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.writable()?;
        let size = size.min(MAX_BUFFER_SIZE);
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        lock_owner: u64,
    ) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(
        &self,
        ctx: &Context,
        inode: F::Inode,
        datasync: bool,
        handle: F::Handle,
    ) -> io::Result<()> {
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.writable()?;
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn release(
        &self,
        ctx: &Context,
        inode: F::Inode,
        flags: u32,
        handle: F::Handle,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)?;
        // Only a handle the passthrough had is released without an error.
        self.live().remove_handle();
        Ok(())
    }

    fn statfs(&self, ctx: &Context, inode: F::Inode) -> io::Result<statvfs64> {
        self.inner.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: F::Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: F::Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner
            .getxattr(ctx, inode, name, clamp_xattr_size(size))
    }

    fn listxattr(&self, ctx: &Context, inode: F::Inode, size: u32) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, clamp_xattr_size(size))
    }

    fn removexattr(&self, ctx: &Context, inode: F::Inode, name: &CStr) -> io::Result<()> {
        self.writable()?;
        self.inner.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: F::Inode,
        flags: u32,
    ) -> io::Result<(Option<F::Handle>, OpenOptions)> {
        check_open_flags(flags, self.read_only)?;
        self.live().check_handle_room()?;
        let reply = self.inner.opendir(ctx, inode, flags)?;
        self.count_handle(&reply.0);
        Ok(reply)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        // The passthrough allocates `size` bytes for getdents64.
        let size = size.min(MAX_BUFFER_SIZE);
        self.inner
            .readdir(ctx, inode, handle, size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let size = size.min(MAX_BUFFER_SIZE);
        // Each entry comes with a lookup the passthrough made. A new inode
        // past the cap is not added: answering 0 ("no room") makes the
        // passthrough take its lookup back and end the listing there. An
        // entry the server failed to write keeps its lookup in the
        // passthrough, so it is counted as well.
        let mut added = false;
        let mut refused = false;
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, &mut |dir_entry, entry| {
                let id = entry.inode;
                if !self.live().admits(id) {
                    refused = true;
                    return Ok(0);
                }
                let written = add_entry(dir_entry, entry);
                if !matches!(written, Ok(0)) {
                    self.live().add_lookup(id);
                    added = true;
                }
                written
            })?;
        if refused && !added {
            // Nothing fits: an empty answer would read as the end of the
            // directory.
            return Err(table_full());
        }
        Ok(())
    }

    fn fsyncdir(
        &self,
        ctx: &Context,
        inode: F::Inode,
        datasync: bool,
        handle: F::Handle,
    ) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(
        &self,
        ctx: &Context,
        inode: F::Inode,
        flags: u32,
        handle: F::Handle,
    ) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)?;
        self.live().remove_handle();
        Ok(())
    }

    fn access(&self, ctx: &Context, inode: F::Inode, mask: u32) -> io::Result<()> {
        check_access(mask, self.read_only)?;
        self.inner.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: F::Inode,
        handle: F::Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }
}
