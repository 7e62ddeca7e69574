//! `POST /access/ticket`: logging in and renewing tickets.
//!
//! Two realms: `pam`, where only `root@pam` exists, its password hash in
//! `root.shadow` written by the seed step at boot (without that file root
//! cannot log in, since Oxbow has no default password); and `pve`, Oxbow's
//! own users, with argon2id hashes in `priv/shadow.cfg`. Posting a
//! still-valid ticket as the password renews it.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::access::ids::realm_of;
use crate::access::permissions::user_is_active;
use crate::access::ROOT_USER;
use crate::app_state::{unix_now, AppState};
use crate::response::{ApiError, ApiResult};
use crate::router::{Call, Endpoint, HandlerFuture, Permission};
use crate::schema::{formats, string};
use crate::state_dir::RootPassword;
use crate::ticket::looks_like_ticket;

/// `POST /access/ticket`.
pub static ENDPOINTS: &[Endpoint] = &[Endpoint {
    method: hyper::Method::POST,
    path: "/access/ticket",
    description: "Log in: create or renew a ticket.",
    params: &[
        string("username", None, "User name, with or without @realm.").max_length(64),
        string(
            "password",
            None,
            "The password, or a valid ticket to renew.",
        )
        .max_length(4096),
        string("realm", None, "The realm, if the user name has none.")
            .optional()
            .max_length(32),
        string("otp", None, "One-time password (not supported).").optional(),
        string(
            "tfa-challenge",
            None,
            "Second-factor challenge (not supported).",
        )
        .optional(),
        string(
            "path",
            Some(&formats::ACL_PATH),
            "Only check privileges on this path.",
        )
        .optional(),
        string(
            "privs",
            Some(&formats::PRIVILEGE_LIST),
            "Privileges to check.",
        )
        .optional(),
        crate::schema::boolean("new-format", "Accepted for compatibility.").optional(),
    ],
    extra: None,
    permission: Permission::World,
    handler: create_ticket,
}];

/// Logged when a login fails because no root password is set.
pub const NO_ROOT_PASSWORD_WARNING: &str = "no root password is set: attach a seed volume \
labelled OXBOW-SEED with an answer.toml (see docs)";

/// The reason phrase of a failed login, as Proxmox words it.
const LOGIN_FAILED_REASON: &str = "authentication failure";

/// Proxmox's message for a required parameter that is missing.
const MISSING_PARAMETER: &str = "property is missing and it is not optional";

/// Logs in with a password or renews a ticket.
pub fn create_ticket(state: Arc<AppState>, call: Call) -> HandlerFuture {
    Box::pin(async move { login(&state, &call).await })
}

async fn login(state: &Arc<AppState>, call: &Call) -> ApiResult {
    let username = call.params.get("username");
    let password = call.params.get("password");
    let (Some(username), Some(password)) = (username, password) else {
        let mut errors = std::collections::BTreeMap::new();
        for name in ["username", "password"] {
            if call.params.get(name).is_none() {
                errors.insert(name.to_owned(), MISSING_PARAMETER.to_owned());
            }
        }
        return Err(ApiError::parameters(errors));
    };
    let user = user_id(username, call.params.get("realm"));

    let Some(attempt) = state.login_throttle.begin(call.source, Instant::now()) else {
        tracing::warn!(source = %call.source, user, "login refused: too many failed logins");
        return Err(ApiError::unauthorized(LOGIN_FAILED_REASON));
    };
    let now = unix_now();
    match check_credentials(state, &user, password, now).await {
        Ok(()) => {
            attempt.succeeded();
            tracing::info!(source = %call.source, user, "login");
            Ok(json!({
                "ticket": state.signer.issue_ticket(&user, now),
                "CSRFPreventionToken": state.signer.issue_csrf_token(&user, now),
                "username": user,
                "cap": {},
                "clustername": null,
            })
            .into())
        }
        Err(reason) => {
            attempt.failed(Instant::now());
            tracing::warn!(source = %call.source, user, reason, "login failed");
            tokio::time::sleep(state.failed_login_delay).await;
            Err(ApiError::unauthorized(LOGIN_FAILED_REASON))
        }
    }
}

/// The user id named by the `username` and `realm` parameters: a username
/// with a realm (`root@pam`) stands alone, otherwise the realm is appended.
fn user_id(username: &str, realm: Option<&str>) -> String {
    match realm {
        Some(realm) if !username.contains('@') && !realm.is_empty() => {
            format!("{username}@{realm}")
        }
        _ => username.to_owned(),
    }
}

/// Checks a password or ticket for `user`; the error says why it failed,
/// for the log only.
async fn check_credentials(
    state: &Arc<AppState>,
    user: &str,
    password: &str,
    now: i64,
) -> Result<(), &'static str> {
    if !user_is_active(&state.access.config(), user, now) {
        return Err("no such user, or disabled or expired");
    }
    if looks_like_ticket(password) {
        return match state.signer.verify_ticket(password, now) {
            Ok(ticket_user) if ticket_user == user => Ok(()),
            Ok(_) => Err("ticket of another user"),
            Err(_) => Err("invalid ticket"),
        };
    }
    if realm_of(user) == "pve" {
        let password = password.to_owned();
        let user = user.to_owned();
        let state = Arc::clone(state);
        let matches =
            tokio::task::spawn_blocking(move || state.access.verify_password(&user, &password))
                .await
                .unwrap_or(false);
        return if matches {
            Ok(())
        } else {
            Err("wrong password")
        };
    }
    if user != ROOT_USER {
        return Err("no such user in realm pam");
    }
    let hash = match state.state_dir.root_password() {
        RootPassword::Hash(hash) => hash,
        RootPassword::Missing => {
            tracing::warn!("{NO_ROOT_PASSWORD_WARNING}");
            return Err("no root password is set");
        }
        RootPassword::Unusable(why) => {
            tracing::error!("{why}");
            return Err("the root password file is unusable");
        }
    };
    let password = password.to_owned();
    // Hashing takes milliseconds of CPU; keep it off the request threads.
    let matches = tokio::task::spawn_blocking(move || installer::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    if matches {
        Ok(())
    } else {
        Err("wrong password")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_from_username_and_realm() {
        assert_eq!(user_id("root@pam", None), "root@pam");
        assert_eq!(user_id("root@pam", Some("pve")), "root@pam");
        assert_eq!(user_id("root", Some("pam")), "root@pam");
        assert_eq!(user_id("root", None), "root");
        assert_eq!(user_id("root", Some("")), "root");
    }
}
