//! Staged changes to the interfaces file, applied with a safety net.
//!
//! As on Proxmox VE, edits go to `interfaces.new` ([`NetworkFiles::stage`])
//! and an apply reconciles the kernel with it. The files, beside the live
//! `interfaces`:
//!
//! - `interfaces.new`: the staged file;
//! - `interfaces.rollback`: the file in force before the last apply, kept
//!   until the change is confirmed;
//! - `interfaces.pending`: the confirmation deadline (Unix seconds) of an
//!   apply that is not confirmed yet.
//!
//! [`apply_staged`] applies `interfaces.new` and, if asked to, leaves a
//! deadline. Until [`confirm`] removes it, [`check_pending`] (which the
//! daemon calls every second) watches: once the deadline has passed and
//! the [`ManagementProbe`] says the management address no longer answers,
//! it puts the previous file back and applies it. A failed apply is rolled
//! back at once. The pending state is on disk, so a restarted daemon
//! finishes the watch.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fsutil::write_atomic;
use crate::interfaces::{InterfacesErrors, InterfacesFile};
use crate::reconcile::kernel::{self, KernelError};
use crate::reconcile::{plan, Desired, Op, PlanError};
use crate::rtnl::Rtnl;

/// Why a network change failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The file is invalid; nothing was applied.
    #[error("invalid interfaces file: {0}")]
    Invalid(#[source] InterfacesErrors),
    /// No plan could be made; nothing was applied.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The kernel refused an operation after `done` others succeeded.
    #[error("applying failed after {done} changes: {source}")]
    Kernel {
        /// Operations carried out before the failure.
        done: usize,
        /// The failure.
        #[source]
        source: KernelError,
    },
    /// The kernel state could not be read.
    #[error("cannot read the network state: {0}")]
    Observe(#[source] KernelError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// There is no staged file to apply.
    #[error("no staged changes ({0} does not exist)")]
    NothingStaged(PathBuf),
    /// The apply failed and so did putting the previous file back.
    #[error("{error}; rolling back failed too: {rollback}")]
    RollbackFailed {
        /// The apply's failure.
        error: Box<NetworkError>,
        /// The rollback's.
        rollback: Box<NetworkError>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The interfaces file and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFiles {
    /// The live file.
    pub current: PathBuf,
}

impl NetworkFiles {
    /// The default place on an installed node.
    pub const DEFAULT: &'static str = "/etc/oxbow/network/interfaces";

    /// Files around `current`.
    pub fn new(current: impl Into<PathBuf>) -> NetworkFiles {
        NetworkFiles {
            current: current.into(),
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut s = self.current.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// `interfaces.new`.
    pub fn staged_path(&self) -> PathBuf {
        self.sibling(".new")
    }

    /// `interfaces.rollback`.
    pub fn rollback_path(&self) -> PathBuf {
        self.sibling(".rollback")
    }

    /// `interfaces.pending`.
    pub fn pending_path(&self) -> PathBuf {
        self.sibling(".pending")
    }

    /// Takes `interfaces.lock` (an exclusive `flock`), waiting for whoever
    /// holds it: one apply at a time, whether it comes from apid, the
    /// command line, the rollback watch or the link watch. Released when
    /// the returned file is dropped.
    pub async fn lock(&self) -> Result<std::fs::File, NetworkError> {
        use std::os::fd::AsRawFd;
        let path = self.sibling(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory
            // is passed.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(file);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(&path)(e));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn read_opt(path: &Path) -> Result<Option<String>, NetworkError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The live file's text (empty when there is none).
    pub fn current(&self) -> Result<String, NetworkError> {
        Ok(Self::read_opt(&self.current)?.unwrap_or_default())
    }

    /// The staged file's text, if any.
    pub fn staged(&self) -> Result<Option<String>, NetworkError> {
        Self::read_opt(&self.staged_path())
    }

    /// The text to edit: the staged file if there is one, else the live
    /// one (Proxmox's API reads the same way).
    pub fn editable(&self) -> Result<String, NetworkError> {
        match self.staged()? {
            Some(s) => Ok(s),
            None => self.current(),
        }
    }

    /// Checks `text` (against itself and the links in `existing`) and
    /// writes it to `interfaces.new` atomically.
    pub fn stage(&self, text: &str, existing: &[String]) -> Result<(), NetworkError> {
        InterfacesFile::parse_valid(text, existing).map_err(NetworkError::Invalid)?;
        let path = self.staged_path();
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))
    }

    /// Drops the staged file.
    pub fn discard_staged(&self) -> Result<(), NetworkError> {
        let path = self.staged_path();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// The deadline of an unconfirmed apply.
    pub fn pending_deadline(&self) -> Result<Option<SystemTime>, NetworkError> {
        let path = self.pending_path();
        let Some(text) = Self::read_opt(&path)? else {
            return Ok(None);
        };
        // An unreadable deadline counts as passed: better to roll back
        // than to keep an unconfirmed change forever.
        let secs = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)))
    }
}

impl NetworkFiles {
    /// The probe recorded with an unconfirmed apply.
    pub fn pending_probe(&self) -> Result<Option<AddressProbe>, NetworkError> {
        let Some(text) = Self::read_opt(&self.pending_path())? else {
            return Ok(None);
        };
        let mut words = text.lines().nth(1).unwrap_or_default().split_whitespace();
        let Some(address) = words.next().and_then(|w| w.parse().ok()) else {
            return Ok(None);
        };
        let gateway = words.next().and_then(|w| w.parse().ok());
        Ok(Some(AddressProbe { address, gateway }))
    }
}

/// Parses and validates `text` against the kernel, and plans it.
pub async fn plan_text(nl: &Rtnl, text: &str) -> Result<Vec<Op>, NetworkError> {
    let observed = kernel::observe(nl).await.map_err(NetworkError::Observe)?;
    let (_, config) =
        InterfacesFile::parse_valid(text, &observed.link_names()).map_err(NetworkError::Invalid)?;
    Ok(plan(&Desired::from_config(&config), &observed)?)
}

/// Makes the kernel match `text` now. Returns the operations carried out.
/// An invalid file or an impossible plan changes nothing.
pub async fn apply_text(nl: &Rtnl, text: &str) -> Result<Vec<Op>, NetworkError> {
    let ops = plan_text(nl, text).await?;
    kernel::apply(nl, &ops)
        .await
        .map_err(|(done, source)| NetworkError::Kernel { done, source })?;
    Ok(ops)
}

/// What [`apply_staged`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The operations carried out.
    pub ops: Vec<Op>,
    /// When the change is rolled back unless confirmed (and the
    /// management address stops answering).
    pub deadline: Option<SystemTime>,
}

/// Applies `interfaces.new` and makes it the live file. With `confirm`,
/// the previous file is kept and a deadline is set for [`confirm`]; see
/// [`check_pending`]. If the apply fails half-way, the previous file is
/// applied again at once and the error returned.
pub async fn apply_staged(
    nl: &Rtnl,
    files: &NetworkFiles,
    confirm: Option<(Duration, AddressProbe)>,
) -> Result<Applied, NetworkError> {
    let _lock = files.lock().await?;
    let staged = files
        .staged()?
        .ok_or_else(|| NetworkError::NothingStaged(files.staged_path()))?;
    let previous = files.current()?;
    let ops = match apply_text(nl, &staged).await {
        Ok(ops) => ops,
        Err(e @ NetworkError::Kernel { .. }) => {
            tracing::error!("{e}; applying the previous interfaces file again");
            return match apply_text(nl, &previous).await {
                Ok(_) => Err(e),
                Err(r) => Err(NetworkError::RollbackFailed {
                    error: Box::new(e),
                    rollback: Box::new(r),
                }),
            };
        }
        Err(e) => return Err(e),
    };
    let deadline = match confirm {
        Some((t, probe)) => {
            let rb = files.rollback_path();
            write_atomic(&rb, previous.as_bytes()).map_err(io_err(&rb))?;
            let deadline = SystemTime::now() + t;
            let secs = deadline
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .unwrap_or(0);
            let p = files.pending_path();
            let mut text = format!("{secs}\n{}", probe.address);
            if let Some(gw) = probe.gateway {
                text += &format!(" {gw}");
            }
            text.push('\n');
            write_atomic(&p, text.as_bytes()).map_err(io_err(&p))?;
            Some(UNIX_EPOCH + Duration::from_secs(secs))
        }
        None => None,
    };
    let staged_path = files.staged_path();
    std::fs::rename(&staged_path, &files.current).map_err(io_err(&files.current))?;
    if let Some(dir) = files.current.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(Applied { ops, deadline })
}

/// Confirms the last apply: the rollback deadline is dropped. Returns
/// whether one was pending.
pub fn confirm(files: &NetworkFiles) -> Result<bool, NetworkError> {
    let p = files.pending_path();
    let was = match std::fs::remove_file(&p) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(&p)(e)),
    };
    let rb = files.rollback_path();
    match std::fs::remove_file(&rb) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&rb)(e)),
        _ => Ok(was),
    }
}

/// Puts the previous file back and applies it.
pub async fn rollback(nl: &Rtnl, files: &NetworkFiles) -> Result<Vec<Op>, NetworkError> {
    let rb = files.rollback_path();
    let previous = std::fs::read_to_string(&rb).map_err(io_err(&rb))?;
    write_atomic(&files.current, previous.as_bytes()).map_err(io_err(&files.current))?;
    let ops = apply_text(nl, &previous).await?;
    confirm(files)?;
    Ok(ops)
}

/// Tells whether the node's management address still answers.
pub trait ManagementProbe {
    /// `true` while the management address is usable.
    fn answers(&self, nl: &Rtnl) -> impl std::future::Future<Output = bool>;
}

/// The default probe: the address is configured on a link that is up
/// and has a carrier, and, when a gateway is given, the gateway answers a
/// ping sent from the address (three tries, a second each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressProbe {
    /// The management address.
    pub address: std::net::IpAddr,
    /// Its gateway, or another neighbour that should answer.
    pub gateway: Option<std::net::IpAddr>,
}

impl AddressProbe {
    /// The probe for the management bridge `bridge` of a file: its first
    /// IPv4 address (else its first address) and the gateway of that
    /// family. `None` if the bridge has no static address.
    pub fn from_config(config: &crate::interfaces::NetworkConfig, bridge: &str) -> Option<Self> {
        let iface = config.get(bridge)?;
        let (net, _) = iface
            .addresses
            .iter()
            .find(|(a, _)| a.addr().is_ipv4())
            .or_else(|| iface.addresses.first())?;
        let gateway = if net.addr().is_ipv4() {
            iface.gateway
        } else {
            iface.gateway6
        };
        Some(AddressProbe {
            address: net.addr(),
            gateway: gateway.map(|(g, _)| g),
        })
    }
}

/// Watches for an unconfirmed apply until the process ends: every second
/// [`check_pending`] with the probe recorded by [`apply_staged`].
pub async fn watch_pending(nl: Rtnl, files: NetworkFiles) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let probe = match files.pending_probe() {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        match check_pending(&nl, &files, &probe, SystemTime::now()).await {
            Ok(PendingState::RolledBack(ops)) => {
                tracing::warn!("network change rolled back ({} operations)", ops.len())
            }
            Ok(_) => {}
            Err(e) => tracing::error!("checking the unconfirmed network change: {e}"),
        }
    }
}

impl ManagementProbe for AddressProbe {
    async fn answers(&self, nl: &Rtnl) -> bool {
        match nl.link_carrying(self.address).await {
            Ok(Some(l)) if l.up && l.lower_up => {}
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!("cannot check the management address: {e}");
                return false;
            }
        }
        let Some(gw) = self.gateway else {
            return true;
        };
        for _ in 0..3 {
            match crate::ping::ping(self.address, gw, Duration::from_secs(1)).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("cannot ping {gw} from {}: {e}", self.address);
                    return false;
                }
            }
        }
        false
    }
}

/// What [`check_pending`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    /// Nothing waits for confirmation.
    None,
    /// The deadline has not passed.
    Waiting,
    /// The deadline passed but the management address answers: the
    /// change is kept (and counts as confirmed).
    Kept,
    /// The deadline passed and the address did not answer: rolled back.
    RolledBack(Vec<Op>),
}

/// One look at an unconfirmed apply at time `now`; see the module docs.
pub async fn check_pending(
    nl: &Rtnl,
    files: &NetworkFiles,
    probe: &impl ManagementProbe,
    now: SystemTime,
) -> Result<PendingState, NetworkError> {
    let Some(deadline) = files.pending_deadline()? else {
        return Ok(PendingState::None);
    };
    if now < deadline {
        return Ok(PendingState::Waiting);
    }
    let _lock = files.lock().await?;
    if files.pending_deadline()?.is_none() {
        // Confirmed meanwhile.
        return Ok(PendingState::None);
    }
    if probe.answers(nl).await {
        tracing::warn!(
            "network change not confirmed in time, but the management address answers: keeping it"
        );
        confirm(files)?;
        return Ok(PendingState::Kept);
    }
    tracing::error!(
        "network change not confirmed in time and the management address does not answer: rolling back"
    );
    let ops = rollback(nl, files).await?;
    Ok(PendingState::RolledBack(ops))
}

/// Makes the kernel match the live file again if it names link `name`
/// (which just appeared, or changed). Does nothing while there is no live
/// file (an empty plan would delete every link netd owns) or while an
/// apply waits for confirmation (the rollback decides then). Returns the
/// operations carried out.
pub async fn relink(nl: &Rtnl, files: &NetworkFiles, name: &str) -> Result<Vec<Op>, NetworkError> {
    if !files.current.exists() {
        return Ok(Vec::new());
    }
    let _lock = files.lock().await?;
    if files.pending_probe()?.is_some() {
        return Ok(Vec::new());
    }
    let text = match std::fs::read_to_string(&files.current) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&files.current)(e)),
    };
    let named = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .any(|w| w == name);
    if !named {
        return Ok(Vec::new());
    }
    let ops = apply_text(nl, &text).await?;
    if !ops.is_empty() {
        tracing::info!(
            "{name} appeared: {} operations to match the interfaces file",
            ops.len()
        );
    }
    Ok(ops)
}

/// The kernel's `ifi_change` on the `RTM_NEWLINK` that announces a link
/// new to the namespace (registered, or moved in): every flag.
const APPEARED: u32 = u32::MAX;

/// A socket filter that lets through only the `RTM_NEWLINK` messages of
/// links that appeared ([`APPEARED`]), and of those not the ports the
/// runtimes make for guests: `veth` or `tap` and three digits, as in
/// Proxmox's `veth<vmid>i<n>` and `tap<vmid>i<n>` (a VMID has at least
/// three). Every other link event (a port joining a bridge, a carrier, a
/// bridge's features or address changing, a link going away) is dropped
/// in the kernel, so netd is not woken for them: they came by the dozen
/// with every guest start, each a wakeup of netd competing with the start
/// for the CPU, and a guest's own port, which the interfaces file never
/// names, woke it once more (docs/perf.md, "Containers").
///
/// The name is the first attribute of the kernel's link messages
/// (`rtnl_fill_ifinfo` puts `IFLA_IFNAME` first); a message where it is
/// not is let through. Classic BPF loads halfwords and words big-endian:
/// the message type, the attribute type and the name's first bytes are
/// compared byte-swapped or as big-endian text; `ifi_change` is all ones
/// either way.
fn appeared_filter() -> [libc::sock_filter; 24] {
    const fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    use libc::{
        BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE,
        BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_RET, BPF_W,
    };
    // nlmsghdr: len u32, type u16 at 4; ifinfomsg from 16: family u8,
    // pad u8, type u16, index i32, flags u32, change u32 at 16 + 12; the
    // first attribute from 32: len u16, type u16 at 34, the name at 36.
    let newlink_be = u32::from(libc::RTM_NEWLINK.swap_bytes());
    // IFLA_IFNAME, which the libc crate lacks for Linux.
    const IFLA_IFNAME: u16 = 3;
    let ifname_be = u32::from(IFLA_IFNAME.swap_bytes());
    let veth = u32::from_be_bytes(*b"veth");
    let tap = u32::from_be_bytes(*b"tap\0");
    let (zero, nine) = (u32::from(b'0'), u32::from(b'9'));
    // Jump offsets count from the next instruction: DROP is at 22,
    // ACCEPT at 23.
    [
        /* 0 */ op(BPF_LD | BPF_H | BPF_ABS, 0, 0, 4),
        /* 1 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 20, newlink_be),
        /* 2 */ op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 28),
        /* 3 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 18, APPEARED),
        /* 4 */ op(BPF_LD | BPF_H | BPF_ABS, 0, 0, 34),
        /* 5 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 17, ifname_be),
        /* 6 */ op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 36),
        /* 7 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, veth),
        // `veth`: the digits from byte 4 of the name.
        /* 8 */
        op(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 4),
        /* 9 */ op(BPF_JMP | BPF_JA, 0, 0, 3),
        /* 10 */ op(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xffff_ff00),
        /* 11 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 11, tap),
        // `tap`: the digits from byte 3.
        /* 12 */
        op(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 3),
        /* 13 */ op(BPF_LD | BPF_B | BPF_IND, 0, 0, 36),
        /* 14 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 8, zero),
        /* 15 */ op(BPF_JMP | BPF_JGT | BPF_K, 7, 0, nine),
        /* 16 */ op(BPF_LD | BPF_B | BPF_IND, 0, 0, 37),
        /* 17 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 5, zero),
        /* 18 */ op(BPF_JMP | BPF_JGT | BPF_K, 4, 0, nine),
        /* 19 */ op(BPF_LD | BPF_B | BPF_IND, 0, 0, 38),
        /* 20 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 2, zero),
        /* 21 */ op(BPF_JMP | BPF_JGT | BPF_K, 1, 0, nine),
        /* 22: DROP */ op(BPF_RET | BPF_K, 0, 0, 0),
        /* 23: ACCEPT */ op(BPF_RET | BPF_K, 0, 0, u32::MAX),
    ]
}

/// Whether `name` is a port a runtime made for a guest, which
/// [`appeared_filter`] keeps from netd: `veth` or `tap` and three digits.
fn made_for_a_guest(name: &str) -> bool {
    name.strip_prefix("veth")
        .or_else(|| name.strip_prefix("tap"))
        .is_some_and(|rest| rest.len() >= 3 && rest.as_bytes()[..3].iter().all(u8::is_ascii_digit))
}

/// Watches the kernel's link events until the process ends, and calls
/// [`relink`] for every link that appears: a NIC plugged in, or a port (a
/// veth, a tap) deleted and made again, gets its place in the file back
/// (bridge, bond, MTU, VLANs, up) without an operator's apply. Changes to
/// links that exist are not watched (see [`appeared_filter`]). Events
/// that arrive within 200 ms of each other are handled together.
pub async fn watch_links(nl: Rtnl, files: NetworkFiles) {
    use futures_util::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::link::LinkAttribute;
    use rtnetlink::packet_route::RouteNetlinkMessage;

    let (mut conn, _, mut events) =
        match rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link]) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot watch link events: {e}");
                return;
            }
        };
    if let Err(e) = crate::sys::attach_filter(conn.socket_mut(), &appeared_filter()) {
        tracing::warn!("link events not filtered in the kernel: {e}");
    }
    tokio::spawn(conn);
    // The same test in user space, for a kernel that refused the filter.
    let name_of = |payload: NetlinkPayload<RouteNetlinkMessage>| match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
            if m.header.change_mask.bits() == APPEARED =>
        {
            m.attributes
                .into_iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                })
                .filter(|n| !made_for_a_guest(n))
        }
        _ => None,
    };
    while let Some((msg, _)) = events.next().await {
        let mut names: Vec<String> = name_of(msg.payload).into_iter().collect();
        let settle = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = &mut settle => break,
                more = events.next() => match more {
                    Some((m, _)) => names.extend(name_of(m.payload)),
                    None => break,
                },
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            if let Err(e) = relink(&nl, &files, &name).await {
                tracing::warn!("{name} appeared, but the interfaces file was not applied: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link message as the kernel sends it to the link group: the
    /// headers, the name first, then another attribute.
    fn link_message(kind: u16, change: u32, first: u16, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let name_len = name.len() + 1;
        attr.extend_from_slice(&((4 + name_len) as u16).to_ne_bytes());
        attr.extend_from_slice(&first.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.resize(4 + name_len.div_ceil(4) * 4, 0);
        // IFLA_MTU 1500.
        attr.extend_from_slice(&8u16.to_ne_bytes());
        attr.extend_from_slice(&4u16.to_ne_bytes());
        attr.extend_from_slice(&1500u32.to_ne_bytes());
        let mut m = Vec::new();
        m.extend_from_slice(&((32 + attr.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        // ifinfomsg: family, pad, type, index, flags, change.
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&change.to_ne_bytes());
        m.extend_from_slice(&attr);
        m
    }

    /// The link-event filter, run by the kernel on a datagram socket.
    #[test]
    fn only_links_that_appear_and_are_not_guest_ports_pass_the_filter() {
        use std::os::unix::net::UnixDatagram;
        let (tx, rx) = UnixDatagram::pair().unwrap();
        crate::sys::attach_filter(&rx, &appeared_filter()).unwrap();
        rx.set_nonblocking(true).unwrap();
        let new = libc::RTM_NEWLINK;
        let cases: &[(u16, u32, u16, &str, bool)] = &[
            (new, APPEARED, 3, "eno1", true),
            (new, APPEARED, 3, "vmbr0", true),
            (new, APPEARED, 3, "tap0", true),
            (new, APPEARED, 3, "veth0", true),
            (new, APPEARED, 3, "veth12", true),
            (new, APPEARED, 3, "vethx100", true),
            (new, APPEARED, 3, "veth100i0", false),
            (new, APPEARED, 3, "veth999999i3", false),
            (new, APPEARED, 3, "tap100i0", false),
            (new, APPEARED, 3, "tap4242i1", false),
            // The name not first: let through.
            (new, APPEARED, 4, "veth100i0", true),
            // A change to a link that exists, a link going away.
            (new, 1, 3, "eno1", false),
            (libc::RTM_DELLINK, APPEARED, 3, "eno1", false),
        ];
        for (i, (kind, change, first, name, _)) in cases.iter().enumerate() {
            // The index in the message's sequence field, to tell them apart.
            let mut m = link_message(*kind, *change, *first, name);
            m[8..12].copy_from_slice(&(i as u32).to_ne_bytes());
            tx.send(&m).unwrap();
        }
        let mut passed = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = rx.recv(&mut buf) {
            assert!(n >= 12);
            passed.push(u32::from_ne_bytes(buf[8..12].try_into().unwrap()) as usize);
        }
        let expected: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].4).collect();
        let names = |v: &[usize]| v.iter().map(|&i| cases[i].3).collect::<Vec<_>>();
        assert_eq!(names(&passed), names(&expected));
        for (_, _, first, name, pass) in cases {
            if *first == 3 && name.starts_with(['v', 't']) {
                assert_eq!(made_for_a_guest(name), !pass, "{name}");
            }
        }
    }

    #[test]
    fn staging_validates_and_writes_interfaces_new() {
        let dir = tempfile::tempdir().unwrap();
        let files = NetworkFiles::new(dir.path().join("interfaces"));
        assert_eq!(files.editable().unwrap(), "");
        let err = files
            .stage("iface vmbr0 inet manual\n\tbridge-ports eth9\n", &[])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid interfaces file: line 2: vmbr0: unknown interface eth9"
        );
        assert!(files.staged().unwrap().is_none());
        let text = "auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports eth9\n";
        files.stage(text, &["eth9".into()]).unwrap();
        assert_eq!(files.staged().unwrap().as_deref(), Some(text));
        assert_eq!(files.editable().unwrap(), text);
        files.discard_staged().unwrap();
        files.discard_staged().unwrap();
        assert!(files.staged().unwrap().is_none());
    }

    #[test]
    fn pending_file_holds_deadline_and_probe() {
        let dir = tempfile::tempdir().unwrap();
        let files = NetworkFiles::new(dir.path().join("interfaces"));
        assert_eq!(files.pending_deadline().unwrap(), None);
        std::fs::write(files.pending_path(), "100\n192.0.2.10 192.0.2.1\n").unwrap();
        assert_eq!(
            files.pending_deadline().unwrap(),
            Some(UNIX_EPOCH + Duration::from_secs(100))
        );
        assert_eq!(
            files.pending_probe().unwrap(),
            Some(AddressProbe {
                address: "192.0.2.10".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            })
        );
        // A garbled deadline counts as passed.
        std::fs::write(files.pending_path(), "soon\n").unwrap();
        assert_eq!(files.pending_deadline().unwrap(), Some(UNIX_EPOCH));
        assert_eq!(files.pending_probe().unwrap(), None);
        std::fs::write(files.rollback_path(), "old").unwrap();
        assert!(confirm(&files).unwrap());
        assert!(!files.rollback_path().exists());
        assert!(!confirm(&files).unwrap());
    }

    #[test]
    fn probe_from_config_takes_the_bridge_address_and_gateway() {
        let c = InterfacesFile::parse(
            "iface vmbr0 inet static\n\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n\tbridge-ports none\n",
        )
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(
            AddressProbe::from_config(&c, "vmbr0"),
            Some(AddressProbe {
                address: "192.0.2.10".parse().unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
            })
        );
        assert_eq!(AddressProbe::from_config(&c, "vmbr1"), None);
    }
}
