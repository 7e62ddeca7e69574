//! Parsing and validation of `answer.toml`.
//!
//! Keys follow Proxmox VE's automated installer: kebab-case is preferred and
//! snake_case is accepted. Unknown sections such as `[disk-setup]` are kept
//! for the installer and ignored by a live boot.

use std::net::IpAddr;

use serde::Deserialize;

/// Errors from reading an answer file.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The file is not valid TOML or has a key of the wrong type.
    #[error("answer file is not valid: {0}")]
    Syntax(#[from] toml::de::Error),
    /// A key has a value that cannot be used.
    #[error("answer file key `{key}`: {reason}")]
    Invalid {
        /// The key, as written in the file.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// A validated answer file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `[global]`.
    pub global: Global,
    /// `[network]`.
    pub network: NetworkSource,
}

/// The `[global]` section, the part a live boot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// The node's fully qualified name, if given.
    pub fqdn: Option<String>,
    /// The root password, either plain or already hashed.
    pub root_password: RootPassword,
    /// SSH public keys for root.
    pub root_ssh_keys: Vec<String>,
}

/// How the root password was given.
#[derive(Clone, PartialEq, Eq)]
pub enum RootPassword {
    /// `root-password`: plain text, hashed before it is stored.
    Plain(String),
    /// `root-password-hashed`: a crypt(3) hash.
    Hashed(String),
}

impl std::fmt::Debug for RootPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootPassword::Plain(_) => f.write_str("Plain(<redacted>)"),
            RootPassword::Hashed(h) => f.debug_tuple("Hashed").field(h).finish(),
        }
    }
}

/// The `[network]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSource {
    /// `source = "from-dhcp"`.
    Dhcp,
    /// `source = "from-answer"`.
    Static {
        /// Address and prefix, e.g. `192.0.2.10/24`.
        address: IpAddr,
        /// Prefix length.
        prefix: u8,
        /// Default gateway.
        gateway: IpAddr,
        /// Name server.
        dns: IpAddr,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawAnswer {
    global: RawGlobal,
    #[serde(default)]
    network: Option<RawNetwork>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawGlobal {
    #[serde(default, alias = "root_password")]
    root_password: Option<String>,
    #[serde(default, alias = "root_password_hashed")]
    root_password_hashed: Option<String>,
    #[serde(default)]
    fqdn: Option<toml::Value>,
    #[serde(default, alias = "root_ssh_keys")]
    root_ssh_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawNetwork {
    source: String,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dns: Option<String>,
}

impl Answer {
    /// Parses and validates an answer file.
    pub fn parse(text: &str) -> Result<Answer, AnswerError> {
        let raw: RawAnswer = toml::from_str(text)?;
        let root_password = match (raw.global.root_password, raw.global.root_password_hashed) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "root-password",
                    "give either root-password or root-password-hashed, not both",
                ))
            }
            (Some(p), None) => {
                if p.chars().count() < 5 {
                    return Err(invalid("root-password", "must be at least 5 characters"));
                }
                RootPassword::Plain(p)
            }
            (None, Some(h)) => {
                if !crate::credentials::is_supported_hash(&h) {
                    return Err(invalid(
                        "root-password-hashed",
                        "must be a SHA-512 ($6$) or SHA-256 ($5$) crypt(3) hash",
                    ));
                }
                RootPassword::Hashed(h)
            }
            (None, None) => {
                return Err(invalid(
                    "root-password",
                    "one of root-password or root-password-hashed is required",
                ))
            }
        };
        let fqdn = match raw.global.fqdn {
            None => None,
            Some(toml::Value::String(s)) => {
                validate_fqdn(&s)?;
                Some(s)
            }
            // `fqdn.source = "from-dhcp"`: the name comes from the lease.
            Some(toml::Value::Table(_)) => None,
            Some(_) => return Err(invalid("fqdn", "must be a string")),
        };
        let network = match raw.network {
            None => NetworkSource::Dhcp,
            Some(n) => parse_network(n)?,
        };
        Ok(Answer {
            global: Global {
                fqdn,
                root_password,
                root_ssh_keys: raw.global.root_ssh_keys,
            },
            network,
        })
    }

    /// The short host name: the first label of the fqdn.
    pub fn hostname(&self) -> Option<&str> {
        self.global
            .fqdn
            .as_deref()
            .and_then(|f| f.split('.').next())
    }
}

fn invalid(key: &'static str, reason: &str) -> AnswerError {
    AnswerError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

fn validate_fqdn(s: &str) -> Result<(), AnswerError> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() > 253 || !s.split('.').all(ok_label) {
        return Err(invalid("fqdn", &format!("`{s}` is not a valid host name")));
    }
    Ok(())
}

fn parse_network(n: RawNetwork) -> Result<NetworkSource, AnswerError> {
    match n.source.as_str() {
        "from-dhcp" => Ok(NetworkSource::Dhcp),
        "from-answer" => {
            let cidr = n
                .cidr
                .ok_or_else(|| invalid("cidr", "required with source = \"from-answer\""))?;
            let (addr, prefix) = cidr
                .split_once('/')
                .ok_or_else(|| invalid("cidr", "must be ADDRESS/PREFIX"))?;
            let address: IpAddr = addr
                .parse()
                .map_err(|_| invalid("cidr", &format!("`{addr}` is not an IP address")))?;
            let prefix: u8 = prefix
                .parse()
                .map_err(|_| invalid("cidr", &format!("`{prefix}` is not a prefix length")))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(invalid("cidr", &format!("prefix {prefix} is over {max}")));
            }
            let gateway: IpAddr = n
                .gateway
                .ok_or_else(|| invalid("gateway", "required with source = \"from-answer\""))?
                .parse()
                .map_err(|_| invalid("gateway", "not an IP address"))?;
            let dns: IpAddr = n
                .dns
                .ok_or_else(|| invalid("dns", "required with source = \"from-answer\""))?
                .parse()
                .map_err(|_| invalid("dns", "not an IP address"))?;
            Ok(NetworkSource::Static {
                address,
                prefix,
                gateway,
                dns,
            })
        }
        other => Err(AnswerError::Invalid {
            key: "source",
            reason: format!("`{other}` is neither \"from-dhcp\" nor \"from-answer\""),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_style_answer() {
        let a = Answer::parse(
            r#"
[global]
keyboard = "en-us"
country = "us"
fqdn = "pve1.example.org"
mailto = "root@example.org"
timezone = "UTC"
root-password = "s3cret-pass"
root-ssh-keys = ["ssh-ed25519 AAAA test"]

[network]
source = "from-answer"
cidr = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = "192.0.2.53"

[disk-setup]
filesystem = "ext4"
disk-list = ["sda"]
"#,
        )
        .unwrap();
        assert_eq!(a.hostname(), Some("pve1"));
        assert_eq!(
            a.global.root_password,
            RootPassword::Plain("s3cret-pass".into())
        );
        assert_eq!(a.global.root_ssh_keys.len(), 1);
        match a.network {
            NetworkSource::Static { prefix, .. } => assert_eq!(prefix, 24),
            NetworkSource::Dhcp => panic!("expected a static network"),
        }
    }

    #[test]
    fn snake_case_and_dhcp_default() {
        let a = Answer::parse("[global]\nroot_password = \"hunter22\"\n").unwrap();
        assert_eq!(a.network, NetworkSource::Dhcp);
        assert_eq!(a.hostname(), None);
    }

    #[test]
    fn refuses_bad_input() {
        for (text, key) in [
            ("[global]\n", "root-password"),
            ("[global]\nroot-password = \"abc\"\n", "root-password"),
            (
                "[global]\nroot-password = \"abcdef\"\nroot-password-hashed = \"$6$x$y\"\n",
                "root-password",
            ),
            ("[global]\nroot-password-hashed = \"plain\"\n", "root-password-hashed"),
            ("[global]\nroot-password = \"abcdef\"\nfqdn = \"bad_name\"\n", "fqdn"),
            (
                "[global]\nroot-password = \"abcdef\"\n[network]\nsource = \"from-answer\"\ncidr = \"10.0.0.1\"\n",
                "cidr",
            ),
            (
                "[global]\nroot-password = \"abcdef\"\n[network]\nsource = \"from-answer\"\ncidr = \"10.0.0.1/33\"\ngateway=\"10.0.0.254\"\ndns=\"10.0.0.254\"\n",
                "cidr",
            ),
            ("[global]\nroot-password = \"abcdef\"\n[network]\nsource = \"magic\"\n", "source"),
        ] {
            match Answer::parse(text) {
                Err(AnswerError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an error on {key}, got {other:?}"),
            }
        }
        assert!(matches!(
            Answer::parse("not toml ["),
            Err(AnswerError::Syntax(_))
        ));
    }
}
