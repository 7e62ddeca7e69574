//! Named network namespaces for host tests, shared by the crates whose
//! tests need a kernel network of their own (they run as root).
//!
//! ```no_run
//! let ns = netns_fixture::Netns::new("demo");
//! ns.ip(&["link", "add", "br0", "type", "bridge"]);
//! let up = ns.enter(|| std::net::TcpListener::bind("127.0.0.1:0").is_ok());
//! assert!(up);
//! ```

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// Runs `cmd`, panicking with its output unless it succeeds; returns its
/// standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the process may create namespaces (runs as root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A named network namespace (`ip netns add`) with `lo` up, deleted on
/// drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
}

impl Netns {
    /// A fresh namespace whose name starts with `tag` (unique per process
    /// and call). Panics unless running as root.
    pub fn new(tag: &str) -> Netns {
        assert!(
            is_root(),
            "these tests create network namespaces and must run as root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -j -n NAME ARGS...`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j gave no JSON")
    }

    /// The link called `name`, as `ip -j -d link show` describes it.
    pub fn link(&self, name: &str) -> Option<Value> {
        let v = self.ip_json(&["-d", "link", "show"]);
        v.as_array()?.iter().find(|l| l["ifname"] == name).cloned()
    }

    /// `cmd ARGS...` run inside the namespace (`ip netns exec`); its
    /// standard output, panicking on failure.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args))
    }

    /// Runs `f` on a thread that has entered the namespace; threads and
    /// processes it starts (a Tokio runtime built there, say) are in the
    /// namespace too.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
