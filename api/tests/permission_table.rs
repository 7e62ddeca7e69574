//! Every endpoint against every built-in role: the table below says which
//! roles, given on `/` to a `pve` user, let that user past an endpoint's
//! permission check (the same check the router runs before the handler).
//! A new endpoint fails this test until it has a row.
//!
//! Endpoints marked `ANY` are open to every authenticated caller (lists the
//! handler filters, directory indexes, the version); that they refuse
//! callers without a ticket is checked over HTTPS in `https_api.rs`.

use api::access::UserConfig;
use api::auth::Caller;
use api::params::Params;
use api::router::ENDPOINTS;

const ROLES: &[&str] = &[
    "Administrator",
    "PVEAdmin",
    "PVEVMAdmin",
    "PVEVMUser",
    "PVEAuditor",
    "PVEDatastoreAdmin",
    "PVEDatastoreUser",
    "PVEUserAdmin",
    "PVESysAdmin",
    "PVEPoolAdmin",
    "NoAccess",
];

const ANY: &[&str] = ROLES;
const VM_AUDIT: &[&str] = &[
    "Administrator",
    "PVEAdmin",
    "PVEVMAdmin",
    "PVEVMUser",
    "PVEAuditor",
];
const VM_POWER: &[&str] = &["Administrator", "PVEAdmin", "PVEVMAdmin", "PVEVMUser"];
const VM_ALLOCATE: &[&str] = &["Administrator", "PVEAdmin", "PVEVMAdmin"];
const USER_MODIFY: &[&str] = &["Administrator", "PVEAdmin", "PVEUserAdmin"];
const USER_AUDIT: &[&str] = &[
    "Administrator",
    "PVEAdmin",
    "PVEUserAdmin",
    "PVEAuditor",
    "PVESysAdmin",
];
const SYS_AUDIT: &[&str] = &["Administrator", "PVEAdmin", "PVEAuditor", "PVESysAdmin"];
const STORAGE_READ: &[&str] = &[
    "Administrator",
    "PVEAdmin",
    "PVEAuditor",
    "PVEDatastoreAdmin",
    "PVEDatastoreUser",
];
const STORAGE_SPACE: &[&str] = &[
    "Administrator",
    "PVEAdmin",
    "PVEDatastoreAdmin",
    "PVEDatastoreUser",
];
const STORAGE_ADMIN: &[&str] = &["Administrator", "PVEAdmin", "PVEDatastoreAdmin"];
const POOL_ALLOCATE: &[&str] = &["Administrator", "PVEAdmin", "PVEPoolAdmin"];
const POOL_AUDIT: &[&str] = &["Administrator", "PVEAdmin", "PVEPoolAdmin", "PVEAuditor"];
const ROOT_ONLY: &[&str] = &["Administrator"];
const PERMISSIONS_MODIFY: &[&str] = &["Administrator", "PVEAdmin", "PVESysAdmin"];

/// (method, path, roles allowed). Requests name another user
/// (`other@pve`) and another user's task, so "self" and "owner" rules do
/// not apply here; see `self_and_owner_rules` for those.
const TABLE: &[(&str, &str, &[&str])] = &[
    ("GET", "/", ANY),
    ("GET", "/version", ANY),
    ("GET", "/api-schema", ANY),
    ("POST", "/access/ticket", ANY),
    ("GET", "/access", ANY),
    ("GET", "/access/domains", ANY),
    ("GET", "/access/acl", ANY),
    ("PUT", "/access/acl", PERMISSIONS_MODIFY),
    ("GET", "/access/roles", ANY),
    ("POST", "/access/roles", ROOT_ONLY),
    ("GET", "/access/roles/{roleid}", ANY),
    ("PUT", "/access/roles/{roleid}", ROOT_ONLY),
    ("DELETE", "/access/roles/{roleid}", ROOT_ONLY),
    ("GET", "/access/groups", ANY),
    ("POST", "/access/groups", USER_MODIFY),
    ("GET", "/access/groups/{groupid}", USER_AUDIT),
    ("PUT", "/access/groups/{groupid}", USER_MODIFY),
    ("DELETE", "/access/groups/{groupid}", USER_MODIFY),
    ("GET", "/access/permissions", ANY),
    ("PUT", "/access/password", USER_MODIFY),
    ("GET", "/access/users", ANY),
    ("POST", "/access/users", USER_MODIFY),
    ("GET", "/access/users/{userid}", USER_AUDIT),
    ("PUT", "/access/users/{userid}", USER_MODIFY),
    ("DELETE", "/access/users/{userid}", USER_MODIFY),
    ("GET", "/access/users/{userid}/token", USER_MODIFY),
    ("GET", "/access/users/{userid}/token/{tokenid}", USER_MODIFY),
    (
        "POST",
        "/access/users/{userid}/token/{tokenid}",
        USER_MODIFY,
    ),
    ("PUT", "/access/users/{userid}/token/{tokenid}", USER_MODIFY),
    (
        "DELETE",
        "/access/users/{userid}/token/{tokenid}",
        USER_MODIFY,
    ),
    ("GET", "/cluster", ANY),
    ("GET", "/cluster/resources", ANY),
    ("GET", "/cluster/nextid", ANY),
    ("GET", "/nodes", ANY),
    ("GET", "/nodes/{node}", ANY),
    ("GET", "/nodes/{node}/status", SYS_AUDIT),
    ("GET", "/nodes/{node}/tasks", ANY),
    ("GET", "/nodes/{node}/tasks/{upid}", SYS_AUDIT),
    ("GET", "/nodes/{node}/tasks/{upid}/status", SYS_AUDIT),
    ("GET", "/nodes/{node}/tasks/{upid}/log", SYS_AUDIT),
    ("GET", "/nodes/{node}/qemu", ANY),
    ("POST", "/nodes/{node}/qemu", VM_ALLOCATE),
    ("GET", "/nodes/{node}/qemu/{vmid}", VM_AUDIT),
    ("DELETE", "/nodes/{node}/qemu/{vmid}", VM_ALLOCATE),
    ("GET", "/nodes/{node}/qemu/{vmid}/config", VM_AUDIT),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending", VM_AUDIT),
    // Any VM.Config.* privilege passes; each key is then checked on its
    // own (PVEVMUser may change only CD-ROM and cloud-init keys).
    ("POST", "/nodes/{node}/qemu/{vmid}/config", VM_POWER),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config", VM_POWER),
    ("GET", "/nodes/{node}/qemu/{vmid}/status", VM_AUDIT),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current", VM_AUDIT),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start", VM_POWER),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop", VM_POWER),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/status/shutdown",
        VM_POWER,
    ),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot", VM_POWER),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reset", VM_POWER),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone", VM_ALLOCATE),
    // VM.Config.Disk: the roles that may allocate.
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize", VM_ALLOCATE),
    ("POST", "/nodes/{node}/qemu/{vmid}/template", VM_ALLOCATE),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/suspend", VM_POWER),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/resume", VM_POWER),
    ("GET", "/nodes/{node}/lxc", ANY),
    ("POST", "/nodes/{node}/lxc", VM_ALLOCATE),
    ("GET", "/nodes/{node}/lxc/{vmid}", VM_AUDIT),
    ("DELETE", "/nodes/{node}/lxc/{vmid}", VM_ALLOCATE),
    ("GET", "/nodes/{node}/lxc/{vmid}/config", VM_AUDIT),
    ("PUT", "/nodes/{node}/lxc/{vmid}/config", VM_ALLOCATE),
    ("GET", "/nodes/{node}/lxc/{vmid}/status", VM_AUDIT),
    ("GET", "/nodes/{node}/lxc/{vmid}/status/current", VM_AUDIT),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/start", VM_POWER),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/stop", VM_POWER),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown", VM_POWER),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/reboot", VM_POWER),
    ("GET", "/storage", ANY),
    ("GET", "/storage/{storage}", STORAGE_ADMIN),
    ("GET", "/nodes/{node}/storage", ANY),
    ("GET", "/nodes/{node}/storage/{storage}", STORAGE_READ),
    (
        "GET",
        "/nodes/{node}/storage/{storage}/status",
        STORAGE_READ,
    ),
    (
        "GET",
        "/nodes/{node}/storage/{storage}/content",
        STORAGE_READ,
    ),
    (
        "POST",
        "/nodes/{node}/storage/{storage}/content",
        STORAGE_SPACE,
    ),
    // Per volume, the handler decides (Proxmox's volume access rules).
    (
        "GET",
        "/nodes/{node}/storage/{storage}/content/{volume}",
        ANY,
    ),
    (
        "DELETE",
        "/nodes/{node}/storage/{storage}/content/{volume}",
        ANY,
    ),
    (
        "POST",
        "/nodes/{node}/storage/{storage}/upload",
        STORAGE_ADMIN,
    ),
    ("GET", "/cluster/firewall", ANY),
    ("GET", "/cluster/firewall/refs", SYS_AUDIT),
    ("GET", "/cluster/firewall/aliases", SYS_AUDIT),
    ("POST", "/cluster/firewall/aliases", ROOT_ONLY),
    ("DELETE", "/cluster/firewall/aliases/{name}", ROOT_ONLY),
    ("GET", "/cluster/firewall/aliases/{name}", SYS_AUDIT),
    ("PUT", "/cluster/firewall/aliases/{name}", ROOT_ONLY),
    ("GET", "/cluster/firewall/ipset", SYS_AUDIT),
    ("POST", "/cluster/firewall/ipset", ROOT_ONLY),
    ("GET", "/cluster/firewall/ipset/{name}", SYS_AUDIT),
    ("POST", "/cluster/firewall/ipset/{name}", ROOT_ONLY),
    ("DELETE", "/cluster/firewall/ipset/{name}", ROOT_ONLY),
    ("GET", "/cluster/firewall/ipset/{name}/{cidr}", SYS_AUDIT),
    ("PUT", "/cluster/firewall/ipset/{name}/{cidr}", ROOT_ONLY),
    ("DELETE", "/cluster/firewall/ipset/{name}/{cidr}", ROOT_ONLY),
    ("GET", "/cluster/firewall/groups", SYS_AUDIT),
    ("POST", "/cluster/firewall/groups", ROOT_ONLY),
    ("DELETE", "/cluster/firewall/groups/{group}", ROOT_ONLY),
    ("GET", "/cluster/firewall/groups/{group}", SYS_AUDIT),
    ("POST", "/cluster/firewall/groups/{group}", ROOT_ONLY),
    (
        "DELETE",
        "/cluster/firewall/groups/{group}/{pos}",
        ROOT_ONLY,
    ),
    ("GET", "/cluster/firewall/groups/{group}/{pos}", SYS_AUDIT),
    ("PUT", "/cluster/firewall/groups/{group}/{pos}", ROOT_ONLY),
    ("GET", "/cluster/firewall/macros", ANY),
    ("GET", "/cluster/firewall/options", SYS_AUDIT),
    ("PUT", "/cluster/firewall/options", ROOT_ONLY),
    ("GET", "/cluster/firewall/rules", SYS_AUDIT),
    ("POST", "/cluster/firewall/rules", ROOT_ONLY),
    ("DELETE", "/cluster/firewall/rules/{pos}", ROOT_ONLY),
    ("GET", "/cluster/firewall/rules/{pos}", SYS_AUDIT),
    ("PUT", "/cluster/firewall/rules/{pos}", ROOT_ONLY),
    ("GET", "/nodes/{node}/firewall", ANY),
    ("GET", "/nodes/{node}/firewall/options", SYS_AUDIT),
    ("PUT", "/nodes/{node}/firewall/options", ROOT_ONLY),
    ("GET", "/nodes/{node}/firewall/rules", SYS_AUDIT),
    ("POST", "/nodes/{node}/firewall/rules", ROOT_ONLY),
    ("DELETE", "/nodes/{node}/firewall/rules/{pos}", ROOT_ONLY),
    ("GET", "/nodes/{node}/firewall/rules/{pos}", SYS_AUDIT),
    ("PUT", "/nodes/{node}/firewall/rules/{pos}", ROOT_ONLY),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall", VM_AUDIT),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall/refs", VM_AUDIT),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall/aliases", VM_AUDIT),
    (
        "POST",
        "/nodes/{node}/lxc/{vmid}/firewall/aliases",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/lxc/{vmid}/firewall/aliases/{name}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/firewall/aliases/{name}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/lxc/{vmid}/firewall/aliases/{name}",
        VM_ALLOCATE,
    ),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall/ipset", VM_AUDIT),
    (
        "POST",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}",
        VM_AUDIT,
    ),
    (
        "POST",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/lxc/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_ALLOCATE,
    ),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall/options", VM_AUDIT),
    (
        "PUT",
        "/nodes/{node}/lxc/{vmid}/firewall/options",
        VM_ALLOCATE,
    ),
    ("GET", "/nodes/{node}/lxc/{vmid}/firewall/rules", VM_AUDIT),
    (
        "POST",
        "/nodes/{node}/lxc/{vmid}/firewall/rules",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}",
        VM_ALLOCATE,
    ),
    ("DELETE", "/nodes/{node}/network", ROOT_ONLY),
    ("GET", "/nodes/{node}/network", SYS_AUDIT),
    ("POST", "/nodes/{node}/network", ROOT_ONLY),
    ("PUT", "/nodes/{node}/network", ROOT_ONLY),
    ("DELETE", "/nodes/{node}/network/{iface}", ROOT_ONLY),
    ("GET", "/nodes/{node}/network/{iface}", SYS_AUDIT),
    ("PUT", "/nodes/{node}/network/{iface}", ROOT_ONLY),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall", VM_AUDIT),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/refs", VM_AUDIT),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/aliases",
        VM_AUDIT,
    ),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/firewall/aliases",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/qemu/{vmid}/firewall/aliases/{name}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/aliases/{name}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/qemu/{vmid}/firewall/aliases/{name}",
        VM_ALLOCATE,
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/ipset", VM_AUDIT),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}",
        VM_AUDIT,
    ),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/options",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/qemu/{vmid}/firewall/options",
        VM_ALLOCATE,
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/firewall/rules", VM_AUDIT),
    (
        "POST",
        "/nodes/{node}/qemu/{vmid}/firewall/rules",
        VM_ALLOCATE,
    ),
    (
        "DELETE",
        "/nodes/{node}/qemu/{vmid}/firewall/rules/{pos}",
        VM_ALLOCATE,
    ),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/firewall/rules/{pos}",
        VM_AUDIT,
    ),
    (
        "PUT",
        "/nodes/{node}/qemu/{vmid}/firewall/rules/{pos}",
        VM_ALLOCATE,
    ),
    ("GET", "/pools", ANY),
    ("POST", "/pools", POOL_ALLOCATE),
    ("GET", "/pools/{poolid}", POOL_AUDIT),
    ("PUT", "/pools/{poolid}", POOL_ALLOCATE),
    ("DELETE", "/pools/{poolid}", POOL_ALLOCATE),
];

const OTHERS_TASK: &str = "UPID:pve1:00000001:00000002:00000003:qmstart:100:other@pve:";

fn params() -> Params {
    let mut p = Params::new();
    for (k, v) in [
        ("node", "pve1"),
        ("vmid", "100"),
        ("userid", "other@pve"),
        ("tokenid", "t1"),
        ("groupid", "g1"),
        ("roleid", "r1"),
        ("poolid", "p1"),
        ("path", "/vms/100"),
        ("upid", OTHERS_TASK),
        ("storage", "local"),
        ("volume", "local:iso/x.iso"),
        ("iface", "vmbr1"),
        ("pos", "0"),
        ("group", "g1"),
        ("name", "a1"),
    ] {
        p.insert(k, v);
    }
    p
}

fn config_with(role: &str) -> UserConfig {
    let text = format!("user:u@pve:1:0::::::\nuser:other@pve:1:0::::::\nacl:1:/:u@pve:{role}:\n");
    let (cfg, skipped) = UserConfig::parse(&text);
    assert!(skipped.is_empty(), "{skipped:?}");
    cfg
}

#[test]
fn every_endpoint_has_a_row_and_every_row_an_endpoint() {
    for endpoint in ENDPOINTS.iter() {
        assert!(
            TABLE
                .iter()
                .any(|(m, p, _)| *m == endpoint.method.as_str() && *p == endpoint.path),
            "no row for {} {}",
            endpoint.method,
            endpoint.path
        );
    }
    for (method, path, _) in TABLE {
        assert!(
            ENDPOINTS
                .iter()
                .any(|e| e.method.as_str() == *method && e.path == *path),
            "row for {method} {path}, which no endpoint serves"
        );
    }
}

#[test]
fn every_role_is_allowed_or_denied_as_the_table_says() {
    let caller = Caller::user("u@pve");
    let params = params();
    let mut wrong = Vec::new();
    for role in ROLES {
        let cfg = config_with(role);
        for (method, path, allowed) in TABLE {
            let endpoint = ENDPOINTS
                .iter()
                .find(|e| e.method.as_str() == *method && e.path == *path)
                .expect("every row has an endpoint");
            let expected = allowed.contains(role);
            let actual = endpoint.permission.allows(&cfg, &caller, &params);
            if expected != actual {
                wrong.push(format!(
                    "{method} {path} with {role}: expected {}, got {}",
                    if expected { "allow" } else { "deny" },
                    if actual { "allow" } else { "deny" },
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn self_and_owner_rules() {
    let cfg = config_with("NoAccess");
    let caller = Caller::user("u@pve");
    let mut own = params();
    own.insert("userid", "u@pve");
    own.insert(
        "upid",
        "UPID:pve1:00000001:00000002:00000003:qmstart:100:u@pve:",
    );
    for (method, path) in [
        ("GET", "/access/users/{userid}"),
        ("GET", "/access/users/{userid}/token"),
        ("POST", "/access/users/{userid}/token/{tokenid}"),
        ("DELETE", "/access/users/{userid}/token/{tokenid}"),
        ("PUT", "/access/password"),
        ("GET", "/nodes/{node}/tasks/{upid}/status"),
        ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ] {
        let endpoint = ENDPOINTS
            .iter()
            .find(|e| e.method.as_str() == method && e.path == path)
            .unwrap();
        assert!(
            endpoint.permission.allows(&cfg, &caller, &own),
            "{method} {path}: one's own"
        );
        assert!(
            !endpoint.permission.allows(&cfg, &caller, &params()),
            "{method} {path}: somebody else's"
        );
    }
    // Editing one's own account (enable, expiry) is not self-service.
    let update = ENDPOINTS
        .iter()
        .find(|e| e.method.as_str() == "PUT" && e.path == "/access/users/{userid}")
        .unwrap();
    assert!(!update.permission.allows(&cfg, &caller, &own));
}

#[test]
fn roles_on_a_deeper_path_apply_there_only() {
    let (cfg, _) = UserConfig::parse("user:u@pve:1:0::::::\nacl:1:/vms/100:u@pve:PVEVMUser:\n");
    let caller = Caller::user("u@pve");
    let start = ENDPOINTS
        .iter()
        .find(|e| e.path == "/nodes/{node}/qemu/{vmid}/status/start")
        .unwrap();
    let mut p = params();
    assert!(start.permission.allows(&cfg, &caller, &p));
    p.insert("vmid", "101");
    assert!(!start.permission.allows(&cfg, &caller, &p));
}
