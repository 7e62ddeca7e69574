//! The node's firewall files (`cluster.fw`, `host.fw`, `<vmid>.fw` in
//! [`FirewallSettings::dir`]) and putting the whole ruleset in force.
//!
//! Every change goes through [`write_validated`]: the changed file and all
//! the others are parsed and compiled together *before* anything is
//! written; then the file is saved atomically and the ruleset applied in
//! one nf_tables transaction ([`apply_firewall`]); if the kernel refuses
//! it, the previous file is put back.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use firewall::{compile, Applier, Features, FwFile, Guest, GuestPort, Input, NetlinkApplier};
use hyper::StatusCode;

use crate::app_state::AppState;
use crate::guests::VmState;
use crate::response::ApiError;

/// Where the firewall files are, and the lock that orders changes.
#[derive(Debug)]
pub struct FirewallSettings {
    /// `cluster.fw`, `host.fw` and `<vmid>.fw` live here.
    pub dir: PathBuf,
    /// Held while a file is changed and the ruleset applied.
    pub lock: tokio::sync::Mutex<()>,
    /// What the kernel's bridge family supports, asked once.
    features: OnceLock<Features>,
}

impl FirewallSettings {
    /// Settings for the files in `dir`.
    pub fn new(dir: &Path) -> FirewallSettings {
        FirewallSettings {
            dir: dir.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
            features: OnceLock::new(),
        }
    }

    fn features(&self) -> Features {
        *self
            .features
            .get_or_init(|| firewall::NftApplier::default().detect_features())
    }

    /// The text of file `name` (empty if it does not exist).
    pub fn read(&self, name: &str) -> Result<String, ApiError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(ApiError::failed(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// The firewall ports of guest `vmid` of the given store: for each `netN`
/// with `firewall=1`, its host interface (`tap<vmid>i<N>` for a VM,
/// `veth<vmid>i<N>` for a container), MAC and configured addresses.
fn guest_ports(config: &guestconf::GuestConfig, vmid: u32, container: bool) -> Vec<GuestPort> {
    let mut ports = Vec::new();
    for entry in config.main().entries() {
        let Some(n) = entry
            .key()
            .strip_prefix("net")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (firewall, mac, ips) = if container {
            let Ok(net) = guestconf::ContainerNet::parse(entry.value()) else {
                continue;
            };
            let mut ips = Vec::new();
            if let Some(guestconf::Ipv4Config::Static { address, prefix }) = net.ip {
                ips.extend(ipnet::IpNet::new(address.into(), prefix).ok());
            }
            if let Some(guestconf::Ipv6Config::Static { address, prefix }) = net.ip6 {
                ips.extend(ipnet::IpNet::new(address.into(), prefix).ok());
            }
            (net.firewall, net.hwaddr, ips)
        } else {
            let Ok(net) = guestconf::NetDevice::parse(entry.value()) else {
                continue;
            };
            (net.firewall, net.macaddr, Vec::new())
        };
        let prefix = if container { "veth" } else { "tap" };
        ports.push(GuestPort {
            net: n,
            iface: format!("{prefix}{vmid}i{n}"),
            mac: mac.map(|m| m.to_string()),
            firewall: firewall == Some(true),
            ips,
        });
    }
    ports
}

fn parse(name: &str, text: &str) -> Result<FwFile, ApiError> {
    FwFile::parse(name, text).map_err(|e| ApiError::parameter("firewall", e.to_string()))
}

/// The compiler's input from the files, with `replace` (a file name and
/// its new text) standing in for that file. Every guest with a
/// configuration is included, so that its `.fw` file is checked; only
/// running guests get ports.
async fn input(
    state: &AppState,
    replace: Option<(&str, &str)>,
    starting: Option<u32>,
) -> Result<Input, ApiError> {
    let fw = &state.firewall;
    let text = |name: &str| -> Result<String, ApiError> {
        match replace {
            Some((n, t)) if n == name => Ok(t.to_owned()),
            _ => fw.read(name),
        }
    };
    let mut running = match state.runtime.states().await {
        Ok(states) => states,
        Err(e) => {
            tracing::debug!("guest states unknown ({e}): no guest ports in the firewall");
            Default::default()
        }
    };
    if let Some(vmid) = starting {
        running.insert(
            vmid,
            VmState::Running {
                pid: 0,
                started_at: 0,
            },
        );
    }
    let mut guests = Vec::new();
    for (store, container) in [(&state.vms, false), (&state.cts, true)] {
        for (vmid, _) in store.list() {
            let name = format!("{vmid}.fw");
            let file = parse(&name, &text(&name)?)?;
            let ports = match (running.get(&vmid), store.get(vmid)) {
                (Some(VmState::Running { .. }), Some(config)) => {
                    guest_ports(&config, vmid, container)
                }
                _ => Vec::new(),
            };
            guests.push(Guest { vmid, file, ports });
        }
    }
    Ok(Input {
        cluster: parse("cluster.fw", &text("cluster.fw")?)?,
        host: parse("host.fw", &text("host.fw")?)?,
        guests,
        features: fw.features(),
    })
}

/// Compiles the firewall from the files in apid's firewall directory and
/// the guests' ports, and puts it in force in one nf_tables transaction
/// (netd's two tables are replaced; on any error the previous ruleset
/// stays). Guests: every VM and container with a configuration; the
/// running ones contribute their `netN` ports with `firewall=1`
/// (`tap<vmid>i<N>` / `veth<vmid>i<N>`, MAC, static IPs).
///
/// Call it after a guest started (its taps or veths exist) or stopped,
/// and after any change of a `.fw` file. Takes the firewall lock, so it
/// never interleaves with an API change of the files.
pub async fn apply_firewall(state: &AppState) -> Result<(), ApiError> {
    let _guard = state.firewall.lock.lock().await;
    apply_locked(state, None).await
}

/// Whether a guest's configuration puts any of its ports under the
/// firewall (`netN: ...,firewall=1`).
pub fn wants_firewall(config: &guestconf::GuestConfig, vmid: u32, container: bool) -> bool {
    guest_ports(config, vmid, container)
        .iter()
        .any(|p| p.firewall)
}

/// [`apply_firewall`] with guest `vmid` counted as running: called just
/// before a guest with `firewall=1` ports starts, so that its ports are
/// filtered from their first frame (the rules match interface names,
/// which need not exist yet).
pub async fn apply_firewall_for_start(state: &AppState, vmid: u32) -> Result<(), ApiError> {
    let _guard = state.firewall.lock.lock().await;
    apply_locked(state, Some(vmid)).await
}

async fn apply_locked(state: &AppState, starting: Option<u32>) -> Result<(), ApiError> {
    let input = input(state, None, starting).await?;
    let ruleset = compile(&input).map_err(|e| ApiError::failed(e.to_string()))?;
    tokio::task::spawn_blocking(move || NetlinkApplier.apply(&ruleset))
        .await
        .map_err(|e| ApiError::failed(format!("firewall apply: {e}")))?
        .map_err(|e| ApiError::failed(format!("cannot apply the firewall: {e}")))
}

/// Writes `text` as file `name` if the whole firewall, with it, compiles;
/// then applies the ruleset. A refused change (400, the compiler's
/// messages with file and line) writes nothing; a ruleset the kernel
/// refuses puts the previous file back. The caller holds the firewall
/// lock.
pub async fn write_validated(state: &AppState, name: &str, text: &str) -> Result<(), ApiError> {
    let mut input = input(state, Some((name, text)), None).await?;
    // Disabled rules (`|IN ...`) and a disabled firewall are checked too,
    // as Proxmox refuses a bad reference whether or not it is in force.
    for file in [&mut input.cluster, &mut input.host]
        .into_iter()
        .chain(input.guests.iter_mut().map(|g| &mut g.file))
    {
        file.rules.iter_mut().for_each(|r| r.enabled = true);
        file.groups
            .iter_mut()
            .flat_map(|g| g.rules.iter_mut())
            .for_each(|r| r.enabled = true);
    }
    input.cluster.options.push(firewall::config::OptionEntry {
        line: 0,
        key: "enable".into(),
        value: "1".into(),
    });
    compile(&input).map_err(|e| ApiError::parameter("firewall", e.to_string()))?;
    let path = state.firewall.dir.join(name);
    let previous = std::fs::read(&path).ok();
    std::fs::create_dir_all(&state.firewall.dir).map_err(|e| {
        ApiError::failed(format!(
            "cannot create {}: {e}",
            state.firewall.dir.display()
        ))
    })?;
    crate::state_dir::write_atomically(&path, text.as_bytes(), 0o640)
        .map_err(|e| ApiError::failed(e.to_string()))?;
    if let Err(e) = apply_locked(state, None).await {
        let restored = match &previous {
            Some(old) => {
                crate::state_dir::write_atomically(&path, old, 0o640).map_err(|e| e.to_string())
            }
            None => std::fs::remove_file(&path).map_err(|e| e.to_string()),
        };
        if let Err(r) = restored {
            tracing::error!("cannot put {} back: {r}", path.display());
        }
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.message));
    }
    Ok(())
}
