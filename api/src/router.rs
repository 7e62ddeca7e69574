//! The table of API endpoints and how requests find theirs.
//!
//! Every endpoint is declared once in [`ENDPOINTS`] with its method, its
//! path below `/api2/json` (segments in braces, like `{node}`, match any
//! one segment and are handed to the handler), whether it needs a ticket,
//! and its handler.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::Method;

use crate::app_state::AppState;
use crate::auth::AuthenticatedUser;
use crate::endpoints;
use crate::params::Params;
use crate::response::ApiResult;

/// The path prefix of the JSON API.
pub const API_PREFIX: &str = "/api2/json";

/// Whether an endpoint can be called without a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// Anyone may call it (logging in, for instance).
    Public,
    /// The caller needs a valid ticket, and a CSRF prevention token for
    /// methods other than GET and HEAD.
    Ticket,
}

/// What a handler gets to work with.
#[derive(Debug)]
pub struct Call {
    /// The request's parameters (query string and body).
    pub params: Params,
    /// The values of the path's brace segments, by name.
    pub path_params: BTreeMap<String, String>,
    /// The authenticated caller; `None` for public endpoints.
    pub user: Option<AuthenticatedUser>,
    /// The address the request came from.
    pub source: IpAddr,
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ApiResult> + Send>>;

/// An endpoint's implementation.
pub type Handler = fn(Arc<AppState>, Call) -> HandlerFuture;

/// One API endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// The HTTP method; HEAD requests are served by the GET endpoint.
    pub method: Method,
    /// The path below [`API_PREFIX`], starting with `/`.
    pub path: &'static str,
    /// Whether a ticket is needed.
    pub auth: AuthRequirement,
    /// The implementation.
    pub handler: Handler,
}

/// All endpoints apid serves.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::POST,
        path: "/access/ticket",
        auth: AuthRequirement::Public,
        handler: endpoints::access::create_ticket,
    },
    Endpoint {
        method: Method::GET,
        path: "/version",
        auth: AuthRequirement::Ticket,
        handler: endpoints::version::get_version,
    },
];

/// The endpoint for `method` and `path` (below [`API_PREFIX`]) in `table`,
/// with the values of its brace segments.
pub fn find_endpoint<'t>(
    table: &'t [Endpoint],
    method: &Method,
    path: &str,
) -> Option<(&'t Endpoint, BTreeMap<String, String>)> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    table
        .iter()
        .filter(|endpoint| endpoint.method == *method)
        .find_map(|endpoint| match_path(endpoint.path, path).map(|params| (endpoint, params)))
}

/// The part of a request path below [`API_PREFIX`], without a trailing
/// slash; `None` if the path is outside the API.
pub fn api_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(API_PREFIX)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let trimmed = rest.trim_end_matches('/');
    Some(if trimmed.is_empty() { "/" } else { trimmed })
}

/// Matches `path` against a template such as `/nodes/{node}/status`.
fn match_path(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let mut template_segments = template.split('/');
    let mut path_segments = path.split('/');
    let mut params = BTreeMap::new();
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(t), Some(p)) => {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    if p.is_empty() {
                        return None;
                    }
                    let value = percent_encoding::percent_decode_str(p)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.insert(name.to_owned(), value);
                } else if t != p {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dummy(_: Arc<AppState>, _: Call) -> HandlerFuture {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }

    static TABLE: &[Endpoint] = &[
        Endpoint {
            method: Method::GET,
            path: "/nodes/{node}/status",
            auth: AuthRequirement::Ticket,
            handler: dummy,
        },
        Endpoint {
            method: Method::POST,
            path: "/nodes/{node}/status",
            auth: AuthRequirement::Ticket,
            handler: dummy,
        },
        Endpoint {
            method: Method::GET,
            path: "/version",
            auth: AuthRequirement::Ticket,
            handler: dummy,
        },
    ];

    #[test]
    fn api_paths() {
        assert_eq!(api_path("/api2/json/version"), Some("/version"));
        assert_eq!(api_path("/api2/json/version/"), Some("/version"));
        assert_eq!(api_path("/api2/json"), Some("/"));
        assert_eq!(api_path("/api2/json/"), Some("/"));
        assert_eq!(api_path("/api2/jsonx/version"), None);
        assert_eq!(api_path("/api2/extjs/version"), None);
        assert_eq!(api_path("/"), None);
    }

    #[test]
    fn endpoints_are_found_by_method_and_path() {
        let (endpoint, params) = find_endpoint(TABLE, &Method::GET, "/nodes/pve1/status").unwrap();
        assert_eq!(endpoint.method, Method::GET);
        assert_eq!(params.get("node").map(String::as_str), Some("pve1"));
        let (endpoint, _) = find_endpoint(TABLE, &Method::POST, "/nodes/pve1/status").unwrap();
        assert_eq!(endpoint.method, Method::POST);
        let (endpoint, _) = find_endpoint(TABLE, &Method::HEAD, "/version").unwrap();
        assert_eq!(endpoint.path, "/version");
        assert!(find_endpoint(TABLE, &Method::PUT, "/version").is_none());
        assert!(find_endpoint(TABLE, &Method::GET, "/nodes//status").is_none());
        assert!(find_endpoint(TABLE, &Method::GET, "/nodes/pve1").is_none());
        assert!(find_endpoint(TABLE, &Method::GET, "/nodes/pve1/status/x").is_none());
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        let (_, params) = find_endpoint(TABLE, &Method::GET, "/nodes/a%2Db/status").unwrap();
        assert_eq!(params.get("node").map(String::as_str), Some("a-b"));
    }

    #[test]
    fn the_real_table_has_login_public_and_the_rest_behind_tickets() {
        let (login, _) = find_endpoint(ENDPOINTS, &Method::POST, "/access/ticket").unwrap();
        assert_eq!(login.auth, AuthRequirement::Public);
        let (version, _) = find_endpoint(ENDPOINTS, &Method::GET, "/version").unwrap();
        assert_eq!(version.auth, AuthRequirement::Ticket);
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} is declared twice",
                    a.method,
                    a.path
                );
            }
        }
    }
}
