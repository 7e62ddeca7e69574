//! Applying a compiled [`Ruleset`] to the kernel.
//!
//! [`NftApplier`] pipes the rendered script into one `nft -f -` run,
//! which nft carries out as a single netlink transaction: either the
//! whole new ruleset is in force afterwards, or (on any error) the
//! previous one still is. Appliers share the [`Applier`] trait so that a
//! netlink batch applier can replace this one.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::compile::Features;
use crate::nft::Ruleset;

/// A failed apply; the previous ruleset is still in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// nft could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// nft (or the kernel) refused the ruleset.
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    /// The netlink conversation failed.
    #[error("netlink: {0}")]
    Netlink(String),
}

/// Something that puts a ruleset in force atomically.
pub trait Applier {
    /// Replaces netd's tables with `ruleset`, all or nothing.
    fn apply(&self, ruleset: &Ruleset) -> Result<(), ApplyError>;
}

/// Applies through the `nft` program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftApplier {
    /// The nft binary.
    pub program: PathBuf,
    /// Only check (`nft -c`), change nothing.
    pub check_only: bool,
}

impl Default for NftApplier {
    fn default() -> Self {
        NftApplier {
            program: PathBuf::from("nft"),
            check_only: false,
        }
    }
}

impl NftApplier {
    fn run(&self, script: &str, check: bool) -> Result<(), ApplyError> {
        let mut cmd = Command::new(&self.program);
        if check {
            cmd.arg("-c");
        }
        let mut child = cmd
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ApplyError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as nft's failure below.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ApplyError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ApplyError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// Finds out what the bridge family supports, by having the kernel
    /// check (not apply) small tables.
    pub fn detect_features(&self) -> Features {
        let probe = |stmt: &str| {
            let script = format!(
                "table bridge oxbow-probe {{\n\tchain c {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t{stmt}\n\t}}\n}}\n"
            );
            self.run(&script, true).is_ok()
        };
        Features {
            bridge_conntrack: probe("ct state established accept"),
            bridge_reject: probe("reject"),
        }
    }
}

impl Applier for NftApplier {
    fn apply(&self, ruleset: &Ruleset) -> Result<(), ApplyError> {
        let script = ruleset.to_string();
        self.run(&script, self.check_only)?;
        let rules: usize = ruleset.tables.iter().map(|t| t.rule_count()).sum();
        tracing::info!(
            "firewall: {} tables, {rules} rules in force",
            ruleset.tables.len()
        );
        Ok(())
    }
}
