//! Container keys: `rootfs`, `mp[n]`, `net[n]` and `features`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::disk::parse_index;
use crate::net::{check_interface_name, check_trunks, MacAddr};
use crate::schema::{check_format, rule, Format, PropertyError, Rule, ValueKind};
use crate::volume::{parse_allocation, parse_disk_size, Allocation, VolumeId};

/// The highest `n` of a container's `mp[n]`.
pub const MAX_MOUNT_POINT_INDEX: u32 = 255;
/// The highest `n` of a container's `net[n]`.
pub const MAX_CT_NET_INDEX: u32 = 31;

/// What a container mount point mounts.
#[derive(Debug, Clone, PartialEq)]
pub enum MountSource {
    Volume(VolumeId),
    /// `storage:SIZE_IN_GiB`: allocate a new volume.
    Allocate(Allocation),
    /// A host directory or device, bind-mounted.
    Path(String),
}

impl MountSource {
    pub fn parse(text: &str) -> Result<MountSource, String> {
        if text.starts_with('/') {
            return check_path(text).map(|()| MountSource::Path(text.to_string()));
        }
        if let Some(allocation) = parse_allocation(text) {
            return Ok(MountSource::Allocate(allocation));
        }
        VolumeId::parse(text).map(MountSource::Volume)
    }
}

/// An absolute path without `..` components.
fn check_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err("expected an absolute path".to_string());
    }
    if text.split('/').any(|part| part == "..") {
        return Err("a path may not contain '..'".to_string());
    }
    if text.contains('\0') {
        return Err("a path may not contain NUL".to_string());
    }
    Ok(())
}

fn check_source(text: &str) -> Result<(), String> {
    MountSource::parse(text).map(|_| ())
}

fn check_size(text: &str) -> Result<(), String> {
    parse_disk_size(text).map(|_| ()).map_err(|e| e.to_string())
}

fn check_mount_options(text: &str) -> Result<(), String> {
    const OPTIONS: &[&str] = &[
        "discard", "lazytime", "noatime", "nodev", "noexec", "nosuid",
    ];
    match text.split(';').find(|option| !OPTIONS.contains(option)) {
        Some(bad) => Err(format!(
            "'{}' is not one of {}",
            crate::property_string::excerpt(bad),
            OPTIONS.join(", ")
        )),
        None => Ok(()),
    }
}

const VOLUME_RULES: &[Rule] = &[
    rule("volume", ValueKind::Text(check_source)),
    rule("size", ValueKind::Text(check_size)),
    rule("acl", ValueKind::Boolean),
    rule("quota", ValueKind::Boolean),
    rule("ro", ValueKind::Boolean),
    rule("replicate", ValueKind::Boolean),
    rule("shared", ValueKind::Boolean),
    rule("mountoptions", ValueKind::Text(check_mount_options)),
];

const MOUNT_POINT_RULES: &[Rule] = &[
    rule("mp", ValueKind::Text(check_path)),
    rule("backup", ValueKind::Boolean),
    rule("keepattrs", ValueKind::Boolean),
];

/// A container's `rootfs` or `mp[n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountPoint {
    pub source: MountSource,
    /// Where it is mounted in the container; `/` for `rootfs`.
    pub path: String,
    /// Bytes.
    pub size: Option<u64>,
    pub acl: Option<bool>,
    pub backup: Option<bool>,
    pub quota: Option<bool>,
    pub readonly: Option<bool>,
    pub replicate: Option<bool>,
}

impl MountPoint {
    /// Parses the value of `rootfs` or `mp[n]` (named by `key`).
    pub fn parse(key: &str, text: &str) -> Result<MountPoint, PropertyError> {
        let is_rootfs = key == "rootfs";
        let is_mount_point = key
            .strip_prefix("mp")
            .and_then(parse_index)
            .is_some_and(|index| index <= MAX_MOUNT_POINT_INDEX);
        if !is_rootfs && !is_mount_point {
            return Err(PropertyError::invalid(
                key,
                text,
                "not a mount point key (rootfs, mp0-255)",
            ));
        }
        let rules: &[&[Rule]] = if is_rootfs {
            &[VOLUME_RULES]
        } else {
            &[VOLUME_RULES, MOUNT_POINT_RULES]
        };
        let format = Format {
            rules,
            default_key: Some("volume"),
            aliases: &[],
        };
        let checked = check_format(&format, text)?;
        let source_text = checked.require("volume")?;
        let source = MountSource::parse(source_text)
            .map_err(|r| PropertyError::invalid("volume", source_text, r))?;
        let path = if is_rootfs {
            "/".to_string()
        } else {
            checked.require("mp")?.to_string()
        };
        Ok(MountPoint {
            source,
            path,
            size: checked.get("size").and_then(|s| parse_disk_size(s).ok()),
            acl: checked.bool("acl"),
            backup: checked.bool("backup"),
            quota: checked.bool("quota"),
            readonly: checked.bool("ro"),
            replicate: checked.bool("replicate"),
        })
    }
}

/// How a container interface gets its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv4Config {
    Dhcp,
    Manual,
    Static { address: Ipv4Addr, prefix: u8 },
}

/// How a container interface gets its IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Config {
    Auto,
    Dhcp,
    Manual,
    Static { address: Ipv6Addr, prefix: u8 },
}

fn parse_cidr<A: std::str::FromStr>(text: &str, max_prefix: u8) -> Result<(A, u8), String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX".to_string())?;
    let address = address.parse().map_err(|_| {
        format!(
            "'{}' is not an address",
            crate::property_string::excerpt(address)
        )
    })?;
    let prefix = crate::disk::parse_index(prefix)
        .and_then(|p| u8::try_from(p).ok())
        .filter(|p| *p <= max_prefix)
        .ok_or_else(|| format!("the prefix length must be 0 to {max_prefix}"))?;
    Ok((address, prefix))
}

impl Ipv4Config {
    pub fn parse(text: &str) -> Result<Ipv4Config, String> {
        match text {
            "dhcp" => Ok(Ipv4Config::Dhcp),
            "manual" => Ok(Ipv4Config::Manual),
            _ => {
                parse_cidr(text, 32).map(|(address, prefix)| Ipv4Config::Static { address, prefix })
            }
        }
    }
}

impl Ipv6Config {
    pub fn parse(text: &str) -> Result<Ipv6Config, String> {
        match text {
            "auto" => Ok(Ipv6Config::Auto),
            "dhcp" => Ok(Ipv6Config::Dhcp),
            "manual" => Ok(Ipv6Config::Manual),
            _ => parse_cidr(text, 128)
                .map(|(address, prefix)| Ipv6Config::Static { address, prefix }),
        }
    }
}

const CT_NET_RULES: &[Rule] = &[
    rule("name", ValueKind::Text(check_interface_name)),
    rule("bridge", ValueKind::Text(check_interface_name)),
    rule("hwaddr", ValueKind::Text(|t| MacAddr::parse(t).map(|_| ()))),
    rule("ip", ValueKind::Text(|t| Ipv4Config::parse(t).map(|_| ()))),
    rule(
        "gw",
        ValueKind::Text(|t| {
            t.parse::<Ipv4Addr>()
                .map(|_| ())
                .map_err(|_| "expected an IPv4 address".to_string())
        }),
    ),
    rule("ip6", ValueKind::Text(|t| Ipv6Config::parse(t).map(|_| ()))),
    rule(
        "gw6",
        ValueKind::Text(|t| {
            t.parse::<Ipv6Addr>()
                .map(|_| ())
                .map_err(|_| "expected an IPv6 address".to_string())
        }),
    ),
    rule("tag", ValueKind::Integer { min: 1, max: 4094 }),
    rule("trunks", ValueKind::Text(check_trunks)),
    rule("firewall", ValueKind::Boolean),
    rule("link_down", ValueKind::Boolean),
    rule("host-managed", ValueKind::Boolean),
    rule(
        "mtu",
        ValueKind::Integer {
            min: 64,
            max: 65535,
        },
    ),
    rule("rate", ValueKind::Number),
    rule("type", ValueKind::Enum(&["veth"])),
];

/// A container's network interface, `net[n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerNet {
    /// The interface name inside the container, such as `eth0`.
    pub name: String,
    pub bridge: Option<String>,
    pub hwaddr: Option<MacAddr>,
    pub ip: Option<Ipv4Config>,
    pub gw: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Config>,
    pub gw6: Option<Ipv6Addr>,
    pub tag: Option<u16>,
    /// `trunks=`: VLAN IDs and ranges (`10;20-30`), checked.
    pub trunks: Option<String>,
    pub firewall: Option<bool>,
    pub link_down: Option<bool>,
    pub mtu: Option<u32>,
    pub rate: Option<f64>,
}

impl ContainerNet {
    pub fn parse(text: &str) -> Result<ContainerNet, PropertyError> {
        let format = Format {
            rules: &[CT_NET_RULES],
            default_key: None,
            aliases: &[],
        };
        let checked = check_format(&format, text)?;
        Ok(ContainerNet {
            name: checked.require("name")?.to_string(),
            bridge: checked.string("bridge"),
            hwaddr: checked.get("hwaddr").and_then(|m| MacAddr::parse(m).ok()),
            ip: checked.get("ip").and_then(|t| Ipv4Config::parse(t).ok()),
            gw: checked.get("gw").and_then(|t| t.parse().ok()),
            ip6: checked.get("ip6").and_then(|t| Ipv6Config::parse(t).ok()),
            gw6: checked.get("gw6").and_then(|t| t.parse().ok()),
            tag: checked.integer("tag"),
            trunks: checked.string("trunks"),
            firewall: checked.bool("firewall"),
            link_down: checked.bool("link_down"),
            mtu: checked.integer("mtu"),
            rate: checked.number("rate"),
        })
    }
}

fn check_fs_types(text: &str) -> Result<(), String> {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_; ".contains(&b))
    {
        Ok(())
    } else {
        Err("expected file system types separated by ';'".to_string())
    }
}

const FEATURE_RULES: &[Rule] = &[
    rule("nesting", ValueKind::Boolean),
    rule("keyctl", ValueKind::Boolean),
    rule("fuse", ValueKind::Boolean),
    rule("mknod", ValueKind::Boolean),
    rule("force_rw_sys", ValueKind::Boolean),
    rule("mount", ValueKind::Text(check_fs_types)),
];

/// A container's `features`; absent flags are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFeatures {
    pub nesting: bool,
    pub keyctl: bool,
    pub fuse: bool,
    pub mknod: bool,
    pub force_rw_sys: bool,
    /// File system types the container may mount (`nfs;cifs`).
    pub mount: Vec<String>,
}

impl ContainerFeatures {
    pub fn parse(text: &str) -> Result<ContainerFeatures, PropertyError> {
        let format = Format {
            rules: &[FEATURE_RULES],
            default_key: None,
            aliases: &[],
        };
        let checked = check_format(&format, text)?;
        let flag = |key| checked.bool(key).unwrap_or(false);
        Ok(ContainerFeatures {
            nesting: flag("nesting"),
            keyctl: flag("keyctl"),
            fuse: flag("fuse"),
            mknod: flag("mknod"),
            force_rw_sys: flag("force_rw_sys"),
            mount: checked
                .get("mount")
                .map(|m| {
                    m.split(';')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_and_mount_points() {
        let root = MountPoint::parse("rootfs", "local-lvm:vm-101-disk-0,size=8G").unwrap();
        assert_eq!(root.path, "/");
        assert_eq!(root.size, Some(8 << 30));
        let mp = MountPoint::parse(
            "mp0",
            "local-lvm:vm-101-disk-1,mp=/srv/data,backup=1,acl=1,size=20G",
        )
        .unwrap();
        assert_eq!(mp.path, "/srv/data");
        assert_eq!(mp.backup, Some(true));
        let bind = MountPoint::parse("mp1", "/mnt/media,mp=/media,ro=1").unwrap();
        assert_eq!(bind.source, MountSource::Path("/mnt/media".into()));
        let alloc = MountPoint::parse("rootfs", "local-lvm:8").unwrap();
        assert!(matches!(alloc.source, MountSource::Allocate(_)));
    }

    #[test]
    fn mount_point_errors() {
        for (key, text, needle) in [
            ("mp0", "local-lvm:vm-101-disk-1", "'mp' is required"),
            (
                "rootfs",
                "local-lvm:vm-101-disk-0,mp=/",
                "unknown property 'mp'",
            ),
            (
                "rootfs",
                "local-lvm:vm-101-disk-0,backup=1",
                "unknown property 'backup'",
            ),
            ("mp0", "/mnt/../etc,mp=/x", "'..'"),
            ("mp0", "local:x,mp=relative", "absolute path"),
            (
                "mp0",
                "local:x,mp=/x,mountoptions=noatime;sync",
                "'sync' is not one of",
            ),
            ("mp256", "local:x,mp=/x", "not a mount point key"),
        ] {
            let error = MountPoint::parse(key, text).unwrap_err().to_string();
            assert!(error.contains(needle), "{key}: {text}: {error}");
        }
    }

    #[test]
    fn container_net() {
        let net = ContainerNet::parse("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:5E:7A:01,ip=192.168.1.20/24,gw=192.168.1.1,ip6=auto,type=veth,firewall=1").unwrap();
        assert_eq!(net.name, "eth0");
        assert_eq!(
            net.ip,
            Some(Ipv4Config::Static {
                address: Ipv4Addr::new(192, 168, 1, 20),
                prefix: 24
            })
        );
        assert_eq!(net.ip6, Some(Ipv6Config::Auto));
        assert_eq!(
            ContainerNet::parse("name=eth1,ip=dhcp,ip6=fd00::5/64")
                .unwrap()
                .ip,
            Some(Ipv4Config::Dhcp)
        );
        for (text, needle) in [
            ("bridge=vmbr0", "'name' is required"),
            ("eth0", "no default key"),
            ("name=eth0,ip=192.168.1.300/24", "not an address"),
            ("name=eth0,ip=192.168.1.3/33", "prefix length"),
            ("name=eth0,ip=192.168.1.3", "ADDRESS/PREFIX"),
            ("name=eth0,gw=fe80::1", "IPv4"),
            ("name=eth0,type=macvlan", "expected one of: veth"),
            ("name=eth0,mtu=63", "between 64 and 65535"),
        ] {
            let error = ContainerNet::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn features() {
        let features = ContainerFeatures::parse("nesting=1,keyctl=1,mount=nfs;cifs").unwrap();
        assert!(features.nesting && features.keyctl && !features.fuse);
        assert_eq!(features.mount, ["nfs", "cifs"]);
        assert!(ContainerFeatures::parse("nesting=2").is_err());
        assert!(ContainerFeatures::parse("docker=1").is_err());
        assert!(ContainerFeatures::parse("mount=nfs,cifs").is_err());
    }
}
