//! Oxbow's firewall: Proxmox VE's `cluster.fw`, `host.fw` and `<vmid>.fw`
//! files, compiled to nftables and applied atomically.
//!
//! The pipeline is pure up to the last step:
//!
//! 1. [`FwFile::parse`] reads one file (syntax errors carry file and
//!    line);
//! 2. [`compile`] resolves aliases, ipsets, groups and macros and builds
//!    a [`Ruleset`] (one `inet` table for the host, one `bridge` table for
//!    the guests), reporting every unresolved reference;
//! 3. an [`Applier`] puts the ruleset in force in one transaction, so a
//!    failure leaves the previous ruleset in place.
//!
//! The layout of the tables is described in [`compile`]'s module docs.

pub mod apply;
pub mod compile;
pub mod config;
pub mod edit;
pub mod load;
pub mod macros;
pub mod netlink;
pub mod nft;
pub mod optimize;

pub use apply::{Applier, ApplyError, NftApplier};
pub use compile::{
    compile, CompileError, CompileErrorKind, CompileErrors, Features, Guest, GuestPort, Input,
    MANAGEMENT_PORTS,
};
pub use config::{Action, Direction, FwFile, ParseError, ParseErrors};
pub use edit::{FwDocument, RuleText, SectionId};
pub use load::{load, LoadError, FIREWALL_DIR};
pub use netlink::NetlinkApplier;
pub use nft::{Ruleset, Table, TableFamily};
