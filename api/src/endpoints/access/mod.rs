//! `/access`: logging in, users, API tokens, groups, roles, ACLs,
//! permissions and passwords.

pub mod ticket;
pub mod users;

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Value};

use crate::access::ids::normalize_acl_path;
use crate::access::permissions::{has_privileges, privileges};
use crate::access::privileges::builtin_role_names;
use crate::access::user_cfg::Subject;
use crate::access::ROOT_USER;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult};
use crate::router::{any_priv, privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, string};

pub use ticket::NO_ROOT_PASSWORD_WARNING;

/// The `/access` endpoints but login and users.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/access",
        description: "Directory index.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/domains",
        description: "The authentication realms.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(domains(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/acl",
        description: "The ACL entries on paths where the caller may audit or change permissions.",
        params: &[],
        extra: None,
        permission: Permission::Anyone(
            "only entries on paths with Permissions.Modify or Sys.Audit",
        ),
        handler: |s, c| Box::pin(list_acl(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/acl",
        description: "Give or take roles on a path.",
        params: &[
            string("path", Some(&formats::ACL_PATH), "The ACL path."),
            string("roles", Some(&formats::ID_LIST), "Roles to give or take."),
            string("users", Some(&formats::SUBJECT_LIST), "User ids.").optional(),
            string("groups", Some(&formats::ID_LIST), "Group ids.").optional(),
            string("tokens", Some(&formats::SUBJECT_LIST), "Token ids.").optional(),
            boolean(
                "propagate",
                "Whether the roles apply below the path (default 1).",
            )
            .optional(),
            boolean("delete", "Take the roles instead of giving them.").optional(),
            string("digest", None, "Ignored.").optional(),
        ],
        extra: None,
        permission: privs("{path}", &["Permissions.Modify"]),
        handler: |s, c| Box::pin(update_acl(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/roles",
        description: "All roles with their privileges.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(list_roles(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/access/roles",
        description: "Create a role.",
        params: &[
            string("roleid", Some(&formats::ROLE_ID), "The new role."),
            string("privs", Some(&formats::PRIVILEGE_LIST), "Its privileges.").optional(),
        ],
        extra: None,
        permission: privs("/access", &["Sys.Modify"]),
        handler: |s, c| Box::pin(create_role(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/roles/{roleid}",
        description: "A role's privileges.",
        params: &[string("roleid", Some(&formats::ROLE_ID), "The role.")],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(get_role(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/roles/{roleid}",
        description: "Change a custom role's privileges.",
        params: &[
            string("roleid", Some(&formats::ROLE_ID), "The role."),
            string("privs", Some(&formats::PRIVILEGE_LIST), "Its privileges.").optional(),
            boolean("append", "Add to the privileges instead of replacing them.").optional(),
        ],
        extra: None,
        permission: privs("/access", &["Sys.Modify"]),
        handler: |s, c| Box::pin(update_role(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/access/roles/{roleid}",
        description: "Delete a custom role.",
        params: &[string("roleid", Some(&formats::ROLE_ID), "The role.")],
        extra: None,
        permission: privs("/access", &["Sys.Modify"]),
        handler: |s, c| Box::pin(delete_role(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/groups",
        description: "The groups.",
        params: &[],
        extra: None,
        permission: Permission::Anyone(
            "all groups with Sys.Audit or Group.Allocate on /access/groups, else none",
        ),
        handler: |s, c| Box::pin(list_groups(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/access/groups",
        description: "Create a group.",
        params: &[
            string("groupid", Some(&formats::GROUP_ID), "The new group."),
            string("comment", Some(&formats::SINGLE_LINE), "Free text.").optional(),
        ],
        extra: None,
        permission: privs("/access/groups", &["Group.Allocate"]),
        handler: |s, c| Box::pin(create_group(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/groups/{groupid}",
        description: "A group and its members.",
        params: &[string("groupid", Some(&formats::GROUP_ID), "The group.")],
        extra: None,
        permission: any_priv("/access/groups", &["Sys.Audit", "Group.Allocate"]),
        handler: |s, c| Box::pin(get_group(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/groups/{groupid}",
        description: "Change a group's comment.",
        params: &[
            string("groupid", Some(&formats::GROUP_ID), "The group."),
            string("comment", Some(&formats::SINGLE_LINE), "Free text.").optional(),
        ],
        extra: None,
        permission: privs("/access/groups", &["Group.Allocate"]),
        handler: |s, c| Box::pin(update_group(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/access/groups/{groupid}",
        description: "Delete a group.",
        params: &[string("groupid", Some(&formats::GROUP_ID), "The group.")],
        extra: None,
        permission: privs("/access/groups", &["Group.Allocate"]),
        handler: |s, c| Box::pin(delete_group(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/permissions",
        description: "The privileges of the caller (or of another user or token) by path.",
        params: &[
            string(
                "userid",
                Some(&formats::AUTH_ID),
                "Whose (default: the caller).",
            )
            .optional(),
            string("path", Some(&formats::ACL_PATH), "Only this path.").optional(),
        ],
        extra: None,
        permission: Permission::Anyone(
            "one's own and one's tokens'; others' need Sys.Audit on /access",
        ),
        handler: |s, c| Box::pin(permissions(s, c)),
    },
];

pub(crate) fn store_error(error: crate::access::store::StoreError) -> ApiError {
    match error {
        crate::access::store::StoreError::Refused(why) => ApiError::failed(why),
        other => {
            tracing::error!("{other:#}");
            ApiError::failed(other.to_string())
        }
    }
}

pub(crate) use store_error as access_store_error;

fn subdirs(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({"subdir": n})).collect())
}

async fn index(_state: Arc<AppState>, _call: Call) -> ApiResult {
    Ok(subdirs(&[
        "acl",
        "domains",
        "groups",
        "password",
        "permissions",
        "roles",
        "ticket",
        "users",
    ])
    .into())
}

async fn domains(_state: Arc<AppState>, _call: Call) -> ApiResult {
    Ok(json!([
        {"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
        {"realm": "pve", "type": "pve", "comment": "Oxbow authentication server", "default": 1},
    ])
    .into())
}

async fn list_acl(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let mut out = Vec::new();
    for (path, entries) in &cfg.acl {
        if !has_privileges(
            &cfg,
            &caller.auth_id,
            path,
            &["Permissions.Modify", "Sys.Audit"],
            true,
        ) {
            continue;
        }
        for (subject, roles) in entries {
            let (kind, ugid) = match subject {
                Subject::User(id) => ("user", id.clone()),
                Subject::Group(id) => ("group", id.clone()),
                Subject::Token(id) => ("token", id.clone()),
            };
            for (role, propagate) in roles {
                out.push(json!({
                    "path": path,
                    "type": kind,
                    "ugid": ugid,
                    "roleid": role,
                    "propagate": u8::from(*propagate),
                }));
            }
        }
    }
    Ok(Value::Array(out).into())
}

pub(crate) fn list_of(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split([',', ';', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn update_acl(state: Arc<AppState>, call: Call) -> ApiResult {
    let path = normalize_acl_path(call.param("path"))
        .ok_or_else(|| ApiError::parameter("path", "invalid ACL path"))?;
    let roles = list_of(call.params.get("roles"));
    let delete = call.params.flag("delete");
    let propagate = call.params.get("propagate") != Some("0");
    let mut subjects = Vec::new();
    for user in list_of(call.params.get("users")) {
        subjects.push(Subject::parse(&user).ok_or_else(|| {
            ApiError::parameter("users", format!("invalid user or token id '{user}'"))
        })?);
    }
    for group in list_of(call.params.get("groups")) {
        subjects.push(Subject::Group(group));
    }
    for token in list_of(call.params.get("tokens")) {
        match Subject::parse(&token) {
            Some(subject @ Subject::Token(_)) => subjects.push(subject),
            _ => {
                return Err(ApiError::parameter(
                    "tokens",
                    format!("invalid token id '{token}'"),
                ))
            }
        }
    }
    if subjects.is_empty() {
        return Err(ApiError::parameter(
            "users",
            "no users, groups or tokens specified",
        ));
    }
    state
        .access
        .update(|cfg| {
            for role in &roles {
                if !cfg.role_exists(role) {
                    return Err(format!("role '{role}' does not exist"));
                }
            }
            for subject in &subjects {
                if !cfg.subject_exists(subject) {
                    return Err(format!("'{subject}' does not exist"));
                }
            }
            for subject in &subjects {
                if *subject == Subject::User(ROOT_USER.to_owned()) {
                    // root holds every privilege anyway.
                    continue;
                }
                let entry = cfg.acl.entry(path.clone()).or_default();
                let given = entry.entry(subject.clone()).or_default();
                for role in &roles {
                    if delete {
                        given.remove(role);
                    } else {
                        given.insert(role.clone(), propagate);
                    }
                }
                if given.is_empty() {
                    entry.remove(subject);
                }
            }
            cfg.acl.retain(|_, entries| !entries.is_empty());
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn list_roles(state: Arc<AppState>, _call: Call) -> ApiResult {
    let cfg = state.access.config();
    let mut out = Vec::new();
    for name in builtin_role_names() {
        let privs: Vec<&str> = cfg
            .role_privileges(&name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.push(json!({"roleid": name, "privs": privs.join(","), "special": 1}));
    }
    for (name, privs) in &cfg.roles {
        let privs: Vec<&str> = privs.iter().map(String::as_str).collect();
        out.push(json!({"roleid": name, "privs": privs.join(","), "special": 0}));
    }
    Ok(Value::Array(out).into())
}

async fn get_role(state: Arc<AppState>, call: Call) -> ApiResult {
    let cfg = state.access.config();
    let role = call.param("roleid");
    let privs = cfg
        .role_privileges(role)
        .ok_or_else(|| ApiError::not_found(format!("role '{role}' does not exist")))?;
    let map: serde_json::Map<String, Value> = privs
        .into_iter()
        .map(|p| (p.to_owned(), json!(1)))
        .collect();
    Ok(Value::Object(map).into())
}

async fn create_role(state: Arc<AppState>, call: Call) -> ApiResult {
    let role = call.param("roleid").to_owned();
    let privs = list_of(call.params.get("privs"));
    state
        .access
        .update(|cfg| {
            if cfg.role_exists(&role) {
                return Err(format!("role '{role}' already exists"));
            }
            cfg.roles.insert(role.clone(), privs.into_iter().collect());
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn update_role(state: Arc<AppState>, call: Call) -> ApiResult {
    let role = call.param("roleid").to_owned();
    let privs = list_of(call.params.get("privs"));
    let append = call.params.flag("append");
    state
        .access
        .update(|cfg| {
            let Some(held) = cfg.roles.get_mut(&role) else {
                return Err(format!("role '{role}' does not exist or is built in"));
            };
            if !append {
                held.clear();
            }
            held.extend(privs);
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn delete_role(state: Arc<AppState>, call: Call) -> ApiResult {
    let role = call.param("roleid").to_owned();
    state
        .access
        .update(|cfg| {
            if cfg.roles.remove(&role).is_none() {
                return Err(format!("role '{role}' does not exist or is built in"));
            }
            for entries in cfg.acl.values_mut() {
                for given in entries.values_mut() {
                    given.remove(&role);
                }
                entries.retain(|_, given| !given.is_empty());
            }
            cfg.acl.retain(|_, entries| !entries.is_empty());
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn list_groups(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    if !has_privileges(
        &cfg,
        &caller.auth_id,
        "/access/groups",
        &["Sys.Audit", "Group.Allocate"],
        true,
    ) {
        return Ok(json!([]).into());
    }
    let out: Vec<Value> = cfg
        .groups
        .iter()
        .map(|(id, group)| {
            let users: Vec<&str> = group.members.iter().map(String::as_str).collect();
            json!({"groupid": id, "comment": group.comment, "users": users.join(",")})
        })
        .collect();
    Ok(Value::Array(out).into())
}

async fn get_group(state: Arc<AppState>, call: Call) -> ApiResult {
    let cfg = state.access.config();
    let id = call.param("groupid");
    let group = cfg
        .groups
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("group '{id}' does not exist")))?;
    Ok(json!({"comment": group.comment, "members": group.members}).into())
}

async fn create_group(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("groupid").to_owned();
    let comment = call.params.get("comment").unwrap_or("").to_owned();
    state
        .access
        .update(|cfg| {
            if cfg.groups.contains_key(&id) {
                return Err(format!("group '{id}' already exists"));
            }
            cfg.groups.insert(
                id.clone(),
                crate::access::user_cfg::Group {
                    comment,
                    members: Default::default(),
                },
            );
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn update_group(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("groupid").to_owned();
    let comment = call.params.get("comment").map(str::to_owned);
    state
        .access
        .update(|cfg| {
            let group = cfg
                .groups
                .get_mut(&id)
                .ok_or_else(|| format!("group '{id}' does not exist"))?;
            if let Some(comment) = comment {
                group.comment = comment;
            }
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn delete_group(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("groupid").to_owned();
    state
        .access
        .update(|cfg| {
            if cfg.groups.remove(&id).is_none() {
                return Err(format!("group '{id}' does not exist"));
            }
            cfg.remove_subject(&Subject::Group(id.clone()));
            Ok(())
        })
        .map_err(store_error)?;
    Ok(Value::Null.into())
}

async fn permissions(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let whose = call
        .params
        .get("userid")
        .unwrap_or(&caller.auth_id)
        .to_owned();
    let own = whose == caller.auth_id
        || (!caller.is_token()
            && whose
                .split_once('!')
                .is_some_and(|(user, _)| user == caller.user));
    if !own && !has_privileges(&cfg, &caller.auth_id, "/access", &["Sys.Audit"], false) {
        return Err(ApiError::forbidden());
    }
    let paths: Vec<String> = match call.params.get("path") {
        Some(path) => vec![normalize_acl_path(path).unwrap_or_else(|| path.to_owned())],
        None => {
            let mut paths: std::collections::BTreeSet<String> = [
                "/",
                "/access",
                "/access/groups",
                "/nodes",
                "/pool",
                "/storage",
                "/vms",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect();
            paths.extend(cfg.acl.keys().cloned());
            paths.into_iter().collect()
        }
    };
    let mut out = serde_json::Map::new();
    for path in paths {
        let held = privileges(&cfg, &whose, &path);
        if held.is_empty() {
            continue;
        }
        let map: serde_json::Map<String, Value> =
            held.into_iter().map(|p| (p.to_owned(), json!(1))).collect();
        out.insert(path, Value::Object(map));
    }
    Ok(Value::Object(out).into())
}
