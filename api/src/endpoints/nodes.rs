//! `/nodes`: the node list, a node's status, and its tasks.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Value};

use crate::access::permissions::has_privileges;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult, Reply};
use crate::router::{privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, integer, one_of, string, Param};
use crate::tasks::{TaskFilter, Upid};

/// The largest start or limit of a list.
const COUNT_MAX: i64 = 1 << 32;

const NODE: Param = string("node", Some(&formats::NODE), "The node.");
const UPID: Param = string("upid", Some(&formats::UPID), "The task.");
static NODE_AUDIT: Permission = privs("/nodes/{node}", &["Sys.Audit"]);

/// The `/nodes` endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/nodes",
        description: "The nodes of the cluster (this one).",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(list_nodes(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}",
        description: "Directory index.",
        params: &[NODE],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |s, c| Box::pin(node_index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/status",
        description: "The node's load, memory, disk and versions.",
        params: &[NODE],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Audit"]),
        handler: |s, c| Box::pin(node_status(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/tasks",
        description: "The node's tasks, newest first.",
        params: &[
            NODE,
            integer("start", 0, COUNT_MAX, "Skip this many.").optional(),
            integer("limit", 0, COUNT_MAX, "At most this many (default 50).").optional(),
            string("userfilter", None, "Only users whose id contains this.").optional(),
            string("typefilter", None, "Only tasks of this type.").optional(),
            integer("vmid", 100, 999_999_999, "Only tasks on this guest.").optional(),
            boolean("errors", "Only failed tasks.").optional(),
            one_of(
                "source",
                &["archive", "active", "all"],
                "Which tasks (default archive).",
            )
            .optional(),
            integer("since", 0, i64::MAX, "Only tasks started since.").optional(),
            integer("until", 0, i64::MAX, "Only tasks started until.").optional(),
            string("statusfilter", None, "Accepted for compatibility.").optional(),
        ],
        extra: None,
        permission: Permission::Anyone("one's own tasks; all with Sys.Audit on /nodes/{node}"),
        handler: |s, c| Box::pin(list_tasks(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/tasks/{upid}",
        description: "Directory index.",
        params: &[NODE, UPID],
        extra: None,
        permission: Permission::TaskOwnerOr(&NODE_AUDIT),
        handler: |s, c| Box::pin(task_index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/tasks/{upid}/status",
        description: "Whether the task runs, and how it ended.",
        params: &[NODE, UPID],
        extra: None,
        permission: Permission::TaskOwnerOr(&NODE_AUDIT),
        handler: |s, c| Box::pin(task_status(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/tasks/{upid}/log",
        description: "The task's log lines.",
        params: &[
            NODE,
            UPID,
            integer("start", 0, COUNT_MAX, "First line (0-based).").optional(),
            integer("limit", 0, COUNT_MAX, "At most this many (default 50).").optional(),
            boolean("download", "Accepted for compatibility.").optional(),
        ],
        extra: None,
        permission: Permission::TaskOwnerOr(&NODE_AUDIT),
        handler: |s, c| Box::pin(task_log(s, c)),
    },
];

/// Checks that `node` is this node.
pub fn this_node(state: &AppState, node: &str) -> Result<(), ApiError> {
    if node == state.node {
        Ok(())
    } else {
        Err(ApiError::failed(format!("no such node '{node}'")))
    }
}

/// Two fields of /proc/meminfo, in bytes (0 when missing).
fn meminfo(first: &str, second: &str) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field(first), field(second))
}

/// Memory in bytes from /proc/meminfo: (total, available).
pub fn memory() -> (u64, u64) {
    meminfo("MemTotal:", "MemAvailable:")
}

fn swap() -> (u64, u64) {
    meminfo("SwapTotal:", "SwapFree:")
}

/// Seconds since boot.
pub fn uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| s as u64)
}

fn loadavg() -> Vec<String> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::to_owned)
        .collect()
}

/// The number of CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The load average over one minute divided by the CPUs, as a 0..1 usage
/// estimate.
pub fn cpu_usage() -> f64 {
    let one: f64 = loadavg()
        .first()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    (one / cpu_count() as f64).min(1.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(String::new, |(_, model)| model.trim().to_owned())
}

fn kernel_version() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| String::new(),
        |u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        },
    )
}

/// (total, used, available) bytes of the file system holding `path`.
pub fn disk_usage(path: &std::path::Path) -> (u64, u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(vfs) => {
            let frag = vfs.fragment_size();
            let total = vfs.blocks() * frag;
            let free = vfs.blocks_free() * frag;
            let avail = vfs.blocks_available() * frag;
            (total, total.saturating_sub(free), avail)
        }
        Err(_) => (0, 0, 0),
    }
}

async fn list_nodes(state: Arc<AppState>, _call: Call) -> ApiResult {
    let (total, available) = memory();
    let (disk_total, disk_used, _) = disk_usage(state.state_dir.root());
    Ok(json!([{
        "node": state.node,
        "id": format!("node/{}", state.node),
        "type": "node",
        "status": "online",
        "level": "",
        "uptime": uptime(),
        "cpu": cpu_usage(),
        "maxcpu": cpu_count(),
        "mem": total.saturating_sub(available),
        "maxmem": total,
        "disk": disk_used,
        "maxdisk": disk_total,
    }])
    .into())
}

async fn node_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let dirs: Vec<Value> = ["qemu", "status", "storage", "tasks", "version"]
        .iter()
        .map(|d| json!({"name": d}))
        .collect();
    Ok(Value::Array(dirs).into())
}

async fn node_status(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let (total, available) = memory();
    let (swap_total, swap_free) = swap();
    let (disk_total, disk_used, disk_avail) = disk_usage(state.state_dir.root());
    Ok(json!({
        "uptime": uptime(),
        "cpu": cpu_usage(),
        "loadavg": loadavg(),
        "wait": 0,
        "idle": 0,
        "memory": {"total": total, "used": total.saturating_sub(available), "free": available},
        "swap": {"total": swap_total, "used": swap_total.saturating_sub(swap_free), "free": swap_free},
        "rootfs": {"total": disk_total, "used": disk_used, "avail": disk_avail, "free": disk_avail},
        "cpuinfo": {"cpus": cpu_count(), "model": cpu_model(), "sockets": 1, "cores": cpu_count()},
        "kversion": kernel_version(),
        "pveversion": format!("oxbow/{}", env!("CARGO_PKG_VERSION")),
        "boot-info": {"mode": "unknown"},
    })
    .into())
}

fn page(call: &Call) -> (usize, usize) {
    (
        call.params.number("start").unwrap_or(0),
        call.params.number("limit").unwrap_or(50),
    )
}

async fn list_tasks(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let cfg = state.access.config();
    let see_all = has_privileges(
        &cfg,
        &caller.auth_id,
        &format!("/nodes/{}", state.node),
        &["Sys.Audit"],
        false,
    );
    let filter = TaskFilter {
        user: call.params.get("userfilter").map(str::to_owned),
        kind: call.params.get("typefilter").map(str::to_owned),
        vmid: call.params.get("vmid").map(str::to_owned),
        errors: call.params.flag("errors"),
        source: call.params.get("source").unwrap_or("archive").to_owned(),
        since: call.params.number("since"),
        until: call.params.number("until"),
    };
    let (start, limit) = page(&call);
    let (items, total) = state.tasks.list(
        &filter,
        |upid| see_all || upid.user == caller.auth_id || upid.user == caller.user,
        start,
        limit,
    );
    Ok(Reply::page(Value::Array(items), total))
}

fn upid_of(state: &AppState, call: &Call) -> Result<Upid, ApiError> {
    this_node(state, call.param("node"))?;
    let upid = Upid::parse(call.param("upid"))
        .ok_or_else(|| ApiError::parameter("upid", "unable to parse worker upid"))?;
    if upid.node != state.node || !state.tasks.exists(&upid) {
        return Err(ApiError::failed(format!("no such task '{upid}'")));
    }
    Ok(upid)
}

async fn task_index(state: Arc<AppState>, call: Call) -> ApiResult {
    upid_of(&state, &call)?;
    Ok(json!([{"name": "log"}, {"name": "status"}]).into())
}

async fn task_status(state: Arc<AppState>, call: Call) -> ApiResult {
    let upid = upid_of(&state, &call)?;
    state
        .tasks
        .status(&upid)
        .map(Reply::from)
        .ok_or_else(|| ApiError::failed(format!("no such task '{upid}'")))
}

async fn task_log(state: Arc<AppState>, call: Call) -> ApiResult {
    let upid = upid_of(&state, &call)?;
    let (start, limit) = page(&call);
    let (lines, total) = state
        .tasks
        .log(&upid, start, limit)
        .ok_or_else(|| ApiError::failed(format!("no such task '{upid}'")))?;
    Ok(Reply::page(Value::Array(lines), total))
}
