//! A container's cgroups (v2): the limits on `oxbow/ct-<vmid>` below the
//! root of the cgroup v2 hierarchy, and the container's processes in the
//! inner `oxbow/ct-<vmid>/ns`, which becomes the root of the container's
//! cgroup namespace and is handed to the container's root user so that a
//! systemd inside can manage its own sub-tree.
//!
//! A limit whose controller the v2 hierarchy lacks (on a host where the
//! controllers are bound to cgroup v1, say) is not silently dropped: it is
//! listed in [`Cgroup::unavailable`] with the reason, logged, and reported
//! by the monitor's `info`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::idmap::IdMap;
use crate::spec::Limits;
use crate::sys;

/// The parent of every container's cgroup, below the v2 root.
pub const PARENT: &str = "oxbow";
/// The inner, delegated cgroup's name.
pub const INNER: &str = "ns";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// The mount point of the cgroup v2 hierarchy in `mountinfo` text, if
/// any (`/sys/fs/cgroup` on the appliance; `/sys/fs/cgroup/unified` on a
/// hybrid host).
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(mount_point.replace("\\040", " ")))
    })
}

/// The controller an interface file belongs to (`memory` for
/// `memory.max`).
pub fn controller_of(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// A container's cgroups, created by [`Cgroup::create`].
#[derive(Debug)]
pub struct Cgroup {
    /// `<v2 root>/oxbow/ct-<vmid>`: the limits.
    pub outer: PathBuf,
    /// `<outer>/ns`: the container's processes.
    pub inner: PathBuf,
    /// `inner`, open: the limits and the delegation are written, and the
    /// child moved in, relative to it.
    inner_dir: OwnedFd,
    /// Limits that could not be applied, each with the reason.
    pub unavailable: Vec<String>,
}

impl Cgroup {
    /// The cgroup v2 root of this host, if there is one: `/sys/fs/cgroup`
    /// when it is a cgroup2 mount, else a hybrid host's
    /// `/sys/fs/cgroup/unified` when that is (one `statfs` each), else the
    /// first cgroup2 mount of the mount table.
    pub fn v2_root() -> Option<PathBuf> {
        // The unified layout's place, then the hybrid layout's (systemd's
        // `unified` below the v1 tmpfs): one `statfs` each, where reading
        // the mount table costs the kernel a line per mount.
        for usual in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if nix::sys::statfs::statfs(usual)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            {
                return Some(PathBuf::from(usual));
            }
        }
        find_v2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// The outer cgroup path of container `vmid` below `root`.
    pub fn path_of(root: &Path, vmid: u32) -> PathBuf {
        root.join(PARENT).join(format!("ct-{vmid}"))
    }

    /// Creates the container's cgroups below `root` and applies `limits`.
    /// A stale cgroup of the same container (from a monitor that was
    /// killed) is emptied and removed first.
    pub fn create(
        root: &Path,
        vmid: u32,
        limits: &Limits,
        idmap: &IdMap,
    ) -> Result<Cgroup, CgroupError> {
        let outer = Cgroup::path_of(root, vmid);
        let parent = root.join(PARENT);
        let files = limits.cgroup_files();
        let mut wanted: Vec<&str> = files.iter().map(|(f, _)| controller_of(f)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        // The controllers `oxbow/` hands down are the ones the container's
        // cgroup will have. Once they include every one wanted (every start
        // but the first), that is all there is to read.
        let mut here = read_words(&parent.join("cgroup.subtree_control"));
        let mut available = None;
        if !wanted.iter().all(|c| here.iter().any(|h| h == c)) {
            match fs::create_dir(&parent) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("creating", &parent)(e))
                }
                _ => {}
            }
            let root_has = read_words(&root.join("cgroup.controllers"));
            // The root first, then `oxbow/`: a controller reaches a cgroup
            // only through its parent. Written only when missing: every
            // write waits for the release of earlier containers' removed
            // cgroups.
            for dir in [root, parent.as_path()] {
                let control = dir.join("cgroup.subtree_control");
                let enabled = read_words(&control);
                for controller in &wanted {
                    if !root_has.iter().any(|c| c == controller)
                        || enabled.iter().any(|c| c == controller)
                    {
                        continue;
                    }
                    if let Err(e) = fs::write(&control, format!("+{controller}")) {
                        tracing::warn!("enabling {controller} in {}: {e}", control.display());
                    }
                }
            }
            here = read_words(&parent.join("cgroup.subtree_control"));
            available = Some(root_has);
        }
        // From here on every step is relative to a directory descriptor:
        // a path walk down the cgroup file system costs about as much as
        // the step itself under emulation.
        let parent_dir = sys::open_dir(&parent).map_err(io_err("opening", &parent))?;
        let name = format!("ct-{vmid}");
        // Made first and looked at only if it is there already (a failed
        // lookup in the cgroup file system costs as much as the mkdir).
        match sys::mkdir_at(parent_dir.as_raw_fd(), name.as_bytes(), 0o755) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                tracing::warn!("removing the stale cgroup {}", outer.display());
                kill_tree(&outer);
                remove_tree(&outer).map_err(io_err("removing the stale cgroup", &outer))?;
                sys::mkdir_at(parent_dir.as_raw_fd(), name.as_bytes(), 0o755)
                    .map_err(io_err("creating", &outer))?;
            }
            other => other.map_err(io_err("creating", &outer))?,
        }
        let inner = outer.join(INNER);
        // What fails from here on leaves no half-made cgroup behind.
        let made = (|| {
            let outer_dir = sys::open_dir_at(parent_dir.as_raw_fd(), name.as_bytes())
                .map_err(io_err("opening", &outer))?;
            let outer_fd = outer_dir.as_raw_fd();
            let mut unavailable = Vec::new();
            for (file, value) in &files {
                let controller = controller_of(file);
                if !here.iter().any(|c| c == controller) {
                    let root_has = available
                        .get_or_insert_with(|| read_words(&root.join("cgroup.controllers")));
                    let why = if root_has.iter().any(|c| c == controller) {
                        "could not be enabled for this cgroup"
                    } else {
                        "is not available in the cgroup v2 hierarchy (bound to cgroup v1, or not built)"
                    };
                    unavailable.push(format!("{file}={value}: the {controller} controller {why}"));
                    continue;
                }
                // The cgroup is new: a value it already holds needs no write.
                if fresh_value(file) == Some(value.as_str()) {
                    continue;
                }
                if let Err(e) = write_at(outer_fd, file, value) {
                    unavailable.push(format!("{file}={value}: {e}"));
                }
            }
            if !unavailable.is_empty() {
                tracing::warn!(
                    "container {vmid}: limits not applied: {}",
                    unavailable.join("; ")
                );
            }
            // Hand every controller we have on to the inner cgroup, in one
            // write; one by one if the kernel refuses the whole list.
            let control = "cgroup.subtree_control";
            let all: Vec<String> = here.iter().map(|c| format!("+{c}")).collect();
            if !all.is_empty() && write_at(outer_fd, control, &all.join(" ")).is_err() {
                for c in &all {
                    let _ = write_at(outer_fd, control, c);
                }
            }
            sys::mkdir_at(outer_fd, INNER.as_bytes(), 0o755).map_err(io_err("creating", &inner))?;
            let inner_dir =
                sys::open_dir_at(outer_fd, INNER.as_bytes()).map_err(io_err("opening", &inner))?;
            // Delegation: the container's root owns its sub-tree, as the
            // cgroup v2 documentation asks (the directory and these files; a
            // kernel without `cgroup.threads` has one fewer).
            let owner = idmap.host_base;
            // A privileged container's root is the host's: the monitor
            // made the files, and they are its already.
            let ours = nix::unistd::geteuid().as_raw() == owner
                && nix::unistd::getegid().as_raw() == owner;
            if !ours {
                let fd = inner_dir.as_raw_fd();
                sys::fchown(fd, owner, owner).map_err(io_err("chown", &inner))?;
                for file in ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"] {
                    match sys::lchown_at(fd, file.as_bytes(), owner, owner) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(io_err("chown", &inner.join(file))(e))
                        }
                        _ => {}
                    }
                }
            }
            Ok((inner_dir, unavailable))
        })();
        let (inner_dir, unavailable) = made.inspect_err(|_| {
            let _ = remove_tree(&outer);
        })?;
        Ok(Cgroup {
            outer,
            inner,
            inner_dir,
            unavailable,
        })
    }

    /// Moves process `pid` into the inner cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write_at(self.inner_dir.as_raw_fd(), "cgroup.procs", &pid.to_string())
            .map_err(io_err("writing", &self.inner.join("cgroup.procs")))
    }

    /// Kills every process in the container's cgroups (`cgroup.kill`, or
    /// SIGKILL to each listed process on kernels without it).
    pub fn kill(&self) {
        kill_tree(&self.outer);
    }

    /// True while a process is left in the container's cgroups.
    pub fn is_populated(&self) -> bool {
        fs::read_to_string(self.outer.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// Removes the cgroups (which must be empty of processes), deepest
    /// first: a systemd in the container makes its own below `ns`.
    pub fn remove(&self) -> Result<(), CgroupError> {
        remove_tree(&self.outer).map_err(io_err("removing", &self.outer))
    }
}

/// What interface file `file` of a newly made cgroup holds before anything
/// is written to it, for the limits [`Limits::cgroup_files`] writes.
fn fresh_value(file: &str) -> Option<&'static str> {
    match file {
        "memory.max" | "memory.swap.max" | "pids.max" => Some("max"),
        "cpu.max" => Some("max 100000"),
        "cpu.weight" => Some("100"),
        _ => None,
    }
}

/// Writes `value` to the interface file `name` of the cgroup open as `dir`.
fn write_at(dir: RawFd, name: &str, value: &str) -> io::Result<()> {
    let file = fs::File::from(sys::open_write_at(dir, name.as_bytes())?);
    io::Write::write_all(&mut &file, value.as_bytes())
}

fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn kill_tree(outer: &Path) {
    if fs::write(outer.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Kernels before 5.14: signal each process, deepest cgroups too.
    let mut dirs = vec![outer.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for pid in read_words(&dir.join("cgroup.procs")) {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

/// Removes a cgroup directory and the cgroups below it, deepest first,
/// retrying briefly while the kernel finishes reaping killed processes.
fn remove_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // The kernel releases a cgroup shortly after its last process
            // is reaped; wait up to 2 s for that.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 1000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount() {
        let hybrid = "25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:5 - cgroup2 cgroup2 rw\n\
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            find_v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_v2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            find_v2_mount("27 25 0:24 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(controller_of("memory.swap.max"), "memory");
    }
}
