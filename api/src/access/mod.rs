//! Users, realms, API tokens, roles, ACLs and pools, and what they allow.

pub mod ids;
pub mod permissions;
pub mod privileges;
pub mod store;
pub mod user_cfg;

pub use permissions::{has_privileges, privileges};
pub use store::AccessStore;
pub use user_cfg::{UserConfig, ROOT_USER};
