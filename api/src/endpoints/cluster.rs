//! `/cluster`: the resource view and the next free VMID.

use std::sync::Arc;

use hyper::Method;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult, Reply};
use crate::router::{Call, Endpoint, Permission};
use crate::schema::{integer, one_of};

/// The `/cluster` endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/cluster",
        description: "Directory index.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |_, _| {
            Box::pin(async { Ok(json!([{"name": "nextid"}, {"name": "resources"}]).into()) })
        },
    },
    Endpoint {
        method: Method::GET,
        path: "/cluster/resources",
        description: "Nodes, VMs, storages and pools, with their usage.",
        params: &[one_of(
            "type",
            &["vm", "storage", "node", "pool", "sdn"],
            "Only resources of this type.",
        )
        .optional()],
        extra: None,
        permission: Permission::Anyone("only what the caller may audit"),
        handler: |s, c| Box::pin(resources(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/cluster/nextid",
        description: "The next free VMID, or whether the given one is free.",
        params: &[integer("vmid", 100, 999_999_999, "Check this VMID.").optional()],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(next_id(s, c)),
    },
];

/// One entry of `/cluster/resources`; fields a type does not have are
/// left out, as in Proxmox.
#[derive(Debug, Default, serde::Serialize)]
struct Resource<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugintype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxcpu: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxmem: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxdisk: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netin: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diskread: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diskwrite: Option<u64>,
}

/// The last full answer for `root@pam`, reused for up to a second while
/// no VM configuration, ACL or pool changed and apid started or stopped no
/// VM; a guest that stops by itself shows within the second.
#[derive(Debug, Default)]
pub struct ResourcesCache {
    last: std::sync::Mutex<Option<CachedResources>>,
}

#[derive(Debug)]
struct CachedResources {
    at: std::time::Instant,
    kind: Option<String>,
    key: (u64, u64, u64, usize),
    body: bytes::Bytes,
}

/// How long an answer of `/cluster/resources` is reused.
const RESOURCES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

async fn resources(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cacheable = caller.auth_id == crate::access::ROOT_USER;
    let key = (
        state.vms.generation(),
        state.cts.generation(),
        state.runtime.generation(),
        Arc::as_ptr(&state.access.config()) as usize,
    );
    let kind = call.params.get("type").map(str::to_owned);
    if cacheable {
        let last = state
            .resources_cache
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = last.as_ref() {
            if c.at.elapsed() < RESOURCES_MAX_AGE && c.key == key && c.kind == kind {
                return Ok(Reply::body(c.body.clone()));
            }
        }
    }
    let body = build_resources(&state, caller, kind.as_deref()).await?;
    if cacheable {
        *state
            .resources_cache
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(CachedResources {
            at: std::time::Instant::now(),
            kind,
            key,
            body: body.clone(),
        });
    }
    Ok(Reply::body(body))
}

async fn build_resources(
    state: &Arc<AppState>,
    caller: &crate::auth::Caller,
    kind: Option<&str>,
) -> Result<bytes::Bytes, ApiError> {
    let cfg = state.access.config();
    let wants = |k: &str| kind.is_none_or(|t| t == k);
    let can = |path: &str, privs: &[&str]| has_privileges(&cfg, &caller.auth_id, path, privs, true);
    let node = state.node.as_str();
    let mut out: Vec<Resource<'_>> = Vec::new();
    if wants("node") && can(&format!("/nodes/{node}"), &["Sys.Audit"]) {
        let (total, available) = super::nodes::memory();
        let (disk_total, disk_used, _) = super::nodes::disk_usage(state.state_dir.root());
        out.push(Resource {
            id: format!("node/{node}"),
            kind: "node",
            node: Some(node),
            status: Some("online"),
            level: Some(""),
            uptime: Some(super::nodes::uptime()),
            cpu: Some(super::nodes::cpu_usage()),
            maxcpu: Some(super::nodes::cpu_count() as u64),
            mem: Some(total.saturating_sub(available)),
            maxmem: Some(total),
            disk: Some(disk_used),
            maxdisk: Some(disk_total),
            ..Resource::default()
        });
    }
    if wants("storage") {
        for entry in state.storage.config().entries() {
            let id = entry.id();
            if !can(
                &format!("/storage/{id}"),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
            ) {
                continue;
            }
            let Ok(status) = state.storage.status(id) else {
                continue;
            };
            out.push(Resource {
                id: format!("storage/{node}/{id}"),
                kind: "storage",
                node: Some(node),
                status: Some(if status.active {
                    "available"
                } else {
                    "unknown"
                }),
                storage: Some(id.to_string()),
                plugintype: Some(entry.kind().to_owned()),
                content: Some(status.content.to_string()),
                shared: Some(u8::from(status.shared)),
                disk: Some(status.used),
                maxdisk: Some(status.total),
                ..Resource::default()
            });
        }
    }
    if wants("pool") {
        for id in cfg.pools.keys() {
            if can(&format!("/pool/{id}"), &["Pool.Audit"]) {
                out.push(Resource {
                    id: format!("/pool/{id}"),
                    kind: "pool",
                    pool: Some(id.clone()),
                    ..Resource::default()
                });
            }
        }
    }
    // Everything but the VMs is serialized; the VM entries are then
    // written into the same buffer from each VM's pre-serialized fields.
    let others = serde_json::to_string(&out)
        .map_err(|e| ApiError::failed(format!("cannot serialize the answer: {e}")))?;
    let mut body =
        String::with_capacity(others.len() + (state.vms.len() + state.cts.len()) * 330 + 16);
    body.push_str("{\"data\":");
    body.push_str(others.trim_end_matches(']'));
    let mut first = others.len() <= 2;
    if wants("vm") {
        // One question to init for all VMs (cached for a moment); without
        // an answer, states are unknown rather than guessed.
        let states = state.runtime.states_cached().await.ok();
        let root = caller.auth_id == crate::access::ROOT_USER;
        // What a VM without its own ACL entry or pool inherits from above:
        // worked out once, on a child path no ACL can name (ACL paths have
        // no spaces), instead of once per VM.
        let inherited = can("/vms/ ", &["VM.Audit"]);
        let now = u64::try_from(crate::app_state::unix_now()).unwrap_or(0);
        let mut entry = |vmid: u32, summary: &crate::guests::store::VmSummary| {
            if !root {
                let path = format!("/vms/{vmid}");
                let own = cfg.acl.contains_key(&path) || cfg.pool_of_vm(vmid).is_some();
                let allowed = if own {
                    can(&path, &["VM.Audit"])
                } else {
                    inherited
                };
                if !allowed {
                    return;
                }
            }
            let (status, uptime) = match states.as_ref().map(|s| s.get(&vmid)) {
                Some(Some(crate::guests::VmState::Running { started_at, .. })) => {
                    ("running", now.saturating_sub(*started_at))
                }
                Some(_) => ("stopped", 0),
                None => ("unknown", 0),
            };
            if !std::mem::take(&mut first) {
                body.push(',');
            }
            body.push_str(&summary.resource_fields);
            body.push_str(",\"status\":\"");
            body.push_str(status);
            let _ = write!(body, "\",\"uptime\":{uptime}");
            body.push_str(ZERO_USAGE);
            if let Some(pool) = cfg.pool_of_vm(vmid) {
                let _ = write!(body, ",\"pool\":{}", Value::String(pool.to_owned()));
            }
            body.push('}');
        };
        state.vms.for_each(&mut entry);
        state.cts.for_each(&mut entry);
    }
    body.push_str("]}");
    Ok(bytes::Bytes::from(body))
}

/// The usage fields of a VM entry (per-VM counters are not collected yet).
const ZERO_USAGE: &str =
    ",\"cpu\":0,\"mem\":0,\"disk\":0,\"netin\":0,\"netout\":0,\"diskread\":0,\"diskwrite\":0";

async fn next_id(state: Arc<AppState>, call: Call) -> ApiResult {
    match call.params.number::<u32>("vmid") {
        Some(vmid) if state.vms.exists(vmid) || state.cts.exists(vmid) => Err(ApiError::parameter(
            "vmid",
            format!("VM {vmid} already exists"),
        )),
        Some(vmid) => Ok(json!(vmid.to_string()).into()),
        None => Ok(json!(state.vms.next_free(&state.cts).to_string()).into()),
    }
}
