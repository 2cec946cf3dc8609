//! The FUSE filesystem: `/<view>/<file>` for every view and every regular file of the
//! backing directory, all views of a file being the same backing file.
//!
//! Inode layout: 1 = root, `2 + v` = directory of view `v`,
//! `FILE_BASE + file_index * MAX_VIEWS + v` = file `file_index` seen through view `v`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::faults::{Faults, Op};

pub const MAX_VIEWS: u64 = 256;
const ROOT: u64 = 1;
const FILE_BASE: u64 = 1 << 20;
/// Directory entries never change shape (views are fixed), so cache them a little.
const DIR_TTL: Duration = Duration::from_secs(1);
/// File attributes must not be cached: the size can change through another view.
const FILE_TTL: Duration = Duration::ZERO;

enum Node {
    Root,
    ViewDir(usize),
    File { view: usize, file: usize },
}

pub struct FaultFs {
    backing: PathBuf,
    faults: Arc<Faults>,
    /// File index -> name; append-only so inode numbers stay stable.
    files: Mutex<Vec<OsString>>,
    handles: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
}

impl FaultFs {
    pub fn new(backing: PathBuf, faults: Arc<Faults>) -> Self {
        FaultFs {
            backing,
            faults,
            files: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn views(&self) -> &[String] {
        self.faults.view_names()
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        let ino = ino.0;
        let nviews = self.views().len() as u64;
        if ino == ROOT {
            Some(Node::Root)
        } else if (2..2 + nviews).contains(&ino) {
            Some(Node::ViewDir((ino - 2) as usize))
        } else if ino >= FILE_BASE {
            let rel = ino - FILE_BASE;
            let (file, view) = ((rel / MAX_VIEWS) as usize, rel % MAX_VIEWS);
            (view < nviews && file < lock(&self.files).len())
                .then_some(Node::File { view: view as usize, file })
        } else {
            None
        }
    }

    fn file_ino(file: usize, view: usize) -> INodeNo {
        INodeNo(FILE_BASE + file as u64 * MAX_VIEWS + view as u64)
    }

    fn file_path(&self, file: usize) -> PathBuf {
        self.backing.join(&lock(&self.files)[file])
    }

    /// Index of a regular backing file called `name`, registering it on first sight.
    fn file_index(&self, name: &OsStr) -> Option<usize> {
        if name.as_bytes().contains(&b'/') || name == "." || name == ".." {
            return None;
        }
        let md = std::fs::metadata(self.backing.join(name)).ok()?;
        if !md.is_file() {
            return None;
        }
        let mut files = lock(&self.files);
        if let Some(i) = files.iter().position(|f| f == name) {
            return Some(i);
        }
        files.push(name.to_os_string());
        Some(files.len() - 1)
    }

    fn dir_attr(ino: u64) -> FileAttr {
        let t = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_attr(&self, file: usize, view: usize) -> io::Result<FileAttr> {
        let md = std::fs::metadata(self.file_path(file))?;
        let ts = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH
            }
        };
        Ok(FileAttr {
            ino: Self::file_ino(file, view),
            size: md.size(),
            blocks: md.blocks(),
            atime: ts(md.atime(), md.atime_nsec()),
            mtime: ts(md.mtime(), md.mtime_nsec()),
            ctime: ts(md.ctime(), md.ctime_nsec()),
            crtime: ts(md.ctime(), md.ctime_nsec()),
            kind: FileType::RegularFile,
            perm: (md.mode() & 0o7777) as u16,
            nlink: 1,
            uid: md.uid(),
            gid: md.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn attr(&self, ino: INodeNo) -> Result<(FileAttr, Duration), Errno> {
        match self.node(ino).ok_or(Errno::ENOENT)? {
            Node::Root | Node::ViewDir(_) => Ok((Self::dir_attr(ino.0), DIR_TTL)),
            Node::File { view, file } => Ok((self.file_attr(file, view)?, FILE_TTL)),
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<File>> {
        lock(&self.handles).get(&fh.0).cloned()
    }

    fn view_of(&self, ino: INodeNo) -> Option<String> {
        match self.node(ino)? {
            Node::File { view, .. } => Some(self.views()[view].clone()),
            _ => None,
        }
    }

    /// Regular files of the backing directory, sorted for stable readdir offsets.
    fn list_files(&self) -> Vec<(usize, OsString)> {
        let mut names: Vec<OsString> = match std::fs::read_dir(&self.backing) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names.into_iter().filter_map(|n| self.file_index(&n).map(|i| (i, n))).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Background requests share one per-connection budget; keep it large so requests
        // parked on a hung view can never starve the healthy views.
        let _ = config.set_max_background(1024);
        let _ = config.set_congestion_threshold(1024);
        // Async direct I/O lets the loop driver keep several requests in flight per device
        // (without it, loop-over-FUSE completes each request synchronously: queue depth 1).
        if std::env::var_os("FAULTFS_NO_ASYNC_DIO").is_none() {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.node(parent) {
            Some(Node::Root) => match self.views().iter().position(|v| v.as_str() == name) {
                Some(v) => reply.entry(&DIR_TTL, &Self::dir_attr(2 + v as u64), fuser::Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Some(Node::ViewDir(view)) => match self.file_index(name) {
                Some(file) => match self.file_attr(file, view) {
                    Ok(a) => reply.entry(&FILE_TTL, &a, fuser::Generation(0)),
                    Err(e) => reply.error(e.into()),
                },
                None => reply.error(Errno::ENOENT),
            },
            Some(Node::File { .. }) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok((a, ttl)) => reply.attr(&ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Only size is passed through; mode/owner/times are reported from the backing file.
        if let Some(size) = size {
            let Some(Node::File { file, .. }) = self.node(ino) else {
                return reply.error(Errno::EISDIR);
            };
            let res = OpenOptions::new().write(true).open(self.file_path(file)).and_then(|f| f.set_len(size));
            if let Err(e) = res {
                return reply.error(e.into());
            }
        }
        match self.attr(ino) {
            Ok((a, ttl)) => reply.attr(&ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::File { file, .. }) = self.node(ino) else {
            return reply.error(Errno::EISDIR);
        };
        let acc = flags.0 & libc::O_ACCMODE;
        // O_DIRECT is not forwarded: our buffers are unaligned and coherence between views
        // comes from all views sharing the backing file's page cache. O_(D)SYNC is forwarded.
        let sync = flags.0 & (libc::O_SYNC | libc::O_DSYNC);
        let res = OpenOptions::new()
            .read(acc != libc::O_WRONLY)
            .write(acc != libc::O_RDONLY)
            .custom_flags(sync)
            .open(self.file_path(file));
        match res {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.handles).insert(fh, Arc::new(f));
                // DIRECT_IO: no page cache in the FUSE layer, so a write through view a is
                // visible at once through view b (a different inode). No KEEP_CACHE.
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
                );
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (Some(view), Some(file)) = (self.view_of(ino), self.handle(fh)) else {
            return reply.error(Errno::EBADF);
        };
        self.faults.submit(
            &view,
            Op::Read,
            Box::new(move |r| match r.and_then(|()| pread_full(&file, offset, size as usize)) {
                Ok(buf) => reply.data(&buf),
                Err(e) => reply.error(e),
            }),
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (Some(view), Some(file)) = (self.view_of(ino), self.handle(fh)) else {
            return reply.error(Errno::EBADF);
        };
        // The session buffer is reused for the next request, so a deferred write needs a copy.
        let data = data.to_vec();
        self.faults.submit(
            &view,
            Op::Write,
            Box::new(move |r| match r.and_then(|()| file.write_all_at(&data, offset).map_err(Errno::from)) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            }),
        );
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        // close() is never faulted: data goes straight to the backing file on write.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let (Some(view), Some(file)) = (self.view_of(ino), self.handle(fh)) else {
            return reply.error(Errno::EBADF);
        };
        self.faults.submit(
            &view,
            Op::Fsync,
            Box::new(move |r| {
                let r = r.and_then(|()| {
                    if datasync { file.sync_data() } else { file.sync_all() }.map_err(Errno::from)
                });
                match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                }
            }),
        );
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut entries: Vec<(INodeNo, FileType, OsString)> =
            vec![(ino, FileType::Directory, ".".into()), (INodeNo(ROOT), FileType::Directory, "..".into())];
        match self.node(ino) {
            Some(Node::Root) => {
                for (v, name) in self.views().iter().enumerate() {
                    entries.push((INodeNo(2 + v as u64), FileType::Directory, name.into()));
                }
            }
            Some(Node::ViewDir(view)) => {
                for (file, name) in self.list_files() {
                    entries.push((Self::file_ino(file, view), FileType::RegularFile, name));
                }
            }
            Some(Node::File { .. }) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e.into()),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are done by the kernel (default_permissions).
        reply.ok();
    }
}

/// Read up to `size` bytes at `offset`; short only at end of file.
fn pread_full(file: &File, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn statvfs(path: &std::path::Path) -> io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-parameter
    // that statvfs fully initialises on success (we only read it when it returns 0).
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) == 0 {
            Ok(st)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
