//! The files the runtime writes into the guest before its init starts:
//! the host name and the network configuration in the distribution's own
//! format, as Proxmox does. They are written from inside the container,
//! after `pivot_root` and as the container's root, so a link the guest
//! placed at one of these paths resolves inside the guest's own tree.

use std::ffi::CString;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use guestconf::{Ipv4Config, Ipv6Config};

use crate::spec::{ContainerSpec, NetSpec};

/// Marks the files (or lines) the runtime manages.
pub const MARKER: &str = "# --- managed by Oxbow from the container's configuration ---";

/// How a guest configures its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetStyle {
    /// ifupdown's `/etc/network/interfaces` (Debian, Devuan).
    Ifupdown,
    /// systemd-networkd's `/etc/systemd/network/<name>.network`.
    Networkd,
    /// Nothing is written.
    None,
}

/// Picks the style for a guest whose root is `root`: ifupdown when the
/// guest has `/etc/network`, else networkd when it has
/// `/etc/systemd/network`; `unmanaged` guests get nothing.
pub fn net_style(ostype: &str, root: &Path) -> NetStyle {
    net_style_with(ostype, |rel| root.join(rel).is_dir())
}

/// [`net_style`] with the question "is `rel` (below the root) a
/// directory" asked of `is_dir`.
fn net_style_with(ostype: &str, is_dir: impl Fn(&str) -> bool) -> NetStyle {
    if ostype == "unmanaged" {
        return NetStyle::None;
    }
    if is_dir("etc/network") {
        NetStyle::Ifupdown
    } else if is_dir("etc/systemd/network") {
        NetStyle::Networkd
    } else {
        NetStyle::None
    }
}

/// `/etc/network/interfaces` for `nets`.
pub fn interfaces(nets: &[NetSpec]) -> String {
    let mut out = format!("{MARKER}\nauto lo\niface lo inet loopback\n");
    for net in nets {
        let name = &net.name;
        let mut auto = false;
        let mut body = String::new();
        match &net.ip {
            Some(Ipv4Config::Static { address, prefix }) => {
                auto = true;
                // Address and netmask apart: ifupdown, ifupdown2 and
                // busybox's ifup all read this form.
                let _ = writeln!(body, "\niface {name} inet static");
                let _ = writeln!(body, "\taddress {address}");
                let _ = writeln!(body, "\tnetmask {}", netmask(*prefix));
                if let Some(gw) = net.gw {
                    let _ = writeln!(body, "\tgateway {gw}");
                }
            }
            Some(Ipv4Config::Dhcp) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet dhcp");
            }
            Some(Ipv4Config::Manual) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet manual");
            }
            None => {}
        }
        match &net.ip6 {
            Some(Ipv6Config::Static { address, prefix }) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 static");
                let _ = writeln!(body, "\taddress {address}/{prefix}");
                if let Some(gw) = net.gw6 {
                    let _ = writeln!(body, "\tgateway {gw}");
                }
            }
            Some(Ipv6Config::Dhcp) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 dhcp");
            }
            Some(Ipv6Config::Auto) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 auto");
            }
            Some(Ipv6Config::Manual) => {
                auto = true;
                let _ = writeln!(body, "\niface {name} inet6 manual");
            }
            None => {}
        }
        if auto {
            let _ = write!(out, "\nauto {name}");
            out.push_str(&body);
        }
    }
    out
}

/// The dotted netmask of a prefix length.
fn netmask(prefix: u8) -> std::net::Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(bits)
}

/// A systemd-networkd unit for one interface.
pub fn networkd_unit(net: &NetSpec) -> String {
    let mut out = format!("{MARKER}\n[Match]\nName={}\n\n[Network]\n", net.name);
    let dhcp = match (&net.ip, &net.ip6) {
        (Some(Ipv4Config::Dhcp), Some(Ipv6Config::Dhcp)) => Some("yes"),
        (Some(Ipv4Config::Dhcp), _) => Some("ipv4"),
        (_, Some(Ipv6Config::Dhcp)) => Some("ipv6"),
        _ => None,
    };
    if let Some(d) = dhcp {
        let _ = writeln!(out, "DHCP={d}");
    }
    if let Some(Ipv4Config::Static { address, prefix }) = &net.ip {
        let _ = writeln!(out, "Address={address}/{prefix}");
    }
    if let Some(gw) = net.gw {
        let _ = writeln!(out, "Gateway={gw}");
    }
    if let Some(Ipv6Config::Static { address, prefix }) = &net.ip6 {
        let _ = writeln!(out, "Address={address}/{prefix}");
    }
    if let Some(gw) = net.gw6 {
        let _ = writeln!(out, "Gateway={gw}");
    }
    let accept_ra = matches!(net.ip6, Some(Ipv6Config::Auto));
    let _ = writeln!(
        out,
        "IPv6AcceptRA={}",
        if accept_ra { "true" } else { "false" }
    );
    out
}

/// `/etc/hosts` with the `127.0.1.1` line naming `hostname`; other lines
/// are kept.
pub fn hosts(current: &str, hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_string()
    } else {
        format!("{hostname} {short}")
    };
    let mut out = String::new();
    let mut replaced = false;
    for line in current.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !replaced {
                let _ = writeln!(out, "127.0.1.1\t{names}");
                replaced = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !replaced {
        if !current
            .lines()
            .any(|l| l.split_whitespace().next() == Some("127.0.0.1"))
        {
            out.push_str("127.0.0.1\tlocalhost\n");
        }
        let _ = writeln!(out, "127.0.1.1\t{names}");
    }
    out
}

/// Writes `contents` to `path` atomically: a temporary file beside it,
/// fsync, rename. [`plan_guest_files`] has already left out the files that
/// hold what they should, so a restart costs no disk flush.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.oxbow-new"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The guest's host name and network files that differ from what they
/// should be, by their paths below the guest's root (`etc/hosts`), read
/// by [`plan_guest_files`] or [`plan_in_root`]: a start reads and compares
/// them while it waits for the network, and writes them (from inside the
/// container, [`GuestFiles::prepared`]) only once the network is made.
#[derive(Debug, Default)]
pub struct GuestFiles {
    changes: Vec<(String, Vec<u8>)>,
}

/// One file to write from inside the container, as C strings for the
/// container's first process, which makes its system calls itself
/// (docs/ctr.md, "Namespace order").
#[derive(Debug)]
pub struct PreparedFile {
    /// `/etc/hosts`.
    pub path: CString,
    /// `/etc/.hosts.oxbow-new`, renamed over `path` once written.
    pub tmp: CString,
    /// `/etc`, synced after the rename and made if it is missing.
    pub dir: CString,
    pub contents: Vec<u8>,
}

impl GuestFiles {
    /// Writes each changed file below `root` (atomically: temporary file,
    /// fsync, rename).
    pub fn write(self, root: &Path) -> io::Result<()> {
        for (rel, contents) in self.changes {
            write_atomic(&root.join(rel), &contents, 0o644)?;
        }
        Ok(())
    }

    /// The files that would be written, below the root.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().map(|(p, _)| p.as_str())
    }

    /// The changes as the container's first process writes them, by their
    /// paths in the container.
    pub fn prepared(&self) -> Vec<PreparedFile> {
        self.changes
            .iter()
            .map(|(rel, contents)| {
                let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
                let c = |s: String| CString::new(s).expect("no NUL in a guest file's path");
                PreparedFile {
                    path: c(format!("/{rel}")),
                    tmp: c(format!("/{dir}/.{name}.oxbow-new")),
                    dir: c(format!("/{dir}")),
                    contents: contents.clone(),
                }
            })
            .collect()
    }
}

/// Reads the host name and network files of the guest whose root is
/// `root` (following links as the host sees them: for trees the host
/// made, as in tests) and keeps those that differ from what `spec` says.
pub fn plan_guest_files(spec: &ContainerSpec, root: &Path) -> GuestFiles {
    plan_with(
        spec,
        |rel| std::fs::read(root.join(rel)).ok(),
        |rel| root.join(rel).is_dir(),
    )
}

/// [`plan_guest_files`] for a container's tree read from the host: every
/// path resolves as it would inside the container (`RESOLVE_IN_ROOT`, no
/// magic links, no other mounts), so a link the guest placed cannot make
/// the host read one of its own files.
pub fn plan_in_root(spec: &ContainerSpec, root: &Path) -> io::Result<GuestFiles> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let root_fd = crate::sys::open_dir(root)?;
    let root_fd = root_fd.as_raw_fd();
    Ok(plan_with(
        spec,
        |rel| {
            let f = crate::sys::open_file_in_root(root_fd, rel).ok()?;
            let mut data = Vec::new();
            std::fs::File::from(f)
                .take(1 << 20)
                .read_to_end(&mut data)
                .ok()?;
            Some(data)
        },
        |rel| crate::sys::open_dir_in_root(root_fd, Path::new(rel)).is_ok(),
    ))
}

fn plan_with(
    spec: &ContainerSpec,
    read: impl Fn(&str) -> Option<Vec<u8>>,
    is_dir: impl Fn(&str) -> bool,
) -> GuestFiles {
    let mut wanted: Vec<(String, String)> =
        vec![("etc/hostname".into(), format!("{}\n", spec.hostname))];
    let current = read("etc/hosts").and_then(|b| String::from_utf8(b).ok());
    let hosts = hosts(current.as_deref().unwrap_or_default(), &spec.hostname);
    let mut plan = GuestFiles::default();
    if current.as_deref() != Some(hosts.as_str()) {
        plan.changes.push(("etc/hosts".into(), hosts.into_bytes()));
    }
    match net_style_with(&spec.ostype, is_dir) {
        NetStyle::Ifupdown => {
            wanted.push(("etc/network/interfaces".into(), interfaces(&spec.nets)));
        }
        NetStyle::Networkd => {
            for net in &spec.nets {
                let path = format!("etc/systemd/network/eth-oxbow-{}.network", net.name);
                wanted.push((path, networkd_unit(net)));
            }
        }
        NetStyle::None => {}
    }
    for (rel, contents) in wanted {
        if read(&rel).as_deref() != Some(contents.as_bytes()) {
            plan.changes.push((rel, contents.into_bytes()));
        }
    }
    plan
}

/// Writes the host name and network files into the guest whose root is
/// `root`.
pub fn write_guest_files(spec: &ContainerSpec, root: &Path) -> io::Result<()> {
    plan_guest_files(spec, root).write(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, ip: Option<Ipv4Config>, gw: Option<&str>) -> NetSpec {
        NetSpec {
            index: 0,
            name: name.into(),
            bridge: None,
            hwaddr: None,
            ip,
            gw: gw.map(|g| g.parse().unwrap()),
            ip6: None,
            gw6: None,
            mtu: None,
            tag: None,
            rate: None,
            trunks: Vec::new(),
            link_down: false,
        }
    }

    #[test]
    fn interfaces_file_has_static_and_dhcp_stanzas() {
        let nets = [
            net(
                "eth0",
                Some(Ipv4Config::Static {
                    address: "192.0.2.11".parse().unwrap(),
                    prefix: 24,
                }),
                Some("192.0.2.1"),
            ),
            net("eth1", Some(Ipv4Config::Dhcp), None),
            net("eth2", None, None),
        ];
        let text = interfaces(&nets);
        assert_eq!(
            text,
            format!(
                "{MARKER}\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\
                 \taddress 192.0.2.11\n\tnetmask 255.255.255.0\n\tgateway 192.0.2.1\n\nauto eth1\niface eth1 inet dhcp\n"
            )
        );
        assert_eq!(netmask(0).to_string(), "0.0.0.0");
        assert_eq!(netmask(20).to_string(), "255.255.240.0");
        assert_eq!(netmask(32).to_string(), "255.255.255.255");
        let unit = networkd_unit(&nets[1]);
        assert!(
            unit.contains("Name=eth1\n") && unit.contains("DHCP=ipv4\n"),
            "{unit}"
        );
    }

    #[test]
    fn hosts_line_is_replaced_or_added() {
        assert_eq!(
            hosts(
                "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1 ip6-localhost\n",
                "web.example.org"
            ),
            "127.0.0.1\tlocalhost\n127.0.1.1\tweb.example.org web\n::1 ip6-localhost\n"
        );
        assert_eq!(hosts("", "web"), "127.0.0.1\tlocalhost\n127.0.1.1\tweb\n");
    }

    #[test]
    fn a_guest_link_is_read_inside_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let secret = dir.path().join("host-file");
        std::fs::write(&secret, "10.0.0.1 host-secret\n").unwrap();
        // The guest's /etc/hosts points at a file of the host.
        std::os::unix::fs::symlink(&secret, root.join("etc/hosts")).unwrap();
        let config =
            guestconf::GuestConfig::parse("unprivileged: 1\nhostname: ct1\nostype: unmanaged\n")
                .unwrap();
        let spec = ContainerSpec::from_config(101, &config, root.clone()).unwrap();
        let plan = plan_in_root(&spec, &root).unwrap();
        let (_, hosts) = plan
            .changes
            .iter()
            .find(|(p, _)| p == "etc/hosts")
            .expect("/etc/hosts is to be written");
        let hosts = String::from_utf8_lossy(hosts);
        assert!(!hosts.contains("host-secret"), "{hosts}");
        assert!(hosts.contains("127.0.1.1\tct1\n"), "{hosts}");
    }

    #[test]
    fn writes_into_a_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/network")).unwrap();
        let config = guestconf::GuestConfig::parse(
            "unprivileged: 1\nhostname: ct1\nostype: debian\nnet0: name=eth0,bridge=br0,ip=dhcp\n",
        )
        .unwrap();
        let spec = ContainerSpec::from_config(101, &config, dir.path().into()).unwrap();
        write_guest_files(&spec, dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/hostname"), "ct1\n");
        assert!(read("etc/hosts").contains("127.0.1.1\tct1\n"));
        assert!(read("etc/network/interfaces").contains("iface eth0 inet dhcp\n"));
        // Once written, nothing is left to change.
        let again = plan_guest_files(&spec, dir.path());
        assert_eq!(again.paths().count(), 0);
        // A changed host name changes the two files that carry it, and a
        // plan writes nothing until it is written.
        let renamed = guestconf::GuestConfig::parse(
            "unprivileged: 1\nhostname: ct2\nostype: debian\nnet0: name=eth0,bridge=br0,ip=dhcp\n",
        )
        .unwrap();
        let spec = ContainerSpec::from_config(101, &renamed, dir.path().into()).unwrap();
        let plan = plan_guest_files(&spec, dir.path());
        let mut changed: Vec<_> = plan.paths().collect();
        changed.sort();
        assert_eq!(changed, ["etc/hostname", "etc/hosts"]);
        let prepared = plan.prepared();
        let name = prepared
            .iter()
            .find(|f| f.path.to_bytes() == b"/etc/hostname")
            .expect("the host name file");
        assert_eq!(name.tmp.to_bytes(), b"/etc/.hostname.oxbow-new");
        assert_eq!(name.dir.to_bytes(), b"/etc");
        assert_eq!(name.contents, b"ct2\n");
        // Read through the container's eyes, the plan is the same.
        let in_root = plan_in_root(&spec, dir.path()).unwrap();
        assert_eq!(in_root.changes, plan.changes);
        assert_eq!(read("etc/hostname"), "ct1\n");
        plan.write(dir.path()).unwrap();
        assert_eq!(read("etc/hostname"), "ct2\n");
        assert!(read("etc/hosts").contains("127.0.1.1\tct2\n"));
    }
}
