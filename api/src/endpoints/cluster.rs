//! `/cluster`: the resource view and the next free VMID.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult};
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

async fn resources(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let kind = call.params.get("type");
    let wants = |k: &str| kind.is_none_or(|t| t == k);
    let can = |path: &str, privs: &[&str]| has_privileges(&cfg, &caller.auth_id, path, privs, true);
    let node = &state.node;
    let mut out = Vec::new();
    if wants("node") && can(&format!("/nodes/{node}"), &["Sys.Audit"]) {
        let (total, available) = super::nodes::memory();
        let (disk_total, disk_used, _) = super::nodes::disk_usage(state.state_dir.root());
        out.push(json!({
            "id": format!("node/{node}"), "type": "node", "node": node, "status": "online",
            "uptime": super::nodes::uptime(), "cpu": super::nodes::cpu_usage(),
            "maxcpu": super::nodes::cpu_count(), "mem": total.saturating_sub(available),
            "maxmem": total, "disk": disk_used, "maxdisk": disk_total, "level": "",
        }));
    }
    if wants("vm") {
        // One question to init for all VMs; without an answer, states are
        // unknown rather than guessed.
        let states = state.runtime.states().await.ok();
        for (vmid, summary) in state.vms.list() {
            if !can(&format!("/vms/{vmid}"), &["VM.Audit"]) {
                continue;
            }
            let status = match states.as_ref().map(|s| s.get(&vmid)) {
                Some(Some(crate::guests::VmState::Running { .. })) => "running",
                Some(_) => "stopped",
                None => "unknown",
            };
            let mut item = json!({
                "id": format!("qemu/{vmid}"), "type": "qemu", "vmid": vmid, "node": node,
                "name": summary.name, "status": status, "template": 0,
                "maxmem": summary.memory_mib * 1024 * 1024, "mem": 0, "maxcpu": summary.cpus,
                "cpu": 0, "maxdisk": summary.maxdisk, "disk": 0, "uptime": 0,
                "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            });
            if let Some(pool) = cfg.pool_of_vm(vmid) {
                item["pool"] = json!(pool);
            }
            out.push(item);
        }
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
            out.push(json!({
                "id": format!("storage/{node}/{id}"), "type": "storage", "storage": id.to_string(),
                "node": node, "plugintype": entry.kind(),
                "status": if status.active { "available" } else { "unknown" },
                "content": status.content.to_string(), "shared": u8::from(status.shared),
                "disk": status.used, "maxdisk": status.total,
            }));
        }
    }
    if wants("pool") {
        for id in cfg.pools.keys() {
            if can(&format!("/pool/{id}"), &["Pool.Audit"]) {
                out.push(json!({"id": format!("/pool/{id}"), "type": "pool", "pool": id}));
            }
        }
    }
    Ok(Value::Array(out).into())
}

async fn next_id(state: Arc<AppState>, call: Call) -> ApiResult {
    match call.params.number::<u32>("vmid") {
        Some(vmid) if state.vms.exists(vmid) => Err(ApiError::parameter(
            "vmid",
            format!("VM {vmid} already exists"),
        )),
        Some(vmid) => Ok(json!(vmid.to_string()).into()),
        None => Ok(json!(state.vms.next_free().to_string()).into()),
    }
}
