//! The daemon: plan, apply, address, signal readiness, keep the lease.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rtnetlink::packet_route::route::RouteProtocol;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::apply;
use crate::dhcp::{self, ClientId, DhcpEvent, Lease, LossReason, UdpTransport};
use crate::fsutil;
use crate::plan::{self, Addressing, IpConfig};
use crate::resolv;
use crate::rtnl::{Link, Rtnl};
use crate::{Config, NetdError};

/// Runs netd until SIGTERM or SIGINT, which end it with `Ok` and leave the
/// network as it is, so that a restarted netd takes over without the node
/// dropping off the network.
pub fn run(cfg: &Config) -> Result<(), NetdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetdError::Runtime)?;
    rt.block_on(serve(cfg))
}

struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn new() -> Result<Stop, NetdError> {
        Ok(Stop {
            term: signal(SignalKind::terminate()).map_err(NetdError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(NetdError::Signal)?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping, the network stays configured"),
            _ = self.int.recv() => tracing::info!("SIGINT: stopping, the network stays configured"),
        }
    }
}

/// Puts the host's part of the firewall in force at start-up (apid applies
/// the whole firewall, guests included). The guests' table is left as it
/// is, so that restarting netd does not drop the rules of running guests.
/// Problems are logged: the node must come up on the network regardless.
fn apply_boot_firewall(dir: &Path) {
    use firewall::Applier;
    if !dir.join("cluster.fw").exists() {
        tracing::debug!("no {}/cluster.fw: no firewall", dir.display());
        return;
    }
    let features = firewall::NftApplier::default().detect_features();
    let ruleset = match firewall::load(dir, vec![], features) {
        Ok(input) => firewall::compile(&input)
            .map(firewall::Ruleset::host_only)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match ruleset.map(|r| firewall::NetlinkApplier.apply(&r).map(|()| r)) {
        Ok(Ok(r)) if r.tables.is_empty() => tracing::info!("firewall disabled in cluster.fw"),
        Ok(Ok(r)) => tracing::info!(
            "firewall: host rules from {} in force ({} rules)",
            dir.display(),
            r.tables.iter().map(|t| t.rule_count()).sum::<usize>()
        ),
        Ok(Err(e)) => tracing::error!("firewall not applied: {e}"),
        Err(e) => tracing::error!("firewall not applied: {e}"),
    }
}

async fn serve(cfg: &Config) -> Result<(), NetdError> {
    // Signals are caught from the start, so that a stop request during
    // set-up ends the process cleanly too.
    let mut stop = Stop::new()?;
    let nl = Rtnl::connect()?;
    apply::loopback_up(&nl).await?;
    apply_boot_firewall(&cfg.firewall_dir);
    // An interfaces change applied but not confirmed (also one left from
    // before a restart) is rolled back if the management address stops
    // answering.
    tokio::spawn(crate::staged::watch_pending(
        nl.clone(),
        crate::staged::NetworkFiles::new(cfg.interfaces.clone()),
    ));
    // A link the live file names that appears (a NIC plugged in, a port
    // made again) is put back where the file wants it.
    tokio::spawn(crate::staged::watch_links(
        nl.clone(),
        crate::staged::NetworkFiles::new(cfg.interfaces.clone()),
    ));
    let plan = tokio::select! {
        plan = wait_for_nic(cfg, &nl, plan::plan(cfg)) => plan,
        () = stop.wait() => return Ok(()),
    };
    let bridge = apply::apply_links(&nl, &plan).await?;
    match plan.addressing {
        Addressing::Static(ip) => {
            let protocol = RouteProtocol::Static;
            let changes = apply::apply_ip(&nl, &bridge, &ip, protocol).await?;
            if changes.any() {
                tracing::info!("{}: {ip} (static)", bridge.name);
            } else {
                tracing::info!("{}: {ip} (static) already configured", bridge.name);
            }
            write_resolv(cfg, &ip, "static, from the answer file")?;
            announce(cfg, &bridge, &ip);
            write_ready(cfg, Some((&ip, "static")))?;
            stop.wait().await;
            Ok(())
        }
        Addressing::Dhcp => dhcp_loop(cfg, &nl, &bridge, plan.hostname, &mut stop).await,
    }
}

async fn dhcp_loop(
    cfg: &Config,
    nl: &Rtnl,
    bridge: &Link,
    hostname: Option<String>,
    stop: &mut Stop,
) -> Result<(), NetdError> {
    let name = bridge.name.as_str();
    warn_on_rp_filter(name);
    let Some(mac) = bridge.mac else {
        return Err(NetdError::NoHardwareAddress(name.to_string()));
    };
    let previous = apply::current_ipv4(nl, bridge).await?;
    if let Some((addr, prefix)) = previous {
        tracing::info!("{name}: has {addr}/{prefix} already; confirming it with the DHCP server");
    }
    wait_for_carrier(cfg, name).await;
    let transport = UdpTransport::open(name)?;
    let client = dhcp::Client::new(transport, ClientId { mac, hostname }, name)
        .with_previous(previous.map(|(a, _)| a));
    let (tx, mut rx) = mpsc::channel(4);
    let client = client.run(tx);
    tokio::pin!(client);
    let ready_timer = tokio::time::sleep(cfg.ready_timeout);
    tokio::pin!(ready_timer);
    let mut ready = false;
    let mut current: Option<Lease> = None;
    loop {
        tokio::select! {
            () = &mut client => return Ok(()),
            Some(event) = rx.recv() => {
                handle_event(cfg, nl, bridge, &mut current, event).await?;
                if current.is_some() {
                    ready = true;
                }
            }
            () = &mut ready_timer, if !ready => {
                tracing::error!(
                    "{name}: no DHCP lease after {} s; the node is not reachable over the network yet; \
                     still trying in the background",
                    cfg.ready_timeout.as_secs()
                );
                write_ready(cfg, None)?;
                ready = true;
            }
            () = stop.wait() => return Ok(()),
        }
    }
}

async fn handle_event(
    cfg: &Config,
    nl: &Rtnl,
    bridge: &Link,
    current: &mut Option<Lease>,
    event: DhcpEvent,
) -> Result<(), NetdError> {
    let name = bridge.name.as_str();
    match event {
        DhcpEvent::Bound(lease) | DhcpEvent::Renewed(lease) => {
            let ip = lease.ip_config();
            let changes = apply::apply_ip(nl, bridge, &ip, RouteProtocol::Dhcp).await?;
            let resolv_changed = write_resolv(cfg, &ip, &format!("dhcp on {name}"))?;
            if changes.any() || current.as_ref() != Some(&lease) {
                tracing::info!("{name}: {lease}");
                for old in &changes.removed {
                    tracing::info!("{name}: removed {old}");
                }
            } else {
                tracing::info!(
                    "{name}: renewed {}/{} (lease {} s)",
                    lease.address,
                    lease.prefix,
                    lease.lease_secs
                );
            }
            if resolv_changed {
                tracing::info!(
                    "{}: name servers {:?}",
                    cfg.resolv_conf.display(),
                    lease.dns
                );
            }
            if current.as_ref().map(|l| (l.address, l.prefix))
                != Some((lease.address, lease.prefix))
            {
                announce(cfg, bridge, &ip);
                write_ready(cfg, Some((&ip, "dhcp")))?;
            }
            *current = Some(lease);
        }
        DhcpEvent::Lost { lease, reason } => {
            let why = match reason {
                LossReason::Expired => "expired",
                LossReason::Refused => "was refused by the server",
            };
            tracing::warn!(
                "{name}: the lease on {} {why}; removing the address",
                lease.address
            );
            apply::remove_ip(nl, bridge, &lease.ip_config()).await?;
            // The file stays (the API keeps running), but says so.
            write_ready(cfg, None)?;
            *current = None;
        }
    }
    Ok(())
}

/// Announces a new IPv4 management address on the bridge (see
/// [`crate::announce`]).
fn announce(cfg: &Config, bridge: &Link, ip: &IpConfig) {
    if let (IpAddr::V4(v4), Some(mac)) = (ip.address, bridge.mac) {
        crate::announce::spawn(
            cfg.sys_class_net.clone(),
            &bridge.name,
            bridge.index,
            mac,
            v4,
        );
    }
}

fn write_resolv(cfg: &Config, ip: &IpConfig, origin: &str) -> Result<bool, NetdError> {
    if ip.dns.is_empty() {
        tracing::warn!(
            "no name servers known; leaving {} alone",
            cfg.resolv_conf.display()
        );
        return Ok(false);
    }
    let text = resolv::render(&ip.dns, ip.search.as_deref(), origin);
    fsutil::write_if_changed(&cfg.resolv_conf, text.as_bytes()).map_err(|source| NetdError::Write {
        path: cfg.resolv_conf.clone(),
        source,
    })
}

/// Writes the ready file: the management address, or `unconfigured` when
/// DHCP has not succeeded yet.
/// Writes the ready file: one line, `ADDRESS/PREFIX[ via GATEWAY] (SOURCE)`
/// or `unconfigured`. init shows it on the console next to "netd is ready".
fn write_ready(cfg: &Config, ip: Option<(&IpConfig, &str)>) -> Result<(), NetdError> {
    let text = match ip {
        Some((ip, source)) => format!("{ip} ({source})\n"),
        None => "unconfigured\n".to_string(),
    };
    fsutil::write_atomic(&cfg.ready_file, text.as_bytes()).map_err(|source| NetdError::Write {
        path: cfg.ready_file.clone(),
        source,
    })?;
    tracing::info!("ready: wrote {}", cfg.ready_file.display());
    Ok(())
}

/// How long DHCP waits for the bridge's carrier before sending anyway.
const CARRIER_WAIT: Duration = Duration::from_secs(3);

/// How long netd waits at start for its NIC when there is none yet (or
/// the one it was given does not exist yet): a driver may still be probing
/// (one loading its firmware, a USB NIC still being enumerated).
const NIC_WAIT: Duration = Duration::from_secs(10);

/// Returns `plan` once its NIC exists: the one named, or the first one
/// [`crate::sysfs::pick_nic`] finds, looking every 100 ms for at most
/// [`NIC_WAIT`]. After that the plan goes on without an uplink, as
/// `apply::apply_links` reports.
async fn wait_for_nic(cfg: &Config, nl: &Rtnl, mut plan: plan::MgmtPlan) -> plan::MgmtPlan {
    let start = tokio::time::Instant::now();
    let mut told = false;
    loop {
        if let Some(name) = &plan.nic {
            // A NIC picked from sysfs is there; only a named one is looked up.
            if cfg.nic.is_none() || matches!(nl.link(name).await, Ok(Some(_))) {
                if told {
                    tracing::info!("{name} appeared after {} ms", start.elapsed().as_millis());
                }
                return plan;
            }
        }
        if start.elapsed() >= NIC_WAIT {
            if plan.nic.is_none() {
                tracing::error!(
                    "no physical Ethernet NIC appeared within {} s; {} will have no uplink",
                    NIC_WAIT.as_secs(),
                    plan.bridge
                );
            }
            return plan;
        }
        if !told {
            told = true;
            let what = plan.nic.as_deref().unwrap_or("a physical Ethernet NIC");
            tracing::info!(
                "waiting up to {} s for {what} to appear",
                NIC_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cfg.nic.is_none() {
            if let Ok(Some(nic)) = crate::sysfs::pick_nic(&cfg.sys_class_net, &plan.bridge) {
                plan.nic = Some(nic.name);
            }
        }
    }
}

/// Waits until the bridge reports a carrier (a port is up and forwarding),
/// for at most [`CARRIER_WAIT`]: a DISCOVER sent before that is dropped, and
/// its retransmission comes a second later. Without a readable `carrier`
/// file (another sysfs layout) it does not wait.
async fn wait_for_carrier(cfg: &Config, bridge: &str) {
    use crate::sysfs::Carrier;
    match crate::sysfs::wait_for_carrier(&cfg.sys_class_net, bridge, CARRIER_WAIT).await {
        Carrier::Up(after) => tracing::info!("{bridge}: carrier after {} ms", after.as_millis()),
        Carrier::TimedOut => tracing::warn!(
            "{bridge}: no carrier after {} s; sending DHCP anyway",
            CARRIER_WAIT.as_secs()
        ),
        Carrier::Unknown => {}
    }
}

/// Before it has an address, the bridge receives the server's broadcast
/// replies only if reverse-path filtering lets packets in from a source it
/// has no route to.
fn warn_on_rp_filter(bridge: &str) {
    let read = |p: &str| {
        std::fs::read_to_string(
            Path::new("/proc/sys/net/ipv4/conf")
                .join(p)
                .join("rp_filter"),
        )
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
    };
    let level = read("all").max(read(bridge));
    if level != 0 {
        tracing::warn!(
            "{bridge}: rp_filter is {level}; DHCP replies may be dropped until {bridge} has an address"
        );
    }
}
