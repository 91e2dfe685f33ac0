//! A tiny FUSE client for the tests: builds request messages from the FUSE
//! ABI structs and decodes replies.

use fuse_backend_rs::abi::fuse_abi::*;
use vm_memory::ByteValued;

use super::{FuseDriver, HIPRIO, IN_ADDR, OUT_LEN};

/// `FUSE_ROOT_ID`.
pub(crate) const ROOT: u64 = ROOT_ID;
/// SETATTR `valid` bits (private in fuse-backend-rs).
pub(crate) const FATTR_MODE: u32 = 1 << 0;
pub(crate) const FATTR_SIZE: u32 = 1 << 3;

/// A decoded reply: the (negative) errno and the payload after the header.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) unique: u64,
    pub(crate) error: i32,
    pub(crate) data: Vec<u8>,
}

impl Reply {
    /// The payload, or the positive errno.
    pub(crate) fn ok(self) -> Result<Vec<u8>, i32> {
        if self.error == 0 {
            Ok(self.data)
        } else {
            Err(-self.error)
        }
    }
}

/// Decodes `T` from the front of `data`.
pub(crate) fn obj<T: ByteValued>(data: &[u8]) -> T {
    *T::from_slice(&data[..std::mem::size_of::<T>()]).unwrap()
}

/// A FUSE request: header plus `body`, `len` covering both.
pub(crate) fn message(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let header = InHeader {
        len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    };
    let mut msg = header.as_slice().to_vec();
    msg.extend_from_slice(body);
    msg
}

/// Concatenates the request structs and NUL-terminated names of a body.
pub(crate) fn body(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `name` with a terminating NUL.
pub(crate) fn cname(name: &[u8]) -> Vec<u8> {
    let mut v = name.to_vec();
    v.push(0);
    v
}

impl FuseDriver<'_> {
    /// Sends `opcode` on `nodeid` with `body` and decodes the reply.
    pub(crate) fn call(&mut self, opcode: Opcode, nodeid: u64, body: &[u8]) -> Reply {
        let unique = self.unique();
        let (used, out) = self.send_raw(&message(opcode as u32, unique, nodeid, body), OUT_LEN);
        let reply = parse_reply(&out);
        assert_eq!(reply.unique, unique, "reply to another request");
        assert_eq!(used as usize, out.len());
        reply
    }

    pub(crate) fn init(&mut self) -> InitOut {
        self.init_with(0)
    }

    /// FUSE_INIT offering the kernel capabilities `flags`.
    pub(crate) fn init_with(&mut self, flags: u32) -> InitOut {
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: 128 * 1024,
            flags,
        };
        obj(&self.call(Opcode::Init, 0, init.as_slice()).ok().unwrap())
    }

    pub(crate) fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut, i32> {
        let reply = self.call(Opcode::Lookup, parent, &cname(name)).ok()?;
        Ok(obj(&reply))
    }

    pub(crate) fn getattr(&mut self, ino: u64) -> Result<Attr, i32> {
        let reply = self
            .call(Opcode::Getattr, ino, GetattrIn::default().as_slice())
            .ok()?;
        Ok(obj::<AttrOut>(&reply).attr)
    }

    pub(crate) fn setattr(&mut self, ino: u64, attr: SetattrIn) -> Result<Attr, i32> {
        let reply = self.call(Opcode::Setattr, ino, attr.as_slice()).ok()?;
        Ok(obj::<AttrOut>(&reply).attr)
    }

    pub(crate) fn open(&mut self, ino: u64, flags: i32) -> Result<u64, i32> {
        self.open_out(ino, flags).map(|out| out.fh)
    }

    /// OPEN's whole reply: the handle and the FOPEN_* flags.
    pub(crate) fn open_out(&mut self, ino: u64, flags: i32) -> Result<OpenOut, i32> {
        let open = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        let reply = self.call(Opcode::Open, ino, open.as_slice()).ok()?;
        Ok(obj::<OpenOut>(&reply))
    }

    pub(crate) fn opendir(&mut self, ino: u64) -> Result<u64, i32> {
        let open = OpenIn {
            flags: libc::O_RDONLY as u32,
            fuse_flags: 0,
        };
        let reply = self.call(Opcode::Opendir, ino, open.as_slice()).ok()?;
        Ok(obj::<OpenOut>(&reply).fh)
    }

    pub(crate) fn release(&mut self, ino: u64, fh: u64) -> Result<(), i32> {
        let release = ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Release, ino, release.as_slice())
            .ok()
            .map(drop)
    }

    pub(crate) fn read(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, i32> {
        let read = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(Opcode::Read, ino, read.as_slice()).ok()
    }

    pub(crate) fn write(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, i32> {
        let write = WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        let reply = self
            .call(Opcode::Write, ino, &body(&[write.as_slice(), data]))
            .ok()?;
        Ok(obj::<WriteOut>(&reply).size)
    }

    pub(crate) fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(EntryOut, u64), i32> {
        let create = CreateIn {
            flags: flags as u32,
            mode: libc::S_IFREG | mode,
            umask: 0o022,
            fuse_flags: 0,
        };
        let reply = self
            .call(
                Opcode::Create,
                parent,
                &body(&[create.as_slice(), &cname(name)]),
            )
            .ok()?;
        let entry: EntryOut = obj(&reply);
        let open: OpenOut = obj(&reply[std::mem::size_of::<EntryOut>()..]);
        Ok((entry, open.fh))
    }

    pub(crate) fn mkdir(&mut self, parent: u64, name: &[u8], mode: u32) -> Result<EntryOut, i32> {
        let mkdir = MkdirIn { mode, umask: 0 };
        let reply = self
            .call(
                Opcode::Mkdir,
                parent,
                &body(&[mkdir.as_slice(), &cname(name)]),
            )
            .ok()?;
        Ok(obj(&reply))
    }

    pub(crate) fn mknod(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> Result<EntryOut, i32> {
        let mknod = MknodIn {
            mode,
            rdev,
            umask: 0,
            padding: 0,
        };
        let reply = self
            .call(
                Opcode::Mknod,
                parent,
                &body(&[mknod.as_slice(), &cname(name)]),
            )
            .ok()?;
        Ok(obj(&reply))
    }

    pub(crate) fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<(), i32> {
        self.call(Opcode::Unlink, parent, &cname(name))
            .ok()
            .map(drop)
    }

    pub(crate) fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<(), i32> {
        self.call(Opcode::Rmdir, parent, &cname(name))
            .ok()
            .map(drop)
    }

    pub(crate) fn rename(
        &mut self,
        olddir: u64,
        oldname: &[u8],
        newdir: u64,
        newname: &[u8],
    ) -> Result<(), i32> {
        let rename = RenameIn { newdir };
        let msg = body(&[rename.as_slice(), &cname(oldname), &cname(newname)]);
        self.call(Opcode::Rename, olddir, &msg).ok().map(drop)
    }

    pub(crate) fn link(&mut self, ino: u64, newparent: u64, name: &[u8]) -> Result<EntryOut, i32> {
        let link = LinkIn { oldnodeid: ino };
        let reply = self
            .call(
                Opcode::Link,
                newparent,
                &body(&[link.as_slice(), &cname(name)]),
            )
            .ok()?;
        Ok(obj(&reply))
    }

    pub(crate) fn symlink(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Result<EntryOut, i32> {
        let reply = self
            .call(
                Opcode::Symlink,
                parent,
                &body(&[&cname(name), &cname(target)]),
            )
            .ok()?;
        Ok(obj(&reply))
    }

    pub(crate) fn readlink(&mut self, ino: u64) -> Result<Vec<u8>, i32> {
        self.call(Opcode::Readlink, ino, &[]).ok()
    }

    /// All names in directory `ino` (READDIR from offset 0, one buffer).
    pub(crate) fn readdir(&mut self, ino: u64, fh: u64) -> Result<Vec<String>, i32> {
        let read = ReadIn {
            fh,
            offset: 0,
            size: 8192,
            ..Default::default()
        };
        let data = self.call(Opcode::Readdir, ino, read.as_slice()).ok()?;
        let mut names = Vec::new();
        let mut rest = &data[..];
        let header = std::mem::size_of::<Dirent>();
        while rest.len() >= header {
            let dirent: Dirent = obj(rest);
            let name = &rest[header..header + dirent.namelen as usize];
            names.push(String::from_utf8_lossy(name).into_owned());
            let record = (header + dirent.namelen as usize + 7) & !7;
            rest = &rest[record.min(rest.len())..];
        }
        names.sort();
        Ok(names)
    }

    pub(crate) fn setxattr(&mut self, ino: u64, name: &[u8], value: &[u8]) -> Result<(), i32> {
        let setxattr = SetxattrIn {
            size: value.len() as u32,
            flags: 0,
        };
        let msg = body(&[setxattr.as_slice(), &cname(name), value]);
        self.call(Opcode::Setxattr, ino, &msg).ok().map(drop)
    }

    pub(crate) fn getxattr(&mut self, ino: u64, name: &[u8], size: u32) -> Result<Vec<u8>, i32> {
        let getxattr = GetxattrIn { size, padding: 0 };
        self.call(
            Opcode::Getxattr,
            ino,
            &body(&[getxattr.as_slice(), &cname(name)]),
        )
        .ok()
    }

    pub(crate) fn access(&mut self, ino: u64, mask: i32) -> Result<(), i32> {
        let access = AccessIn {
            mask: mask as u32,
            padding: 0,
        };
        self.call(Opcode::Access, ino, access.as_slice())
            .ok()
            .map(drop)
    }

    /// FORGET on the hiprio queue (no reply).
    pub(crate) fn forget(&mut self, ino: u64, nlookup: u64) -> u32 {
        let unique = self.unique();
        let msg = message(
            Opcode::Forget as u32,
            unique,
            ino,
            ForgetIn { nlookup }.as_slice(),
        );
        self.mem_write(&msg);
        self.submit(HIPRIO, &[(IN_ADDR, msg.len() as u32, false)])
    }

    /// BATCH_FORGET of `(nodeid, nlookup)` pairs on the hiprio queue (no
    /// reply).
    pub(crate) fn batch_forget(&mut self, forgets: &[(u64, u64)]) -> u32 {
        let unique = self.unique();
        let header = BatchForgetIn {
            count: forgets.len() as u32,
            dummy: 0,
        };
        let mut payload = header.as_slice().to_vec();
        for &(nodeid, nlookup) in forgets {
            payload.extend_from_slice(ForgetOne { nodeid, nlookup }.as_slice());
        }
        let msg = message(Opcode::BatchForget as u32, unique, 0, &payload);
        self.mem_write(&msg);
        self.submit(HIPRIO, &[(IN_ADDR, msg.len() as u32, false)])
    }

    /// READDIRPLUS of directory `ino` from `offset` into a `size`-byte
    /// buffer: each entry's name, nodeid and the offset after it.
    pub(crate) fn readdirplus(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<(String, u64, u64)>, i32> {
        let read = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let data = self.call(Opcode::Readdirplus, ino, read.as_slice()).ok()?;
        let mut entries = Vec::new();
        let mut rest = &data[..];
        let header = std::mem::size_of::<Direntplus>();
        while rest.len() >= header {
            let plus: Direntplus = obj(rest);
            let namelen = plus.dirent.namelen as usize;
            let name = &rest[header..header + namelen];
            entries.push((
                String::from_utf8_lossy(name).into_owned(),
                plus.entry_out.nodeid,
                plus.dirent.off,
            ));
            let record = (header + namelen + 7) & !7;
            rest = &rest[record.min(rest.len())..];
        }
        Ok(entries)
    }

    pub(crate) fn mem_write(&self, bytes: &[u8]) {
        use vm_memory::{Bytes, GuestAddress};
        self.mem.write_slice(bytes, GuestAddress(IN_ADDR)).unwrap();
    }
}

/// Splits a reply buffer into header and payload, checking the header's
/// length against the buffer.
pub(crate) fn parse_reply(out: &[u8]) -> Reply {
    let header: OutHeader = obj(out);
    assert_eq!(header.len as usize, out.len(), "reply length mismatch");
    Reply {
        unique: header.unique,
        error: header.error,
        data: out[std::mem::size_of::<OutHeader>()..].to_vec(),
    }
}
