//! Oxbow's answer file and first-boot credentials.
//!
//! The answer file uses the keys of Proxmox VE's automated installer
//! (`answer.toml`). A live boot reads it from a seed volume labelled
//! `OXBOW-SEED`; the unattended installer (not built yet) will read the same
//! file to write the image to disk.

pub mod answer;
pub mod credentials;

pub use answer::{Answer, AnswerError, NetworkSource};
pub use credentials::{hash_password, verify_password, CredentialError};
