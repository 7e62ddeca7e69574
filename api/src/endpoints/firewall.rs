//! The firewall endpoints: rules, security groups, options and aliases of
//! `cluster.fw`, `host.fw` and `<vmid>.fw`, edited in place with
//! [`firewall::FwDocument`] and validated and applied by
//! [`crate::firewall::write_validated`].

use std::sync::Arc;

use firewall::{FwDocument, RuleText, SectionId};
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::app_state::AppState;
use crate::endpoints::nodes::this_node;
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint, Permission};
use crate::schema::{formats, integer, one_of, string, Format, Param};

/// Which file an endpoint edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `cluster.fw`.
    Cluster,
    /// `host.fw` of `{node}`.
    Host,
    /// `<vmid>.fw` of VM `{vmid}`.
    Qemu,
    /// `<vmid>.fw` of container `{vmid}`.
    Lxc,
}

const NODE: Param = string("node", Some(&formats::NODE), "The node.");
const VMID: Param = integer("vmid", 100, 999_999_999, "The (unique) ID of the VM.");
const POS: Param = integer("pos", 0, 1 << 20, "Rule position.");
const DIGEST: Param = string(
    "digest",
    Some(&formats::SINGLE_LINE),
    "Prevent changes if current configuration file has a different digest.",
)
.optional()
.max_length(64);

/// An alias, ipset or group name.
static NAME: Format = Format {
    name: "pve-fw-name",
    check: |v| {
        if firewall::config::valid_name(v) {
            Ok(())
        } else {
            Err("invalid name".into())
        }
    },
};
const GROUP: Param = string("group", Some(&NAME), "Security Group name.");
const ALIAS_NAME: Param = string("name", Some(&NAME), "Alias name.");

const ACTION_WORDS: &[&str] = &["in", "out", "forward", "group"];
const LOG: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog",
];

macro_rules! rule_fields {
    ($($extra:expr),*) => {
        &[
            one_of("type", ACTION_WORDS, "Rule type.").optional(),
            string("action", Some(&formats::SINGLE_LINE), "Rule action ('ACCEPT', 'DROP', 'REJECT') or security group name.").optional(),
            string("macro", Some(&formats::SINGLE_LINE), "Use predefined standard macro.").optional(),
            string("source", Some(&formats::SINGLE_LINE), "Restrict packet source address.").optional(),
            string("dest", Some(&formats::SINGLE_LINE), "Restrict packet destination address.").optional(),
            string("proto", Some(&formats::SINGLE_LINE), "IP protocol.").optional(),
            string("dport", Some(&formats::SINGLE_LINE), "Restrict TCP/UDP destination port.").optional(),
            string("sport", Some(&formats::SINGLE_LINE), "Restrict TCP/UDP source port.").optional(),
            string("iface", Some(&formats::SINGLE_LINE), "Network interface name.").optional(),
            string("icmp-type", Some(&formats::SINGLE_LINE), "Specify icmp-type.").optional(),
            one_of("log", LOG, "Log level for firewall rule.").optional(),
            integer("enable", 0, 1, "Flag to enable/disable a rule.").optional(),
            string("comment", Some(&formats::SINGLE_LINE), "Descriptive comment.").optional(),
            DIGEST,
            $($extra),*
        ]
    };
}

/// The rule endpoints below `$base` (a path ending in `/rules` or a
/// group), with `$path_params` and the audit/modify permissions.
macro_rules! rule_endpoints {
    ($base:expr, [$($p:expr),*], $audit:expr, $modify:expr, $scope:expr, $group:expr) => {
        &[
            Endpoint {
                method: Method::GET,
                path: $base,
                description: "List rules.",
                params: &[$($p),*],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(list_rules(s, c, $scope, $group)),
            },
            Endpoint {
                method: Method::POST,
                path: $base,
                description: "Create new rule.",
                params: rule_fields!($($p,)* integer("pos", 0, 1 << 20, "Update rule at position <pos>.").optional()),
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(create_rule(s, c, $scope, $group)),
            },
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/{pos}"),
                description: "Get single rule data.",
                params: &[$($p,)* POS],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(get_rule(s, c, $scope, $group)),
            },
            Endpoint {
                method: Method::PUT,
                path: concat!($base, "/{pos}"),
                description: "Modify rule data.",
                params: rule_fields!(
                    $($p,)*
                    POS,
                    integer("moveto", 0, 1 << 20, "Move rule to new position <moveto>.").optional(),
                    string("delete", Some(&formats::SINGLE_LINE), "A list of settings you want to delete.").optional()
                ),
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(update_rule(s, c, $scope, $group)),
            },
            Endpoint {
                method: Method::DELETE,
                path: concat!($base, "/{pos}"),
                description: "Delete rule.",
                params: &[$($p,)* POS, DIGEST],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(delete_rule(s, c, $scope, $group)),
            },
        ]
    };
}

/// An optional boolean option (written `0`/`1`).
const fn flag(name: &'static str, description: &'static str) -> Param {
    crate::schema::boolean(name, description).optional()
}

macro_rules! options_endpoints {
    ($base:expr, [$($p:expr),*], $audit:expr, $modify:expr, $scope:expr, [$($opt:expr),*]) => {
        &[
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/options"),
                description: "Get Firewall options.",
                params: &[$($p),*],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(get_options(s, c, $scope)),
            },
            Endpoint {
                method: Method::PUT,
                path: concat!($base, "/options"),
                description: "Set Firewall options.",
                params: &[
                    $($p,)*
                    DIGEST,
                    string("delete", Some(&formats::SINGLE_LINE), "A list of settings you want to delete.").optional(),
                    $($opt),*
                ],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(set_options(s, c, $scope)),
            },
        ]
    };
}

macro_rules! alias_endpoints {
    ($base:expr, [$($p:expr),*], $audit:expr, $modify:expr, $scope:expr) => {
        &[
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/aliases"),
                description: "List aliases.",
                params: &[$($p),*],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(list_aliases(s, c, $scope)),
            },
            Endpoint {
                method: Method::POST,
                path: concat!($base, "/aliases"),
                description: "Create IP or Network Alias.",
                params: &[$($p,)* ALIAS_NAME, CIDR, COMMENT],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(create_alias(s, c, $scope)),
            },
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/aliases/{name}"),
                description: "Read alias.",
                params: &[$($p,)* ALIAS_NAME],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(get_alias(s, c, $scope)),
            },
            Endpoint {
                method: Method::PUT,
                path: concat!($base, "/aliases/{name}"),
                description: "Update IP or Network alias.",
                params: &[$($p,)* ALIAS_NAME, CIDR, COMMENT, DIGEST,
                    string("rename", Some(&NAME), "Rename an existing alias.").optional()],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(update_alias(s, c, $scope)),
            },
            Endpoint {
                method: Method::DELETE,
                path: concat!($base, "/aliases/{name}"),
                description: "Remove IP or Network alias.",
                params: &[$($p,)* ALIAS_NAME, DIGEST],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(delete_alias(s, c, $scope)),
            },
        ]
    };
}

const IPSET_NAME: Param = string("name", Some(&NAME), "IP set name.");
const NOMATCH: Param =
    crate::schema::boolean("nomatch", "Exclude the entry from the set.").optional();

macro_rules! ipset_endpoints {
    ($base:expr, [$($p:expr),*], $audit:expr, $modify:expr, $scope:expr) => {
        &[
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/ipset"),
                description: "List IPSets.",
                params: &[$($p),*],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(list_ipsets(s, c, $scope)),
            },
            Endpoint {
                method: Method::POST,
                path: concat!($base, "/ipset"),
                description: "Create new IPSet.",
                params: &[$($p,)* IPSET_NAME, COMMENT, DIGEST,
                    string("rename", Some(&NAME), "Rename an existing IPSet. You can set 'rename' to the same value as 'name' to update the 'comment' of an existing IPSet.").optional()],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(create_ipset(s, c, $scope)),
            },
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/ipset/{name}"),
                description: "List IPSet content.",
                params: &[$($p,)* IPSET_NAME],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(list_ipset(s, c, $scope)),
            },
            Endpoint {
                method: Method::POST,
                path: concat!($base, "/ipset/{name}"),
                description: "Add IP or Network to IPSet.",
                params: &[$($p,)* IPSET_NAME, CIDR, COMMENT, NOMATCH],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(add_ipset_entry(s, c, $scope)),
            },
            Endpoint {
                method: Method::DELETE,
                path: concat!($base, "/ipset/{name}"),
                description: "Delete IPSet.",
                params: &[$($p,)* IPSET_NAME,
                    crate::schema::boolean("force", "Delete all members of the IPSet, if there are any.").optional()],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(delete_ipset(s, c, $scope)),
            },
            Endpoint {
                method: Method::GET,
                path: concat!($base, "/ipset/{name}/{cidr}"),
                description: "Read IP or Network settings from IPSet.",
                params: &[$($p,)* IPSET_NAME, CIDR],
                extra: None,
                permission: $audit,
                handler: |s, c| Box::pin(get_ipset_entry(s, c, $scope)),
            },
            Endpoint {
                method: Method::PUT,
                path: concat!($base, "/ipset/{name}/{cidr}"),
                description: "Update IP or Network settings.",
                params: &[$($p,)* IPSET_NAME, CIDR, COMMENT, NOMATCH, DIGEST],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(update_ipset_entry(s, c, $scope)),
            },
            Endpoint {
                method: Method::DELETE,
                path: concat!($base, "/ipset/{name}/{cidr}"),
                description: "Remove IP or Network from IPSet.",
                params: &[$($p,)* IPSET_NAME, CIDR, DIGEST],
                extra: None,
                permission: $modify,
                handler: |s, c| Box::pin(delete_ipset_entry(s, c, $scope)),
            },
        ]
    };
}

const CIDR: Param = string(
    "cidr",
    Some(&formats::SINGLE_LINE),
    "Network/IP specification in CIDR format.",
);
const COMMENT: Param = string("comment", Some(&formats::SINGLE_LINE), "Comment.").optional();
const REF_TYPE: Param = one_of(
    "type",
    &["alias", "ipset"],
    "Only list references of specified type.",
)
.optional();

const fn index(
    path: &'static str,
    params: &'static [Param],
    permission: Permission,
    dirs: fn(Arc<AppState>, Call) -> crate::router::HandlerFuture,
) -> Endpoint {
    Endpoint {
        method: Method::GET,
        path,
        description: "Directory index.",
        params,
        extra: None,
        permission,
        handler: dirs,
    }
}

/// Cluster-wide rules, groups, options and aliases.
pub static CLUSTER: &[Endpoint] = &[
    index(
        "/cluster/firewall",
        &[],
        Permission::Anyone("everybody"),
        |_, _| {
            Box::pin(async {
                Ok(json!([{"name": "aliases"}, {"name": "groups"}, {"name": "ipset"}, {"name": "macros"}, {"name": "options"}, {"name": "refs"}, {"name": "rules"}]).into())
            })
        },
    ),
    Endpoint {
        method: Method::GET,
        path: "/cluster/firewall/refs",
        description:
            "Lists possible IPSet/Alias reference which are allowed in source/dest properties.",
        params: &[REF_TYPE],
        extra: None,
        permission: privs("/", &["Sys.Audit"]),
        handler: |s, c| Box::pin(refs(s, c, Scope::Cluster)),
    },
    Endpoint {
        method: Method::GET,
        path: "/cluster/firewall/macros",
        description: "List available macros.",
        params: &[],
        extra: None,
        permission: Permission::Anyone("everybody"),
        handler: |_, _| Box::pin(async { Ok(macros()) }),
    },
    Endpoint {
        method: Method::GET,
        path: "/cluster/firewall/groups",
        description: "List security groups.",
        params: &[],
        extra: None,
        permission: privs("/", &["Sys.Audit"]),
        handler: |s, c| Box::pin(list_groups(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/cluster/firewall/groups",
        description: "Create new security group.",
        params: &[GROUP, COMMENT, DIGEST],
        extra: None,
        permission: privs("/", &["Sys.Modify"]),
        handler: |s, c| Box::pin(create_group(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/cluster/firewall/groups/{group}",
        description: "Delete security group.",
        params: &[GROUP],
        extra: None,
        permission: privs("/", &["Sys.Modify"]),
        handler: |s, c| Box::pin(delete_group(s, c)),
    },
];
/// `/cluster/firewall/rules`.
pub static CLUSTER_RULES: &[Endpoint] = rule_endpoints!(
    "/cluster/firewall/rules",
    [],
    privs("/", &["Sys.Audit"]),
    privs("/", &["Sys.Modify"]),
    Scope::Cluster,
    false
);
/// `/cluster/firewall/groups/{group}`.
pub static GROUP_RULES: &[Endpoint] = rule_endpoints!(
    "/cluster/firewall/groups/{group}",
    [GROUP],
    privs("/", &["Sys.Audit"]),
    privs("/", &["Sys.Modify"]),
    Scope::Cluster,
    true
);
/// `/cluster/firewall/options`.
pub static CLUSTER_OPTIONS: &[Endpoint] = options_endpoints!(
    "/cluster/firewall",
    [],
    privs("/", &["Sys.Audit"]),
    privs("/", &["Sys.Modify"]),
    Scope::Cluster,
    [
        flag("enable", "Enable or disable the firewall cluster wide."),
        flag("ebtables", "Enable ebtables rules cluster wide."),
        one_of("policy_in", &["ACCEPT", "REJECT", "DROP"], "Input policy.").optional(),
        one_of(
            "policy_out",
            &["ACCEPT", "REJECT", "DROP"],
            "Output policy."
        )
        .optional(),
        one_of("policy_forward", &["ACCEPT", "DROP"], "Forward policy.").optional(),
        string(
            "log_ratelimit",
            Some(&formats::SINGLE_LINE),
            "Log ratelimiting settings"
        )
        .optional()
    ]
);
/// `/cluster/firewall/aliases`.
pub static CLUSTER_ALIASES: &[Endpoint] = alias_endpoints!(
    "/cluster/firewall",
    [],
    privs("/", &["Sys.Audit"]),
    privs("/", &["Sys.Modify"]),
    Scope::Cluster
);

/// `/cluster/firewall/ipset`.
pub static CLUSTER_IPSETS: &[Endpoint] = ipset_endpoints!(
    "/cluster/firewall",
    [],
    privs("/", &["Sys.Audit"]),
    privs("/", &["Sys.Modify"]),
    Scope::Cluster
);

/// The host's rules and options.
pub static HOST: &[Endpoint] = &[index(
    "/nodes/{node}/firewall",
    &[NODE],
    Permission::Anyone("everybody"),
    |_, _| Box::pin(async { Ok(json!([{"name": "options"}, {"name": "rules"}]).into()) }),
)];
/// `/nodes/{node}/firewall/rules`.
pub static HOST_RULES: &[Endpoint] = rule_endpoints!(
    "/nodes/{node}/firewall/rules",
    [NODE],
    privs("/nodes/{node}", &["Sys.Audit"]),
    privs("/nodes/{node}", &["Sys.Modify"]),
    Scope::Host,
    false
);
/// `/nodes/{node}/firewall/options`.
pub static HOST_OPTIONS: &[Endpoint] = options_endpoints!(
    "/nodes/{node}/firewall",
    [NODE],
    privs("/nodes/{node}", &["Sys.Audit"]),
    privs("/nodes/{node}", &["Sys.Modify"]),
    Scope::Host,
    [
        flag("enable", "Enable host firewall rules."),
        flag("ndp", "Enable NDP (Neighbor Discovery Protocol)."),
        flag("nosmurfs", "Enable SMURFS filter."),
        flag("tcpflags", "Filter illegal combinations of TCP flags."),
        one_of("log_level_in", LOG, "Log level for incoming traffic.").optional(),
        one_of("log_level_out", LOG, "Log level for outgoing traffic.").optional(),
        one_of("log_level_forward", LOG, "Log level for forwarded traffic.").optional()
    ]
);

macro_rules! guest_tables {
    ($kind:literal, $scope:expr, $index:ident, $rules:ident, $options:ident, $aliases:ident, $ipsets:ident) => {
        #[doc = concat!("The firewall index of a guest (", $kind, ").")]
        pub static $index: &[Endpoint] = &[
            index(
                concat!("/nodes/{node}/", $kind, "/{vmid}/firewall"),
                &[NODE, VMID],
                privs("/vms/{vmid}", &["VM.Audit"]),
                |_, _| {
                    Box::pin(async {
                        Ok(json!([{"name": "aliases"}, {"name": "ipset"}, {"name": "options"}, {"name": "refs"}, {"name": "rules"}]).into())
                    })
                },
            ),
            Endpoint {
                method: Method::GET,
                path: concat!("/nodes/{node}/", $kind, "/{vmid}/firewall/refs"),
                description: "Lists possible IPSet/Alias reference which are allowed in source/dest properties.",
                params: &[NODE, VMID, REF_TYPE],
                extra: None,
                permission: privs("/vms/{vmid}", &["VM.Audit"]),
                handler: |s, c| Box::pin(refs(s, c, $scope)),
            },
        ];
        #[doc = "A guest's rules."]
        pub static $rules: &[Endpoint] = rule_endpoints!(
            concat!("/nodes/{node}/", $kind, "/{vmid}/firewall/rules"),
            [NODE, VMID],
            privs("/vms/{vmid}", &["VM.Audit"]),
            privs("/vms/{vmid}", &["VM.Config.Network"]),
            $scope,
            false
        );
        #[doc = "A guest's options."]
        pub static $options: &[Endpoint] = options_endpoints!(
            concat!("/nodes/{node}/", $kind, "/{vmid}/firewall"),
            [NODE, VMID],
            privs("/vms/{vmid}", &["VM.Audit"]),
            privs("/vms/{vmid}", &["VM.Config.Network"]),
            $scope,
            [
                flag("enable", "Enable/disable firewall rules."),
                flag("dhcp", "Enable DHCP."),
                flag("ipfilter", "Enable default IP filters."),
                flag("macfilter", "Enable/disable MAC address filter."),
                flag("ndp", "Enable NDP (Neighbor Discovery Protocol)."),
                flag("radv", "Allow sending Router Advertisement."),
                one_of("policy_in", &["ACCEPT", "REJECT", "DROP"], "Input policy.").optional(),
                one_of(
                    "policy_out",
                    &["ACCEPT", "REJECT", "DROP"],
                    "Output policy."
                )
                .optional(),
                one_of("log_level_in", LOG, "Log level for incoming traffic.").optional(),
                one_of("log_level_out", LOG, "Log level for outgoing traffic.").optional()
            ]
        );
        #[doc = "A guest's aliases."]
        pub static $aliases: &[Endpoint] = alias_endpoints!(
            concat!("/nodes/{node}/", $kind, "/{vmid}/firewall"),
            [NODE, VMID],
            privs("/vms/{vmid}", &["VM.Audit"]),
            privs("/vms/{vmid}", &["VM.Config.Network"]),
            $scope
        );
        #[doc = "A guest's IP sets."]
        pub static $ipsets: &[Endpoint] = ipset_endpoints!(
            concat!("/nodes/{node}/", $kind, "/{vmid}/firewall"),
            [NODE, VMID],
            privs("/vms/{vmid}", &["VM.Audit"]),
            privs("/vms/{vmid}", &["VM.Config.Network"]),
            $scope
        );
    };
}

guest_tables!(
    "qemu",
    Scope::Qemu,
    QEMU,
    QEMU_RULES,
    QEMU_OPTIONS,
    QEMU_ALIASES,
    QEMU_IPSETS
);
guest_tables!(
    "lxc",
    Scope::Lxc,
    LXC,
    LXC_RULES,
    LXC_OPTIONS,
    LXC_ALIASES,
    LXC_IPSETS
);

fn macros() -> crate::response::Reply {
    let list: Vec<Value> = firewall::macros::MACROS
        .iter()
        .map(|m| json!({"macro": m.name, "descr": m.name}))
        .collect();
    Value::Array(list).into()
}

/// The file `scope` edits, after checking the node and the guest.
fn file_of(state: &AppState, call: &Call, scope: Scope) -> Result<String, ApiError> {
    if scope != Scope::Cluster {
        this_node(state, call.param("node"))?;
    }
    let vmid: u32 = call.params.number("vmid").unwrap_or(0);
    match scope {
        Scope::Cluster => Ok("cluster.fw".into()),
        Scope::Host => Ok("host.fw".into()),
        Scope::Qemu if state.vms.exists(vmid) => Ok(format!("{vmid}.fw")),
        Scope::Lxc if state.cts.exists(vmid) => Ok(format!("{vmid}.fw")),
        Scope::Qemu => Err(ApiError::failed(format!(
            "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
            state.node
        ))),
        Scope::Lxc => Err(ApiError::failed(format!(
            "Configuration file 'nodes/{}/lxc/{vmid}.conf' does not exist",
            state.node
        ))),
    }
}

fn section(call: &Call, group: bool) -> SectionId {
    if group {
        SectionId::Group(call.param("group").to_owned())
    } else {
        SectionId::Rules
    }
}

fn check_digest(call: &Call, text: &str) -> Result<(), ApiError> {
    super::check_digest(call.params.get("digest"), || guestconf::digest(text))
        .map_err(ApiError::failed)
}

fn rule_json(rule: &RuleText, pos: usize, digest: &str) -> Value {
    let mut o = Map::new();
    o.insert("pos".into(), json!(pos));
    o.insert("type".into(), json!(rule.kind));
    o.insert("action".into(), json!(rule.action));
    o.insert("enable".into(), json!(u8::from(rule.enable)));
    o.insert("digest".into(), json!(digest));
    for (k, v) in [
        ("macro", &rule.macro_name),
        ("iface", &rule.iface),
        ("source", &rule.source),
        ("dest", &rule.dest),
        ("proto", &rule.proto),
        ("dport", &rule.dport),
        ("sport", &rule.sport),
        ("icmp-type", &rule.icmp_type),
        ("log", &rule.log),
        ("comment", &rule.comment),
    ] {
        if let Some(v) = v {
            o.insert(k.into(), json!(v));
        }
    }
    let family = |s: &Option<String>| {
        s.as_deref()
            .and_then(firewall::config::parse_cidr)
            .map(|n| if n.addr().is_ipv4() { 4 } else { 6 })
    };
    if let Some(v) = family(&rule.source).or_else(|| family(&rule.dest)) {
        o.insert("ipversion".into(), json!(v));
    }
    Value::Object(o)
}

fn rules_of(doc: &FwDocument, id: &SectionId) -> Vec<RuleText> {
    doc.entries(id)
        .into_iter()
        .map(|l| RuleText::parse(l).unwrap_or_default())
        .collect()
}

fn load(state: &AppState, name: &str) -> Result<(String, FwDocument), ApiError> {
    let text = state.firewall.read(name)?;
    let doc = FwDocument::parse(&text);
    Ok((text, doc))
}

fn need_group(doc: &FwDocument, id: &SectionId) -> Result<(), ApiError> {
    match id {
        SectionId::Group(name) if !doc.has_section(id) => {
            Err(ApiError::failed(format!("no such security group '{name}'")))
        }
        _ => Ok(()),
    }
}

/// The edit every changing endpoint makes: under the firewall lock, load
/// file `name`, refuse a stale `digest`, let `edit` change the document,
/// then write it if the whole firewall still compiles, and apply it
/// ([`crate::firewall::write_validated`]).
async fn change(
    state: &AppState,
    call: &Call,
    name: &str,
    edit: impl FnOnce(&mut FwDocument) -> Result<(), ApiError>,
) -> ApiResult {
    let _guard = state.firewall.lock.lock().await;
    let (text, mut doc) = load(state, name)?;
    check_digest(call, &text)?;
    edit(&mut doc)?;
    crate::firewall::write_validated(state, name, &doc.to_string()).await?;
    Ok(Value::Null.into())
}

async fn list_rules(state: Arc<AppState>, call: Call, scope: Scope, group: bool) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let id = section(&call, group);
    need_group(&doc, &id)?;
    let digest = guestconf::digest(&text);
    let list: Vec<Value> = rules_of(&doc, &id)
        .iter()
        .enumerate()
        .map(|(i, r)| rule_json(r, i, &digest))
        .collect();
    Ok(Value::Array(list).into())
}

async fn get_rule(state: Arc<AppState>, call: Call, scope: Scope, group: bool) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let id = section(&call, group);
    need_group(&doc, &id)?;
    let pos: usize = call.params.number("pos").unwrap_or(0);
    let rules = rules_of(&doc, &id);
    let rule = rules
        .get(pos)
        .ok_or_else(|| ApiError::failed("no rule at specified position."))?;
    Ok(rule_json(rule, pos, &guestconf::digest(&text)).into())
}

const RULE_FIELDS: &[&str] = &[
    "type",
    "action",
    "macro",
    "source",
    "dest",
    "proto",
    "dport",
    "sport",
    "iface",
    "icmp-type",
    "log",
    "comment",
    "enable",
];

async fn create_rule(state: Arc<AppState>, call: Call, scope: Scope, group: bool) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = section(&call, group);
        need_group(doc, &id)?;
        let mut rule = RuleText {
            enable: false,
            ..RuleText::default()
        };
        for field in RULE_FIELDS {
            if let Some(v) = call.params.get(field) {
                rule.set(field, Some(v));
            }
        }
        for required in ["type", "action"] {
            if call.params.get(required).is_none() {
                return Err(ApiError::parameter(required, crate::schema::MISSING));
            }
        }
        let pos: usize = call.params.number("pos").unwrap_or(0);
        doc.insert_entry(&id, pos, &rule.to_string());
        Ok(())
    })
    .await
}

async fn update_rule(state: Arc<AppState>, call: Call, scope: Scope, group: bool) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = section(&call, group);
        need_group(doc, &id)?;
        let pos: usize = call.params.number("pos").unwrap_or(0);
        let mut rule = rules_of(doc, &id)
            .get(pos)
            .cloned()
            .ok_or_else(|| ApiError::failed("no rule at specified position."))?;
        if let Some(to) = call.params.number::<usize>("moveto") {
            doc.move_entry(&id, pos, to);
        } else {
            for key in call
                .params
                .get("delete")
                .unwrap_or_default()
                .split([',', ';', ' '])
                .filter(|k| !k.is_empty())
            {
                if !RULE_FIELDS.contains(&key) || matches!(key, "type" | "action") {
                    return Err(ApiError::parameter(
                        "delete",
                        format!("cannot delete '{key}'"),
                    ));
                }
                rule.set(key, None);
            }
            for field in RULE_FIELDS {
                if let Some(v) = call.params.get(field) {
                    rule.set(field, Some(v));
                }
            }
            doc.replace_entry(&id, pos, &rule.to_string());
        }
        Ok(())
    })
    .await
}

async fn delete_rule(state: Arc<AppState>, call: Call, scope: Scope, group: bool) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = section(&call, group);
        need_group(doc, &id)?;
        let pos: usize = call.params.number("pos").unwrap_or(0);
        doc.remove_entry(&id, pos)
            .ok_or_else(|| ApiError::failed("no rule at specified position."))?;
        Ok(())
    })
    .await
}

/// The sections of file `name` that `pick` names (groups, IP sets), as
/// `{key: name, comment, digest}` objects.
fn section_list(
    state: &AppState,
    name: &str,
    key: &str,
    pick: impl Fn(SectionId) -> Option<String>,
) -> ApiResult {
    let (text, doc) = load(state, name)?;
    let digest = guestconf::digest(&text);
    let list: Vec<Value> = doc
        .sections()
        .into_iter()
        .filter_map(|(id, comment)| {
            let mut o = json!({key: pick(id)?, "digest": digest});
            if let Some(c) = comment {
                o["comment"] = json!(c);
            }
            Some(o)
        })
        .collect();
    Ok(Value::Array(list).into())
}

async fn list_groups(state: Arc<AppState>, _call: Call) -> ApiResult {
    section_list(&state, "cluster.fw", "group", |id| match id {
        SectionId::Group(name) => Some(name),
        _ => None,
    })
}

async fn create_group(state: Arc<AppState>, call: Call) -> ApiResult {
    change(&state, &call, "cluster.fw", |doc| {
        let id = SectionId::Group(call.param("group").to_owned());
        if !doc.add_section(&id, call.params.get("comment")) {
            return Err(ApiError::failed(format!(
                "security group '{}' already exists",
                call.param("group")
            )));
        }
        Ok(())
    })
    .await
}

async fn delete_group(state: Arc<AppState>, call: Call) -> ApiResult {
    change(&state, &call, "cluster.fw", |doc| {
        let id = SectionId::Group(call.param("group").to_owned());
        need_group(doc, &id)?;
        if !doc.entries(&id).is_empty() {
            return Err(ApiError::failed("security group not empty"));
        }
        doc.remove_section(&id);
        // A group still referenced by a rule does not compile: refused there.
        Ok(())
    })
    .await
}

fn option_entries(doc: &FwDocument) -> Vec<(String, String)> {
    doc.entries(&SectionId::Options)
        .into_iter()
        .filter_map(|l| {
            let (k, v) = firewall::edit::split_comment(l).0.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

async fn get_options(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let mut o = Map::new();
    for (k, v) in option_entries(&doc) {
        let value = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
        o.insert(k, value);
    }
    o.insert("digest".into(), json!(guestconf::digest(&text)));
    Ok(Value::Object(o).into())
}

async fn set_options(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let deletes: Vec<&str> = call
            .params
            .get("delete")
            .unwrap_or_default()
            .split([',', ';', ' '])
            .filter(|k| !k.is_empty())
            .collect();
        let sets: Vec<(&str, &str)> = call
            .params
            .iter()
            .filter(|(k, _)| !matches!(*k, "node" | "vmid" | "digest" | "delete"))
            .collect();
        for key in deletes.iter().copied().chain(sets.iter().map(|(k, _)| *k)) {
            let at = option_entries(doc).iter().position(|(k, _)| k == key);
            if let Some(at) = at {
                doc.remove_entry(&SectionId::Options, at);
            }
        }
        for (key, value) in sets {
            doc.insert_entry(&SectionId::Options, usize::MAX, &format!("{key}: {value}"));
        }
        Ok(())
    })
    .await
}

/// (name, cidr, comment) of each alias line.
fn alias_entries(doc: &FwDocument) -> Vec<(String, String, Option<String>)> {
    doc.entries(&SectionId::Aliases)
        .into_iter()
        .filter_map(|l| {
            let (content, comment) = firewall::edit::split_comment(l);
            let mut w = content.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned(), comment))
        })
        .collect()
}

fn alias_json(alias: &(String, String, Option<String>), digest: &str) -> Value {
    let mut o = json!({"name": alias.0, "cidr": alias.1, "digest": digest});
    if let Some(c) = &alias.2 {
        o["comment"] = json!(c);
    }
    o
}

fn alias_line(name: &str, cidr: &str, comment: Option<&str>) -> String {
    match comment.filter(|c| !c.is_empty()) {
        Some(c) => format!("{name} {cidr} # {c}"),
        None => format!("{name} {cidr}"),
    }
}

fn alias_pos(doc: &FwDocument, name: &str) -> Result<usize, ApiError> {
    alias_entries(doc)
        .iter()
        .position(|a| a.0.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::failed(format!("no such alias '{name}'")))
}

/// The aliases and IP sets a rule of the scope's file may name, as
/// Proxmox's `firewall/refs` lists them for the rule editor: the cluster's
/// (scope `dc`) and, for a guest, its own (scope `guest`), each with the
/// scoped reference a rule takes (`dc/office`, `+guest/blocked`).
async fn refs(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let mut files = vec![("cluster.fw".to_string(), "dc")];
    if scope != Scope::Cluster {
        files.push((file_of(&state, &call, scope)?, "guest"));
    }
    let want = call.params.get("type");
    let mut out = Vec::new();
    for (file, scope) in files {
        let (_, doc) = load(&state, &file)?;
        let mut entry = |kind: &str, name: &str, reference: String, comment: Option<&str>| {
            let mut o = json!({"type": kind, "name": name, "ref": reference, "scope": scope});
            if let Some(c) = comment {
                o["comment"] = json!(c);
            }
            out.push(o);
        };
        if want != Some("alias") {
            for (id, comment) in doc.sections() {
                if let SectionId::IpSet(name) = id {
                    entry(
                        "ipset",
                        &name,
                        format!("+{scope}/{name}"),
                        comment.as_deref(),
                    );
                }
            }
        }
        if want != Some("ipset") {
            for (name, _, comment) in alias_entries(&doc) {
                entry(
                    "alias",
                    &name,
                    format!("{scope}/{name}"),
                    comment.as_deref(),
                );
            }
        }
    }
    Ok(Value::Array(out).into())
}

async fn list_aliases(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let digest = guestconf::digest(&text);
    let list: Vec<Value> = alias_entries(&doc)
        .iter()
        .map(|a| alias_json(a, &digest))
        .collect();
    Ok(Value::Array(list).into())
}

async fn get_alias(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let at = alias_pos(&doc, call.param("name"))?;
    Ok(alias_json(&alias_entries(&doc)[at], &guestconf::digest(&text)).into())
}

async fn create_alias(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let alias = call.param("name");
        if alias_pos(doc, alias).is_ok() {
            return Err(ApiError::failed(format!("alias '{alias}' already exists")));
        }
        let line = alias_line(alias, call.param("cidr"), call.params.get("comment"));
        doc.insert_entry(&SectionId::Aliases, usize::MAX, &line);
        Ok(())
    })
    .await
}

async fn update_alias(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let at = alias_pos(doc, call.param("name"))?;
        let new_name = call.params.get("rename").unwrap_or(call.param("name"));
        let line = alias_line(new_name, call.param("cidr"), call.params.get("comment"));
        doc.replace_entry(&SectionId::Aliases, at, &line);
        Ok(())
    })
    .await
}

async fn delete_alias(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let at = alias_pos(doc, call.param("name"))?;
        doc.remove_entry(&SectionId::Aliases, at);
        // An alias still used by a rule does not compile: refused there.
        Ok(())
    })
    .await
}

/// (cidr, nomatch, comment) of each line of an IP set.
fn ipset_entries(doc: &FwDocument, id: &SectionId) -> Vec<(String, bool, Option<String>)> {
    doc.entries(id)
        .into_iter()
        .filter_map(|l| {
            let (content, comment) = firewall::edit::split_comment(l);
            let word = content.split_whitespace().next()?;
            let (nomatch, cidr) = match word.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, word),
            };
            Some((cidr.to_owned(), nomatch, comment))
        })
        .collect()
}

fn ipset_entry_json(entry: &(String, bool, Option<String>), digest: &str) -> Value {
    let mut o = json!({"cidr": entry.0, "digest": digest});
    if entry.1 {
        o["nomatch"] = json!(1);
    }
    if let Some(c) = &entry.2 {
        o["comment"] = json!(c);
    }
    o
}

fn ipset_line(cidr: &str, nomatch: bool, comment: Option<&str>) -> String {
    let bang = if nomatch { "!" } else { "" };
    match comment.filter(|c| !c.is_empty()) {
        Some(c) => format!("{bang}{cidr} # {c}"),
        None => format!("{bang}{cidr}"),
    }
}

fn need_ipset(doc: &FwDocument, call: &Call) -> Result<SectionId, ApiError> {
    let id = SectionId::IpSet(call.param("name").to_owned());
    if doc.has_section(&id) {
        Ok(id)
    } else {
        Err(ApiError::failed(format!(
            "no such IPSet '{}'",
            call.param("name")
        )))
    }
}

/// An IP set entry is an address, a network, or the name of an alias of
/// the same file or (`dc/` prefixed or not) the cluster's.
fn check_ipset_value(state: &AppState, doc: &FwDocument, value: &str) -> Result<(), ApiError> {
    if firewall::config::parse_cidr(value).is_some() {
        return Ok(());
    }
    let (name, local) = match value.strip_prefix("dc/") {
        Some(n) => (n, false),
        None => (value, true),
    };
    let known = |d: &FwDocument| {
        alias_entries(d)
            .iter()
            .any(|a| a.0.eq_ignore_ascii_case(name))
    };
    if (local && known(doc)) || known(&load(state, "cluster.fw")?.1) {
        return Ok(());
    }
    Err(ApiError::parameter(
        "cidr",
        format!("'{value}' is neither an IP address or network nor a known alias"),
    ))
}

/// The position of `cidr` in IP set `id` (compared as written, as Proxmox
/// does after normalising a bare address to itself).
fn ipset_pos(doc: &FwDocument, id: &SectionId, cidr: &str) -> Result<usize, ApiError> {
    ipset_entries(doc, id)
        .iter()
        .position(|e| e.0.eq_ignore_ascii_case(cidr))
        .ok_or_else(|| ApiError::failed(format!("no such IP/Network '{cidr}'")))
}

async fn list_ipsets(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    section_list(&state, &name, "name", |id| match id {
        SectionId::IpSet(set) => Some(set),
        _ => None,
    })
}

async fn create_ipset(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let set = call.param("name");
        let comment = call.params.get("comment");
        match call.params.get("rename") {
            Some(old) => {
                let old_id = SectionId::IpSet(old.to_owned());
                if !doc.has_section(&old_id) {
                    return Err(ApiError::failed(format!("no such IPSet '{old}'")));
                }
                let new_id = SectionId::IpSet(set.to_owned());
                if !old.eq_ignore_ascii_case(set) && doc.has_section(&new_id) {
                    return Err(ApiError::failed(format!("IPSet '{set}' already exists")));
                }
                // Rules naming the old set no longer compile: refused there.
                doc.set_section_header(&old_id, &new_id, comment);
            }
            None => {
                if !doc.add_section(&SectionId::IpSet(set.to_owned()), comment) {
                    return Err(ApiError::failed(format!("IPSet '{set}' already exists")));
                }
            }
        }
        Ok(())
    })
    .await
}

async fn list_ipset(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let id = need_ipset(&doc, &call)?;
    let digest = guestconf::digest(&text);
    let list: Vec<Value> = ipset_entries(&doc, &id)
        .iter()
        .map(|e| ipset_entry_json(e, &digest))
        .collect();
    Ok(Value::Array(list).into())
}

async fn add_ipset_entry(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = need_ipset(doc, &call)?;
        let cidr = call.param("cidr");
        check_ipset_value(&state, doc, cidr)?;
        if ipset_pos(doc, &id, cidr).is_ok() {
            return Err(ApiError::failed(format!("entry '{cidr}' already exists")));
        }
        let line = ipset_line(
            cidr,
            call.params.flag("nomatch"),
            call.params.get("comment"),
        );
        doc.insert_entry(&id, usize::MAX, &line);
        // A bad address or an unknown alias does not compile: refused there.
        Ok(())
    })
    .await
}

async fn delete_ipset(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = need_ipset(doc, &call)?;
        if !doc.entries(&id).is_empty() && !call.params.flag("force") {
            return Err(ApiError::failed("IPSet is not empty"));
        }
        doc.remove_section(&id);
        // A set still named by a rule does not compile: refused there.
        Ok(())
    })
    .await
}

async fn get_ipset_entry(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    let (text, doc) = load(&state, &name)?;
    let id = need_ipset(&doc, &call)?;
    let at = ipset_pos(&doc, &id, call.param("cidr"))?;
    Ok(ipset_entry_json(&ipset_entries(&doc, &id)[at], &guestconf::digest(&text)).into())
}

async fn update_ipset_entry(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = need_ipset(doc, &call)?;
        let cidr = call.param("cidr");
        let at = ipset_pos(doc, &id, cidr)?;
        let line = ipset_line(
            cidr,
            call.params.flag("nomatch"),
            call.params.get("comment"),
        );
        doc.replace_entry(&id, at, &line);
        Ok(())
    })
    .await
}

async fn delete_ipset_entry(state: Arc<AppState>, call: Call, scope: Scope) -> ApiResult {
    let name = file_of(&state, &call, scope)?;
    change(&state, &call, &name, |doc| {
        let id = need_ipset(doc, &call)?;
        let at = ipset_pos(doc, &id, call.param("cidr"))?;
        doc.remove_entry(&id, at);
        Ok(())
    })
    .await
}
