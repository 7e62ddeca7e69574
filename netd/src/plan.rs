//! Deciding what the management network should look like.
//!
//! Planning reads the answer file and sysfs but changes nothing; the
//! result is applied by [`crate::apply`]. Problems that should not keep
//! the node off the network (an unreadable answer file, no NIC) are logged
//! and planned around.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use installer::{Answer, NetworkSource};

use crate::Config;

/// The management network to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtPlan {
    /// The bridge carrying the management address.
    pub bridge: String,
    /// The NIC to put into it, if one was found.
    pub nic: Option<String>,
    /// How the bridge gets its address.
    pub addressing: Addressing,
    /// The node's host name, sent to the DHCP server.
    pub hostname: Option<String>,
}

/// How the management bridge gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// DHCPv4.
    Dhcp,
    /// Fixed, from the answer file.
    Static(IpConfig),
}

/// An address with what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<IpAddr>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
    /// Search domain.
    pub search: Option<String>,
}

impl IpConfig {
    /// Whether `ip` lies inside this address's prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        Ok(())
    }
}

/// An answer file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AnswerLoadError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It is not a valid answer file.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: installer::AnswerError,
    },
}

/// Reads the answer file; `Ok(None)` when there is none.
pub fn load_answer(path: &Path) -> Result<Option<Answer>, AnswerLoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Answer::parse(&text)
            .map(Some)
            .map_err(|source| AnswerLoadError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AnswerLoadError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The addressing an answer file asks for (DHCP without one).
pub fn addressing_for(answer: Option<&Answer>) -> Addressing {
    match answer.map(|a| &a.network) {
        Some(NetworkSource::Static {
            address,
            prefix,
            gateway,
            dns,
        }) => Addressing::Static(IpConfig {
            address: *address,
            prefix: *prefix,
            gateway: Some(*gateway),
            dns: vec![*dns],
            search: None,
        }),
        Some(NetworkSource::Dhcp) | None => Addressing::Dhcp,
    }
}

/// Plans the management network for `cfg`.
pub fn plan(cfg: &Config) -> MgmtPlan {
    let answer = match load_answer(&cfg.answer) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}; falling back to DHCP");
            None
        }
    };
    let nic = match &cfg.nic {
        Some(n) => Some(n.clone()),
        None => match crate::sysfs::pick_nic(&cfg.sys_class_net, &cfg.bridge) {
            Ok(Some(n)) => Some(n.name),
            Ok(None) => {
                tracing::info!(
                    "no physical Ethernet NIC in {} yet",
                    cfg.sys_class_net.display()
                );
                None
            }
            Err(e) => {
                tracing::error!("{e}; {} will have no uplink", cfg.bridge);
                None
            }
        },
    };
    MgmtPlan {
        bridge: cfg.bridge.clone(),
        nic,
        addressing: addressing_for(answer.as_ref()),
        hostname: answer
            .as_ref()
            .and_then(|a| a.hostname())
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &str = r#"
[global]
root-password = "secret-pw"
fqdn = "node1.example.org"

[network]
source = "from-answer"
cidr = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = "192.0.2.53"
"#;

    #[test]
    fn static_answer_plans_static_addressing() {
        let dir = tempfile::tempdir().unwrap();
        let answer = dir.path().join("answer.toml");
        std::fs::write(&answer, STATIC).unwrap();
        let cfg = Config {
            answer,
            nic: Some("eth9".into()),
            ..Config::default()
        };
        let p = plan(&cfg);
        assert_eq!(p.nic.as_deref(), Some("eth9"));
        assert_eq!(p.hostname.as_deref(), Some("node1"));
        let Addressing::Static(ip) = p.addressing else {
            panic!("expected static addressing, got {:?}", p.addressing);
        };
        assert_eq!(ip.to_string(), "192.0.2.10/24 via 192.0.2.1");
        assert_eq!(ip.dns, vec!["192.0.2.53".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn missing_or_broken_answer_means_dhcp() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            answer: dir.path().join("absent.toml"),
            sys_class_net: dir.path().join("no-sysfs"),
            ..Config::default()
        };
        let p = plan(&cfg);
        assert_eq!(p.addressing, Addressing::Dhcp);
        assert_eq!(p.nic, None);
        std::fs::write(&cfg.answer, "not [ toml").unwrap();
        assert!(load_answer(&cfg.answer).is_err());
        assert_eq!(plan(&cfg).addressing, Addressing::Dhcp);
    }

    #[test]
    fn prefix_membership() {
        let c = IpConfig {
            address: "10.0.2.15".parse().unwrap(),
            prefix: 24,
            gateway: None,
            dns: vec![],
            search: None,
        };
        assert!(c.contains("10.0.2.2".parse().unwrap()));
        assert!(!c.contains("10.0.3.2".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all = IpConfig { prefix: 0, ..c };
        assert!(all.contains("198.51.100.1".parse().unwrap()));
    }
}
