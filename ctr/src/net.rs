//! A container's network links: one veth pair per `net[n]`. The host end,
//! `veth<vmid>i<n>`, joins the configured bridge with the bridge's MTU
//! and, on a VLAN-aware bridge, the `tag` as its untagged PVID
//! (`netd::port`, shared with the VMs' taps);
//! the other end is created directly in the container's network
//! namespace under its configured name (`eth0`) and MAC address. The
//! guest's own network configuration brings it up.
//!
//! Links are made with iproute2's `ip` (in the system image). When the
//! container's network namespace goes away, the kernel deletes both ends
//! of every pair, so nothing is left behind even after a crash.

use std::process::Command;

use crate::spec::NetSpec;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net{index}: bridge '{bridge}' does not exist")]
    NoBridge { index: u32, bridge: String },
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("net{index}: {source}")]
    Port {
        index: u32,
        #[source]
        source: netd::port::PortError,
    },
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// What `ip -details link show` says about a link: whether it is a
/// bridge, and its MTU. Asked of `ip` rather than read from `/sys/class/net`,
/// which shows the network namespace of whoever mounted `/sys`, not
/// necessarily ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub is_bridge: bool,
    pub mtu: Option<u32>,
}

/// Reads one line of `ip -o -d link show` output.
pub fn parse_link_line(line: &str) -> LinkInfo {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mtu = words
        .iter()
        .position(|w| *w == "mtu")
        .and_then(|i| words.get(i + 1))
        .and_then(|m| m.parse().ok());
    // The details start after the link-layer address line; the kind is
    // the first word after a backslash-separated "\    " break.
    let is_bridge = line
        .split('\\')
        .skip(1)
        .any(|part| part.split_whitespace().next() == Some("bridge"));
    LinkInfo { is_bridge, mtu }
}

/// The link `name` in the current network namespace, if it exists.
pub fn link_info(name: &str) -> Option<LinkInfo> {
    let out = Command::new("ip")
        .args(["-o", "-d", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_link_line(&String::from_utf8_lossy(&out.stdout)))
}

/// True if a link named `name` exists in the current network namespace.
pub fn link_exists(name: &str) -> bool {
    link_info(name).is_some()
}

/// Deletes the link `name` if it exists (deleting one end of a veth pair
/// deletes both).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if link_exists(name) {
        ip(&["link", "del", name])?;
    }
    Ok(())
}

/// Creates the veth pairs of `nets` for container `vmid`, whose network
/// namespace is that of process `pid`. Returns the host ends' names. On an
/// error, the pairs already made are deleted again.
pub fn create_veths(vmid: u32, pid: i32, nets: &[NetSpec]) -> Result<Vec<String>, NetError> {
    let mut made = Vec::new();
    for net in nets {
        match create_veth(vmid, pid, net) {
            Ok(name) => made.push(name),
            Err(e) => {
                for name in &made {
                    let _ = delete_link(name);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

fn create_veth(vmid: u32, pid: i32, net: &NetSpec) -> Result<String, NetError> {
    let host = net.host_name(vmid);
    let bridge_info = match &net.bridge {
        Some(bridge) => match link_info(bridge) {
            Some(info) if info.is_bridge => Some(info),
            _ => {
                return Err(NetError::NoBridge {
                    index: net.index,
                    bridge: bridge.clone(),
                })
            }
        },
        None => None,
    };
    // A pair left by a monitor that was killed while its container's
    // namespace lived on cannot exist (the pair dies with the namespace),
    // but a same-named link made by hand would block us: say so.
    if link_exists(&host) {
        tracing::warn!("deleting the existing link {host}");
        delete_link(&host)?;
    }
    let mtu = net
        .mtu
        .or(bridge_info.and_then(|b| b.mtu))
        .map(|m| m.to_string());
    let pid = pid.to_string();
    let mut args = vec!["link", "add", host.as_str()];
    if let Some(m) = &mtu {
        args.extend(["mtu", m.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", net.name.as_str()]);
    if let Some(m) = &mtu {
        args.extend(["mtu", m.as_str()]);
    }
    if let Some(mac) = &net.hwaddr {
        args.extend(["address", mac.as_str()]);
    }
    args.extend(["netns", pid.as_str()]);
    ip(&args)?;
    let attach = || -> Result<(), NetError> {
        match &net.bridge {
            Some(bridge) => {
                let spec = netd::port::PortSpec {
                    tag: net.tag,
                    trunks: Vec::new(),
                    mtu: net.mtu,
                };
                netd::port::attach_blocking(&host, bridge, &spec).map_err(|source| NetError::Port {
                    index: net.index,
                    source,
                })
            }
            None => ip(&["link", "set", &host, "up"]),
        }
    };
    if let Err(e) = attach() {
        let _ = delete_link(&host);
        return Err(e);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_link_details() {
        let bridge = "5: br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 6e:0d:2b:38:1a:30 brd ff:ff:ff:ff:ff:ff promiscuity 0 allmulti 0 minmtu 68 maxmtu 65535 \\    bridge forward_delay 1500 hello_time 200 max_age 2000";
        assert_eq!(
            parse_link_line(bridge),
            LinkInfo {
                is_bridge: true,
                mtu: Some(1500)
            }
        );
        let veth = "7: veth101i0@if2: <BROADCAST,MULTICAST> mtu 9000 qdisc noop master br0 state DOWN\\    link/ether 2a:1b:00:00:00:01 brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 1 \\    veth \\    bridge_slave state disabled priority 32";
        assert_eq!(
            parse_link_line(veth),
            LinkInfo {
                is_bridge: false,
                mtu: Some(9000)
            }
        );
    }
}
