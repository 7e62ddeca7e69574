//! Privileges and the built-in roles.
//!
//! The privilege names are Proxmox VE's. Its built-in roles follow from
//! one table: every privilege belongs to a category (VM, Sys, Datastore,
//! SDN, Mapping, User, Pool) and to a level (`root`, `admin`, `user`,
//! `audit`). From that:
//!
//! - `Administrator` holds every privilege, `NoAccess` none;
//! - `PVE<Category>Admin` holds the category's admin, user and audit
//!   privileges, and `PVEAdmin` those of every category;
//! - `PVE<Category>User` (for categories with user-level privileges) holds
//!   the user and audit privileges;
//! - `PVEAuditor` holds every audit privilege;
//! - `PVETemplateUser` may clone and inspect VMs.
//!
//! Root-level privileges (powering the node off, changing its settings,
//! creating realms) are in `Administrator` only.

use std::collections::BTreeSet;

/// The level of a privilege: who is meant to hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Admin,
    User,
    Audit,
}

/// Every privilege: (category, level, name).
const PRIVILEGES: &[(&str, Level, &str)] = &[
    ("VM", Level::Admin, "VM.Allocate"),
    ("VM", Level::Admin, "VM.Clone"),
    ("VM", Level::Admin, "VM.Config.CPU"),
    ("VM", Level::Admin, "VM.Config.Disk"),
    ("VM", Level::Admin, "VM.Config.HWType"),
    ("VM", Level::Admin, "VM.Config.Memory"),
    ("VM", Level::Admin, "VM.Config.Network"),
    ("VM", Level::Admin, "VM.Config.Options"),
    ("VM", Level::Admin, "VM.Migrate"),
    ("VM", Level::Admin, "VM.Monitor"),
    ("VM", Level::Admin, "VM.Snapshot"),
    ("VM", Level::Admin, "VM.Snapshot.Rollback"),
    ("VM", Level::User, "VM.Backup"),
    ("VM", Level::User, "VM.Config.CDROM"),
    ("VM", Level::User, "VM.Config.Cloudinit"),
    ("VM", Level::User, "VM.Console"),
    ("VM", Level::User, "VM.PowerMgmt"),
    ("VM", Level::Audit, "VM.Audit"),
    ("Sys", Level::Root, "Sys.Incoming"),
    ("Sys", Level::Root, "Sys.Modify"),
    ("Sys", Level::Root, "Sys.PowerMgmt"),
    ("Sys", Level::Admin, "Permissions.Modify"),
    ("Sys", Level::Admin, "Sys.Console"),
    ("Sys", Level::Admin, "Sys.Syslog"),
    ("Sys", Level::Audit, "Sys.Audit"),
    ("Datastore", Level::Admin, "Datastore.Allocate"),
    ("Datastore", Level::Admin, "Datastore.AllocateTemplate"),
    ("Datastore", Level::User, "Datastore.AllocateSpace"),
    ("Datastore", Level::Audit, "Datastore.Audit"),
    ("SDN", Level::Admin, "SDN.Allocate"),
    ("SDN", Level::User, "SDN.Use"),
    ("SDN", Level::Audit, "SDN.Audit"),
    ("Mapping", Level::Admin, "Mapping.Modify"),
    ("Mapping", Level::User, "Mapping.Use"),
    ("Mapping", Level::Audit, "Mapping.Audit"),
    ("User", Level::Root, "Realm.Allocate"),
    ("User", Level::Admin, "Group.Allocate"),
    ("User", Level::Admin, "Realm.AllocateUser"),
    ("User", Level::Admin, "User.Modify"),
    ("Pool", Level::Admin, "Pool.Allocate"),
    ("Pool", Level::Audit, "Pool.Audit"),
];

/// A set of privilege names.
pub type PrivilegeSet = BTreeSet<&'static str>;

/// Every privilege name, sorted.
pub fn all_privileges() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = PRIVILEGES.iter().map(|(_, _, name)| *name).collect();
    names.sort_unstable();
    names.into_iter()
}

/// The canonical spelling of privilege `name`, if it is one.
pub fn privilege(name: &str) -> Option<&'static str> {
    PRIVILEGES.iter().map(|(_, _, p)| *p).find(|p| *p == name)
}

const CATEGORIES: &[&str] = &["VM", "Sys", "Datastore", "SDN", "Mapping", "User", "Pool"];

/// The names of the built-in roles, sorted.
pub fn builtin_role_names() -> Vec<String> {
    let mut names = vec![
        "Administrator".to_owned(),
        "NoAccess".to_owned(),
        "PVEAdmin".to_owned(),
        "PVEAuditor".to_owned(),
        "PVETemplateUser".to_owned(),
    ];
    for category in CATEGORIES {
        names.push(format!("PVE{category}Admin"));
        if has_user_level(category) {
            names.push(format!("PVE{category}User"));
        }
    }
    names.sort();
    names
}

fn has_user_level(category: &str) -> bool {
    PRIVILEGES
        .iter()
        .any(|(c, level, _)| *c == category && *level == Level::User)
}

/// The privileges of built-in role `name`; `None` if it is not built in.
pub fn builtin_role(name: &str) -> Option<PrivilegeSet> {
    let select = |pick: &dyn Fn(&str, Level) -> bool| -> PrivilegeSet {
        PRIVILEGES
            .iter()
            .filter(|(category, level, _)| pick(category, *level))
            .map(|(_, _, name)| *name)
            .collect()
    };
    match name {
        "Administrator" => return Some(select(&|_, _| true)),
        "NoAccess" => return Some(PrivilegeSet::new()),
        "PVEAdmin" => return Some(select(&|_, level| level != Level::Root)),
        "PVEAuditor" => return Some(select(&|_, level| level == Level::Audit)),
        "PVETemplateUser" => return Some(["VM.Audit", "VM.Clone"].into_iter().collect()),
        _ => {}
    }
    let rest = name.strip_prefix("PVE")?;
    if let Some(category) = rest.strip_suffix("Admin") {
        if CATEGORIES.contains(&category) {
            return Some(select(&|c, level| c == category && level != Level::Root));
        }
    }
    if let Some(category) = rest.strip_suffix("User") {
        if CATEGORIES.contains(&category) && has_user_level(category) {
            return Some(select(&|c, level| {
                c == category && matches!(level, Level::User | Level::Audit)
            }));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&'static str]) -> PrivilegeSet {
        names.iter().copied().collect()
    }

    #[test]
    fn the_roles_the_issue_names_exist() {
        for role in [
            "Administrator",
            "PVEAdmin",
            "PVEVMAdmin",
            "PVEVMUser",
            "PVEAuditor",
            "NoAccess",
        ] {
            assert!(builtin_role(role).is_some(), "{role}");
            assert!(builtin_role_names().iter().any(|n| n == role), "{role}");
        }
        assert!(builtin_role("PVEUserUser").is_none());
        assert!(builtin_role("PVEPoolUser").is_none());
        assert!(builtin_role("Custom").is_none());
    }

    #[test]
    fn vm_user_can_operate_but_not_configure() {
        assert_eq!(
            builtin_role("PVEVMUser").unwrap(),
            set(&[
                "VM.Audit",
                "VM.Backup",
                "VM.Config.CDROM",
                "VM.Config.Cloudinit",
                "VM.Console",
                "VM.PowerMgmt"
            ])
        );
    }

    #[test]
    fn admin_lacks_root_privileges() {
        let admin = builtin_role("PVEAdmin").unwrap();
        let all = builtin_role("Administrator").unwrap();
        for root_only in [
            "Sys.PowerMgmt",
            "Sys.Modify",
            "Sys.Incoming",
            "Realm.Allocate",
        ] {
            assert!(!admin.contains(root_only));
            assert!(all.contains(root_only));
        }
        assert!(admin.contains("VM.Allocate"));
        assert!(admin.contains("Permissions.Modify"));
        assert_eq!(all.len(), PRIVILEGES.len());
    }

    #[test]
    fn auditor_only_audits() {
        let auditor = builtin_role("PVEAuditor").unwrap();
        assert!(auditor.iter().all(|p| p.ends_with(".Audit")));
        assert!(auditor.contains("VM.Audit") && auditor.contains("Datastore.Audit"));
        assert!(builtin_role("NoAccess").unwrap().is_empty());
    }

    #[test]
    fn privilege_names_are_unique_and_canonical() {
        let names: Vec<_> = all_privileges().collect();
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
        assert_eq!(privilege("VM.Audit"), Some("VM.Audit"));
        assert_eq!(privilege("vm.audit"), None);
    }
}
