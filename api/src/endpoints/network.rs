//! `/nodes/{node}/network`: the node's interfaces file, edited in
//! `interfaces.new` and applied with netd's staged apply (see
//! `docs/api.md`, Network).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use netd::interfaces::InterfacesFile;
use netd::reconcile::Observed;
use netd::rtnl::Rtnl;
use netd::staged::{self, AddressProbe, ManagementProbe, NetworkError};
use serde_json::{json, Value};

use crate::app_state::AppState;
use crate::endpoints::nodes::this_node;
use crate::network::{edit_iface, entries, synthesize, type_matches, unified_diff};
use crate::response::{ApiError, ApiResult, Reply};
use crate::router::{privs, Call, Endpoint};
use crate::schema::{boolean, formats, integer, one_of, string, Format, Param};

const NODE: Param = string("node", Some(&formats::NODE), "The node.");

/// A Linux interface name.
static IFACE_NAME: Format = Format {
    name: "pve-iface",
    check: |v| {
        if netd::interfaces::valid_ifname(v) {
            Ok(())
        } else {
            Err("invalid interface name".into())
        }
    },
};

/// A list of interface names.
static IFACE_LIST: Format = Format {
    name: "pve-iface-list",
    check: |v| {
        for name in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
            if !netd::interfaces::valid_ifname(name) {
                return Err(format!("invalid interface name '{name}'"));
            }
        }
        Ok(())
    },
};

const IFACE: Param = string("iface", Some(&IFACE_NAME), "Network interface name.");

const TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "fabric",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "unknown",
];

/// The parameters of create and update (update adds `delete`).
macro_rules! iface_params {
    ($($extra:expr),*) => {
        &[
            NODE,
            IFACE,
            one_of("type", TYPES, "Network interface type"),
            boolean("autostart", "Automatically start interface on boot.").optional(),
            string("bridge_ports", Some(&IFACE_LIST), "Specify the interfaces you want to add to your bridge.").optional(),
            boolean("bridge_vlan_aware", "Enable bridge vlan support.").optional(),
            string("bridge_vids", Some(&formats::SINGLE_LINE), "Specify the allowed VLANs. For example: '2 4 100-200'.").optional(),
            string("slaves", Some(&IFACE_LIST), "Specify the interfaces used by the bonding device.").optional(),
            one_of("bond_mode", &["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb", "balance-slb", "lacp-balance-slb", "lacp-balance-tcp"], "Bonding mode.").optional(),
            one_of("bond_xmit_hash_policy", &["layer2", "layer2+3", "layer3+4"], "Selects the transmit hash policy to use for slave selection in balance-xor and 802.3ad modes.").optional(),
            string("bond-primary", Some(&IFACE_NAME), "Specify the primary interface for active-backup bond.").optional(),
            integer("vlan-id", 1, 4094, "vlan-id for a custom named vlan interface (ifupdown2 only).").optional(),
            string("vlan-raw-device", Some(&IFACE_NAME), "Specify the raw interface for the vlan interface.").optional(),
            integer("mtu", 1280, 65520, "MTU.").optional(),
            string("cidr", Some(&formats::SINGLE_LINE), "IPv4 CIDR.").optional(),
            string("address", Some(&formats::SINGLE_LINE), "IP address.").optional(),
            string("netmask", Some(&formats::SINGLE_LINE), "Network mask.").optional(),
            string("gateway", Some(&formats::SINGLE_LINE), "Default gateway address.").optional(),
            string("cidr6", Some(&formats::SINGLE_LINE), "IPv6 CIDR.").optional(),
            string("address6", Some(&formats::SINGLE_LINE), "IP address.").optional(),
            integer("netmask6", 0, 128, "Network mask.").optional(),
            string("gateway6", Some(&formats::SINGLE_LINE), "Default ipv6 gateway address.").optional(),
            string("comments", None, "Comments").optional(),
            string("comments6", None, "Comments").optional(),
            $($extra),*
        ]
    };
}

/// The `/nodes/{node}/network` endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/network",
        description: "List available networks (the staged file if there are pending changes; `changes` holds their diff).",
        params: &[
            NODE,
            one_of(
                "type",
                &[
                    "bridge",
                    "bond",
                    "eth",
                    "alias",
                    "vlan",
                    "fabric",
                    "OVSBridge",
                    "OVSBond",
                    "OVSPort",
                    "OVSIntPort",
                    "vnet",
                    "any_bridge",
                    "any_local_bridge",
                    "include_sdn",
                ],
                "Only list specific interface types.",
            )
            .optional(),
        ],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Audit"]),
        handler: |s, c| Box::pin(list(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/network",
        description: "Create network device configuration (staged in interfaces.new).",
        params: iface_params!(),
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Modify"]),
        handler: |s, c| Box::pin(create(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/nodes/{node}/network",
        description: "Apply the staged network configuration (task srvreload); rolled back unless the management address stays reachable.",
        params: &[
            NODE,
            boolean("regenerate-frr", "Accepted for compatibility (no SDN).").optional(),
        ],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Modify"]),
        handler: |s, c| Box::pin(apply(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/nodes/{node}/network",
        description: "Revert network configuration changes.",
        params: &[NODE],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Modify"]),
        handler: |s, c| Box::pin(revert(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/network/{iface}",
        description: "Read network device configuration.",
        params: &[NODE, IFACE],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Audit"]),
        handler: |s, c| Box::pin(get_iface(s, c)),
    },
    Endpoint {
        method: Method::PUT,
        path: "/nodes/{node}/network/{iface}",
        description: "Update network device configuration (staged in interfaces.new).",
        params: iface_params!(string(
            "delete",
            Some(&formats::SINGLE_LINE),
            "A list of settings you want to delete."
        )
        .optional()),
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Modify"]),
        handler: |s, c| Box::pin(update(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/nodes/{node}/network/{iface}",
        description: "Delete network device configuration (staged in interfaces.new).",
        params: &[NODE, IFACE],
        extra: None,
        permission: privs("/nodes/{node}", &["Sys.Modify"]),
        handler: |s, c| Box::pin(delete_iface(s, c)),
    },
];

fn net_err(e: NetworkError) -> ApiError {
    match e {
        NetworkError::Invalid(_) | NetworkError::Plan(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
        }
        other => ApiError::failed(other.to_string()),
    }
}

async fn observe() -> Result<Observed, ApiError> {
    let nl = Rtnl::connect().map_err(|e| ApiError::failed(format!("netlink: {e}")))?;
    netd::reconcile::kernel::observe(&nl)
        .await
        .map_err(|e| ApiError::failed(format!("cannot read the network state: {e}")))
}

/// What the endpoints work from.
struct Texts {
    observed: Observed,
    /// The live file, or the one synthesised from the kernel.
    live: String,
    /// Whether `live` is synthesised.
    synthesized: bool,
    /// `interfaces.new`, if any.
    staged: Option<String>,
}

impl Texts {
    async fn load(state: &AppState) -> Result<Texts, ApiError> {
        let files = &state.network.files;
        let observed = observe().await?;
        let exists = files.current.exists();
        let live = if exists {
            files.current().map_err(net_err)?
        } else {
            synthesize(&observed, &state.network.bridge)
        };
        Ok(Texts {
            observed,
            live,
            synthesized: !exists,
            staged: files.staged().map_err(net_err)?,
        })
    }

    fn editable(&self) -> &str {
        self.staged.as_deref().unwrap_or(&self.live)
    }

    fn parse(&self) -> Result<InterfacesFile, ApiError> {
        InterfacesFile::parse(self.editable())
            .map_err(|e| ApiError::failed(format!("cannot parse the interfaces file: {e}")))
    }
}

async fn list(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let texts = Texts::load(&state).await?;
    let file = texts.parse()?;
    let config = file
        .config()
        .map_err(|e| ApiError::failed(format!("invalid interfaces file: {e}")))?;
    let mut items = entries(&file, &config, &texts.observed);
    if let Some(filter) = call.params.get("type") {
        items.retain(|e| type_matches(filter, e));
    }
    let mut body = json!({ "data": items });
    if let Some(staged) = &texts.staged {
        let diff = unified_diff(
            &state.network.files.current.display().to_string(),
            &state.network.files.staged_path().display().to_string(),
            &texts.live,
            staged,
        );
        if !diff.is_empty() {
            body["changes"] = json!(diff);
        }
    }
    Ok(Reply::body(Bytes::from(body.to_string())))
}

async fn get_iface(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let texts = Texts::load(&state).await?;
    let file = texts.parse()?;
    let config = file
        .config()
        .map_err(|e| ApiError::failed(format!("invalid interfaces file: {e}")))?;
    let name = call.param("iface");
    entries(&file, &config, &texts.observed)
        .into_iter()
        .find(|e| e["iface"] == name)
        .map(Reply::from)
        .ok_or_else(|| ApiError::failed(format!("interface does not exist: {name}")))
}

/// Edits the editable file with `edit` and stages the result; nothing is
/// written when the edit or the validation fails.
async fn stage_edit(
    state: &AppState,
    edit: impl FnOnce(&mut InterfacesFile) -> Result<(), ApiError>,
) -> ApiResult {
    let _guard = state.network.lock.lock().await;
    let texts = Texts::load(state).await?;
    let mut file = texts.parse()?;
    edit(&mut file)?;
    state
        .network
        .files
        .stage(&file.to_string(), &texts.observed.link_names())
        .map_err(|e| match e {
            // The edit made the file invalid: a parameter error on the
            // interface, with the file's line.
            NetworkError::Invalid(_) => ApiError::parameter("iface", e.to_string()),
            other => net_err(other),
        })?;
    Ok(Value::Null.into())
}

fn iface_params(call: &Call) -> BTreeMap<String, String> {
    call.params
        .iter()
        .filter(|(k, _)| !matches!(*k, "node" | "iface"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn create(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let params = iface_params(&call);
    let name = call.param("iface").to_owned();
    stage_edit(&state, |file| {
        edit_iface(file, &name, &params, true).map_err(|(k, why)| ApiError::parameter(k, why))
    })
    .await
}

async fn update(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let params = iface_params(&call);
    let name = call.param("iface").to_owned();
    stage_edit(&state, |file| {
        let config = file
            .config()
            .map_err(|e| ApiError::failed(format!("invalid interfaces file: {e}")))?;
        if let Some(iface) = config.get(&name) {
            let kind = call.param("type");
            let have = match &iface.kind {
                netd::interfaces::IfaceKind::Bridge(_) => "bridge",
                netd::interfaces::IfaceKind::Bond(_) => "bond",
                netd::interfaces::IfaceKind::Vlan(_) => "vlan",
                netd::interfaces::IfaceKind::Plain => kind,
            };
            if have != kind {
                return Err(ApiError::parameter(
                    "type",
                    format!("interface '{name}' is a {have}, not a {kind}"),
                ));
            }
        }
        edit_iface(file, &name, &params, false).map_err(|(k, why)| ApiError::parameter(k, why))
    })
    .await
}

async fn delete_iface(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let name = call.param("iface").to_owned();
    if name == state.network.bridge {
        return Err(ApiError::parameter(
            "iface",
            format!("{name} is the management bridge and cannot be deleted"),
        ));
    }
    stage_edit(&state, |file| {
        if file.remove_iface(&name) {
            Ok(())
        } else {
            Err(ApiError::failed(format!(
                "interface does not exist: {name}"
            )))
        }
    })
    .await
}

async fn revert(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let _guard = state.network.lock.lock().await;
    state.network.files.discard_staged().map_err(net_err)?;
    Ok(Value::Null.into())
}

async fn apply(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let user = call.caller()?.auth_id.clone();
    let task_state = Arc::clone(&state);
    let upid = state
        .tasks
        .spawn("srvreload", "networking", &user, move |log| async move {
            apply_task(&task_state, &log).await
        })
        .map_err(|e| ApiError::failed(e.to_string()))?;
    Ok(json!(upid.to_string()).into())
}

/// How often the apply task probes the management address before it
/// leaves the change to netd's deadline.
const PROBE_TRIES: u32 = 5;

/// The `srvreload` task: applies `interfaces.new` with a rollback
/// deadline, then confirms the change itself once the management
/// address answers (a Proxmox client never confirms).
async fn apply_task(state: &AppState, log: &crate::tasks::TaskLog) -> Result<(), String> {
    let settings = &state.network;
    let _guard = settings.lock.lock().await;
    let texts = Texts::load(state).await.map_err(|e| e.message)?;
    let Some(staged_text) = &texts.staged else {
        log.line("no staged changes: nothing to apply");
        return Ok(());
    };
    if texts.synthesized {
        // The first apply: the live file is what the kernel has, so that
        // a rollback returns to it rather than to an empty file.
        log.line(format!(
            "{} does not exist: writing it from the kernel's {}",
            settings.files.current.display(),
            settings.bridge
        ));
        if let Some(dir) = settings.files.current.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        crate::state_dir::write_atomically(&settings.files.current, texts.live.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
    }
    let (_, config) = InterfacesFile::parse_valid(staged_text, &texts.observed.link_names())
        .map_err(|e| format!("invalid interfaces file: {e}"))?;
    let probe = AddressProbe::from_config(&config, &settings.bridge);
    let nl = Rtnl::connect().map_err(|e| format!("netlink: {e}"))?;
    let confirm = probe.clone().map(|p| (settings.confirm_timeout, p));
    let applied = staged::apply_staged(&nl, &settings.files, confirm)
        .await
        .map_err(|e| e.to_string())?;
    for op in &applied.ops {
        log.line(op.to_string());
    }
    log.line(format!("{} changes applied", applied.ops.len()));
    let Some(probe) = probe else {
        log.line(format!(
            "{} has no static address to probe: applied without a rollback deadline",
            settings.bridge
        ));
        return Ok(());
    };
    // A link that was just changed may take a moment to regain its
    // carrier: a few tries before the decision is left to netd.
    let mut answers = false;
    for attempt in 0..PROBE_TRIES {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        if probe.answers(&nl).await {
            answers = true;
            break;
        }
    }
    if answers {
        staged::confirm(&settings.files).map_err(|e| e.to_string())?;
        log.line(format!(
            "management address {} answers: change confirmed",
            probe.address
        ));
        Ok(())
    } else {
        Err(format!(
            "management address {} does not answer after the change: netd rolls it back at the deadline unless it answers by then",
            probe.address
        ))
    }
}
