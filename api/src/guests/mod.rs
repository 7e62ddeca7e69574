//! Virtual machines: their configurations and their running VMMs.

pub mod live;
pub mod pending;
pub mod runtime;
pub mod store;

pub use runtime::{VmRuntime, VmState};
pub use store::{GuestKind, VmStore};
