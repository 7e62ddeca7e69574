//! `/pools`: resource pools of guests and storages.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Value};

use super::access::{access_store_error, list_of};
use crate::access::permissions::has_privileges;
use crate::access::user_cfg::Pool;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, string, Param};

const POOLID: Param = string("poolid", Some(&formats::POOL_ID), "The pool.");

/// The `/pools` endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/pools",
        description: "The pools the caller may see.",
        params: &[string("poolid", Some(&formats::POOL_ID), "Only this pool.").optional()],
        extra: None,
        permission: Permission::Anyone("pools with Pool.Audit on /pool/{poolid}"),
        handler: |s, c| Box::pin(list_pools(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/pools",
        description: "Create a pool.",
        params: &[
            POOLID,
            string("comment", Some(&formats::SINGLE_LINE), "Free text.").optional(),
        ],
        extra: None,
        permission: privs("/pool/{poolid}", &["Pool.Allocate"]),
        handler: |s, c| Box::pin(create_pool(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/pools/{poolid}",
        description: "A pool and its members.",
        params: &[
            POOLID,
            string("type", None, "Only members of this type.").optional(),
        ],
        extra: None,
        permission: privs("/pool/{poolid}", &["Pool.Audit"]),
        handler: |s, c| Box::pin(get_pool(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/pools/{poolid}",
        description: "Change a pool: its comment, or add or remove members.",
        params: &[
            POOLID,
            string("comment", Some(&formats::SINGLE_LINE), "Free text.").optional(),
            string("vms", None, "Guests (VMIDs) to add or remove.").optional(),
            string("storage", None, "Storages to add or remove.").optional(),
            boolean(
                "delete",
                "Remove the listed members instead of adding them.",
            )
            .optional(),
            boolean("allow-move", "Move guests from other pools.").optional(),
        ],
        extra: None,
        permission: privs("/pool/{poolid}", &["Pool.Allocate"]),
        handler: |s, c| Box::pin(update_pool(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/pools/{poolid}",
        description: "Delete an empty pool.",
        params: &[POOLID],
        extra: None,
        permission: privs("/pool/{poolid}", &["Pool.Allocate"]),
        handler: |s, c| Box::pin(delete_pool(s, c)),
    },
];

fn members(pool: &Pool, node: &str) -> Vec<Value> {
    let mut out: Vec<Value> = pool
        .vms
        .iter()
        .map(|vmid| json!({"id": format!("qemu/{vmid}"), "vmid": vmid, "type": "qemu", "node": node}))
        .collect();
    out.extend(pool.storage.iter().map(|s| {
        json!({"id": format!("storage/{node}/{s}"), "storage": s, "type": "storage", "node": node})
    }));
    out
}

async fn list_pools(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let only = call.params.get("poolid");
    let out: Vec<Value> = cfg
        .pools
        .iter()
        .filter(|(id, _)| only.is_none_or(|o| o == id.as_str()))
        .filter(|(id, _)| {
            has_privileges(
                &cfg,
                &caller.auth_id,
                &format!("/pool/{id}"),
                &["Pool.Audit"],
                false,
            )
        })
        .map(|(id, pool)| {
            let mut item = json!({"poolid": id, "comment": pool.comment});
            if only.is_some() {
                item["members"] = json!(members(pool, &state.node));
            }
            item
        })
        .collect();
    Ok(Value::Array(out).into())
}

async fn create_pool(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("poolid").to_owned();
    let comment = call.params.get("comment").unwrap_or("").to_owned();
    state
        .access
        .update(|cfg| {
            if cfg.pools.contains_key(&id) {
                return Err(format!("pool '{id}' already exists"));
            }
            cfg.pools.insert(
                id.clone(),
                Pool {
                    comment,
                    ..Pool::default()
                },
            );
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}

async fn get_pool(state: Arc<AppState>, call: Call) -> ApiResult {
    let cfg = state.access.config();
    let id = call.param("poolid");
    let pool = cfg
        .pools
        .get(id)
        .ok_or_else(|| ApiError::failed(format!("pool '{id}' does not exist")))?;
    let kind = call.params.get("type");
    let members: Vec<Value> = members(pool, &state.node)
        .into_iter()
        .filter(|m| kind.is_none_or(|k| m["type"] == k))
        .collect();
    Ok(json!({"comment": pool.comment, "members": members}).into())
}

async fn update_pool(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("poolid").to_owned();
    let mut vms = Vec::new();
    for vm in list_of(call.params.get("vms")) {
        let vmid: u32 = vm
            .parse()
            .ok()
            .filter(|n| (100..=999_999_999).contains(n))
            .ok_or_else(|| ApiError::parameter("vms", format!("invalid VMID '{vm}'")))?;
        vms.push(vmid);
    }
    let storage = list_of(call.params.get("storage"));
    let delete = call.params.flag("delete");
    let allow_move = call.params.flag("allow-move");
    let comment = call.params.get("comment").map(str::to_owned);
    state
        .access
        .update(|cfg| {
            if !cfg.pools.contains_key(&id) {
                return Err(format!("pool '{id}' does not exist"));
            }
            for vmid in &vms {
                match cfg.pool_of_vm(*vmid) {
                    Some(other) if other != id && !delete && !allow_move => {
                        return Err(format!("VM {vmid} belongs already to pool '{other}'"));
                    }
                    Some(other) if other != id && !delete => {
                        let other = other.to_owned();
                        if let Some(p) = cfg.pools.get_mut(&other) {
                            p.vms.remove(vmid);
                        }
                    }
                    _ => {}
                }
            }
            let pool = cfg
                .pools
                .get_mut(&id)
                .ok_or_else(|| format!("pool '{id}' does not exist"))?;
            if let Some(comment) = comment {
                pool.comment = comment;
            }
            for vmid in vms {
                if delete {
                    pool.vms.remove(&vmid);
                } else {
                    pool.vms.insert(vmid);
                }
            }
            for s in storage {
                if delete {
                    pool.storage.remove(&s);
                } else {
                    pool.storage.insert(s);
                }
            }
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}

async fn delete_pool(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("poolid").to_owned();
    state
        .access
        .update(|cfg| {
            let pool = cfg
                .pools
                .get(&id)
                .ok_or_else(|| format!("pool '{id}' does not exist"))?;
            if !pool.vms.is_empty() || !pool.storage.is_empty() {
                return Err(format!("pool '{id}' is not empty"));
            }
            cfg.pools.remove(&id);
            cfg.acl.remove(&format!("/pool/{id}"));
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}
