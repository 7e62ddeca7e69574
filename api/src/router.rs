//! The table of API endpoints, how requests find theirs, and who may call
//! them.
//!
//! Every endpoint is declared once in [`ENDPOINTS`] (built from the
//! `ENDPOINTS` lists of the modules in [`crate::endpoints`]) with its
//! method, its path below `/api2/json` (segments in braces, like `{node}`,
//! match one segment and become parameters), its parameters, the privilege
//! it needs, and its handler. Routing, validation, the permission check and
//! the published description ([`describe`]) all come from that.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use hyper::Method;
use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::access::UserConfig;
use crate::app_state::AppState;
use crate::auth::Caller;
use crate::endpoints;
use crate::params::Params;
use crate::response::ApiResult;
use crate::schema::{ExtraCheck, Param};

/// The path prefix of the JSON API.
pub const API_PREFIX: &str = "/api2/json";

/// Who may call an endpoint.
#[derive(Debug)]
pub enum Permission {
    /// Anyone, without a ticket (logging in).
    World,
    /// Any authenticated caller; the text says what the handler restricts
    /// (lists show only what the caller may see).
    Anyone(&'static str),
    /// `privs` (all of them, or any one with `any`) on the ACL path
    /// `path`, whose `{name}` parts are filled in from the parameters.
    Privs {
        /// ACL path template.
        path: &'static str,
        /// Privileges needed.
        privs: &'static [&'static str],
        /// Whether one of them is enough.
        any: bool,
    },
    /// The caller's own user (named by parameter `param`), or `or`.
    SelfOr {
        /// The parameter holding a user id.
        param: &'static str,
        /// What anybody else needs.
        or: &'static Permission,
    },
    /// The owner of the task in parameter `upid`, or `or`.
    TaskOwnerOr(&'static Permission),
    /// Every one of the listed checks.
    All(&'static [Permission]),
}

/// Every listed privilege on `path`.
pub const fn privs(path: &'static str, privs: &'static [&'static str]) -> Permission {
    Permission::Privs {
        path,
        privs,
        any: false,
    }
}

/// Any one of the listed privileges on `path`.
pub const fn any_priv(path: &'static str, privs: &'static [&'static str]) -> Permission {
    Permission::Privs {
        path,
        privs,
        any: true,
    }
}

/// `template` with each `{name}` replaced by parameter `name`.
pub fn fill_path(template: &str, params: &Params) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(params.get(name).unwrap_or(""));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    crate::access::ids::normalize_acl_path(&out).unwrap_or(out)
}

impl Permission {
    /// Whether `caller` passes this check for a call with `params`.
    pub fn allows(&self, cfg: &UserConfig, caller: &Caller, params: &Params) -> bool {
        match self {
            Permission::World | Permission::Anyone(_) => true,
            Permission::Privs { path, privs, any } => {
                has_privileges(cfg, &caller.auth_id, &fill_path(path, params), privs, *any)
            }
            Permission::SelfOr { param, or } => {
                params.get(param) == Some(caller.auth_id.as_str()) || or.allows(cfg, caller, params)
            }
            Permission::TaskOwnerOr(or) => {
                let owner = params
                    .get("upid")
                    .and_then(crate::tasks::Upid::parse)
                    .map(|upid| upid.user);
                owner.as_deref() == Some(caller.auth_id.as_str())
                    || owner.as_deref() == Some(caller.user.as_str())
                    || or.allows(cfg, caller, params)
            }
            Permission::All(checks) => checks.iter().all(|c| c.allows(cfg, caller, params)),
        }
    }

    /// The check in the published API description.
    pub fn describe(&self) -> Value {
        match self {
            Permission::World => json!({"user": "world"}),
            Permission::Anyone(note) => json!({"user": "all", "description": note}),
            Permission::Privs { path, privs, any } => {
                json!({"check": ["perm", path, privs, if *any { "any" } else { "all" }]})
            }
            Permission::SelfOr { param, or } => {
                json!({"check": ["or", ["userid-param", "self", param], or.describe()]})
            }
            Permission::TaskOwnerOr(or) => {
                json!({"check": ["or", ["task-owner"], or.describe()]})
            }
            Permission::All(checks) => {
                let all: Vec<Value> = checks.iter().map(Permission::describe).collect();
                json!({"check": ["and", all]})
            }
        }
    }
}

/// What a handler gets to work with.
#[derive(Debug)]
pub struct Call {
    /// The request's parameters (path, query string and body), validated.
    pub params: Params,
    /// The authenticated caller; `None` for public endpoints.
    pub caller: Option<Caller>,
    /// The address the request came from.
    pub source: IpAddr,
    /// For upload endpoints ([`takes_upload`]): the multipart body, with
    /// the text parts before the file already in `params`.
    pub upload: Option<crate::upload::UploadBody>,
}

impl Call {
    /// The caller of an endpoint that needs one.
    pub fn caller(&self) -> Result<&Caller, crate::response::ApiError> {
        self.caller
            .as_ref()
            .ok_or_else(|| crate::response::ApiError::unauthorized("No ticket"))
    }

    /// Parameter `name`, which validation guaranteed is present.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).unwrap_or("")
    }
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
    /// One line for the API description.
    pub description: &'static str,
    /// The parameters, path parameters included.
    pub params: &'static [Param],
    /// Checks for parameters known only by pattern.
    pub extra: Option<ExtraCheck>,
    /// Who may call it.
    pub permission: Permission,
    /// The implementation.
    pub handler: Handler,
}

/// All endpoints apid serves.
pub static ENDPOINTS: LazyLock<Vec<&'static Endpoint>> = LazyLock::new(|| {
    let mut all: Vec<&'static Endpoint> = Vec::new();
    for table in endpoints::TABLES {
        all.extend(table.iter());
    }
    all
});

/// Whether `endpoint` takes a streamed `multipart/form-data` upload
/// (listed in [`endpoints::UPLOADS`]) instead of a small body of
/// parameters.
pub fn takes_upload(endpoint: &Endpoint) -> bool {
    endpoints::UPLOADS
        .iter()
        .any(|(method, path)| *method == endpoint.method && *path == endpoint.path)
}

/// One segment of a path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Must be exactly this.
    Literal(&'static str),
    /// Any non-empty segment, handed over as parameter `name`.
    Param(&'static str),
}

/// Endpoints with their path templates split once, for matching requests
/// without re-parsing the templates each time.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<(&'static Endpoint, Vec<Segment>)>,
}

impl Routes {
    /// Compiles `table`.
    pub fn new(table: &[&'static Endpoint]) -> Routes {
        let routes = table
            .iter()
            .map(|endpoint| {
                let segments = endpoint
                    .path
                    .split('/')
                    .map(
                        |t| match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                            Some(name) => Segment::Param(name),
                            None => Segment::Literal(t),
                        },
                    )
                    .collect();
                (*endpoint, segments)
            })
            .collect();
        Routes { routes }
    }

    /// The endpoint for `method` and `path` (below [`API_PREFIX`]), with
    /// the values of its brace segments.
    pub fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Option<(&'static Endpoint, BTreeMap<String, String>)> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (endpoint, segments) = self.routes.iter().find(|(endpoint, segments)| {
            endpoint.method == *method
                && segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(&parts)
                    .all(|(segment, part)| match segment {
                        Segment::Literal(text) => text == part,
                        Segment::Param(_) => !part.is_empty(),
                    })
        })?;
        let mut params = BTreeMap::new();
        for (segment, part) in segments.iter().zip(&parts) {
            if let Segment::Param(name) = segment {
                let value = percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                params.insert((*name).to_owned(), value);
            }
        }
        Some((*endpoint, params))
    }

    /// Whether any endpoint serves `path` with some method.
    pub fn path_exists(&self, path: &str) -> bool {
        [Method::GET, Method::POST, Method::PUT, Method::DELETE]
            .iter()
            .any(|m| self.find(m, path).is_some())
    }
}

/// [`ENDPOINTS`], compiled for matching.
pub static ROUTES: LazyLock<Routes> = LazyLock::new(|| Routes::new(&ENDPOINTS));

/// The endpoint for `method` and `path` (below [`API_PREFIX`]) in `table`,
/// with the values of its brace segments.
pub fn find_endpoint(
    table: &[&'static Endpoint],
    method: &Method,
    path: &str,
) -> Option<(&'static Endpoint, BTreeMap<String, String>)> {
    Routes::new(table).find(method, path)
}

/// Whether any endpoint serves `path` with some method.
pub fn path_exists(table: &[&'static Endpoint], path: &str) -> bool {
    Routes::new(table).path_exists(path)
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

/// The published description of the API: every endpoint with its
/// parameters and permission check, sorted by path and method.
pub fn describe() -> Value {
    let mut endpoints: Vec<&&Endpoint> = ENDPOINTS.iter().collect();
    endpoints.sort_by_key(|e| (e.path, e.method.as_str()));
    let list: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let params: serde_json::Map<String, Value> = e
                .params
                .iter()
                .map(|p| (p.name.to_owned(), p.describe()))
                .collect();
            let mut item = json!({
                "method": e.method.as_str(),
                "path": e.path,
                "description": e.description,
                "parameters": params,
                "permissions": e.permission.describe(),
            });
            if e.extra.is_some() {
                item["additionalProperties"] = json!("checked by pattern (see docs/api.md)");
            }
            item
        })
        .collect();
    json!(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dummy(_: Arc<AppState>, _: Call) -> HandlerFuture {
        Box::pin(async { Ok(serde_json::Value::Null.into()) })
    }

    static A: Endpoint = Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/status",
        description: "",
        params: &[],
        extra: None,
        permission: Permission::Anyone(""),
        handler: dummy,
    };
    static B: Endpoint = Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/status",
        description: "",
        params: &[],
        extra: None,
        permission: Permission::Anyone(""),
        handler: dummy,
    };
    static C: Endpoint = Endpoint {
        method: Method::GET,
        path: "/version",
        description: "",
        params: &[],
        extra: None,
        permission: Permission::Anyone(""),
        handler: dummy,
    };

    fn table() -> Vec<&'static Endpoint> {
        vec![&A, &B, &C]
    }

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
        let table = table();
        let (endpoint, params) = find_endpoint(&table, &Method::GET, "/nodes/pve1/status").unwrap();
        assert_eq!(endpoint.method, Method::GET);
        assert_eq!(params.get("node").map(String::as_str), Some("pve1"));
        let (endpoint, _) = find_endpoint(&table, &Method::POST, "/nodes/pve1/status").unwrap();
        assert_eq!(endpoint.method, Method::POST);
        let (endpoint, _) = find_endpoint(&table, &Method::HEAD, "/version").unwrap();
        assert_eq!(endpoint.path, "/version");
        assert!(find_endpoint(&table, &Method::PUT, "/version").is_none());
        assert!(find_endpoint(&table, &Method::GET, "/nodes//status").is_none());
        assert!(find_endpoint(&table, &Method::GET, "/nodes/pve1").is_none());
        assert!(find_endpoint(&table, &Method::GET, "/nodes/pve1/status/x").is_none());
        assert!(path_exists(&table, "/version"));
        assert!(!path_exists(&table, "/versions"));
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        let (_, params) = find_endpoint(&table(), &Method::GET, "/nodes/a%2Db/status").unwrap();
        assert_eq!(params.get("node").map(String::as_str), Some("a-b"));
    }

    #[test]
    fn acl_path_templates_are_filled() {
        let mut params = Params::new();
        params.insert("vmid", "100");
        params.insert("path", "/storage/local/");
        assert_eq!(fill_path("/vms/{vmid}", &params), "/vms/100");
        assert_eq!(fill_path("{path}", &params), "/storage/local");
        assert_eq!(fill_path("/", &params), "/");
    }

    #[test]
    fn every_upload_endpoint_exists() {
        for (method, path) in endpoints::UPLOADS {
            assert!(
                ENDPOINTS
                    .iter()
                    .any(|e| e.method == *method && e.path == *path),
                "upload endpoint {method} {path} is not declared"
            );
        }
    }

    #[test]
    fn the_real_table_is_consistent() {
        let (login, _) = find_endpoint(&ENDPOINTS, &Method::POST, "/access/ticket").unwrap();
        assert!(matches!(login.permission, Permission::World));
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} is declared twice",
                    a.method,
                    a.path
                );
            }
            // Every brace segment is a declared parameter.
            for segment in a.path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        a.params.iter().any(|p| p.name == name && !p.optional),
                        "{} {}: path parameter {name} is not declared",
                        a.method,
                        a.path
                    );
                }
            }
            // Uploads need a caller, so the permission check sees the
            // storage before any byte is written.
            if takes_upload(a) {
                assert!(!matches!(
                    a.permission,
                    Permission::World | Permission::Anyone(_)
                ));
            }
            // Only login is open to the world.
            if matches!(a.permission, Permission::World) {
                assert_eq!(a.path, "/access/ticket");
            }
        }
    }
}
