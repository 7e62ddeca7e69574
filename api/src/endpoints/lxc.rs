//! `/nodes/{node}/lxc`: system containers, run by `ctr` (docs/ctr.md) as
//! init units `ctr:<vmid>`, configured by `lxc/<vmid>.conf`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guestconf::{GuestConfig, MountSource};
use hyper::Method;
use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::app_state::{unix_now, AppState};
use crate::auth::Caller;
use crate::endpoints::nodes::this_node;
use crate::endpoints::qemu::{apply, config_keys, purge_guest, vm_task, vmid_of};
use crate::guests::runtime::{ct_unit_name, CT_SHUTDOWN_TIMEOUT};
use crate::guests::VmState;
use crate::response::{ApiError, ApiResult};
use crate::router::{any_priv, privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, integer, string, Param};
use crate::tasks::TaskLog;

const NODE: Param = string("node", Some(&formats::NODE), "The node.");
const VMID: Param = integer("vmid", 100, 999_999_999, "The container.");

fn ct_key(key: &str, value: &str) -> Option<Result<(), String>> {
    guestconf::is_known_ct_key(key).then(|| guestconf::validate_ct_key(key, value))
}

macro_rules! power {
    ($path:literal, $desc:literal, $handler:expr, $params:expr) => {
        Endpoint {
            method: Method::POST,
            path: $path,
            description: $desc,
            params: $params,
            extra: None,
            permission: privs("/vms/{vmid}", &["VM.PowerMgmt"]),
            handler: $handler,
        }
    };
}

/// The container endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/lxc",
        description: "The containers of the node.",
        params: &[NODE],
        extra: None,
        permission: Permission::Anyone("only containers with VM.Audit on /vms/{vmid}"),
        handler: |s, c| Box::pin(list_cts(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/lxc",
        description: "Create a container from a template (`ostemplate`); \
                      `rootfs: STORAGE:SIZE` allocates its root directory (SIZE in GiB).",
        params: &[
            NODE,
            VMID,
            string("ostemplate", None, "The template, a vztmpl volume.").max_length(255),
            string(
                "password",
                None,
                "The root password in the container (5 characters or more).",
            )
            .optional(),
            string(
                "ssh-public-keys",
                None,
                "Public SSH keys for root, one per line.",
            )
            .optional(),
            boolean("start", "Start the container once it is created.").optional(),
            string(
                "pool",
                Some(&formats::POOL_ID),
                "Add the container to this pool.",
            )
            .optional(),
        ],
        extra: Some(ct_key),
        permission: privs("/vms/{vmid}", &["VM.Allocate"]),
        handler: |s, c| Box::pin(create_ct(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/lxc/{vmid}",
        description: "Directory index.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(ct_index(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/nodes/{node}/lxc/{vmid}",
        description: "Destroy a stopped container and its root directory.",
        params: &[
            NODE,
            VMID,
            boolean("purge", "Also remove it from pools and ACLs.").optional(),
            boolean("force", "Accepted for compatibility (must be stopped).").optional(),
        ],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Allocate"]),
        handler: |s, c| Box::pin(destroy_ct(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/lxc/{vmid}/config",
        description: "The container's configuration and its digest.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(get_config(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/nodes/{node}/lxc/{vmid}/config",
        description: "Change the configuration (applies at the next start).",
        params: &[
            NODE,
            VMID,
            string("delete", None, "Keys to remove, separated by commas.").optional(),
            string(
                "digest",
                None,
                "Refuse if the configuration changed since this digest.",
            )
            .optional()
            .max_length(64),
        ],
        extra: Some(ct_key),
        permission: any_priv("/vms/{vmid}", CONFIG_PRIVS),
        handler: |s, c| Box::pin(update_config(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/lxc/{vmid}/status",
        description: "Directory index.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(status_index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/lxc/{vmid}/status/current",
        description: "Whether the container runs, with its pid and uptime.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(current_status(s, c)),
    },
    power!(
        "/nodes/{node}/lxc/{vmid}/status/start",
        "Start the container.",
        |s, c| Box::pin(power_task(s, c, Power::Start)),
        &[NODE, VMID]
    ),
    power!(
        "/nodes/{node}/lxc/{vmid}/status/stop",
        "Stop the container at once.",
        |s, c| Box::pin(power_task(s, c, Power::Stop)),
        &[NODE, VMID]
    ),
    power!(
        "/nodes/{node}/lxc/{vmid}/status/shutdown",
        "Ask the container's init to power off (SIGRTMIN+3 to systemd, else SIGPWR).",
        |s, c| Box::pin(power_task(s, c, Power::Shutdown)),
        &[
            NODE,
            VMID,
            integer("timeout", 0, 86_400, "Seconds to wait (default 60).").optional(),
            boolean(
                "forceStop",
                "Stop the container if it has not ended in time."
            )
            .optional(),
        ]
    ),
    power!(
        "/nodes/{node}/lxc/{vmid}/status/reboot",
        "Shut the container down and start it again.",
        |s, c| Box::pin(power_task(s, c, Power::Reboot)),
        &[
            NODE,
            VMID,
            integer(
                "timeout",
                0,
                86_400,
                "Seconds to wait for the shutdown (default 60)."
            )
            .optional(),
        ]
    ),
];

/// The privileges that allow changing some part of a container's
/// configuration; each key then needs its own (see [`key_privilege`]).
const CONFIG_PRIVS: &[&str] = &[
    "VM.Config.Disk",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
];

/// The privilege needed to change container key `key`, as Proxmox's.
pub fn key_privilege(key: &str) -> &'static str {
    if key == "rootfs" || key.starts_with("mp") {
        return "VM.Config.Disk";
    }
    if key.starts_with("net") {
        return "VM.Config.Network";
    }
    match key {
        "memory" | "swap" => "VM.Config.Memory",
        "cores" | "cpulimit" | "cpuunits" => "VM.Config.CPU",
        _ => "VM.Config.Options",
    }
}

fn no_such_ct(state: &AppState, vmid: u32) -> ApiError {
    ApiError::failed(format!(
        "Configuration file 'nodes/{}/lxc/{vmid}.conf' does not exist",
        state.node
    ))
}

fn config_of(state: &AppState, vmid: u32) -> Result<GuestConfig, ApiError> {
    state.cts.get(vmid).ok_or_else(|| no_such_ct(state, vmid))
}

async fn ct_state(state: &AppState, vmid: u32) -> Result<VmState, String> {
    state.runtime.unit_state(&ct_unit_name(vmid)).await
}

/// A container's status fields, as lists and `status/current` show them.
async fn ct_status(state: &AppState, vmid: u32) -> Result<Value, ApiError> {
    let summary = state
        .cts
        .summary(vmid)
        .ok_or_else(|| no_such_ct(state, vmid))?;
    let run = ct_state(state, vmid)
        .await
        .map_err(|e| ApiError::failed(format!("cannot ask init about CT {vmid}: {e}")))?;
    let mut out = json!({
        "vmid": vmid,
        "name": summary.name,
        "type": "lxc",
        "status": if run == VmState::Stopped { "stopped" } else { "running" },
        "maxmem": summary.memory_mib * 1024 * 1024,
        "mem": 0,
        "maxswap": state
            .cts
            .get(vmid)
            .map_or(512, |c| crate::guests::store::config_number(&c, "swap", 512))
            * 1024
            * 1024,
        "cpus": summary.cpus,
        "cpu": 0,
        "maxdisk": summary.maxdisk,
        "disk": 0,
        "uptime": 0,
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
        "ha": {"managed": 0},
    });
    if let VmState::Running { started_at, .. } = run {
        let uptime = u64::try_from(unix_now())
            .unwrap_or(0)
            .saturating_sub(started_at);
        out["uptime"] = json!(uptime);
        if let Ok(info) = state.runtime.ct_call(vmid, ctr::Request::Info).await {
            if let Some(pid) = info.get("pid") {
                out["pid"] = pid.clone();
            }
        }
    }
    Ok(out)
}

async fn list_cts(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?;
    let cfg = state.access.config();
    let mut out = Vec::new();
    for (vmid, _) in state.cts.list() {
        let path = format!("/vms/{vmid}");
        if !has_privileges(&cfg, &caller.auth_id, &path, &["VM.Audit"], false) {
            continue;
        }
        if let Ok(status) = ct_status(&state, vmid).await {
            out.push(status);
        }
    }
    Ok(Value::Array(out).into())
}

async fn ct_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    config_of(&state, vmid_of(&call))?;
    Ok(json!([{"subdir": "config"}, {"subdir": "status"}]).into())
}

async fn status_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    config_of(&state, vmid_of(&call))?;
    let names = ["current", "reboot", "shutdown", "start", "stop"];
    Ok(Value::Array(names.iter().map(|n| json!({"subdir": n})).collect()).into())
}

async fn current_status(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    Ok(ct_status(&state, vmid_of(&call)).await?.into())
}

async fn get_config(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let config = config_of(&state, vmid_of(&call))?;
    let mut out = serde_json::Map::new();
    for entry in config.main().entries() {
        let value =
            crate::guests::typed_value(crate::guests::GuestKind::Lxc, entry.key(), entry.value());
        out.insert(entry.key().to_owned(), value);
    }
    if let Some(description) = config.description() {
        out.insert("description".into(), json!(description));
    }
    out.insert("digest".into(), json!(config.digest()));
    Ok(Value::Object(out).into())
}

/// The vztmpl volume `ostemplate` names, checked for the caller.
fn template_path(state: &AppState, caller: &Caller, ostemplate: &str) -> Result<PathBuf, ApiError> {
    let id: storage::VolumeId =
        ostemplate
            .parse()
            .map_err(|e: storage::volume::VolumeIdError| {
                ApiError::parameter("ostemplate", e.to_string())
            })?;
    let parsed = storage::DirVolume::parse(id.volname())
        .map_err(|e| ApiError::parameter("ostemplate", e.to_string()))?;
    if parsed.content() != storage::ContentType::Vztmpl {
        return Err(ApiError::parameter(
            "ostemplate",
            format!("'{ostemplate}' is not a container template (vztmpl)"),
        ));
    }
    let cfg = state.access.config();
    if caller.auth_id != crate::access::ROOT_USER
        && !has_privileges(
            &cfg,
            &caller.auth_id,
            &format!("/storage/{}", id.storage()),
            &["Datastore.AllocateSpace", "Datastore.Audit"],
            true,
        )
    {
        return Err(ApiError::forbidden());
    }
    let path = state
        .storage
        .path(&id)
        .map_err(|e| ApiError::parameter("ostemplate", e.to_string()))?;
    if !path.is_file() {
        return Err(ApiError::parameter(
            "ostemplate",
            format!("volume '{ostemplate}' does not exist"),
        ));
    }
    Ok(path)
}

/// The `rootfs` request: a storage and a size to allocate.
fn rootfs_request(
    state: &AppState,
    caller: &Caller,
    keys: &[(String, String)],
) -> Result<(storage::StorageId, u64, String), ApiError> {
    let value = keys
        .iter()
        .find(|(k, _)| k == "rootfs")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            ApiError::parameter("rootfs", "a root file system (STORAGE:SIZE) is required")
        })?;
    let (source, rest) = value.split_once(',').unwrap_or((value, ""));
    let Ok(MountSource::Allocate(allocation)) = MountSource::parse(source) else {
        return Err(ApiError::parameter(
            "rootfs",
            "expected STORAGE:SIZE (a new root directory of SIZE GiB)",
        ));
    };
    let storage = storage::StorageId::new(&allocation.storage)
        .map_err(|e| ApiError::parameter("rootfs", e.to_string()))?;
    state
        .storage
        .plugin(&storage)
        .map_err(|e| ApiError::parameter("rootfs", e.to_string()))?;
    let cfg = state.access.config();
    if !has_privileges(
        &cfg,
        &caller.auth_id,
        &format!("/storage/{storage}"),
        &["Datastore.AllocateSpace"],
        false,
    ) {
        return Err(ApiError::forbidden());
    }
    Ok((storage, allocation.size_bytes(), rest.to_owned()))
}

/// Gives container NICs without `hwaddr` one, as Proxmox VE does, so that
/// a container keeps its MAC (and its DHCP lease, and its neighbours'
/// ARP entries) across starts. A changed `netN` without `hwaddr` keeps the
/// address it had in `current`.
fn assign_hwaddrs(keys: &mut [(String, String)], current: Option<&GuestConfig>) {
    for (key, value) in keys.iter_mut() {
        let is_net = key
            .strip_prefix("net")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_net {
            continue;
        }
        match guestconf::ContainerNet::parse(value) {
            Ok(net) if net.hwaddr.is_none() => {
                let old = current
                    .and_then(|c| c.get(key))
                    .and_then(|v| guestconf::ContainerNet::parse(v).ok())
                    .and_then(|n| n.hwaddr);
                let mac = old.map_or_else(crate::endpoints::qemu::random_mac, |m| m.to_string());
                value.push_str(&format!(",hwaddr={mac}"));
            }
            _ => {}
        }
    }
}

async fn create_ct(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    if state.cts.exists(vmid) || state.vms.exists(vmid) {
        return Err(ApiError::parameter(
            "vmid",
            format!("CT {vmid} already exists on node '{}'", state.node),
        ));
    }
    if call.params.get("unprivileged") == Some("0") {
        return Err(ApiError::parameter(
            "unprivileged",
            "privileged containers are not supported: containers run in a user namespace",
        ));
    }
    let template = template_path(&state, &caller, call.param("ostemplate"))?;
    let mut keys = config_keys(
        &call,
        &[
            "node",
            "vmid",
            "ostemplate",
            "password",
            "ssh-public-keys",
            "start",
            "pool",
        ],
    );
    let (storage, size_bytes, rootfs_options) = rootfs_request(&state, &caller, &keys)?;
    let pool = call.params.get("pool").map(str::to_owned);
    if let Some(pool) = &pool {
        if !state.access.config().pools.contains_key(pool) {
            return Err(ApiError::parameter(
                "pool",
                format!("pool '{pool}' does not exist"),
            ));
        }
    }
    if !keys.iter().any(|(k, _)| k == "unprivileged") {
        keys.push(("unprivileged".into(), "1".into()));
    }
    if !keys.iter().any(|(k, _)| k == "arch") {
        keys.push(("arch".into(), "amd64".into()));
    }
    assign_hwaddrs(&mut keys, None);
    // Refuse what could not be written before a task starts.
    let mut probe = GuestConfig::new();
    apply(&mut probe, &keys).map_err(|e| ApiError::parameter("vmid", e))?;
    let password_hash = match call.params.get("password") {
        Some(p) if p.chars().count() < 5 => {
            return Err(ApiError::parameter(
                "password",
                "a password has at least 5 characters",
            ))
        }
        Some(p) => Some(installer::hash_password(p).map_err(|e| ApiError::failed(e.to_string()))?),
        None => None,
    };
    let ssh_keys = call.params.get("ssh-public-keys").map(str::to_owned);
    let start = call.params.flag("start");
    vm_task(
        &state,
        "vzcreate",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.cts.lock(vmid);
            let guard = lock.lock().await;
            if state.cts.exists(vmid) || state.vms.exists(vmid) {
                return Err(format!("CT {vmid} already exists"));
            }
            let vmid_typed = storage::Vmid::new(vmid).map_err(|e| e.to_string())?;
            let volume = state
                .storage
                .allocate(
                    &storage,
                    vmid_typed,
                    size_bytes,
                    Some(storage::ImageFormat::Subvol),
                )
                .map_err(|e| format!("rootfs: {e}"))?;
            let made = make_rootfs(
                &state,
                &volume,
                &template,
                size_bytes,
                password_hash.as_deref(),
                ssh_keys.as_deref(),
                &log,
            )
            .await;
            let written = made.and_then(|()| {
                let mut rootfs =
                    format!("{volume},size={}", guestconf::format_disk_size(size_bytes));
                if !rootfs_options.is_empty() {
                    rootfs = format!("{volume},{rootfs_options}");
                    if !rootfs_options.split(',').any(|p| p.starts_with("size=")) {
                        rootfs.push_str(&format!(
                            ",size={}",
                            guestconf::format_disk_size(size_bytes)
                        ));
                    }
                }
                for (key, value) in keys.iter_mut() {
                    if key == "rootfs" {
                        *value = rootfs.clone();
                    }
                }
                let mut config = GuestConfig::new();
                apply(&mut config, &keys)?;
                state.cts.write(vmid, config).map_err(|e| e.to_string())
            });
            if let Err(e) = written {
                let _ = state.storage.free(&volume);
                return Err(e);
            }
            log.line(format!("created CT {vmid}"));
            if let Some(pool) = pool {
                crate::endpoints::qemu::add_to_pool(
                    &state,
                    &format!("CT {vmid}"),
                    vmid,
                    &pool,
                    &log,
                );
            }
            if start {
                drop(guard);
                start_ct(&state, vmid, &log).await?;
            }
            Ok(())
        },
    )
}

/// Unpacks `template` into the new root directory `volume` and sets
/// root's password and SSH keys inside it.
async fn make_rootfs(
    state: &AppState,
    volume: &storage::VolumeId,
    template: &std::path::Path,
    size_bytes: u64,
    password_hash: Option<&str>,
    ssh_keys: Option<&str>,
    log: &TaskLog,
) -> Result<(), String> {
    let root = state.storage.path(volume).map_err(|e| e.to_string())?;
    // The storage made the directory to claim its name; the unpacker
    // moves a finished tree into place and never overwrites.
    std::fs::remove_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    log.line(format!("extracting {} into {volume}", template.display()));
    let (template, root2) = (template.to_path_buf(), root.clone());
    let password_hash = password_hash.map(str::to_owned);
    let ssh_keys = ssh_keys.map(str::to_owned);
    let report = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let opts = ctr::UnpackOptions {
            max_bytes: size_bytes,
            ..Default::default()
        };
        let report = ctr::create_from_template(&template, &root2, &opts)
            .map_err(|e| format!("extracting the template: {e}"))?;
        let idmap = ctr::IdMap::DEFAULT;
        if let Some(hash) = &password_hash {
            ctr::rootfs::set_root_password_hash(&root2, hash, &idmap)
                .map_err(|e| format!("setting the root password: {e}"))?;
        }
        if let Some(keys) = &ssh_keys {
            ctr::rootfs::add_root_ssh_keys(&root2, keys, &idmap)
                .map_err(|e| format!("adding SSH keys: {e}"))?;
        }
        Ok(format!("{report:?}"))
    })
    .await
    .map_err(|e| e.to_string())?;
    match report {
        Ok(report) => {
            log.line(format!("extracted: {report}"));
            Ok(())
        }
        Err(e) => {
            // Nothing half-made stays: the storage frees the volume.
            let _ = std::fs::create_dir(&root);
            Err(e)
        }
    }
}

async fn update_config(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let vmid = vmid_of(&call);
    let current = config_of(&state, vmid)?;
    let mut keys = config_keys(&call, &["node", "vmid", "delete", "digest"]);
    assign_hwaddrs(&mut keys, Some(&current));
    let deleted: Vec<String> = call
        .params
        .get("delete")
        .unwrap_or("")
        .split([',', ';', ' '])
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    for key in &deleted {
        if !guestconf::is_known_ct_key(key) && !guestconf::is_valid_key(key) {
            return Err(ApiError::parameter(
                "delete",
                format!("invalid key '{key}'"),
            ));
        }
        if key == "rootfs" || keys.iter().any(|(k, _)| k == key) {
            return Err(ApiError::parameter(
                "delete",
                format!("cannot delete '{key}' here"),
            ));
        }
    }
    if keys
        .iter()
        .any(|(k, _)| k == "rootfs" || k == "unprivileged")
    {
        return Err(ApiError::parameter(
            "rootfs",
            "rootfs and unprivileged are set when the container is created",
        ));
    }
    if keys.is_empty() && deleted.is_empty() {
        return Err(ApiError::parameter("delete", "no options specified"));
    }
    let caller = call.caller()?;
    let cfg = state.access.config();
    for key in keys.iter().map(|(k, _)| k).chain(&deleted) {
        let needed = key_privilege(key);
        if !has_privileges(
            &cfg,
            &caller.auth_id,
            &format!("/vms/{vmid}"),
            &[needed],
            false,
        ) {
            return Err(ApiError::forbidden());
        }
    }
    let lock = state.cts.lock(vmid);
    let _guard = lock.lock().await;
    let mut config = config_of(&state, vmid)?;
    super::check_digest(call.params.get("digest"), || config.digest()).map_err(ApiError::failed)?;
    let old = config.clone();
    apply(&mut config, &keys).map_err(|e| ApiError::parameter("delete", e))?;
    for key in &deleted {
        if key == "description" {
            config.set_description("");
        }
        config.delete(key);
    }
    // A running container's interfaces take what can change at once
    // (guests::live) before anything is written: a change that fails
    // changes nothing.
    // A state init cannot tell counts as stopped (see qemu's).
    let running = ct_state(&state, vmid)
        .await
        .is_ok_and(|s| s != VmState::Stopped);
    let net = if running {
        crate::guests::live::ct_changes(vmid, &old, &config)
            .map_err(|e| ApiError::parameter("net", e))?
    } else {
        Default::default()
    };
    crate::guests::live::replug(&net.live)
        .await
        .map_err(ApiError::failed)?;
    let firewall = net.touches_firewall((&old, &config), vmid, true);
    if let Err(e) = state.cts.write(vmid, config) {
        crate::guests::live::restore(&net.live).await;
        return Err(ApiError::failed(e.to_string()));
    }
    if firewall {
        crate::firewall::apply_firewall(&state).await?;
    }
    Ok(Value::Null.into())
}

/// Starts container `vmid` as init unit `ctr:<vmid>`; fails if it runs.
async fn start_ct(state: &AppState, vmid: u32, log: &TaskLog) -> Result<(), String> {
    let lock = state.cts.lock(vmid);
    let _guard = lock.lock().await;
    let config = state
        .cts
        .get(vmid)
        .ok_or_else(|| format!("CT {vmid} does not exist"))?;
    if ct_state(state, vmid).await? != VmState::Stopped {
        return Err(format!("CT {vmid} already running"));
    }
    let rootfs = config
        .get("rootfs")
        .ok_or_else(|| format!("CT {vmid} has no rootfs"))?;
    let volume = rootfs.split(',').next().unwrap_or_default();
    let id: storage::VolumeId = volume
        .parse()
        .map_err(|e: storage::volume::VolumeIdError| format!("rootfs '{volume}': {e}"))?;
    let root = state
        .storage
        .path(&id)
        .map_err(|e| format!("rootfs '{volume}': {e}"))?;
    let runtime = &state.runtime;
    let argv: Vec<String> = vec![
        runtime.ctr_binary.display().to_string(),
        "start".into(),
        "--config".into(),
        state.cts.path(vmid).display().to_string(),
        "--vmid".into(),
        vmid.to_string(),
        "--rootfs".into(),
        root.display().to_string(),
        "--socket".into(),
        runtime.ct_socket(vmid).display().to_string(),
        "--console-log".into(),
        runtime.ct_console_log(vmid).display().to_string(),
        "--shutdown-timeout".into(),
        CT_SHUTDOWN_TIMEOUT.to_string(),
    ];
    if crate::firewall::wants_firewall(&config, vmid, true) {
        log.line("putting the ports with firewall=1 under the firewall");
        crate::firewall::apply_firewall_for_start(state, vmid)
            .await
            .map_err(|e| format!("cannot set up the firewall: {}", e.message))?;
    }
    log.line(format!("starting {}", argv.join(" ")));
    runtime.start_ct(vmid, &argv).await?;
    log.line(format!("CT {vmid} started as unit {}", ct_unit_name(vmid)));
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Power {
    Start,
    Stop,
    Shutdown,
    Reboot,
}

async fn shutdown_ct(
    state: &AppState,
    vmid: u32,
    timeout: u64,
    force: bool,
    log: &TaskLog,
) -> Result<(), String> {
    if ct_state(state, vmid).await? == VmState::Stopped {
        return Err(format!("CT {vmid} not running"));
    }
    // The monitor kills the guest itself after its timeout; apid waits a
    // little longer for the unit to end.
    state
        .runtime
        .ct_call(
            vmid,
            ctr::Request::Shutdown {
                timeout: Some(timeout),
            },
        )
        .await?;
    log.line(format!(
        "asked CT {vmid} to shut down, waiting up to {timeout} s"
    ));
    let unit = ct_unit_name(vmid);
    if state
        .runtime
        .wait_unit_stopped(&unit, Duration::from_secs(timeout + 10))
        .await?
    {
        return Ok(());
    }
    if force {
        log.line("the container did not end in time; stopping it");
        return state.runtime.stop_ct(vmid).await;
    }
    Err(format!("CT {vmid} shutdown failed - got timeout"))
}

async fn power_task(state: Arc<AppState>, call: Call, action: Power) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    config_of(&state, vmid)?;
    let kind = match action {
        Power::Start => "vzstart",
        Power::Stop => "vzstop",
        Power::Shutdown => "vzshutdown",
        Power::Reboot => "vzreboot",
    };
    let timeout = call.params.number("timeout").unwrap_or(CT_SHUTDOWN_TIMEOUT);
    let force = call.params.flag("forceStop");
    vm_task(&state, kind, vmid, &caller, move |state, log| async move {
        match action {
            Power::Start => start_ct(&state, vmid, &log).await,
            Power::Stop => {
                if ct_state(&state, vmid).await? == VmState::Stopped {
                    log.line(format!("CT {vmid} is not running"));
                    return Ok(());
                }
                state.runtime.stop_ct(vmid).await
            }
            Power::Shutdown => shutdown_ct(&state, vmid, timeout, force, &log).await,
            Power::Reboot => {
                shutdown_ct(&state, vmid, timeout, false, &log).await?;
                start_ct(&state, vmid, &log).await
            }
        }
    })
}

async fn destroy_ct(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    config_of(&state, vmid)?;
    if ct_state(&state, vmid).await.map_err(ApiError::failed)? != VmState::Stopped {
        return Err(ApiError::failed(format!(
            "CT {vmid} is running - destroy failed"
        )));
    }
    let purge = call.params.flag("purge");
    vm_task(
        &state,
        "vzdestroy",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.cts.lock(vmid);
            let _guard = lock.lock().await;
            let config = state
                .cts
                .get(vmid)
                .ok_or_else(|| format!("CT {vmid} does not exist"))?;
            if ct_state(&state, vmid).await? != VmState::Stopped {
                return Err(format!("CT {vmid} is running - destroy failed"));
            }
            let mut volumes: Vec<storage::VolumeId> = config
                .main()
                .entries()
                .filter_map(|e| guestconf::MountPoint::parse(e.key(), e.value()).ok())
                .filter_map(|m| match m.source {
                    MountSource::Volume(v) => v.to_string().parse().ok(),
                    _ => None,
                })
                .collect();
            if let Ok(vmid_typed) = storage::Vmid::new(vmid) {
                for volume in state.storage.vm_volumes(vmid_typed).unwrap_or_default() {
                    if !volumes.contains(&volume) {
                        volumes.push(volume);
                    }
                }
            }
            for volume in &volumes {
                match state.storage.free(volume) {
                    Ok(()) => log.line(format!("removed {volume}")),
                    Err(e) => log.line(format!("cannot remove {volume}: {e}")),
                }
            }
            state.runtime.cleanup_ct(vmid).await;
            state.cts.remove(vmid).map_err(|e| e.to_string())?;
            if purge {
                purge_guest(&state, vmid, &log, "CT");
            }
            log.line(format!("destroyed CT {vmid}"));
            Ok(())
        },
    )
}
