//! What a container is made of, read from its `lxc/<vmid>.conf`: the
//! checked subset of the configuration the runtime acts on.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use guestconf::{ContainerFeatures, ContainerNet, GuestConfig, Ipv4Config, Ipv6Config};

use crate::idmap::IdMap;

/// Why a configuration cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("configuration key '{key}': {message}")]
    Key { key: String, message: String },
    #[error("VMID {0} is out of range (100-999999999)")]
    Vmid(u32),
    #[error("net{index}: two interfaces are named '{name}'")]
    DuplicateName { index: u32, name: String },
}

/// One network interface (`net[n]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The `n` of `net[n]`.
    pub index: u32,
    /// The interface name inside the container (`eth0`).
    pub name: String,
    /// The bridge the host end joins; none leaves it unattached.
    pub bridge: Option<String>,
    /// The MAC address of the container's end.
    pub hwaddr: Option<String>,
    pub ip: Option<Ipv4Config>,
    pub gw: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Config>,
    pub gw6: Option<std::net::Ipv6Addr>,
    pub mtu: Option<u32>,
    /// `tag=`: the VLAN of the host end on a VLAN-aware bridge.
    pub tag: Option<u16>,
    /// `rate=`, in bytes per second each way (`netd::ratelimit`).
    pub rate: Option<u64>,
    /// `trunks=`: VLANs the host end passes tagged on a VLAN-aware
    /// bridge, as inclusive ranges.
    pub trunks: Vec<(u16, u16)>,
    /// `link_down=1`: the host end stays down, as a cable pulled out.
    pub link_down: bool,
}

impl NetSpec {
    /// The host end's name, `veth<vmid>i<n>` as Proxmox names it.
    pub fn host_name(&self, vmid: u32) -> String {
        format!("veth{vmid}i{}", self.index)
    }
}

/// The cgroup limits asked for; `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `memory` in MiB.
    pub memory_mib: Option<u64>,
    /// `swap` in MiB.
    pub swap_mib: Option<u64>,
    /// `cpulimit`: CPUs worth of time (0 = unlimited).
    pub cpulimit: Option<f64>,
    /// `cpuunits`: the relative weight.
    pub cpuunits: Option<u32>,
    /// `lxc.cgroup2.pids.max`.
    pub pids_max: Option<u64>,
}

impl Limits {
    /// The cgroup v2 interface files and values these limits set, in the
    /// order they are written.
    pub fn cgroup_files(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_mib {
            out.push(("memory.max", (m << 20).to_string()));
        }
        if let Some(s) = self.swap_mib {
            out.push(("memory.swap.max", (s << 20).to_string()));
        }
        if let Some(c) = self.cpulimit {
            let period = 100_000u64;
            let quota = if c > 0.0 {
                ((c * period as f64) as u64).max(1000).to_string()
            } else {
                "max".to_string()
            };
            out.push(("cpu.max", format!("{quota} {period}")));
        }
        if let Some(w) = self.cpuunits {
            out.push(("cpu.weight", w.clamp(1, 10_000).to_string()));
        }
        if let Some(p) = self.pids_max {
            out.push(("pids.max", p.to_string()));
        }
        out
    }
}

/// A container as the runtime runs it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub vmid: u32,
    pub hostname: String,
    /// The root directory on the host (the `rootfs` volume's path).
    pub rootfs: PathBuf,
    /// Privileged (`unprivileged: 0` or missing, Proxmox's default): no
    /// user namespace; the container's root is the host's root, less the
    /// dropped capabilities and the seccomp filter.
    pub privileged: bool,
    /// [`IdMap::DEFAULT`] when unprivileged, [`IdMap::IDENTITY`] when
    /// privileged.
    pub idmap: IdMap,
    pub limits: Limits,
    pub nets: Vec<NetSpec>,
    /// `tty`: how many `/dev/tty<n>` the container gets (Proxmox: 2).
    pub ttys: u32,
    /// The program run as PID 1.
    pub init: String,
    /// `ostype`, which decides how the guest's network is configured.
    pub ostype: String,
    pub features: ContainerFeatures,
}

fn key_err(key: &str, message: impl ToString) -> SpecError {
    SpecError::Key {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn number<T>(
    config: &GuestConfig,
    key: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, SpecError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Some(text) = config.get(key) else {
        return Ok(None);
    };
    let value: T = text
        .parse()
        .map_err(|_| key_err(key, format!("'{text}' is not a number")))?;
    if !range.contains(&value) {
        return Err(key_err(
            key,
            format!(
                "{value} is not between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Some(value))
}

impl ContainerSpec {
    /// Reads the main section of a container configuration. `rootfs` is
    /// the host path of its root volume, which the caller resolves through
    /// the storage layer.
    pub fn from_config(
        vmid: u32,
        config: &GuestConfig,
        rootfs: PathBuf,
    ) -> Result<ContainerSpec, SpecError> {
        if !(100..=999_999_999).contains(&vmid) {
            return Err(SpecError::Vmid(vmid));
        }
        for (key, value) in config.main().entries().map(|e| (e.key(), e.value())) {
            if guestconf::is_known_ct_key(key) {
                guestconf::validate_ct_key(key, value).map_err(|m| key_err(key, m))?;
            }
        }
        let privileged = match config.get("unprivileged") {
            Some("1") | Some("on") | Some("yes") | Some("true") => false,
            None | Some("0") | Some("off") | Some("no") | Some("false") => true,
            Some(other) => {
                return Err(key_err(
                    "unprivileged",
                    format!("'{other}' is not a boolean"),
                ))
            }
        };
        let hostname = config
            .get("hostname")
            .map(str::to_string)
            .unwrap_or_else(|| format!("CT{vmid}"));
        let limits = Limits {
            memory_mib: Some(number(config, "memory", 16..=u64::MAX >> 20)?.unwrap_or(512)),
            swap_mib: Some(number(config, "swap", 0..=u64::MAX >> 20)?.unwrap_or(512)),
            cpulimit: number(config, "cpulimit", 0.0..=8192.0)?,
            cpuunits: Some(number(config, "cpuunits", 0..=500_000)?.unwrap_or(100)),
            pids_max: number(config, "lxc.cgroup2.pids.max", 1..=u64::MAX)?,
        };
        let mut nets = Vec::new();
        for entry in config.main().entries() {
            let Some(index) = entry
                .key()
                .strip_prefix("net")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let net = ContainerNet::parse(entry.value()).map_err(|e| key_err(entry.key(), e))?;
            let trunks = match &net.trunks {
                Some(t) => {
                    netd::port::parse_trunks(t).map_err(|e| key_err(entry.key(), e.to_string()))?
                }
                None => Vec::new(),
            };
            if nets.iter().any(|n: &NetSpec| n.name == net.name) {
                return Err(SpecError::DuplicateName {
                    index,
                    name: net.name,
                });
            }
            nets.push(NetSpec {
                index,
                name: net.name,
                bridge: net.bridge,
                hwaddr: net.hwaddr.map(|m| m.to_string()),
                ip: net.ip,
                gw: net.gw,
                ip6: net.ip6,
                gw6: net.gw6,
                mtu: net.mtu,
                rate: netd::ratelimit::rate_bytes(net.rate),
                tag: net.tag,
                trunks,
                link_down: net.link_down == Some(true),
            });
        }
        nets.sort_by_key(|n| n.index);
        let features = match config.get("features") {
            Some(f) => ContainerFeatures::parse(f).map_err(|e| key_err("features", e))?,
            None => ContainerFeatures::default(),
        };
        Ok(ContainerSpec {
            vmid,
            hostname,
            rootfs,
            privileged,
            idmap: if privileged {
                IdMap::IDENTITY
            } else {
                IdMap::DEFAULT
            },
            limits,
            nets,
            ttys: number(config, "tty", 0..=6)?.unwrap_or(2),
            init: "/sbin/init".to_string(),
            ostype: config.get("ostype").unwrap_or("unmanaged").to_string(),
            features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "arch: amd64\nhostname: web1\nmemory: 1024\nswap: 256\ncores: 2\n\
cpulimit: 1.5\ncpuunits: 200\nostype: debian\nunprivileged: 1\n\
net1: name=eth1,bridge=vmbr1,ip=dhcp,type=veth\n\
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=192.0.2.11/24,gw=192.0.2.1,type=veth\n\
rootfs: local:rootdir/101,size=8G\nlxc.cgroup2.pids.max: 500\n";

    #[test]
    fn reads_the_keys_the_runtime_needs() {
        let config = GuestConfig::parse(CONF).unwrap();
        let spec = ContainerSpec::from_config(101, &config, "/r".into()).unwrap();
        assert_eq!(spec.hostname, "web1");
        assert_eq!(spec.ttys, 2);
        assert_eq!(spec.nets.len(), 2);
        assert_eq!(spec.nets[0].name, "eth0");
        assert_eq!(spec.nets[0].host_name(101), "veth101i0");
        assert_eq!(spec.nets[0].hwaddr.as_deref(), Some("BC:24:11:00:00:01"));
        assert_eq!(spec.nets[1].host_name(101), "veth101i1");
        assert_eq!(
            spec.limits.cgroup_files(),
            vec![
                ("memory.max", (1024u64 << 20).to_string()),
                ("memory.swap.max", (256u64 << 20).to_string()),
                ("cpu.max", "150000 100000".to_string()),
                ("cpu.weight", "200".to_string()),
                ("pids.max", "500".to_string()),
            ]
        );
    }

    #[test]
    fn defaults_and_refusals() {
        let config = GuestConfig::parse("unprivileged: 1\n").unwrap();
        let spec = ContainerSpec::from_config(100, &config, "/r".into()).unwrap();
        assert_eq!(spec.hostname, "CT100");
        assert_eq!(spec.limits.memory_mib, Some(512));
        assert_eq!(spec.limits.cpuunits, Some(100));
        assert!(spec.nets.is_empty());
        assert!(!spec.privileged);
        assert_eq!(spec.idmap, IdMap::DEFAULT);
        for text in ["hostname: a\n", "unprivileged: 0\n"] {
            let privileged = GuestConfig::parse(text).unwrap();
            let spec = ContainerSpec::from_config(100, &privileged, "/r".into()).unwrap();
            assert!(spec.privileged, "{text}");
            assert_eq!(spec.idmap, IdMap::IDENTITY);
        }
        let bad = GuestConfig::parse("unprivileged: 1\ncpulimit: lots\n").unwrap();
        let err = ContainerSpec::from_config(100, &bad, "/r".into()).unwrap_err();
        assert!(err.to_string().contains("cpulimit"), "{err}");
        let bad = GuestConfig::parse("unprivileged: 1\nmemory: 1\n").unwrap();
        assert!(ContainerSpec::from_config(100, &bad, "/r".into()).is_err());
        assert!(matches!(
            ContainerSpec::from_config(99, &config, "/r".into()),
            Err(SpecError::Vmid(99))
        ));
        let limits = Limits {
            cpulimit: Some(0.0),
            ..Limits::default()
        };
        assert_eq!(
            limits.cgroup_files(),
            vec![("cpu.max", "max 100000".to_string())]
        );
    }
}
