//! `GET /version`.

use std::sync::Arc;

use serde_json::json;

use crate::app_state::AppState;
use crate::router::{Call, Endpoint, HandlerFuture, Permission};

/// `GET /version` and the API's own description.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: hyper::Method::GET,
        path: "/version",
        description: "The API version.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: get_version,
    },
    Endpoint {
        method: hyper::Method::GET,
        path: "/",
        description: "Directory index.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |_, _| {
            Box::pin(async {
                Ok(json!([
                    {"subdir": "access"}, {"subdir": "cluster"}, {"subdir": "nodes"},
                    {"subdir": "pools"}, {"subdir": "storage"}, {"subdir": "version"},
                    {"subdir": "api-schema"},
                ])
                .into())
            })
        },
    },
    Endpoint {
        method: hyper::Method::GET,
        path: "/api-schema",
        description: "This API's own description: every endpoint, its parameters and \
                      permission check (an Oxbow extension).",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |_, _| Box::pin(async { Ok(crate::router::describe().into()) }),
    },
];

/// The Proxmox VE release whose API apid follows; clients compare it.
pub const PROXMOX_API_VERSION: &str = "8.2.0";

/// The Proxmox VE release line of [`PROXMOX_API_VERSION`].
pub const PROXMOX_API_RELEASE: &str = "8.2";

/// Where the image records the source revision of its binaries (the
/// image crate's `rootfs::REVISION_PATH`).
pub const REVISION_FILE: &str = "/usr/lib/oxbow/revision";

/// The source revision of the running binaries, as the image recorded
/// it, or `unknown` (a build outside the image).
pub fn source_revision() -> &'static str {
    static REVISION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REVISION.get_or_init(|| revision_from(std::fs::read_to_string(REVISION_FILE).ok()))
}

fn revision_from(text: Option<String>) -> String {
    text.map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Reports the API version apid speaks and Oxbow's own version.
pub fn get_version(_state: Arc<AppState>, _call: Call) -> HandlerFuture {
    Box::pin(async move {
        Ok(json!({
            "version": PROXMOX_API_VERSION,
            "release": PROXMOX_API_RELEASE,
            "repoid": short_revision(source_revision()),
            "oxbow": env!("CARGO_PKG_VERSION"),
        })
        .into())
    })
}

/// The first eight characters of a revision id, as Proxmox shows its own.
fn short_revision(revision: &str) -> &str {
    revision.get(..8).unwrap_or(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_shortened() {
        assert_eq!(short_revision("0123456789abcdef"), "01234567");
        assert_eq!(short_revision("abc"), "abc");
        assert_eq!(short_revision("unknown"), "unknown");
    }

    #[test]
    fn the_images_revision_file_is_read_or_unknown() {
        assert_eq!(revision_from(Some("3cb6c8e1a2b3\n".into())), "3cb6c8e1a2b3");
        assert_eq!(revision_from(Some("\n".into())), "unknown");
        assert_eq!(revision_from(None), "unknown");
    }
}
