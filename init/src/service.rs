//! The service table (`/etc/oxbow/services.toml`) and unit specifications.
//!
//! ```toml
//! [[service]]
//! name = "netd"
//! exec = ["/usr/lib/oxbow/netd"]
//! restart = "always"            # always | on-failure | never
//! ready = { file = "/run/oxbow/netd.ready" }
//!
//! [[service]]
//! name = "apid"
//! exec = ["/usr/lib/oxbow/apid"]
//! after = ["netd"]
//! ready = { tcp = "127.0.0.1:8006" }
//! ```
//!
//! A malformed entry is reported and left out; the rest of the table still
//! runs. A service whose dependency is missing or part of a cycle is
//! reported and not started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a unit is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Always, whatever the exit status.
    Always,
    /// Only after a non-zero exit or a signal.
    #[default]
    OnFailure,
    /// Never.
    Never,
    /// Only after exiting with exactly this status: a VMM exits with 3
    /// when its guest reboots, and with 0 when it powers off.
    OnStatus(i32),
}

/// How the supervisor learns that a started unit is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// Ready as soon as it is started.
    #[default]
    Started,
    /// Ready once this file exists.
    File(PathBuf),
    /// Ready once this TCP address accepts a connection.
    Tcp(SocketAddr),
}

/// One unit: a service from the table, or a transient unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// Unique name: letters, digits and `-_.:@`, at most 64 bytes.
    pub name: String,
    /// Program and arguments; the program is an absolute path.
    pub exec: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Services that must be ready before this one starts.
    #[serde(default)]
    pub after: Vec<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Readiness check.
    #[serde(default)]
    pub ready: Readiness,
    /// Seconds between SIGTERM and SIGKILL on stop.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// Starts allowed within `start_interval` seconds before the unit is
    /// marked failed.
    #[serde(default = "default_start_limit")]
    pub start_limit: u32,
    /// The window of the start limit, in seconds.
    #[serde(default = "default_start_interval")]
    pub start_interval: u64,
    /// The cgroup of the unit, relative to the cgroup root. Services default
    /// to `system/<name>`, transient units to `guests/<name>`.
    #[serde(default)]
    pub cgroup: Option<String>,
}

fn default_stop_timeout() -> u64 {
    10
}
fn default_start_limit() -> u32 {
    5
}
fn default_start_interval() -> u64 {
    60
}

impl UnitSpec {
    /// A unit running `exec` with every other setting at its default.
    pub fn new(name: &str, exec: &[&str]) -> UnitSpec {
        UnitSpec {
            name: name.to_string(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            after: Vec::new(),
            restart: RestartPolicy::default(),
            ready: Readiness::default(),
            stop_timeout: default_stop_timeout(),
            start_limit: default_start_limit(),
            start_interval: default_start_interval(),
            cgroup: None,
        }
    }

    /// The stop timeout as a duration.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout)
    }

    /// Checks the fields that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!("`{}` is not a valid unit name", self.name));
        }
        match self.exec.first() {
            None => return Err(format!("{}: exec is empty", self.name)),
            Some(p) if !p.starts_with('/') => {
                return Err(format!(
                    "{}: exec program `{p}` is not an absolute path",
                    self.name
                ))
            }
            _ => {}
        }
        if let Some(cg) = &self.cgroup {
            let ok = !cg.is_empty()
                && cg
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".." && valid_name(c));
            if !ok {
                return Err(format!(
                    "{}: cgroup `{cg}` is not a relative cgroup path",
                    self.name
                ));
            }
        }
        if self.start_limit == 0 {
            return Err(format!("{}: start_limit must be at least 1", self.name));
        }
        Ok(())
    }
}

/// Whether `name` may name a unit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

/// A parsed table: the services to run, in start order, and the problems
/// found, each already worded for the console.
#[derive(Debug, Default)]
pub struct ServiceTable {
    /// Valid services in an order where each comes after its dependencies.
    pub services: Vec<UnitSpec>,
    /// What was left out and why.
    pub problems: Vec<String>,
}

/// Parses the service table, keeping every valid service.
pub fn parse_table(text: &str) -> ServiceTable {
    let mut table = ServiceTable::default();
    let value: toml::Table = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            table
                .problems
                .push(format!("service table is not valid TOML: {e}"));
            return table;
        }
    };
    let entries = match value.get("service") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            table
                .problems
                .push("`service` must be an array of tables ([[service]])".into());
            Vec::new()
        }
    };
    for key in value.keys().filter(|k| *k != "service") {
        table
            .problems
            .push(format!("unknown top-level key `{key}` ignored"));
    }
    let mut specs: Vec<UnitSpec> = Vec::new();
    let mut seen = HashSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let spec: UnitSpec = match entry.try_into() {
            Ok(s) => s,
            Err(e) => {
                table.problems.push(format!("service #{}: {e}", i + 1));
                continue;
            }
        };
        if let Err(e) = spec.validate() {
            table.problems.push(format!("service #{}: {e}", i + 1));
            continue;
        }
        if !seen.insert(spec.name.clone()) {
            table.problems.push(format!(
                "service `{}` is defined twice; the second is ignored",
                spec.name
            ));
            continue;
        }
        specs.push(spec);
    }
    let (ordered, problems) = order_by_dependencies(specs);
    table.services = ordered;
    table.problems.extend(problems);
    table
}

/// Orders services so each follows its dependencies. Services with missing
/// dependencies, or in a cycle, are dropped with a problem each.
fn order_by_dependencies(specs: Vec<UnitSpec>) -> (Vec<UnitSpec>, Vec<String>) {
    let mut problems = Vec::new();
    let mut pending: Vec<UnitSpec> = specs;
    let mut placed: Vec<UnitSpec> = Vec::new();
    let mut placed_names: HashSet<String> = HashSet::new();
    loop {
        let known: HashMap<String, ()> = pending
            .iter()
            .map(|s| (s.name.clone(), ()))
            .chain(placed_names.iter().map(|n| (n.clone(), ())))
            .collect();
        // Drop services whose dependencies no longer exist.
        let before = pending.len();
        pending.retain(|s| {
            let missing: Vec<&String> =
                s.after.iter().filter(|d| !known.contains_key(*d)).collect();
            if missing.is_empty() {
                true
            } else {
                problems.push(format!(
                    "service `{}` is not started: it needs {} which is not in the table",
                    s.name,
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                false
            }
        });
        if pending.len() != before {
            continue;
        }
        let ready: Vec<usize> = pending
            .iter()
            .enumerate()
            .filter(|(_, s)| s.after.iter().all(|d| placed_names.contains(d)))
            .map(|(i, _)| i)
            .collect();
        if ready.is_empty() {
            for s in &pending {
                problems.push(format!(
                    "service `{}` is not started: its dependencies form a cycle",
                    s.name
                ));
            }
            break;
        }
        // Removed back to front so the indices stay valid, placed in table
        // order: independent services start in the order they are written.
        let mut round: Vec<UnitSpec> = ready.into_iter().rev().map(|i| pending.remove(i)).collect();
        round.reverse();
        for s in round {
            placed_names.insert(s.name.clone());
            placed.push(s);
        }
        if pending.is_empty() {
            break;
        }
    }
    (placed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let t = parse_table(
            r#"
[[service]]
name = "apid"
exec = ["/usr/lib/oxbow/apid", "--listen", "0.0.0.0:8006"]
after = ["netd"]
ready = { tcp = "127.0.0.1:8006" }
restart = "always"

[[service]]
name = "netd"
exec = ["/usr/lib/oxbow/netd"]
ready = { file = "/run/oxbow/netd.ready" }
"#,
        );
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["netd", "apid"]);
        assert_eq!(
            t.services[1].ready,
            Readiness::Tcp("127.0.0.1:8006".parse().unwrap())
        );
        assert_eq!(t.services[1].restart, RestartPolicy::Always);
        assert_eq!(t.services[0].restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn independent_services_keep_table_order() {
        let t = parse_table(
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n\
             [[service]]\nname = \"b\"\nexec = [\"/b\"]\n\
             [[service]]\nname = \"c\"\nexec = [\"/c\"]\nafter = [\"d\"]\n\
             [[service]]\nname = \"d\"\nexec = [\"/d\"]\n\
             [[service]]\nname = \"e\"\nexec = [\"/e\"]\n",
        );
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d", "e", "c"]);
    }

    #[test]
    fn bad_entries_are_reported_and_the_rest_kept() {
        let t = parse_table(
            r#"
[[service]]
name = "good"
exec = ["/bin/true"]

[[service]]
name = "relative"
exec = ["true"]

[[service]]
name = "typo"
exec = ["/bin/true"]
restrat = "always"

[[service]]
name = "orphan"
exec = ["/bin/true"]
after = ["nothere"]

[[service]]
name = "a"
exec = ["/bin/true"]
after = ["b"]

[[service]]
name = "b"
exec = ["/bin/true"]
after = ["a"]

[[service]]
name = "good"
exec = ["/bin/false"]

[[service]]
name = "needs-orphan"
exec = ["/bin/true"]
after = ["orphan"]
"#,
        );
        let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        let all = t.problems.join("\n");
        for needle in [
            "not an absolute path",
            "restrat",
            "nothere",
            "cycle",
            "defined twice",
            "`orphan`",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
    }

    #[test]
    fn invalid_toml_is_a_problem_not_a_panic() {
        let t = parse_table("[[service]\nname=");
        assert!(t.services.is_empty());
        assert_eq!(t.problems.len(), 1);
    }

    #[test]
    fn names_and_cgroups() {
        assert!(valid_name("vmm:100"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        let mut s = UnitSpec::new("x", &["/bin/true"]);
        s.cgroup = Some("guests/../../etc".into());
        assert!(s.validate().is_err());
        s.cgroup = Some("guests/vm-100".into());
        assert!(s.validate().is_ok());
    }
}
