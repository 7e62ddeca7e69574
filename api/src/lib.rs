//! apid: Oxbow's management API daemon.
//!
//! apid speaks Proxmox VE's `/api2/json` wire format over HTTPS (port 8006
//! by default), so that Proxmox clients can manage an Oxbow node. This
//! Every endpoint is declared once, with its parameters and the privilege it
//! needs, in the tables of [`endpoints`], gathered in [`router::ENDPOINTS`].
//!
//! ```no_run
//! # async fn example() -> Result<(), api::ServerError> {
//! let config = api::Config::new("pve1");
//! let server = api::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.serve(std::future::pending()).await
//! # }
//! ```

pub mod access;
pub mod app_state;
pub mod auth;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod firewall;
pub mod guests;
pub mod login_throttle;
pub mod network;
pub mod params;
pub mod response;
pub mod router;
pub mod schema;
pub mod server;
pub mod state_dir;
pub mod sys;
pub mod tasks;
pub mod ticket;
pub mod tls;
pub mod upload;

pub use config::{system_node_name, Config, LoginFailureLimit};
pub use error::ServerError;
pub use server::{bind, serve, Server};
