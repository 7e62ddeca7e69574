//! `/access/users`, their API tokens, and `/access/password`.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Value};

use super::{access_store_error, list_of};
use crate::access::ids::realm_of;
use crate::access::permissions::has_privileges;
use crate::access::store::AccessStore;
use crate::access::user_cfg::{Subject, Token, User};
use crate::access::ROOT_USER;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, integer, string, Param};

/// `/access/groups` privileges that let one manage users.
static USER_ADMIN: Permission = privs("/access/groups", &["User.Modify"]);
static USER_AUDIT: Permission =
    crate::router::any_priv("/access/groups", &["User.Modify", "Sys.Audit"]);

const USERID: Param = string("userid", Some(&formats::USER_ID), "The user, name@realm.");
const TOKENID: Param = string("tokenid", Some(&formats::TOKEN_NAME), "The token's name.");
const EXPIRE: Param = integer("expire", 0, i64::MAX, "Unix time of expiry; 0 for never.");
const COMMENT: Param = string("comment", Some(&formats::SINGLE_LINE), "Free text.");

/// The users endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/access/users",
        description: "The users.",
        params: &[
            boolean("enabled", "Only enabled (1) or disabled (0) users.").optional(),
            boolean("full", "Include groups and tokens.").optional(),
        ],
        extra: None,
        permission: Permission::Anyone(
            "all users with User.Modify or Sys.Audit on /access/groups; else only oneself",
        ),
        handler: |s, c| Box::pin(list_users(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/access/users",
        description: "Create a user.",
        params: &[
            USERID,
            string("password", None, "Initial password (pve realm).")
                .optional()
                .max_length(64),
            boolean("enable", "Whether the user may log in (default 1).").optional(),
            EXPIRE.optional(),
            string("firstname", Some(&formats::SINGLE_LINE), "First name.").optional(),
            string("lastname", Some(&formats::SINGLE_LINE), "Last name.").optional(),
            string("email", Some(&formats::EMAIL), "E-mail address.").optional(),
            COMMENT.optional(),
            string("groups", Some(&formats::ID_LIST), "Groups to join.").optional(),
            string("keys", Some(&formats::SINGLE_LINE), "Second-factor keys.").optional(),
        ],
        extra: None,
        permission: privs("/access/groups", &["User.Modify"]),
        handler: |s, c| Box::pin(create_user(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/users/{userid}",
        description: "A user.",
        params: &[USERID],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_AUDIT,
        },
        handler: |s, c| Box::pin(get_user(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/users/{userid}",
        description: "Change a user.",
        params: &[
            USERID,
            boolean("enable", "Whether the user may log in.").optional(),
            EXPIRE.optional(),
            string("firstname", Some(&formats::SINGLE_LINE), "First name.").optional(),
            string("lastname", Some(&formats::SINGLE_LINE), "Last name.").optional(),
            string("email", Some(&formats::EMAIL), "E-mail address.").optional(),
            COMMENT.optional(),
            string("groups", Some(&formats::ID_LIST), "Groups.").optional(),
            boolean("append", "Add the groups instead of replacing them.").optional(),
            string("keys", Some(&formats::SINGLE_LINE), "Second-factor keys.").optional(),
        ],
        extra: None,
        permission: privs("/access/groups", &["User.Modify"]),
        handler: |s, c| Box::pin(update_user(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/access/users/{userid}",
        description: "Delete a user, its tokens and its ACL entries.",
        params: &[USERID],
        extra: None,
        permission: privs("/access/groups", &["User.Modify"]),
        handler: |s, c| Box::pin(delete_user(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/users/{userid}/token",
        description: "A user's API tokens.",
        params: &[USERID],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(list_tokens(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/access/users/{userid}/token/{tokenid}",
        description: "An API token.",
        params: &[USERID, TOKENID],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(get_token(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/access/users/{userid}/token/{tokenid}",
        description: "Create an API token; the answer holds its secret, shown only once.",
        params: &[
            USERID,
            TOKENID,
            EXPIRE.optional(),
            boolean(
                "privsep",
                "Restrict the token to its own ACLs within the user's (default 1).",
            )
            .optional(),
            COMMENT.optional(),
        ],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(create_token(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/users/{userid}/token/{tokenid}",
        description: "Change an API token.",
        params: &[
            USERID,
            TOKENID,
            EXPIRE.optional(),
            boolean("privsep", "Privilege separation.").optional(),
            COMMENT.optional(),
        ],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(update_token(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/access/users/{userid}/token/{tokenid}",
        description: "Delete an API token and its ACL entries.",
        params: &[USERID, TOKENID],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(delete_token(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/access/password",
        description: "Change a password: one's own, or another's with User.Modify.",
        params: &[
            USERID,
            string("password", None, "The new password.").max_length(64),
            string(
                "confirmation-password",
                None,
                "The caller's current password.",
            )
            .optional()
            .max_length(64),
        ],
        extra: None,
        permission: Permission::SelfOr {
            param: "userid",
            or: &USER_ADMIN,
        },
        handler: |s, c| Box::pin(change_password(s, c)),
    },
];

/// The shortest password accepted, as Proxmox's.
const MIN_PASSWORD_LEN: usize = 5;

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::parameter(
            "password",
            format!("value must be at least {MIN_PASSWORD_LEN} characters long"),
        ));
    }
    Ok(())
}

fn check_realm(userid: &str) -> Result<(), ApiError> {
    match realm_of(userid) {
        "pve" | "pam" => Ok(()),
        other => Err(ApiError::parameter(
            "userid",
            format!("authentication domain '{other}' does not exist"),
        )),
    }
}

fn token_json(token: &Token) -> Value {
    json!({
        "expire": token.expire,
        "privsep": u8::from(token.privsep),
        "comment": token.comment,
    })
}

fn user_json(cfg: &crate::access::UserConfig, id: &str, user: &User, full: bool) -> Value {
    let groups: Vec<&str> = cfg.groups_of(id).collect();
    let mut out = json!({
        "userid": id,
        "enable": u8::from(user.enable),
        "expire": user.expire,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "email": user.email,
        "comment": user.comment,
        "realm-type": realm_of(id),
    });
    if full {
        out["groups"] = json!(groups.join(","));
        let tokens: Vec<Value> = user
            .tokens
            .iter()
            .map(|(name, token)| {
                let mut t = token_json(token);
                t["tokenid"] = json!(name);
                t
            })
            .collect();
        out["tokens"] = json!(tokens);
    }
    out
}

async fn list_users(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let all = has_privileges(
        &cfg,
        &caller.auth_id,
        "/access/groups",
        &["User.Modify", "Sys.Audit"],
        true,
    );
    let enabled = call.params.get("enabled").map(|v| v == "1");
    let full = call.params.flag("full");
    let out: Vec<Value> = cfg
        .users
        .iter()
        .filter(|(id, _)| all || **id == caller.user)
        .filter(|(_, user)| enabled.is_none_or(|e| user.enable == e))
        .map(|(id, user)| user_json(&cfg, id, user, full))
        .collect();
    Ok(Value::Array(out).into())
}

async fn get_user(state: Arc<AppState>, call: Call) -> ApiResult {
    let cfg = state.access.config();
    let id = call.param("userid");
    let user = cfg
        .users
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no such user ('{id}')")))?;
    let mut out = user_json(&cfg, id, user, false);
    out["groups"] = json!(cfg.groups_of(id).collect::<Vec<_>>());
    let tokens: serde_json::Map<String, Value> = user
        .tokens
        .iter()
        .map(|(name, token)| (name.clone(), token_json(token)))
        .collect();
    out["tokens"] = Value::Object(tokens);
    Ok(out.into())
}

fn apply_user_fields(user: &mut User, call: &Call) {
    if let Some(enable) = call.params.get("enable") {
        user.enable = enable == "1";
    }
    if let Some(expire) = call.params.number("expire") {
        user.expire = expire;
    }
    for (name, field) in [
        ("firstname", &mut user.firstname),
        ("lastname", &mut user.lastname),
        ("email", &mut user.email),
        ("comment", &mut user.comment),
        ("keys", &mut user.keys),
    ] {
        if let Some(value) = call.params.get(name) {
            *field = value.to_owned();
        }
    }
}

fn set_groups(
    cfg: &mut crate::access::UserConfig,
    user: &str,
    groups: &[String],
    append: bool,
) -> Result<(), String> {
    for group in groups {
        if !cfg.groups.contains_key(group) {
            return Err(format!("group '{group}' does not exist"));
        }
    }
    for (id, group) in cfg.groups.iter_mut() {
        if groups.contains(id) {
            group.members.insert(user.to_owned());
        } else if !append {
            group.members.remove(user);
        }
    }
    Ok(())
}

async fn create_user(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("userid").to_owned();
    check_realm(&id)?;
    let password = call.params.get("password").map(str::to_owned);
    if let Some(password) = &password {
        if realm_of(&id) != "pve" {
            return Err(ApiError::parameter(
                "password",
                "passwords can only be set for users of realm pve",
            ));
        }
        check_password(password)?;
    }
    let mut user = User {
        enable: true,
        ..User::default()
    };
    apply_user_fields(&mut user, &call);
    let groups = list_of(call.params.get("groups"));
    let hash = match password {
        Some(password) => Some(
            tokio::task::spawn_blocking(move || AccessStore::hash_password(&password))
                .await
                .map_err(|_| ApiError::failed("password hashing failed"))?
                .map_err(access_store_error)?,
        ),
        None => None,
    };
    state
        .access
        .update(|cfg| {
            if cfg.users.contains_key(&id) {
                return Err(format!("create user failed: user '{id}' already exists"));
            }
            cfg.users.insert(id.clone(), user);
            set_groups(cfg, &id, &groups, true)
        })
        .map_err(access_store_error)?;
    if let Some(hash) = hash {
        state
            .access
            .set_password_hash(&id, hash)
            .map_err(access_store_error)?;
    }
    Ok(Value::Null.into())
}

async fn update_user(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("userid").to_owned();
    let groups = call.params.get("groups").map(|g| list_of(Some(g)));
    let append = call.params.flag("append");
    state
        .access
        .update(|cfg| {
            let mut user = cfg
                .users
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("no such user ('{id}')"))?;
            apply_user_fields(&mut user, &call);
            if id == ROOT_USER && !user.enable {
                return Err("root@pam cannot be disabled".to_owned());
            }
            cfg.users.insert(id.clone(), user);
            if let Some(groups) = &groups {
                set_groups(cfg, &id, groups, append)?;
            }
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}

async fn delete_user(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = call.param("userid").to_owned();
    if id == ROOT_USER {
        return Err(ApiError::failed("root@pam cannot be deleted"));
    }
    state
        .access
        .update(|cfg| {
            let user = cfg
                .users
                .remove(&id)
                .ok_or_else(|| format!("no such user ('{id}')"))?;
            for group in cfg.groups.values_mut() {
                group.members.remove(&id);
            }
            cfg.remove_subject(&Subject::User(id.clone()));
            for name in user.tokens.keys() {
                cfg.remove_subject(&Subject::Token(format!("{id}!{name}")));
            }
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}

fn user_tokens(
    cfg: &crate::access::UserConfig,
    id: &str,
) -> Result<std::collections::BTreeMap<String, Token>, ApiError> {
    cfg.users
        .get(id)
        .map(|u| u.tokens.clone())
        .ok_or_else(|| ApiError::not_found(format!("no such user ('{id}')")))
}

async fn list_tokens(state: Arc<AppState>, call: Call) -> ApiResult {
    let tokens = user_tokens(&state.access.config(), call.param("userid"))?;
    let out: Vec<Value> = tokens
        .iter()
        .map(|(name, token)| {
            let mut t = token_json(token);
            t["tokenid"] = json!(name);
            t
        })
        .collect();
    Ok(Value::Array(out).into())
}

async fn get_token(state: Arc<AppState>, call: Call) -> ApiResult {
    let tokens = user_tokens(&state.access.config(), call.param("userid"))?;
    let name = call.param("tokenid");
    let token = tokens
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no such token '{name}'")))?;
    Ok(token_json(token).into())
}

async fn create_token(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    if caller.is_token() {
        return Err(ApiError::forbidden());
    }
    let user = call.param("userid").to_owned();
    let name = call.param("tokenid").to_owned();
    let full = format!("{user}!{name}");
    let token = Token {
        expire: call.params.number("expire").unwrap_or(0),
        privsep: call.params.get("privsep") != Some("0"),
        comment: call.params.get("comment").unwrap_or("").to_owned(),
    };
    let info = token_json(&token);
    let secret = state
        .access
        .create_token(
            |cfg| {
                let owner = cfg
                    .users
                    .get_mut(&user)
                    .ok_or_else(|| format!("no such user ('{user}')"))?;
                if owner.tokens.contains_key(&name) {
                    return Err("Token already exists.".to_owned());
                }
                owner.tokens.insert(name.clone(), token);
                Ok(())
            },
            &full,
        )
        .map_err(access_store_error)?;
    Ok(json!({"full-tokenid": full, "info": info, "value": secret}).into())
}

async fn update_token(state: Arc<AppState>, call: Call) -> ApiResult {
    let user = call.param("userid").to_owned();
    let name = call.param("tokenid").to_owned();
    let info = state
        .access
        .update(|cfg| {
            let token = cfg
                .users
                .get_mut(&user)
                .and_then(|u| u.tokens.get_mut(&name))
                .ok_or_else(|| format!("no such token '{name}' for user '{user}'"))?;
            if let Some(expire) = call.params.number("expire") {
                token.expire = expire;
            }
            if let Some(privsep) = call.params.get("privsep") {
                token.privsep = privsep == "1";
            }
            if let Some(comment) = call.params.get("comment") {
                token.comment = comment.to_owned();
            }
            Ok(token_json(token))
        })
        .map_err(access_store_error)?;
    Ok(info.into())
}

async fn delete_token(state: Arc<AppState>, call: Call) -> ApiResult {
    let user = call.param("userid").to_owned();
    let name = call.param("tokenid").to_owned();
    state
        .access
        .update(|cfg| {
            let removed = cfg
                .users
                .get_mut(&user)
                .and_then(|u| u.tokens.remove(&name));
            if removed.is_none() {
                return Err(format!("no such token '{name}' for user '{user}'"));
            }
            cfg.remove_subject(&Subject::Token(format!("{user}!{name}")));
            Ok(())
        })
        .map_err(access_store_error)?;
    Ok(Value::Null.into())
}

async fn change_password(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    if caller.is_token() {
        return Err(ApiError::forbidden());
    }
    let user = call.param("userid").to_owned();
    let password = call.param("password").to_owned();
    check_password(&password)?;
    if !state.access.config().users.contains_key(&user) {
        return Err(ApiError::not_found(format!("no such user ('{user}')")));
    }
    match realm_of(&user) {
        "pve" => {
            let hash = tokio::task::spawn_blocking(move || AccessStore::hash_password(&password))
                .await
                .map_err(|_| ApiError::failed("password hashing failed"))?
                .map_err(access_store_error)?;
            state
                .access
                .set_password_hash(&user, hash)
                .map_err(access_store_error)?;
        }
        _ if user == ROOT_USER => {
            let hash = tokio::task::spawn_blocking(move || {
                installer::credentials::hash_password(&password)
            })
            .await
            .map_err(|_| ApiError::failed("password hashing failed"))?
            .map_err(|e| ApiError::failed(format!("cannot hash the password: {e}")))?;
            let line = format!("{hash}\n");
            crate::state_dir::write_atomically(
                &state.state_dir.root_password_hash(),
                line.as_bytes(),
                0o600,
            )
            .map_err(|e| ApiError::failed(e.to_string()))?;
        }
        _ => {
            return Err(ApiError::failed(
                "only root@pam has a password in realm pam",
            ))
        }
    }
    tracing::info!(user, by = caller.auth_id, "password changed");
    Ok(Value::Null.into())
}
