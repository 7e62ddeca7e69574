//! `/nodes/{node}/qemu`: virtual machines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guestconf::{DiskBus, DiskFile, GuestConfig};
use hyper::Method;
use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::app_state::{unix_now, AppState};
use crate::auth::Caller;
use crate::endpoints::nodes::this_node;
use crate::guests::runtime::unit_name;
use crate::guests::VmState;
use crate::response::{ApiError, ApiResult};
use crate::router::{any_priv, privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, integer, string, Param};
use crate::tasks::TaskLog;

pub(crate) const NODE: Param = string("node", Some(&formats::NODE), "The node.");
pub(crate) const VMID: Param = integer("vmid", 100, 999_999_999, "The VM.");

/// The privileges that allow changing some part of a VM's configuration;
/// each key then needs its own (see [`key_privilege`]).
const CONFIG_PRIVS: &[&str] = &[
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
];

fn vm_key(key: &str, value: &str) -> Option<Result<(), String>> {
    guestconf::is_known_vm_key(key).then(|| guestconf::validate_vm_key(key, value))
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

/// The VM endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu",
        description: "The VMs of the node.",
        params: &[
            NODE,
            boolean("full", "Accepted for compatibility.").optional(),
        ],
        extra: None,
        permission: Permission::Anyone("only VMs with VM.Audit on /vms/{vmid}"),
        handler: |s, c| Box::pin(list_vms(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/qemu",
        description: "Create a VM; `STORAGE:SIZE` disks are allocated (SIZE in GiB).",
        params: &[
            NODE,
            VMID,
            boolean("start", "Start the VM once it is created.").optional(),
            string("pool", Some(&formats::POOL_ID), "Add the VM to this pool.").optional(),
        ],
        extra: Some(vm_key),
        permission: privs("/vms/{vmid}", &["VM.Allocate"]),
        handler: |s, c| Box::pin(create_vm(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu/{vmid}",
        description: "Directory index.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(vm_index(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/nodes/{node}/qemu/{vmid}",
        description: "Destroy a stopped VM and its disks.",
        params: &[
            NODE,
            VMID,
            boolean("purge", "Also remove it from pools and ACLs.").optional(),
            boolean(
                "destroy-unreferenced-disks",
                "Also remove its unused disks (default 1).",
            )
            .optional(),
            boolean("skiplock", "Accepted for compatibility.").optional(),
        ],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Allocate"]),
        handler: |s, c| Box::pin(destroy_vm(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu/{vmid}/config",
        description: "The VM's configuration and its digest.",
        params: &[
            NODE,
            VMID,
            boolean(
                "current",
                "A running VM's values, without the changes that wait for its next start.",
            )
            .optional(),
            string("snapshot", None, "A snapshot's configuration.").optional(),
        ],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(get_config(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu/{vmid}/pending",
        description: "Each configuration key with its running value and the value its next \
                      start brings, or whether the next start deletes it.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(get_pending(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/qemu/{vmid}/config",
        description: "Change the configuration (as a task).",
        params: CONFIG_PARAMS,
        extra: Some(vm_key),
        permission: any_priv("/vms/{vmid}", CONFIG_PRIVS),
        handler: |s, c| Box::pin(update_config_async(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/nodes/{node}/qemu/{vmid}/config",
        description: "Change the configuration.",
        params: CONFIG_PARAMS,
        extra: Some(vm_key),
        permission: any_priv("/vms/{vmid}", CONFIG_PRIVS),
        handler: |s, c| Box::pin(update_config_sync(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu/{vmid}/status",
        description: "Directory index.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(status_index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/qemu/{vmid}/status/current",
        description: "Whether the VM runs, with its pid, uptime, CPU and memory use.",
        params: &[NODE, VMID],
        extra: None,
        permission: privs("/vms/{vmid}", &["VM.Audit"]),
        handler: |s, c| Box::pin(current_status(s, c)),
    },
    power!(
        "/nodes/{node}/qemu/{vmid}/status/start",
        "Start the VM.",
        |s, c| Box::pin(power_task(s, c, Power::Start)),
        &[
            NODE,
            VMID,
            boolean("skiplock", "Accepted for compatibility.").optional(),
            integer("timeout", 0, 86_400, "Accepted for compatibility.").optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/stop",
        "Stop the VM at once.",
        |s, c| Box::pin(power_task(s, c, Power::Stop)),
        &[
            NODE,
            VMID,
            boolean("skiplock", "Accepted for compatibility.").optional(),
            integer("timeout", 0, 86_400, "Accepted for compatibility.").optional(),
            boolean("keepActive", "Accepted for compatibility.").optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/shutdown",
        "Press the ACPI power button and wait for the guest to power off.",
        |s, c| Box::pin(power_task(s, c, Power::Shutdown)),
        &[
            NODE,
            VMID,
            integer("timeout", 0, 86_400, "Seconds to wait (default 180).").optional(),
            boolean(
                "forceStop",
                "Stop the VM if it has not powered off in time."
            )
            .optional(),
            boolean("skiplock", "Accepted for compatibility.").optional(),
            boolean("keepActive", "Accepted for compatibility.").optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/reboot",
        "Shut the guest down (ACPI) and start it again.",
        |s, c| Box::pin(power_task(s, c, Power::Reboot)),
        &[
            NODE,
            VMID,
            integer(
                "timeout",
                0,
                86_400,
                "Seconds to wait for the shutdown (default 180)."
            )
            .optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/reset",
        "Reset the VM at once, as its reset button would: the guest starts \
         again from its firmware or kernel without shutting down.",
        |s, c| Box::pin(power_task(s, c, Power::Reset)),
        &[
            NODE,
            VMID,
            boolean("skiplock", "Accepted for compatibility.").optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/suspend",
        "Pause the VM's vCPUs.",
        |s, c| Box::pin(power_task(s, c, Power::Suspend)),
        &[
            NODE,
            VMID,
            boolean("skiplock", "Accepted for compatibility.").optional(),
            boolean("todisk", "Suspend to disk (not supported; must be 0).").optional(),
        ]
    ),
    power!(
        "/nodes/{node}/qemu/{vmid}/status/resume",
        "Resume a paused VM.",
        |s, c| Box::pin(power_task(s, c, Power::Resume)),
        &[
            NODE,
            VMID,
            boolean("skiplock", "Accepted for compatibility.").optional(),
            boolean("nocheck", "Accepted for compatibility.").optional(),
        ]
    ),
];

static CONFIG_PARAMS: &[Param] = &[
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
    string(
        "revert",
        None,
        "Accepted for compatibility (no pending changes).",
    )
    .optional(),
    boolean("skiplock", "Accepted for compatibility.").optional(),
];

/// The `vmid` parameter (validated by the router).
pub(crate) fn vmid_of(call: &Call) -> u32 {
    call.params.number("vmid").unwrap_or(0)
}

fn no_such_vm(state: &AppState, vmid: u32) -> ApiError {
    ApiError::failed(format!(
        "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
        state.node
    ))
}

fn config_of(state: &AppState, vmid: u32) -> Result<GuestConfig, ApiError> {
    state.vms.get(vmid).ok_or_else(|| no_such_vm(state, vmid))
}

/// The privilege needed to change `key`.
pub fn key_privilege(key: &str) -> &'static str {
    if DiskBus::from_key(key).is_some() {
        return "VM.Config.Disk";
    }
    if key.starts_with("net") {
        return "VM.Config.Network";
    }
    match key {
        "memory" | "balloon" | "shares" => "VM.Config.Memory",
        "cores" | "sockets" | "cpu" | "cpulimit" | "cpuunits" | "vcpus" | "numa" => "VM.Config.CPU",
        _ => "VM.Config.Options",
    }
}

fn status_word(state: &VmState) -> &'static str {
    match state {
        VmState::Stopped => "stopped",
        VmState::Running { .. } => "running",
    }
}

/// CPU seconds and resident bytes of a process, from /proc.
fn process_usage(pid: i32) -> (f64, u64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0);
    (cpu, rss)
}

/// A VM's status fields as lists and `status/current` show them.
pub async fn vm_status(state: &AppState, vmid: u32) -> Result<Value, ApiError> {
    let summary = state
        .vms
        .summary(vmid)
        .ok_or_else(|| no_such_vm(state, vmid))?;
    let run = state
        .runtime
        .state(vmid)
        .await
        .map_err(|e| ApiError::failed(format!("cannot ask init about VM {vmid}: {e}")))?;
    let mut out = json!({
        "vmid": vmid,
        "name": summary.name,
        "status": status_word(&run),
        "qmpstatus": status_word(&run),
        "maxmem": summary.memory_mib * 1024 * 1024,
        "mem": 0,
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
    if summary.template {
        out["template"] = json!(1);
    }
    if let VmState::Running { pid, started_at } = run {
        let uptime = u64::try_from(unix_now())
            .unwrap_or(0)
            .saturating_sub(started_at);
        out["uptime"] = json!(uptime);
        if pid > 0 {
            let (cpu_seconds, rss) = process_usage(pid);
            out["pid"] = json!(pid);
            out["mem"] = json!(rss);
            let cpus = summary.cpus.max(1) as f64;
            out["cpu"] = json!((cpu_seconds / (uptime.max(1) as f64 * cpus)).min(1.0));
            if let Ok(info) = state.runtime.vmm_call(vmid, "info").await {
                if info["state"] == "paused" {
                    out["qmpstatus"] = json!("paused");
                }
            }
        }
    }
    Ok(out)
}

async fn list_vms(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?;
    let cfg = state.access.config();
    let mut out = Vec::new();
    for (vmid, _) in state.vms.list() {
        if !has_privileges(
            &cfg,
            &caller.auth_id,
            &format!("/vms/{vmid}"),
            &["VM.Audit"],
            false,
        ) {
            continue;
        }
        if let Ok(status) = vm_status(&state, vmid).await {
            out.push(status);
        }
    }
    Ok(Value::Array(out).into())
}

async fn vm_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    config_of(&state, vmid_of(&call))?;
    Ok(json!([{"subdir": "config"}, {"subdir": "status"}]).into())
}

async fn status_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    config_of(&state, vmid_of(&call))?;
    let names = [
        "current", "reboot", "resume", "shutdown", "start", "stop", "suspend",
    ];
    Ok(Value::Array(names.iter().map(|n| json!({"subdir": n})).collect()).into())
}

async fn current_status(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    Ok(vm_status(&state, vmid_of(&call)).await?.into())
}

/// The configuration as `GET …/config` answers it.
fn config_json(config: &GuestConfig) -> Value {
    let mut out = serde_json::Map::new();
    for entry in config.main().entries() {
        let value =
            crate::guests::typed_value(crate::guests::GuestKind::Qemu, entry.key(), entry.value());
        out.insert(entry.key().to_owned(), value);
    }
    if let Some(description) = config.description() {
        out.insert("description".into(), json!(description));
    }
    out.insert("digest".into(), json!(config.digest()));
    Value::Object(out)
}

async fn get_config(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let vmid = vmid_of(&call);
    let config = config_of(&state, vmid)?;
    if let Some(name) = call.params.get("snapshot") {
        let snapshot = config
            .snapshot(name)
            .ok_or_else(|| ApiError::failed(format!("snapshot '{name}' does not exist")))?;
        let mut out = serde_json::Map::new();
        for entry in snapshot.entries() {
            out.insert(entry.key().to_owned(), json!(entry.value()));
        }
        return Ok(Value::Object(out).into());
    }
    if call.params.flag("current") {
        if let Some(running) = running_config(&state, vmid).await {
            let mut out = config_json(&running);
            out["digest"] = json!(config.digest());
            return Ok(out.into());
        }
    }
    Ok(config_json(&config).into())
}

/// What a running VM was started with, changes that took effect since
/// included (`None` for a stopped VM, or one started before it was kept).
async fn running_config(state: &AppState, vmid: u32) -> Option<GuestConfig> {
    if !state.runtime.is_running(vmid).await {
        return None;
    }
    crate::guests::pending::load(&state.runtime.run_dir, vmid)
}

async fn get_pending(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let vmid = vmid_of(&call);
    let config = config_of(&state, vmid)?;
    let running = running_config(&state, vmid).await;
    Ok(Value::Array(crate::guests::pending::items(&config, running.as_ref())).into())
}

/// The configuration keys of a call (everything but the endpoint's own
/// parameters), in name order.
pub(crate) fn config_keys(call: &Call, own: &[&str]) -> Vec<(String, String)> {
    call.params
        .iter()
        .filter(|(k, _)| !own.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Checks the per-key privileges and the storages of disks to allocate.
fn check_changes(
    state: &AppState,
    caller: &Caller,
    vmid: u32,
    keys: &[(String, String)],
    deleted: &[String],
) -> Result<(), ApiError> {
    let cfg = state.access.config();
    let path = format!("/vms/{vmid}");
    for key in keys.iter().map(|(k, _)| k).chain(deleted) {
        let needed = key_privilege(key);
        if !has_privileges(&cfg, &caller.auth_id, &path, &[needed], false) {
            return Err(ApiError::forbidden());
        }
    }
    let mut missing = std::collections::BTreeMap::new();
    for (key, value) in keys {
        if key == "kernel" || key == "initrd" {
            if !may_use_volume(&cfg, &caller.auth_id, vmid, value) {
                return Err(ApiError::forbidden());
            }
            if let Err(e) = resolve_existing(state, value) {
                missing.insert(key.clone(), e);
            }
            continue;
        }
        if DiskBus::from_key(key).is_none() {
            continue;
        }
        let file = value.split(',').next().unwrap_or("");
        match DiskFile::parse(file) {
            Ok(DiskFile::Volume(volume)) => {
                let volume = volume.to_string();
                if !may_use_volume(&cfg, &caller.auth_id, vmid, &volume) {
                    return Err(ApiError::forbidden());
                }
                if let Err(e) = resolve_existing(state, &volume) {
                    missing.insert(key.clone(), e);
                }
            }
            // Host paths and the host's CD drive: root@pam only, as in
            // Proxmox.
            Ok(DiskFile::Path(_) | DiskFile::HostCdrom)
                if caller.auth_id != crate::access::ROOT_USER =>
            {
                return Err(ApiError::forbidden());
            }
            _ => {}
        }
        if let Ok(DiskFile::Allocate(allocation)) = DiskFile::parse(file) {
            let storage = storage::StorageId::new(&allocation.storage)
                .map_err(|e| ApiError::parameter(key.clone(), e.to_string()))?;
            state
                .storage
                .plugin(&storage)
                .map_err(|e| ApiError::parameter(key.clone(), e.to_string()))?;
            if !has_privileges(
                &cfg,
                &caller.auth_id,
                &format!("/storage/{storage}"),
                &["Datastore.AllocateSpace"],
                false,
            ) {
                return Err(ApiError::forbidden());
            }
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::parameters(missing));
    }
    Ok(())
}

/// Whether `auth_id` may put volume `volume` into VM `vmid`'s
/// configuration, by Proxmox's rule: ISO images and templates need
/// `Datastore.AllocateSpace` or `Datastore.Audit` on the storage; the VM's
/// own images are the VM's; anything else (another guest's disk) needs
/// `Datastore.Allocate` on the storage.
fn may_use_volume(cfg: &crate::access::UserConfig, auth_id: &str, vmid: u32, volume: &str) -> bool {
    if auth_id == crate::access::ROOT_USER {
        return true;
    }
    let Ok(id) = volume.parse::<storage::VolumeId>() else {
        // A malformed id is refused when it is resolved.
        return true;
    };
    let storage_path = format!("/storage/{}", id.storage());
    match storage::DirVolume::parse(id.volname()) {
        Ok(parsed) => match (parsed.content(), parsed.vmid()) {
            (storage::ContentType::Iso | storage::ContentType::Vztmpl, _) => has_privileges(
                cfg,
                auth_id,
                &storage_path,
                &["Datastore.AllocateSpace", "Datastore.Audit"],
                true,
            ),
            (_, Some(owner)) if owner.get() == vmid => true,
            _ => has_privileges(cfg, auth_id, &storage_path, &["Datastore.Allocate"], false),
        },
        Err(_) => true,
    }
}

/// The path of an existing volume, or why there is none.
fn resolve_existing(state: &AppState, volume: &str) -> Result<PathBuf, String> {
    let path = resolve_volume(state, volume)?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("volume '{volume}' does not exist"))
    }
}

/// Allocates the `STORAGE:SIZE` disks among `keys`, replacing their file
/// with the new volume and adding `size=`.
fn allocate_disks(
    state: &AppState,
    vmid: u32,
    keys: &mut [(String, String)],
    log: Option<&TaskLog>,
) -> Result<Vec<storage::VolumeId>, String> {
    let mut allocated = Vec::new();
    let vmid_typed = storage::Vmid::new(vmid).map_err(|e| e.to_string())?;
    for (key, value) in keys.iter_mut() {
        if DiskBus::from_key(key).is_none() {
            continue;
        }
        let (file, rest) = value.split_once(',').unwrap_or((value.as_str(), ""));
        let Ok(DiskFile::Allocate(allocation)) = DiskFile::parse(file) else {
            continue;
        };
        let storage_id = storage::StorageId::new(&allocation.storage).map_err(|e| e.to_string())?;
        let bytes = allocation.size_bytes();
        let result = state
            .storage
            .allocate(&storage_id, vmid_typed, bytes, None)
            .map_err(|e| format!("{key}: {e}"));
        let volume = match result {
            Ok(volume) => volume,
            Err(e) => {
                for volume in &allocated {
                    let _ = state.storage.free(volume);
                }
                return Err(e);
            }
        };
        if let Some(log) = log {
            log.line(format!("{key}: allocated {volume} ({bytes} bytes)"));
        }
        let mut new_value = format!("{volume}");
        if !rest.is_empty() {
            new_value.push(',');
            new_value.push_str(rest);
        }
        if !rest.split(',').any(|p| p.starts_with("size=")) {
            new_value.push_str(&format!(",size={}", guestconf::format_disk_size(bytes)));
        }
        *value = new_value;
        allocated.push(volume);
    }
    Ok(allocated)
}

/// A locally administered unicast MAC address.
pub(crate) fn random_mac() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 6];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0xfc) | 0x02;
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Gives NICs without a MAC address a new one.
fn assign_macs(keys: &mut [(String, String)]) {
    for (key, value) in keys.iter_mut() {
        if !key.starts_with("net") {
            continue;
        }
        if matches!(guestconf::NetDevice::parse(value), Ok(net) if net.macaddr.is_none()) {
            *value = with_new_mac(value);
        }
    }
}

/// A NIC's `net[n]` value with a new MAC address in place of the one it
/// has, if any (`virtio=BC:24:…,bridge=vmbr0` → `virtio=02:…,bridge=vmbr0`);
/// a value that is not a NIC is returned as it is.
pub(crate) fn with_new_mac(value: &str) -> String {
    let Ok(net) = guestconf::NetDevice::parse(value) else {
        return value.to_string();
    };
    let model = net.model.as_str();
    let rest = value
        .split(',')
        .filter(|p| {
            *p != model
                && !p.starts_with(&format!("{model}="))
                && !p.starts_with("model=")
                && !p.starts_with("macaddr=")
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut new_value = format!("{model}={}", random_mac());
    if !rest.is_empty() {
        new_value.push(',');
        new_value.push_str(&rest);
    }
    new_value
}

/// Sets `keys` in `config` (`description` as the comment block).
pub(crate) fn apply(config: &mut GuestConfig, keys: &[(String, String)]) -> Result<(), String> {
    for (key, value) in keys {
        if key == "description" {
            config.set_description(value);
        } else {
            config.set(key, value).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    Ok(())
}

async fn create_vm(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    if state.vms.exists(vmid) || state.cts.exists(vmid) {
        return Err(ApiError::parameter(
            "vmid",
            format!("VM {vmid} already exists on node '{}'", state.node),
        ));
    }
    let mut keys = config_keys(&call, &["node", "vmid", "start", "pool"]);
    check_changes(&state, &caller, vmid, &keys, &[])?;
    let pool = call.params.get("pool").map(str::to_owned);
    if let Some(pool) = &pool {
        if !state.access.config().pools.contains_key(pool) {
            return Err(ApiError::parameter(
                "pool",
                format!("pool '{pool}' does not exist"),
            ));
        }
    }
    // Refuse what could not be written before a task starts.
    let mut probe = GuestConfig::new();
    apply(&mut probe, &keys).map_err(|e| ApiError::parameter("vmid", e))?;
    let start = call.params.flag("start");
    vm_task(
        &state,
        "qmcreate",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.vms.lock(vmid);
            let _guard = lock.lock().await;
            if state.vms.exists(vmid) || state.cts.exists(vmid) {
                return Err(format!("VM {vmid} already exists"));
            }
            assign_macs(&mut keys);
            let allocated = allocate_disks(&state, vmid, &mut keys, Some(&log))?;
            let mut config = GuestConfig::new();
            let written = apply(&mut config, &keys)
                .and_then(|()| state.vms.write(vmid, config).map_err(|e| e.to_string()));
            if let Err(e) = written {
                for volume in &allocated {
                    let _ = state.storage.free(volume);
                }
                return Err(e);
            }
            log.line(format!("created VM {vmid}"));
            if let Some(pool) = pool {
                add_to_pool(&state, &format!("VM {vmid}"), vmid, &pool, &log);
            }
            if start {
                drop(_guard);
                start_vm(&state, vmid, &log).await?;
            }
            Ok(())
        },
    )
}

async fn update_config(
    state: &Arc<AppState>,
    call: &Call,
    log: Option<&TaskLog>,
) -> Result<(), ApiError> {
    let caller = call.caller()?.clone();
    let vmid = vmid_of(call);
    config_of(state, vmid)?;
    let mut keys = config_keys(
        call,
        &["node", "vmid", "delete", "digest", "revert", "skiplock"],
    );
    let deleted: Vec<String> = call
        .params
        .get("delete")
        .unwrap_or("")
        .split([',', ';', ' '])
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    for key in &deleted {
        if !guestconf::is_known_vm_key(key) && !guestconf::is_valid_key(key) {
            return Err(ApiError::parameter(
                "delete",
                format!("invalid key '{key}'"),
            ));
        }
        if keys.iter().any(|(k, _)| k == key) {
            return Err(ApiError::parameter(
                "delete",
                format!("cannot set and delete '{key}' at the same time"),
            ));
        }
    }
    if keys.is_empty() && deleted.is_empty() {
        return Err(ApiError::parameter("delete", "no options specified"));
    }
    check_changes(state, &caller, vmid, &keys, &deleted)?;
    let lock = state.vms.lock(vmid);
    let _guard = lock.lock().await;
    let mut config = config_of(state, vmid)?;
    super::check_digest(call.params.get("digest"), || config.digest()).map_err(ApiError::failed)?;
    assign_macs(&mut keys);
    let mut probe = config.clone();
    apply(&mut probe, &keys).map_err(|e| ApiError::parameter("delete", e))?;
    for key in &deleted {
        probe.delete(key);
    }
    // A running VM's NICs take what can change at once (guests::live),
    // before anything is written: a change that fails changes nothing.
    let running = state.runtime.is_running(vmid).await;
    let net = if running {
        crate::guests::live::vm_changes(vmid, &config, &probe)
            .map_err(|e| ApiError::parameter("net", e))?
    } else {
        Default::default()
    };
    apply_net_changes(state, vmid, &net, log).await?;
    let allocated = match allocate_disks(state, vmid, &mut keys, log) {
        Ok(a) => a,
        Err(e) => {
            crate::guests::live::restore(&net.live).await;
            return Err(ApiError::failed(e));
        }
    };
    let firewall = net.touches_firewall((&config, &probe), vmid, false);
    apply(&mut config, &keys).map_err(ApiError::failed)?;
    for key in &deleted {
        if key == "description" {
            config.set_description("");
        }
        config.delete(key);
    }
    let written = running.then(|| config.clone());
    if let Err(e) = state.vms.write(vmid, config) {
        for volume in &allocated {
            let _ = state.storage.free(volume);
        }
        crate::guests::live::restore(&net.live).await;
        return Err(ApiError::failed(e.to_string()));
    }
    if let Some(written) = written {
        // What the running VM took at once; the rest is pending.
        let at_once: Vec<String> = keys
            .iter()
            .map(|(k, _)| k)
            .chain(&deleted)
            .filter(|k| {
                crate::guests::pending::applies_at_once(k)
                    || (k.starts_with("net") && !net.at_next_start.iter().any(|(n, _)| n == *k))
            })
            .cloned()
            .collect();
        crate::guests::pending::took_effect(&state.runtime.run_dir, vmid, &written, &at_once);
        if let Some(log) = log {
            let changed = keys.iter().map(|(k, _)| k).chain(&deleted);
            for key in changed.filter(|k| !k.starts_with("net") && !at_once.contains(k)) {
                log.line(format!("{key}: takes effect at the next start (pending)"));
            }
        }
    }
    if firewall {
        crate::firewall::apply_firewall(state).await?;
    }
    if let Some(log) = log {
        log.line(format!("updated VM {vmid}"));
    }
    Ok(())
}

/// Re-plugs the ports of a running VM's changed NICs and pulls or plugs
/// their cables in the VMM; on a failure puts back what was changed.
async fn apply_net_changes(
    state: &AppState,
    vmid: u32,
    net: &crate::guests::live::NetChanges,
    log: Option<&TaskLog>,
) -> Result<(), ApiError> {
    if let Some(log) = log {
        for (key, why) in &net.at_next_start {
            log.line(format!("{key}: takes effect at the next start ({why})"));
        }
    }
    crate::guests::live::replug(&net.live)
        .await
        .map_err(ApiError::failed)?;
    for (n, c) in net.live.iter().enumerate() {
        let Some(up) = c.link_up else { continue };
        let request = json!({ "cmd": "set-link", "tap": c.port, "up": up });
        if let Err(e) = state.runtime.vmm_request(vmid, request).await {
            for done in net.live[..n].iter().rev() {
                if let Some(up) = done.link_up {
                    let back = json!({ "cmd": "set-link", "tap": done.port, "up": !up });
                    let _ = state.runtime.vmm_request(vmid, back).await;
                }
            }
            crate::guests::live::restore(&net.live).await;
            return Err(ApiError::failed(format!("net{}: {e}", c.index)));
        }
        if let Some(log) = log {
            let how = if up { "plugged in" } else { "pulled out" };
            log.line(format!("net{}: cable {how}", c.index));
        }
    }
    Ok(())
}

async fn update_config_sync(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    update_config(&state, &call, None).await?;
    Ok(Value::Null.into())
}

async fn update_config_async(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    config_of(&state, vmid)?;
    vm_task(
        &state,
        "qmconfig",
        vmid,
        &caller,
        move |state, log| async move {
            update_config(&state, &call, Some(&log))
                .await
                .map_err(|e| e.message_with_params())
        },
    )
}

fn resolve_volume(state: &AppState, volume: &str) -> Result<PathBuf, String> {
    let id: storage::VolumeId = volume
        .parse()
        .map_err(|e: storage::volume::VolumeIdError| format!("volume '{volume}': {e}"))?;
    state
        .storage
        .path(&id)
        .map_err(|e| format!("volume '{volume}': {e}"))
}

/// Starts task `kind` on guest `vmid` for `caller`, running `work` with the
/// state and the task's log, and answers its UPID.
pub(crate) fn vm_task<F, Fut>(
    state: &Arc<AppState>,
    kind: &str,
    vmid: u32,
    caller: &Caller,
    work: F,
) -> ApiResult
where
    F: FnOnce(Arc<AppState>, TaskLog) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let task_state = Arc::clone(state);
    let upid = state
        .tasks
        .spawn(kind, &vmid.to_string(), &caller.auth_id, move |log| {
            work(task_state, log)
        })
        .map_err(|e| ApiError::failed(e.to_string()))?;
    Ok(json!(upid.to_string()).into())
}

/// Adds the guest just made (`what`, e.g. `VM 100`) to `pool`. The guest
/// exists by then: a pool that went away meanwhile is logged, not fatal.
pub(crate) fn add_to_pool(state: &AppState, what: &str, vmid: u32, pool: &str, log: &TaskLog) {
    let added = state.access.update(|cfg| {
        let entry = cfg.pools.get_mut(pool).ok_or("pool vanished")?;
        entry.vms.insert(vmid);
        Ok(())
    });
    if let Err(e) = added {
        log.line(format!("cannot add {what} to pool {pool}: {e}"));
    }
}

/// Why a template does not start (Proxmox's words).
const TEMPLATE_START: &str = "you can't start a vm if it's a template";

/// Whether the VM is a template (`template: 1`).
pub(crate) fn is_template(config: &GuestConfig) -> bool {
    config.get("template") == Some("1")
}

/// Starts VM `vmid`; fails if it runs or is a template.
pub async fn start_vm(state: &AppState, vmid: u32, log: &TaskLog) -> Result<(), String> {
    let lock = state.vms.lock(vmid);
    let _guard = lock.lock().await;
    let config = state
        .vms
        .get(vmid)
        .ok_or_else(|| format!("VM {vmid} does not exist"))?;
    if state.runtime.state(vmid).await? != VmState::Stopped {
        return Err(format!("VM {vmid} already running"));
    }
    if is_template(&config) {
        return Err(TEMPLATE_START.into());
    }
    let plan = state
        .runtime
        .plan(vmid, &config, &|volume| resolve_volume(state, volume))?;
    if crate::firewall::wants_firewall(&config, vmid, false) {
        log.line("putting the ports with firewall=1 under the firewall");
        crate::firewall::apply_firewall_for_start(state, vmid)
            .await
            .map_err(|e| format!("cannot set up the firewall: {}", e.message))?;
    }
    log.line(format!("starting {}", plan.argv.join(" ")));
    state.runtime.start(vmid, &plan).await?;
    if let Err(e) = crate::guests::pending::save(&state.runtime.run_dir, vmid, &config) {
        log.line(format!("cannot record the running configuration: {e}"));
    }
    log.line(format!("VM {vmid} started as unit {}", unit_name(vmid)));
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Power {
    Start,
    Stop,
    Shutdown,
    Reboot,
    Reset,
    Suspend,
    Resume,
}

const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 180;

async fn shutdown_vm(
    state: &AppState,
    vmid: u32,
    timeout: u64,
    force: bool,
    log: &TaskLog,
) -> Result<(), String> {
    if state.runtime.state(vmid).await? == VmState::Stopped {
        return Err(format!("VM {vmid} not running"));
    }
    state.runtime.vmm_call(vmid, "shutdown").await?;
    log.line(format!(
        "pressed the power button of VM {vmid}, waiting up to {timeout} s"
    ));
    if state
        .runtime
        .wait_stopped(vmid, Duration::from_secs(timeout))
        .await?
    {
        return Ok(());
    }
    if force {
        log.line("the guest did not power off in time; stopping it");
        return state.runtime.stop(vmid).await;
    }
    Err("VM quit/powerdown failed - got timeout".to_owned())
}

/// Resets a running VM: its VMM ends as on a guest's own reset (status
/// 3) and init starts it again with the same configuration; the task ends
/// once the new VMM answers.
async fn reset_vm(state: &AppState, vmid: u32, log: &TaskLog) -> Result<(), String> {
    let VmState::Running { pid, .. } = state.runtime.state(vmid).await? else {
        return Err(format!("VM {vmid} not running"));
    };
    state.runtime.vmm_call(vmid, "reset").await?;
    log.line(format!("reset VM {vmid}"));
    state.runtime.wait_restarted(vmid, pid).await
}

async fn power_task(state: Arc<AppState>, call: Call, action: Power) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    let config = config_of(&state, vmid)?;
    if matches!(action, Power::Start) && is_template(&config) {
        return Err(ApiError::failed(TEMPLATE_START));
    }
    if matches!(action, Power::Suspend) && call.params.flag("todisk") {
        return Err(ApiError::parameter(
            "todisk",
            "suspending to disk is not supported",
        ));
    }
    let kind = match action {
        Power::Start => "qmstart",
        Power::Stop => "qmstop",
        Power::Shutdown => "qmshutdown",
        Power::Reboot => "qmreboot",
        Power::Reset => "qmreset",
        Power::Suspend => "qmsuspend",
        Power::Resume => "qmresume",
    };
    let timeout = call
        .params
        .number("timeout")
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let force = call.params.flag("forceStop");
    vm_task(&state, kind, vmid, &caller, move |state, log| async move {
        match action {
            Power::Start => start_vm(&state, vmid, &log).await,
            Power::Stop => {
                if state.runtime.state(vmid).await? == VmState::Stopped {
                    log.line(format!("VM {vmid} is not running"));
                    return Ok(());
                }
                state.runtime.stop(vmid).await
            }
            Power::Shutdown => shutdown_vm(&state, vmid, timeout, force, &log).await,
            Power::Reboot => {
                shutdown_vm(&state, vmid, timeout, false, &log).await?;
                start_vm(&state, vmid, &log).await
            }
            Power::Reset => reset_vm(&state, vmid, &log).await,
            Power::Suspend => state.runtime.vmm_call(vmid, "pause").await.map(|_| ()),
            Power::Resume => state.runtime.vmm_call(vmid, "resume").await.map(|_| ()),
        }
    })
}

async fn destroy_vm(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    config_of(&state, vmid)?;
    if state.runtime.state(vmid).await.map_err(ApiError::failed)? != VmState::Stopped {
        return Err(ApiError::failed(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    let purge = call.params.flag("purge");
    let unreferenced = call.params.get("destroy-unreferenced-disks") != Some("0");
    vm_task(
        &state,
        "qmdestroy",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.vms.lock(vmid);
            let _guard = lock.lock().await;
            let config = state
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            if state.runtime.state(vmid).await? != VmState::Stopped {
                return Err(format!("VM {vmid} is running - destroy failed"));
            }
            let mut volumes: Vec<storage::VolumeId> = config
                .main()
                .entries()
                .filter(|e| DiskBus::from_key(e.key()).is_some())
                .filter_map(|e| guestconf::DiskDevice::parse(e.key(), e.value()).ok())
                .filter(|d| d.media != guestconf::DiskMedia::Cdrom)
                .filter_map(|d| match d.file {
                    DiskFile::Volume(v) => v.to_string().parse().ok(),
                    _ => None,
                })
                .collect();
            if unreferenced {
                if let Ok(vmid_typed) = storage::Vmid::new(vmid) {
                    for volume in state.storage.vm_volumes(vmid_typed).unwrap_or_default() {
                        if !volumes.contains(&volume) {
                            volumes.push(volume);
                        }
                    }
                }
            }
            for volume in &volumes {
                match state.storage.free(volume) {
                    Ok(()) => log.line(format!("removed {volume}")),
                    Err(e) => log.line(format!("cannot remove {volume}: {e}")),
                }
            }
            state.runtime.cleanup(vmid, Some(&config)).await;
            state.vms.remove(vmid).map_err(|e| e.to_string())?;
            if purge {
                purge_guest(&state, vmid, &log, "VM");
            }
            log.line(format!("destroyed VM {vmid}"));
            Ok(())
        },
    )
}

/// Takes guest `vmid` out of every pool and drops its ACL entries
/// (`purge=1` of a destroy); a failure is logged, the destroy stands.
pub(crate) fn purge_guest(state: &AppState, vmid: u32, log: &TaskLog, what: &str) {
    let removed = state.access.update(|cfg| {
        for pool in cfg.pools.values_mut() {
            pool.vms.remove(&vmid);
        }
        cfg.acl.remove(&format!("/vms/{vmid}"));
        Ok(())
    });
    if let Err(e) = removed {
        log.line(format!(
            "cannot purge {what} {vmid} from pools and ACLs: {e}"
        ));
    }
}

/// Starts the VMs with `onboot: 1` once per boot of the node; `marker`
/// records that it was done, so a restarted apid does not do it again.
pub async fn start_onboot_vms(state: Arc<AppState>, marker: PathBuf) {
    if marker.exists() {
        return;
    }
    if let Some(parent) = marker.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&marker, b"");
    for (vmid, summary) in state.vms.list() {
        if !summary.onboot {
            continue;
        }
        let task_state = Arc::clone(&state);
        let spawned = state.tasks.spawn(
            "qmstart",
            &vmid.to_string(),
            "root@pam",
            move |log| async move { start_vm(&task_state, vmid, &log).await },
        );
        if let Err(e) = spawned {
            tracing::warn!("cannot start VM {vmid} on boot: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(acl: &str) -> crate::access::UserConfig {
        let (cfg, skipped) =
            crate::access::UserConfig::parse(&format!("user:u@pve:1:0::::::\n{acl}"));
        assert!(skipped.is_empty(), "{skipped:?}");
        cfg
    }

    #[test]
    fn volumes_a_vm_may_use() {
        let may = |cfg: &crate::access::UserConfig, who: &str, volume: &str| {
            may_use_volume(cfg, who, 100, volume)
        };
        let (own, other, iso) = (
            "local:100/vm-100-disk-0.raw",
            "local:101/vm-101-disk-0.raw",
            "local:iso/vmlinuz.img",
        );
        let none = cfg("");
        // Its own disks, yes; another VM's disk or an ISO, no.
        assert!(may(&none, "u@pve", own));
        assert!(!may(&none, "u@pve", other));
        assert!(!may(&none, "u@pve", iso));
        let auditor = cfg("acl:1:/storage/local:u@pve:PVEAuditor:\n");
        assert!(may(&auditor, "u@pve", iso));
        assert!(!may(&auditor, "u@pve", other));
        let admin = cfg("acl:1:/storage/local:u@pve:PVEDatastoreAdmin:\n");
        assert!(may(&admin, "u@pve", other));
        assert!(may(&none, "root@pam", other));
    }

    #[test]
    fn keys_and_their_privileges() {
        assert_eq!(key_privilege("scsi0"), "VM.Config.Disk");
        assert_eq!(key_privilege("net3"), "VM.Config.Network");
        assert_eq!(key_privilege("memory"), "VM.Config.Memory");
        assert_eq!(key_privilege("cores"), "VM.Config.CPU");
        assert_eq!(key_privilege("kernel"), "VM.Config.Options");
    }

    #[test]
    fn missing_macs_are_assigned_and_locally_administered() {
        let mut keys = vec![
            ("net0".to_owned(), "virtio,bridge=vmbr0".to_owned()),
            ("net1".to_owned(), "virtio=02:00:00:00:00:09".to_owned()),
        ];
        assign_macs(&mut keys);
        let net0 = guestconf::NetDevice::parse(&keys[0].1).unwrap();
        let mac = net0.macaddr.unwrap().0;
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(net0.bridge.as_deref(), Some("vmbr0"));
        assert_eq!(keys[1].1, "virtio=02:00:00:00:00:09");
    }

    #[test]
    fn a_clone_gets_new_macs_and_keeps_the_rest() {
        for value in [
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
            "e1000,bridge=vmbr1,tag=5",
            "model=virtio,macaddr=BC:24:11:00:00:02,bridge=vmbr0",
        ] {
            let old = guestconf::NetDevice::parse(value).unwrap();
            let new_value = with_new_mac(value);
            let new = guestconf::NetDevice::parse(&new_value).unwrap();
            let mac = new.macaddr.as_ref().unwrap().0;
            assert_eq!(
                mac[0] & 0x03,
                0x02,
                "{new_value}: locally administered unicast"
            );
            assert_ne!(new.macaddr, old.macaddr, "{new_value}");
            assert_eq!(
                (new.model, new.bridge, new.tag, new.firewall),
                (old.model, old.bridge, old.tag, old.firewall),
                "{value} -> {new_value}"
            );
        }
        assert_eq!(with_new_mac("not a nic"), "not a nic");
    }
}
