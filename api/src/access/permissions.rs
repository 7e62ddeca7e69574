//! What an authenticated caller may do on an ACL path.
//!
//! The rules are Proxmox VE's:
//!
//! - `root@pam` may do everything.
//! - The ACL paths from `/` down to the path are visited in order. At each,
//!   the entries for the user itself (or the token itself) replace what was
//!   found above; if there are none, the entries for the user's groups do.
//!   An entry above the path counts only if it propagates.
//! - `NoAccess` wins over every other role found.
//! - A guest or storage in a pool also gets the roles given on
//!   `/pool/<pool>` (unless its own path says `NoAccess`).
//! - A token without privilege separation has its user's privileges; one
//!   with privilege separation has the privileges both its own ACLs and its
//!   user's give.

use std::collections::{BTreeMap, BTreeSet};

use super::privileges::{all_privileges, PrivilegeSet};
use super::user_cfg::{Subject, UserConfig, ROOT_USER};

/// The roles `subject` (a user or a token, never a group) has on `path`,
/// from ACLs alone (no pools).
fn acl_roles(cfg: &UserConfig, subject: &Subject, path: &str) -> BTreeSet<String> {
    let user = match subject {
        Subject::User(id) => Some(id.as_str()),
        Subject::Token(_) | Subject::Group(_) => None,
    };
    let groups: Vec<Subject> = user
        .map(|u| {
            cfg.groups_of(u)
                .map(|g| Subject::Group(g.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut roles = BTreeSet::new();
    for (acl_path, entries) in &cfg.acl {
        let is_final = acl_path == path;
        let applies = acl_path == "/"
            || is_final
            || path
                .strip_prefix(acl_path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if !applies {
            continue;
        }
        let pick = |given: &BTreeMap<String, bool>, into: &mut BTreeSet<String>| {
            for (role, propagate) in given {
                if is_final || *propagate {
                    into.insert(role.clone());
                }
            }
        };
        let mut own = BTreeSet::new();
        if let Some(given) = entries.get(subject) {
            pick(given, &mut own);
        }
        if !own.is_empty() {
            roles = own;
            continue;
        }
        let mut from_groups = BTreeSet::new();
        for group in &groups {
            if let Some(given) = entries.get(group) {
                pick(given, &mut from_groups);
            }
        }
        if !from_groups.is_empty() {
            roles = from_groups;
        }
    }
    if roles.contains("NoAccess") {
        return ["NoAccess".to_owned()].into_iter().collect();
    }
    roles
}

/// The pool path whose roles also apply to `path`, if `path` is a guest
/// or a storage in a pool.
fn pool_path(cfg: &UserConfig, path: &str) -> Option<String> {
    let mut segments = path.split('/').skip(1);
    let pool = match (segments.next(), segments.next()) {
        (Some("vms"), Some(vmid)) => cfg.pool_of_vm(vmid.parse().ok()?),
        (Some("storage"), Some(storage)) => cfg.pool_of_storage(storage),
        _ => None,
    }?;
    Some(format!("/pool/{pool}"))
}

/// The roles `subject` has on `path`, pools included.
pub fn roles(cfg: &UserConfig, subject: &Subject, path: &str) -> BTreeSet<String> {
    let mut found = acl_roles(cfg, subject, path);
    if found.contains("NoAccess") {
        return found;
    }
    if let Some(pool) = pool_path(cfg, path) {
        let from_pool = acl_roles(cfg, subject, &pool);
        if !from_pool.contains("NoAccess") {
            found.extend(from_pool);
        }
    }
    found
}

fn privileges_of_roles(cfg: &UserConfig, roles: &BTreeSet<String>) -> PrivilegeSet {
    roles
        .iter()
        .filter_map(|role| cfg.role_privileges(role))
        .flatten()
        .collect()
}

/// Whether user `user_id` exists, is enabled and has not expired at `now`.
pub fn user_is_active(cfg: &UserConfig, user_id: &str, now: i64) -> bool {
    cfg.users
        .get(user_id)
        .is_some_and(|u| u.enable && (u.expire == 0 || u.expire > now))
}

/// The privileges of `auth_id` (a user id, or a token id
/// `user@realm!name`) on `path`.
pub fn privileges(cfg: &UserConfig, auth_id: &str, path: &str) -> PrivilegeSet {
    if auth_id == ROOT_USER {
        return all_privileges().collect();
    }
    if let Some((user, _)) = auth_id.split_once('!') {
        let Some(token) = cfg.token(auth_id) else {
            return PrivilegeSet::new();
        };
        let user_privs = privileges(cfg, user, path);
        if !token.privsep {
            return user_privs;
        }
        let own = privileges_of_roles(cfg, &roles(cfg, &Subject::Token(auth_id.to_owned()), path));
        return user_privs.intersection(&own).copied().collect();
    }
    if !cfg.users.contains_key(auth_id) {
        return PrivilegeSet::new();
    }
    privileges_of_roles(cfg, &roles(cfg, &Subject::User(auth_id.to_owned()), path))
}

/// Whether `auth_id` has every one of `privs` on `path` (or any one, with
/// `any`).
pub fn has_privileges(
    cfg: &UserConfig,
    auth_id: &str,
    path: &str,
    privs: &[&str],
    any: bool,
) -> bool {
    if auth_id == ROOT_USER {
        return true;
    }
    let held = privileges(cfg, auth_id, path);
    if any {
        privs.iter().any(|p| held.contains(p))
    } else {
        privs.iter().all(|p| held.contains(p))
    }
}

/// Whether `auth_id` has `privs` on `path` or on any path below it; used
/// to decide whether a list may show anything at all.
pub fn has_privileges_below(cfg: &UserConfig, auth_id: &str, path: &str, privs: &[&str]) -> bool {
    if has_privileges(cfg, auth_id, path, privs, true) {
        return true;
    }
    cfg.acl.keys().any(|acl_path| {
        acl_path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/') || path == "/")
            && has_privileges(cfg, auth_id, acl_path, privs, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "\
user:alice@pve:1:0::::::
user:bob@pve:1:0::::::
user:carol@pve:1:0::::::
token:alice@pve!sep:0:1::
token:alice@pve!full:0:0::
group:ops:bob@pve,carol@pve::
pool:prod::200:local:
acl:1:/:alice@pve:PVEAuditor:
acl:1:/vms:@ops:PVEVMUser:
acl:0:/vms/100:alice@pve:PVEVMAdmin:
acl:1:/vms/101:carol@pve:NoAccess:
acl:1:/vms/102:bob@pve:PVEAuditor:
acl:1:/pool/prod:bob@pve:PVEVMAdmin:
acl:1:/:alice@pve!sep:PVEVMAdmin:
acl:1:/storage:alice@pve!sep:PVEDatastoreAdmin:
";

    fn cfg() -> UserConfig {
        let (cfg, skipped) = UserConfig::parse(CFG);
        assert!(skipped.is_empty(), "{skipped:?}");
        cfg
    }

    fn can(cfg: &UserConfig, who: &str, path: &str, privilege: &str) -> bool {
        privileges(cfg, who, path).contains(privilege)
    }

    #[test]
    fn root_can_do_everything() {
        let cfg = cfg();
        assert!(can(&cfg, "root@pam", "/", "Sys.PowerMgmt"));
        assert!(can(&cfg, "root@pam", "/vms/1", "VM.Allocate"));
    }

    #[test]
    fn propagation_and_exact_paths() {
        let cfg = cfg();
        // Propagated from /.
        assert!(can(&cfg, "alice@pve", "/vms/7", "VM.Audit"));
        assert!(!can(&cfg, "alice@pve", "/vms/7", "VM.PowerMgmt"));
        // Exact path without propagation replaces what came from above.
        assert!(can(&cfg, "alice@pve", "/vms/100", "VM.Allocate"));
        assert!(!can(&cfg, "alice@pve", "/vms/100/x", "VM.Allocate"));
        assert!(can(&cfg, "alice@pve", "/vms/100/x", "VM.Audit"));
    }

    #[test]
    fn groups_and_user_overrides() {
        let cfg = cfg();
        assert!(can(&cfg, "bob@pve", "/vms/5", "VM.PowerMgmt"));
        assert!(can(&cfg, "carol@pve", "/vms/5", "VM.PowerMgmt"));
        // Bob's own entry on /vms/102 beats the group's.
        assert!(can(&cfg, "bob@pve", "/vms/102", "VM.Audit"));
        assert!(!can(&cfg, "bob@pve", "/vms/102", "VM.PowerMgmt"));
        // NoAccess wins.
        assert!(privileges(&cfg, "carol@pve", "/vms/101").is_empty());
        assert!(privileges(&cfg, "nobody@pve", "/").is_empty());
    }

    #[test]
    fn pools_add_their_roles() {
        let cfg = cfg();
        assert!(can(&cfg, "bob@pve", "/vms/200", "VM.Allocate"));
        assert!(!can(&cfg, "bob@pve", "/vms/201", "VM.Allocate"));
        assert!(!can(&cfg, "carol@pve", "/vms/200", "VM.Allocate"));
    }

    #[test]
    fn tokens() {
        let cfg = cfg();
        // Privilege separation: the intersection.
        assert!(can(&cfg, "alice@pve!sep", "/vms/7", "VM.Audit"));
        assert!(!can(&cfg, "alice@pve!sep", "/vms/7", "VM.PowerMgmt"));
        assert!(can(&cfg, "alice@pve!sep", "/vms/100", "VM.Allocate"));
        assert!(!can(
            &cfg,
            "alice@pve!sep",
            "/storage/local",
            "Datastore.Allocate"
        ));
        // Without: the user's.
        assert!(can(&cfg, "alice@pve!full", "/vms/100", "VM.Allocate"));
        assert!(can(&cfg, "alice@pve!full", "/", "Sys.Audit"));
        assert!(privileges(&cfg, "alice@pve!gone", "/").is_empty());
    }

    #[test]
    fn lists_look_below() {
        let cfg = cfg();
        assert!(has_privileges_below(&cfg, "bob@pve", "/vms", &["VM.Audit"]));
        assert!(!has_privileges_below(
            &cfg,
            "bob@pve",
            "/storage",
            &["Datastore.Audit"]
        ));
        assert!(has_privileges_below(&cfg, "bob@pve", "/", &["VM.Allocate"]));
    }

    #[test]
    fn activity() {
        let mut cfg = cfg();
        assert!(user_is_active(&cfg, "alice@pve", 0));
        cfg.users.get_mut("alice@pve").unwrap().expire = 10;
        assert!(!user_is_active(&cfg, "alice@pve", 11));
        assert!(!user_is_active(&cfg, "ghost@pve", 0));
    }
}
