//! Changes to a running guest's network devices that take effect at once,
//! as with Proxmox VE's `network` hotplug: a new bridge, VLAN tag, trunks,
//! rate limit or `link_down` of an existing `net[n]` re-plugs its host
//! port (`tap<vmid>i<n>` or `veth<vmid>i<n>`) and, for a VM, pulls or
//! plugs the virtual cable in the VMM. What would need a new device (a
//! NIC added or removed, another model, MAC, queue count or MTU; for a
//! container another name, MAC, MTU or address) is written to the
//! configuration and takes effect at the next start, as a pending change
//! does under Proxmox.

use guestconf::{ContainerNet, GuestConfig, NetDevice};
use netd::port::PortSpec;

/// One port to re-plug.
#[derive(Debug, Clone, PartialEq)]
pub struct PortChange {
    /// `net<index>`.
    pub index: u32,
    /// The host port.
    pub port: String,
    /// The bridge and port settings it has now.
    pub old: (String, PortSpec),
    /// The ones it gets.
    pub new: (String, PortSpec),
    /// For a VM whose `link_down` changed: whether the guest's NIC gets
    /// its carrier.
    pub link_up: Option<bool>,
}

/// What a configuration change does to a running guest's network.
#[derive(Debug, Default, PartialEq)]
pub struct NetChanges {
    /// Applied now.
    pub live: Vec<PortChange>,
    /// `net[n]` keys whose change waits for the next start, with why.
    pub at_next_start: Vec<(String, &'static str)>,
    /// A port's firewall settings changed: the firewall is compiled
    /// again.
    pub firewall: bool,
}

impl NetChanges {
    /// Whether the firewall is compiled again once the change is written:
    /// a port changed (or its firewall settings did) on a guest that has,
    /// or had, ports under the firewall. Nothing changed live on a guest
    /// that is not running, so such a guest never needs it.
    pub fn touches_firewall(
        &self,
        (old, new): (&GuestConfig, &GuestConfig),
        vmid: u32,
        container: bool,
    ) -> bool {
        (self.firewall || !self.live.is_empty())
            && (crate::firewall::wants_firewall(old, vmid, container)
                || crate::firewall::wants_firewall(new, vmid, container))
    }
}

/// What a changed device needs.
enum Step {
    /// The next start, for this reason.
    Wait(&'static str),
    /// Its port re-plugged from `old` to `new`: (bridge, settings).
    Plug {
        old: (Option<String>, PortSpec),
        new: (Option<String>, PortSpec),
        link_up: Option<bool>,
    },
}

/// The `net[n]` entries of `old` and `new` that differ, parsed by
/// `parse`: `each` decides about a device in both (and says whether its
/// firewall settings changed); one added or removed waits for the next
/// start (`added`, `removed` say why), and so does one without a bridge.
fn walk<T: PartialEq>(
    (old, new): (&GuestConfig, &GuestConfig),
    parse: impl Fn(&str) -> Option<T>,
    port: impl Fn(u32) -> String,
    (added, removed): (&'static str, &'static str),
    each: impl Fn(&T, &T) -> Result<(Step, bool), String>,
) -> Result<NetChanges, String> {
    let nets = |config: &GuestConfig| -> std::collections::BTreeMap<u32, T> {
        config
            .main()
            .entries()
            .filter_map(|e| {
                let index = e.key().strip_prefix("net")?.parse::<u32>().ok()?;
                Some((index, parse(e.value())?))
            })
            .collect()
    };
    let (old, new) = (nets(old), nets(new));
    let mut out = NetChanges::default();
    let indexes: std::collections::BTreeSet<u32> = old.keys().chain(new.keys()).copied().collect();
    for index in indexes {
        let key = format!("net{index}");
        let (a, b) = match (old.get(&index), new.get(&index)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => (a, b),
            (None, _) => {
                out.at_next_start.push((key, added));
                continue;
            }
            (_, None) => {
                out.at_next_start.push((key, removed));
                continue;
            }
        };
        let (step, firewall) = each(a, b).map_err(|e| format!("{key}: {e}"))?;
        out.firewall |= firewall;
        match step {
            Step::Wait(why) => out.at_next_start.push((key, why)),
            Step::Plug {
                old: (Some(old_bridge), old),
                new: (Some(new_bridge), new),
                link_up,
            } => {
                let change = PortChange {
                    index,
                    port: port(index),
                    old: (old_bridge, old),
                    new: (new_bridge, new),
                    link_up,
                };
                if change.old != change.new || link_up.is_some() {
                    out.live.push(change);
                }
            }
            Step::Plug { .. } => out
                .at_next_start
                .push((key, "a bridge is added or taken away at the next start")),
        }
    }
    Ok(out)
}

/// A port's settings from a device's `tag`, `trunks`, `mtu`, `rate` and
/// `link_down`.
fn port_spec(
    tag: Option<u16>,
    trunks: &Option<String>,
    mtu: Option<u32>,
    rate: Option<f64>,
    link_down: Option<bool>,
) -> Result<PortSpec, String> {
    let trunks = match trunks {
        Some(t) => netd::port::parse_trunks(t).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    Ok(PortSpec {
        tag,
        trunks,
        mtu,
        rate: netd::ratelimit::rate_bytes(rate),
        down: link_down == Some(true),
    })
}

/// The host port settings of a VM's NIC (its `tap=` and bridge are the
/// caller's).
pub fn vm_port_spec(n: &NetDevice) -> Result<PortSpec, String> {
    // `mtu=1` is Proxmox's way of saying "the bridge's".
    let mtu = n.mtu.filter(|&m| m != 1);
    port_spec(n.tag, &n.trunks, mtu, n.rate, n.link_down)
}

/// The host port settings of a container's interface.
pub fn ct_port_spec(n: &ContainerNet) -> Result<PortSpec, String> {
    port_spec(n.tag, &n.trunks, n.mtu, n.rate, n.link_down)
}

/// The changes between a running VM's configuration `old` and `new`.
pub fn vm_changes(vmid: u32, old: &GuestConfig, new: &GuestConfig) -> Result<NetChanges, String> {
    walk(
        (old, new),
        |v| NetDevice::parse(v).ok(),
        |index| super::runtime::tap_name(vmid, index),
        (
            "a NIC cannot be added to a running VM",
            "a NIC cannot be removed from a running VM",
        ),
        |a, b| {
            let firewall = a.firewall != b.firewall;
            if a.model != b.model
                || a.macaddr != b.macaddr
                || a.queues != b.queues
                || a.mtu != b.mtu
            {
                let why = "another model, MAC address, queue count or MTU needs a new NIC";
                return Ok((Step::Wait(why), firewall));
            }
            let step = Step::Plug {
                old: (a.bridge.clone(), vm_port_spec(a)?),
                new: (b.bridge.clone(), vm_port_spec(b)?),
                link_up: (a.link_down != b.link_down).then_some(b.link_down != Some(true)),
            };
            Ok((step, firewall))
        },
    )
}

/// The changes between a running container's configuration `old` and
/// `new`.
pub fn ct_changes(vmid: u32, old: &GuestConfig, new: &GuestConfig) -> Result<NetChanges, String> {
    walk(
        (old, new),
        |v| ContainerNet::parse(v).ok(),
        |index| format!("veth{vmid}i{index}"),
        (
            "an interface cannot be added to a running container yet",
            "an interface cannot be removed from a running container yet",
        ),
        |a, b| {
            // The addresses are in the firewall's sets.
            let firewall = a.firewall != b.firewall || a.ip != b.ip || a.ip6 != b.ip6;
            if a.name != b.name
                || a.hwaddr != b.hwaddr
                || a.mtu != b.mtu
                || (&a.ip, &a.gw, &a.ip6, &a.gw6) != (&b.ip, &b.gw, &b.ip6, &b.gw6)
            {
                let why = "another name, MAC address, MTU or address is set up by the next start";
                return Ok((Step::Wait(why), firewall));
            }
            let step = Step::Plug {
                old: (a.bridge.clone(), ct_port_spec(a)?),
                new: (b.bridge.clone(), ct_port_spec(b)?),
                // The container's end loses its carrier with the host end.
                link_up: None,
            };
            Ok((step, firewall))
        },
    )
}

/// Re-plugs each port of `changes`; on a failure the ports already
/// changed get their old settings back and the error names the device.
pub async fn replug(changes: &[PortChange]) -> Result<(), String> {
    let nl = netd::rtnl::Rtnl::connect().map_err(|e| format!("netlink: {e}"))?;
    for (n, c) in changes.iter().enumerate() {
        if let Err(e) = netd::port::replug(&nl, &c.port, &c.new.0, &c.new.1).await {
            put_back(&nl, &changes[..=n]).await;
            return Err(format!("net{}: {}: {e}", c.index, c.port));
        }
    }
    Ok(())
}

/// Puts every port of `changes` back as it was.
pub async fn restore(changes: &[PortChange]) {
    if let Ok(nl) = netd::rtnl::Rtnl::connect() {
        put_back(&nl, changes).await;
    }
}

async fn put_back(nl: &netd::rtnl::Rtnl, changes: &[PortChange]) {
    for c in changes.iter().rev() {
        let _ = netd::port::replug(nl, &c.port, &c.old.0, &c.old.1).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> GuestConfig {
        GuestConfig::parse(text).unwrap()
    }

    #[test]
    fn a_vms_port_settings_change_live_and_a_new_nic_waits() {
        let old = conf(
            "net0: virtio=02:00:00:00:00:01,bridge=vmbr0\n\
             net1: virtio=02:00:00:00:00:02,bridge=vmbr0,tag=5\n\
             net2: virtio=02:00:00:00:00:03,bridge=vmbr0\n",
        );
        let new = conf(
            "net0: virtio=02:00:00:00:00:01,bridge=vmbr1,tag=7,link_down=1,rate=2\n\
             net1: virtio=02:00:00:00:00:09,bridge=vmbr0,tag=5\n\
             net2: virtio=02:00:00:00:00:03,bridge=vmbr0,firewall=1\n\
             net3: virtio=02:00:00:00:00:04,bridge=vmbr0\n",
        );
        let c = vm_changes(100, &old, &new).unwrap();
        assert_eq!(
            c.live,
            [PortChange {
                index: 0,
                port: "tap100i0".into(),
                old: ("vmbr0".into(), PortSpec::default()),
                new: (
                    "vmbr1".into(),
                    PortSpec {
                        tag: Some(7),
                        rate: Some(2 << 20),
                        down: true,
                        ..PortSpec::default()
                    }
                ),
                link_up: Some(false),
            }]
        );
        let keys: Vec<&str> = c.at_next_start.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["net1", "net3"]);
        assert!(c.firewall, "net2's firewall flag changed");
        // Back up: the cable is plugged in again.
        let c = vm_changes(100, &new, &old).unwrap();
        assert_eq!(c.live[0].link_up, Some(true));
        // Nothing changed: nothing to do.
        assert_eq!(vm_changes(100, &old, &old).unwrap(), NetChanges::default());
        // Bad trunks are refused with the device named.
        let bad = conf("net0: virtio=02:00:00:00:00:01,bridge=vmbr0,trunks=9-4\n");
        assert!(vm_changes(100, &old, &bad).unwrap_err().contains("net0"));
    }

    #[test]
    fn a_containers_port_settings_change_live_and_its_addresses_wait() {
        let old = conf(
            "net0: name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:01,ip=dhcp,type=veth\n\
             net1: name=eth1,bridge=vmbr0,hwaddr=02:00:00:00:00:02,ip=dhcp,type=veth\n",
        );
        let new = conf(
            "net0: name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:01,ip=dhcp,tag=20,link_down=1,type=veth\n\
             net1: name=eth1,bridge=vmbr0,hwaddr=02:00:00:00:00:02,ip=10.0.0.2/24,type=veth\n",
        );
        let c = ct_changes(200, &old, &new).unwrap();
        assert_eq!(c.live.len(), 1);
        assert_eq!(c.live[0].port, "veth200i0");
        assert_eq!(
            c.live[0].new.1,
            PortSpec {
                tag: Some(20),
                down: true,
                ..PortSpec::default()
            }
        );
        assert_eq!(c.live[0].link_up, None);
        let keys: Vec<&str> = c.at_next_start.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["net1"]);
        assert!(c.firewall, "net1's address is in the firewall's sets");
    }
}
