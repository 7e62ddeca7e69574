//! The user-namespace id mapping of unprivileged containers, and the
//! identity of privileged ones.

/// A contiguous mapping of container ids `0..count` to host ids
/// `host_base..host_base + count`, the same for users and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The host id of the container's id 0.
    pub host_base: u32,
    /// How many ids are mapped.
    pub count: u32,
}

impl IdMap {
    /// Proxmox's and LXC's default for unprivileged containers:
    /// `lxc.idmap = u 0 100000 65536` and the same for groups.
    pub const DEFAULT: IdMap = IdMap {
        host_base: 100_000,
        count: 65_536,
    };

    /// A privileged container's ids: the host's own (the initial user
    /// namespace's map, `0 0 4294967295`). No user namespace is made.
    pub const IDENTITY: IdMap = IdMap {
        host_base: 0,
        count: u32::MAX,
    };

    /// The host id of container id `id`, or `None` outside the range.
    pub fn to_host(&self, id: u64) -> Option<u32> {
        if id >= u64::from(self.count) {
            return None;
        }
        self.host_base.checked_add(u32::try_from(id).ok()?)
    }

    /// The container id of host id `id`, or `None` outside the range.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        let inner = id.checked_sub(self.host_base)?;
        (inner < self.count).then_some(inner)
    }

    /// The line written to `/proc/<pid>/uid_map` and `gid_map`.
    pub fn proc_map_line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.count)
    }
}

impl Default for IdMap {
    fn default() -> IdMap {
        IdMap::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_within_the_range() {
        let m = IdMap::DEFAULT;
        assert_eq!(m.to_host(0), Some(100_000));
        assert_eq!(m.to_host(65_535), Some(165_535));
        assert_eq!(m.to_host(65_536), None);
        assert_eq!(m.to_host(u64::MAX), None);
        assert_eq!(m.to_container(100_000), Some(0));
        assert_eq!(m.to_container(99_999), None);
        assert_eq!(m.to_container(165_536), None);
        assert_eq!(m.proc_map_line(), "0 100000 65536\n");
        assert_eq!(IdMap::IDENTITY.to_host(0), Some(0));
        assert_eq!(IdMap::IDENTITY.to_host(100_000), Some(100_000));
        assert_eq!(IdMap::IDENTITY.to_container(5), Some(5));
        let top = IdMap {
            host_base: u32::MAX,
            count: 2,
        };
        assert_eq!(top.to_host(1), None);
    }
}
