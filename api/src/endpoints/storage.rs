//! `/storage` and `/nodes/{node}/storage`: the storage configuration, the
//! status and content of this node's storages, disk allocation, volume
//! removal and uploads of ISO images and container templates.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Map, Value};
use storage::{
    ChecksumAlgorithm, ContentType, DirVolume, ExpectedChecksum, FinishedUpload, ImageFormat,
    StorageId, StoragesError, UploadWriter, Vmid, VolumeId,
};

use super::nodes::this_node;
use crate::access::permissions::has_privileges;
use crate::access::UserConfig;
use crate::app_state::AppState;
use crate::response::{ApiError, ApiResult};
use crate::router::{any_priv, privs, Call, Endpoint, Permission};
use crate::schema::{boolean, formats, integer, one_of, string, Format, Param};
use crate::upload::UploadBody;

/// The path of the upload endpoint.
pub const UPLOAD_PATH: &str = "/nodes/{node}/storage/{storage}/upload";

/// How many file chunks may wait for the disk while the network is faster.
const UPLOAD_QUEUE_CHUNKS: usize = 16;

static STORAGE_ID: Format = Format {
    name: "pve-storage-id",
    check: |v| {
        StorageId::new(v)
            .map(|_| ())
            .map_err(|_| format!("invalid storage id '{v}'"))
    },
};

static CONTENT_TYPE: Format = Format {
    name: "pve-storage-content",
    check: |v| {
        v.parse::<ContentType>()
            .map(|_| ())
            .map_err(|_| format!("invalid content type '{v}'"))
    },
};

static CONTENT_LIST: Format = Format {
    name: "pve-storage-content-list",
    check: |v| {
        storage::ContentSet::parse(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    },
};

static DISK_SIZE: Format = Format {
    name: "disk-size-kib",
    check: |v| parse_size_kib(v).map(|_| ()),
};

const NODE: Param = string("node", Some(&formats::NODE), "The node.");
const STORAGE: Param = string("storage", Some(&STORAGE_ID), "The storage.");
const VOLUME: Param = string(
    "volume",
    None,
    "The volume: a volume id (storage:volname) or a volname.",
);
const VMID_MAX: i64 = 999_999_999;

const STORAGE_TYPES: &[&str] = &[
    "btrfs",
    "cephfs",
    "cifs",
    "dir",
    "esxi",
    "iscsi",
    "iscsidirect",
    "lvm",
    "lvmthin",
    "nfs",
    "pbs",
    "rbd",
    "zfs",
    "zfspool",
];

const STORAGE_AUDIT: &[&str] = &["Datastore.Audit", "Datastore.AllocateSpace"];

/// The parameters of the upload endpoint.
static UPLOAD_PARAMS: &[Param] = &[
    NODE,
    STORAGE,
    one_of(
        "content",
        &["iso", "vztmpl", "import"],
        "The content type of the file.",
    ),
    string(
        "filename",
        None,
        "The file part; its file name is normalised.",
    )
    .max_length(255),
    string("checksum", None, "The expected checksum of the file.").optional(),
    one_of(
        "checksum-algorithm",
        &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"],
        "The algorithm of `checksum`.",
    )
    .optional(),
    string(
        "tmpfilename",
        None,
        "Accepted for compatibility and ignored.",
    )
    .optional(),
];

/// The storage endpoints.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/storage",
        description: "The storage configuration entries the caller may see.",
        params: &[one_of("type", STORAGE_TYPES, "Only storages of this type.").optional()],
        extra: None,
        permission: Permission::Anyone(
            "storages with Datastore.Audit or Datastore.AllocateSpace on /storage/{storage}",
        ),
        handler: |s, c| Box::pin(list_config(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/storage/{storage}",
        description: "One storage configuration entry.",
        params: &[STORAGE],
        extra: None,
        permission: privs("/storage/{storage}", &["Datastore.Allocate"]),
        handler: |s, c| Box::pin(get_config(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/storage",
        description: "The status of the node's storages.",
        params: &[
            NODE,
            string(
                "content",
                Some(&CONTENT_LIST),
                "Only storages allowing one of these content types.",
            )
            .optional(),
            string("storage", Some(&STORAGE_ID), "Only this storage.").optional(),
            boolean("enabled", "Only enabled storages.").optional(),
            string(
                "target",
                Some(&formats::NODE),
                "Only storages usable on this node too.",
            )
            .optional(),
            boolean("format", "Accepted for compatibility; not reported yet.").optional(),
        ],
        extra: None,
        permission: Permission::Anyone(
            "storages with Datastore.Audit or Datastore.AllocateSpace on /storage/{storage}",
        ),
        handler: |s, c| Box::pin(list_status(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/storage/{storage}",
        description: "Directory index.",
        params: &[NODE, STORAGE],
        extra: None,
        permission: any_priv("/storage/{storage}", STORAGE_AUDIT),
        handler: |s, c| Box::pin(storage_index(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/storage/{storage}/status",
        description: "A storage's status and space.",
        params: &[NODE, STORAGE],
        extra: None,
        permission: any_priv("/storage/{storage}", STORAGE_AUDIT),
        handler: |s, c| Box::pin(storage_status(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/storage/{storage}/content",
        description: "The volumes on a storage the caller may see.",
        params: &[
            NODE,
            STORAGE,
            string(
                "content",
                Some(&CONTENT_TYPE),
                "Only volumes of this content type.",
            )
            .optional(),
            integer("vmid", 100, VMID_MAX, "Only volumes of this guest.").optional(),
        ],
        extra: None,
        permission: any_priv("/storage/{storage}", STORAGE_AUDIT),
        handler: |s, c| Box::pin(list_content(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: "/nodes/{node}/storage/{storage}/content",
        description: "Allocate a disk image.",
        params: &[
            NODE,
            STORAGE,
            string(
                "filename",
                None,
                "The image's name (vm-<vmid>-..., with or without extension).",
            )
            .max_length(255),
            string(
                "size",
                Some(&DISK_SIZE),
                "Size in KiB, or with suffix M (MiB) or G (GiB).",
            ),
            integer("vmid", 100, VMID_MAX, "The owning guest."),
            one_of(
                "format",
                &["raw", "qcow2", "subvol", "vmdk"],
                "The image format.",
            )
            .optional(),
        ],
        extra: None,
        permission: privs("/storage/{storage}", &["Datastore.AllocateSpace"]),
        handler: |s, c| Box::pin(allocate(s, c)),
    },
    Endpoint {
        method: Method::GET,
        path: "/nodes/{node}/storage/{storage}/content/{volume}",
        description: "A volume's path, size, allocation and format.",
        params: &[NODE, STORAGE, VOLUME],
        extra: None,
        permission: Permission::Anyone("read access to the volume (see docs/api.md)"),
        handler: |s, c| Box::pin(volume_attributes(s, c)),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/nodes/{node}/storage/{storage}/content/{volume}",
        description: "Delete a volume (a task).",
        params: &[
            NODE,
            STORAGE,
            VOLUME,
            integer(
                "delay",
                1,
                30,
                "Accepted for compatibility; a UPID is always returned.",
            )
            .optional(),
        ],
        extra: None,
        permission: Permission::Anyone(
            "Datastore.Allocate on /storage/{storage}; for a guest's backup \
             Datastore.AllocateSpace there and VM.Backup on /vms/{vmid}",
        ),
        handler: |s, c| Box::pin(delete_volume(s, c)),
    },
    Endpoint {
        method: Method::POST,
        path: UPLOAD_PATH,
        description: "Upload an ISO image, container template or import file \
                      (multipart/form-data, streamed to disk; a task).",
        params: UPLOAD_PARAMS,
        extra: None,
        permission: privs("/storage/{storage}", &["Datastore.AllocateTemplate"]),
        handler: |s, c| Box::pin(upload(s, c)),
    },
];

/// Proxmox's disk size syntax `\d+[MG]?`: KiB, MiB or GiB. Returns bytes.
pub fn parse_size_kib(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.strip_suffix('G') {
        Some(digits) => (digits, 1u64 << 30),
        None => match text.strip_suffix('M') {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1 << 10),
        },
    };
    let bad = || format!("invalid size '{text}' (expected KiB, or a number with suffix M or G)");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

fn storage_error(error: StoragesError) -> ApiError {
    ApiError::failed(error.to_string())
}

fn storage_id(call: &Call) -> Result<StorageId, ApiError> {
    StorageId::new(call.param("storage")).map_err(|e| ApiError::parameter("storage", e.to_string()))
}

fn can(cfg: &UserConfig, auth_id: &str, path: &str, privs: &[&str], any: bool) -> bool {
    has_privileges(cfg, auth_id, path, privs, any)
}

fn may_see_storage(cfg: &UserConfig, auth_id: &str, id: &StorageId) -> bool {
    can(cfg, auth_id, &format!("/storage/{id}"), STORAGE_AUDIT, true)
}

fn flag(value: bool) -> u8 {
    u8::from(value)
}

/// A `storage.cfg` section as Proxmox's API shows it.
fn config_entry_json(entry: &storage::StorageEntry) -> Value {
    let mut out = Map::new();
    out.insert("storage".into(), json!(entry.id().as_str()));
    out.insert("type".into(), json!(entry.kind()));
    for property in entry.properties() {
        let value = match (property.key.as_str(), property.value.as_deref()) {
            ("disable" | "shared", None) => json!(1),
            ("disable" | "shared" | "maxfiles", Some(v)) => {
                v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n))
            }
            ("content", _) => json!(entry.content().to_string()),
            (_, Some(v)) => json!(v),
            (_, None) => json!(1),
        };
        out.insert(property.key.clone(), value);
    }
    if !out.contains_key("content") {
        out.insert("content".into(), json!(entry.content().to_string()));
    }
    Value::Object(out)
}

async fn list_config(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    let cfg = state.access.config();
    let storage_cfg = state.storage.config();
    let digest = storage::config::config_digest(&storage_cfg.to_text());
    let only_type = call.params.get("type");
    let out: Vec<Value> = storage_cfg
        .entries()
        .iter()
        .filter(|e| only_type.is_none_or(|t| t == e.kind()))
        .filter(|e| may_see_storage(&cfg, &caller.auth_id, e.id()))
        .map(|e| {
            let mut item = config_entry_json(e);
            item["digest"] = json!(digest);
            item
        })
        .collect();
    Ok(Value::Array(out).into())
}

async fn get_config(state: Arc<AppState>, call: Call) -> ApiResult {
    let id = storage_id(&call)?;
    let storage_cfg = state.storage.config();
    let entry = storage_cfg
        .get(&id)
        .ok_or_else(|| ApiError::failed(format!("storage '{id}' does not exist")))?;
    let mut item = config_entry_json(entry);
    item["digest"] = json!(storage::config::config_digest(&storage_cfg.to_text()));
    Ok(item.into())
}

fn status_json(status: &storage::StorageStatus) -> Value {
    let used_fraction = if status.total > 0 {
        status.used as f64 / status.total as f64
    } else {
        0.0
    };
    json!({
        "storage": status.storage.as_str(),
        "type": status.kind,
        "content": status.content.to_string(),
        "active": flag(status.active),
        "enabled": flag(status.enabled),
        "shared": flag(status.shared),
        "total": status.total,
        "used": status.used,
        "avail": status.avail,
        "used_fraction": used_fraction,
    })
}

async fn list_status(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    this_node(&state, call.param("node"))?;
    let cfg = state.access.config();
    let wanted_content = match call.params.get("content") {
        Some(list) => Some(
            storage::ContentSet::parse(list)
                .map_err(|e| ApiError::parameter("content", e.to_string()))?,
        ),
        None => None,
    };
    let only_storage = call.params.get("storage");
    let only_enabled = call.params.flag("enabled");
    // With a single node, another target can only reach shared storages.
    let other_target = call.params.get("target").is_some_and(|t| t != state.node);
    let mut out = Vec::new();
    for entry in state.storage.config().entries() {
        let id = entry.id();
        if only_storage.is_some_and(|s| s != id.as_str())
            || !entry.is_available_on(&state.node)
            || (only_enabled && entry.is_disabled())
            || (other_target && !entry.is_shared())
            || !may_see_storage(&cfg, &caller.auth_id, id)
        {
            continue;
        }
        if let Some(wanted) = &wanted_content {
            let allowed = entry.content();
            if !wanted.iter().any(|c| allowed.contains(c)) {
                continue;
            }
        }
        let status = state.storage.status(id).map_err(storage_error)?;
        out.push(status_json(&status));
    }
    Ok(Value::Array(out).into())
}

async fn storage_index(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let id = storage_id(&call)?;
    if state.storage.config().get(&id).is_none() {
        return Err(ApiError::failed(format!("storage '{id}' does not exist")));
    }
    let dirs = ["content", "status", "upload"];
    Ok(json!(dirs.map(|d| json!({ "subdir": d }))).into())
}

async fn storage_status(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let id = storage_id(&call)?;
    let status = state.storage.status(&id).map_err(storage_error)?;
    Ok(status_json(&status).into())
}

/// What a volume is and who owns it, as far as the layout tells.
fn volume_kind(volid: &VolumeId) -> (Option<ContentType>, Option<Vmid>) {
    match DirVolume::parse(volid.volname()) {
        Ok(volume) => (Some(volume.content()), volume.vmid()),
        Err(_) => (None, None),
    }
}

/// Proxmox's read access to a volume: everything with
/// `Datastore.Allocate` on the storage; unowned content (ISO images,
/// templates, snippets, import files) with `Datastore.Audit` or
/// `Datastore.AllocateSpace`; a guest's backup with
/// `Datastore.AllocateSpace` and `VM.Backup` on the guest; a guest's
/// disk with `Datastore.Audit` and `VM.Config.Disk` on the guest.
fn may_read_volume(cfg: &UserConfig, auth_id: &str, volid: &VolumeId) -> bool {
    let storage_path = format!("/storage/{}", volid.storage());
    if can(cfg, auth_id, &storage_path, &["Datastore.Allocate"], false) {
        return true;
    }
    match volume_kind(volid) {
        (Some(ContentType::Backup), Some(vmid)) => {
            can(
                cfg,
                auth_id,
                &storage_path,
                &["Datastore.AllocateSpace"],
                false,
            ) && can(cfg, auth_id, &format!("/vms/{vmid}"), &["VM.Backup"], false)
        }
        (Some(ContentType::Images | ContentType::Rootdir), Some(vmid)) => {
            can(cfg, auth_id, &storage_path, &["Datastore.Audit"], false)
                && can(
                    cfg,
                    auth_id,
                    &format!("/vms/{vmid}"),
                    &["VM.Config.Disk"],
                    false,
                )
        }
        (Some(_), None) => can(cfg, auth_id, &storage_path, STORAGE_AUDIT, true),
        _ => false,
    }
}

/// The right to remove a volume: `Datastore.Allocate` on the storage; a
/// guest's backup also with `Datastore.AllocateSpace` and `VM.Backup`.
fn may_delete_volume(cfg: &UserConfig, auth_id: &str, volid: &VolumeId) -> bool {
    let storage_path = format!("/storage/{}", volid.storage());
    match volume_kind(volid) {
        (Some(ContentType::Backup), Some(vmid)) => {
            can(
                cfg,
                auth_id,
                &storage_path,
                &["Datastore.AllocateSpace"],
                false,
            ) && can(cfg, auth_id, &format!("/vms/{vmid}"), &["VM.Backup"], false)
        }
        _ => can(cfg, auth_id, &storage_path, &["Datastore.Allocate"], false),
    }
}

async fn list_content(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    this_node(&state, call.param("node"))?;
    let id = storage_id(&call)?;
    let content = match call.params.get("content") {
        Some(c) => Some(
            c.parse::<ContentType>()
                .map_err(|e| ApiError::parameter("content", e.to_string()))?,
        ),
        None => None,
    };
    let vmid = match call.params.number::<u32>("vmid") {
        Some(n) => Some(Vmid::new(n).map_err(|e| ApiError::parameter("vmid", e.to_string()))?),
        None => None,
    };
    let plugin = state.storage.plugin(&id).map_err(storage_error)?;
    let items = plugin
        .list_content(content, vmid)
        .map_err(|e| ApiError::failed(e.to_string()))?;
    let cfg = state.access.config();
    let out: Vec<Value> = items
        .into_iter()
        .filter(|item| may_read_volume(&cfg, &caller.auth_id, &item.volid))
        .map(|item| {
            let mut v = json!({
                "volid": item.volid.to_string(),
                "content": item.content.as_str(),
                "format": item.format,
                "size": item.size,
                "ctime": item.ctime,
            });
            if let Some(used) = item.used {
                v["used"] = json!(used);
            }
            if let Some(vmid) = item.vmid {
                v["vmid"] = json!(vmid.get());
            }
            v
        })
        .collect();
    Ok(Value::Array(out).into())
}

async fn allocate(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let id = storage_id(&call)?;
    let size_bytes =
        parse_size_kib(call.param("size")).map_err(|e| ApiError::parameter("size", e))?;
    let vmid = call
        .params
        .number::<u32>("vmid")
        .ok_or_else(|| ApiError::parameter("vmid", "not a number"))
        .and_then(|n| Vmid::new(n).map_err(|e| ApiError::parameter("vmid", e.to_string())))?;
    let requested_format = call.params.get("format");
    let filename = call.param("filename");

    // A name with an extension fixes the format; without one it gets the
    // extension of the requested (or the storage's default) format.
    let extension = [ImageFormat::Raw, ImageFormat::Qcow2, ImageFormat::Vmdk]
        .into_iter()
        .find(|f| filename.ends_with(&format!(".{}", f.as_str())));
    let format = match (extension, requested_format) {
        (Some(from_name), Some(asked)) if asked != from_name.as_str() => {
            return Err(ApiError::parameter(
                "format",
                format!(
                    "different storage formats ({asked} != {})",
                    from_name.as_str()
                ),
            ));
        }
        (Some(from_name), _) => from_name,
        (None, Some(asked)) => asked
            .parse::<ImageFormat>()
            .map_err(|e| ApiError::parameter("format", e))?,
        (None, None) => match state
            .storage
            .config()
            .get(&id)
            .and_then(|e| e.default_format())
        {
            Some(text) => text
                .parse::<ImageFormat>()
                .map_err(|e| ApiError::failed(format!("storage '{id}': {e}")))?,
            None => ImageFormat::Raw,
        },
    };
    let name = match extension {
        Some(_) => filename.to_owned(),
        None => format!("{filename}.{}", format.as_str()),
    };
    if !name.starts_with(&format!("vm-{vmid}-")) {
        return Err(ApiError::parameter(
            "filename",
            format!("illegal name '{filename}' - should be 'vm-{vmid}-*'"),
        ));
    }
    if size_bytes == 0 {
        return Err(ApiError::parameter(
            "size",
            "cannot allocate a zero-size disk",
        ));
    }
    let plugin = state.storage.plugin(&id).map_err(storage_error)?;
    let content = plugin.content();
    if !content.contains(ContentType::Images) && !content.contains(ContentType::Rootdir) {
        return Err(ApiError::failed(format!(
            "storage '{id}' does not allow images or rootdir content"
        )));
    }
    let volid = plugin
        .alloc_image(vmid, Some(&name), format, size_bytes)
        .map_err(|e| ApiError::failed(e.to_string()))?;
    tracing::info!(%volid, size_bytes, "disk image allocated");
    Ok(json!(volid.to_string()).into())
}

/// The volume named by `{volume}` on `{storage}`: a full volume id (of
/// that storage) or a volname.
fn volume_param(call: &Call) -> Result<VolumeId, ApiError> {
    let id = storage_id(call)?;
    let text = call.param("volume");
    let bad = |e: &dyn std::fmt::Display| ApiError::parameter("volume", e.to_string());
    let volid = if text.contains(':') {
        let volid: VolumeId = text.parse().map_err(|e| bad(&e))?;
        if volid.storage() != &id {
            return Err(ApiError::parameter(
                "volume",
                format!("volume '{volid}' is not on storage '{id}'"),
            ));
        }
        volid
    } else {
        VolumeId::new(id, text).map_err(|e| bad(&e))?
    };
    Ok(volid)
}

async fn volume_attributes(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    this_node(&state, call.param("node"))?;
    let volid = volume_param(&call)?;
    if !may_read_volume(&state.access.config(), &caller.auth_id, &volid) {
        return Err(ApiError::forbidden());
    }
    let plugin = state
        .storage
        .plugin(volid.storage())
        .map_err(storage_error)?;
    let size = plugin
        .volume_size(&volid)
        .map_err(|e| ApiError::failed(e.to_string()))?;
    let path = plugin
        .path(&volid)
        .map_err(|e| ApiError::failed(e.to_string()))?;
    Ok(json!({
        "path": path.to_string_lossy(),
        "size": size.size,
        "used": size.used,
        "format": size.format,
    })
    .into())
}

async fn delete_volume(state: Arc<AppState>, call: Call) -> ApiResult {
    let caller = call.caller()?;
    this_node(&state, call.param("node"))?;
    let volid = volume_param(&call)?;
    if !may_delete_volume(&state.access.config(), &caller.auth_id, &volid) {
        return Err(ApiError::forbidden());
    }
    let plugin = state
        .storage
        .plugin(volid.storage())
        .map_err(storage_error)?;
    // Refuse a missing volume now, not only in the task.
    plugin
        .path(&volid)
        .map_err(|e| ApiError::failed(e.to_string()))
        .and_then(|path| {
            if std::fs::symlink_metadata(&path).is_ok() {
                Ok(())
            } else {
                Err(ApiError::failed(format!("volume '{volid}' does not exist")))
            }
        })?;
    let task_state = Arc::clone(&state);
    let task_volid = volid.clone();
    let upid = state
        .tasks
        .spawn("imgdel", "", &caller.auth_id, move |log| async move {
            log.line(format!("removing volume {task_volid}"));
            tokio::task::spawn_blocking(move || task_state.storage.free(&task_volid))
                .await
                .map_err(|e| format!("removing the volume failed: {e}"))?
                .map_err(|e| e.to_string())?;
            log.line("volume removed");
            Ok(())
        })
        .map_err(|e| ApiError::failed(e.to_string()))?;
    Ok(json!(upid.to_string()).into())
}

/// Refuses client file names that try to leave the target directory;
/// other directory parts (a browser's `C:\Users\...`) are dropped by
/// normalising.
fn upload_target_name(client_name: &str) -> Result<String, ApiError> {
    if client_name.split(['/', '\\']).any(|part| part == "..") {
        return Err(ApiError::parameter(
            "filename",
            format!("file name '{client_name}' contains a '..' component"),
        ));
    }
    let name = storage::normalize_upload_filename(client_name);
    storage::volume::check_file_name(&name)
        .map_err(|e| ApiError::parameter("filename", e.to_string()))?;
    Ok(name)
}

fn check_upload_name(name: &str, content: &str) -> Result<ContentType, ApiError> {
    let content: ContentType = content
        .parse()
        .map_err(|e: storage::content::ContentError| {
            ApiError::parameter("content", e.to_string())
        })?;
    storage::volume::check_extension(name, content)
        .map_err(|e| ApiError::parameter("filename", e.to_string()))?;
    Ok(content)
}

/// Writes chunks to an [`UploadWriter`] on a blocking thread, so disk
/// writes never stall the async workers.
struct DiskWriter {
    chunks: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: tokio::task::JoinHandle<std::io::Result<UploadWriter>>,
}

impl DiskWriter {
    fn start(mut writer: UploadWriter) -> DiskWriter {
        let (chunks, mut incoming) =
            tokio::sync::mpsc::channel::<bytes::Bytes>(UPLOAD_QUEUE_CHUNKS);
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            while let Some(chunk) = incoming.blocking_recv() {
                writer.write_all(&chunk)?;
            }
            Ok(writer)
        });
        DiskWriter { chunks, done }
    }

    /// Queues a chunk; fails if the writer stopped (with its error).
    async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), ()> {
        self.chunks.send(chunk).await.map_err(|_| ())
    }

    /// Waits for every chunk to be written and returns the writer, or the
    /// write error.
    async fn close(self) -> Result<UploadWriter, String> {
        drop(self.chunks);
        match self.done.await {
            Ok(Ok(writer)) => Ok(writer),
            Ok(Err(e)) => Err(format!("writing the upload failed: {e}")),
            Err(e) => Err(format!("the upload writer failed: {e}")),
        }
    }
}

async fn upload(state: Arc<AppState>, mut call: Call) -> ApiResult {
    let Some(mut body) = call.upload.take() else {
        return Err(ApiError::failed("the upload body is missing"));
    };
    let result = receive_upload(state, call, &mut body).await;
    if result.is_err() {
        body.discard_rest(crate::upload::DISCARD_LIMIT_BYTES).await;
    }
    result
}

/// Streams the file to the storage's upload directory and starts the
/// import task; returns its UPID.
async fn receive_upload(state: Arc<AppState>, call: Call, body: &mut UploadBody) -> ApiResult {
    let caller = call.caller()?.auth_id.clone();
    this_node(&state, call.param("node"))?;
    let id = storage_id(&call)?;
    let client_name = call.param("filename").to_owned();
    let target_name = upload_target_name(&client_name)?;
    // With the content type known before the file, a wrong name is
    // refused before a byte is written.
    if let Some(content) = call.params.get("content") {
        check_upload_name(&target_name, content)?;
    }
    let algorithm = match call.params.get("checksum-algorithm") {
        Some(name) => Some(
            name.parse::<ChecksumAlgorithm>()
                .map_err(|e| ApiError::parameter("checksum-algorithm", e.to_string()))?,
        ),
        None => None,
    };

    let plugin = state.storage.plugin(&id).map_err(storage_error)?;
    let temp_dir = plugin
        .upload_temp_dir()
        .map_err(|e| ApiError::failed(e.to_string()))?;
    let writer = UploadWriter::create(&temp_dir, algorithm).map_err(|e| {
        ApiError::failed(format!(
            "cannot create an upload file in {}: {e}",
            temp_dir.display()
        ))
    })?;
    let mut disk = DiskWriter::start(writer);
    let mut write_failed = false;
    while let Some(chunk) = body.next_chunk().await? {
        if disk.write(chunk).await.is_err() {
            write_failed = true;
            break;
        }
    }
    let writer = disk.close().await.map_err(ApiError::failed)?;
    if write_failed {
        // `close` reports the write error; this is a safety net.
        return Err(ApiError::failed("writing the upload failed"));
    }

    // Text parts after the file complete the parameters; dropping
    // `writer` on any error below removes the temp file.
    let mut params = call.params.clone();
    body.read_fields(&mut params).await?;
    let params =
        crate::schema::validate(UPLOAD_PARAMS, None, &params).map_err(ApiError::parameters)?;
    let content = check_upload_name(&target_name, params.get("content").unwrap_or(""))?;
    let algorithm = match (algorithm, params.get("checksum-algorithm")) {
        (Some(a), _) => Some(a),
        (None, Some(name)) => Some(
            name.parse::<ChecksumAlgorithm>()
                .map_err(|e| ApiError::parameter("checksum-algorithm", e.to_string()))?,
        ),
        (None, None) => None,
    };
    let expected = match (params.get("checksum"), algorithm) {
        (Some(hex), Some(algorithm)) => Some(
            ExpectedChecksum::new(algorithm, hex)
                .map_err(|e| ApiError::parameter("checksum", e.to_string()))?,
        ),
        (Some(_), None) => {
            return Err(ApiError::parameter(
                "checksum-algorithm",
                "needed with 'checksum'",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::parameter(
                "checksum",
                "needed with 'checksum-algorithm'",
            ))
        }
        (None, None) => None,
    };
    let finished = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| ApiError::failed(format!("finishing the upload failed: {e}")))?
        .map_err(|e| ApiError::failed(format!("finishing the upload failed: {e}")))?;

    let task_state = Arc::clone(&state);
    let spawned = state.tasks.spawn("imgcopy", "", &caller, move |log| {
        import_task(
            task_state,
            id,
            content,
            target_name,
            finished,
            expected,
            log,
        )
    });
    match spawned {
        Ok(upid) => Ok(json!(upid.to_string()).into()),
        Err(e) => Err(ApiError::failed(e.to_string())),
    }
}

/// The `imgcopy` task: checks the digest and moves the upload into place.
/// The temp file is gone afterwards either way.
async fn import_task(
    state: Arc<AppState>,
    id: StorageId,
    content: ContentType,
    target_name: String,
    upload: FinishedUpload,
    expected: Option<ExpectedChecksum>,
    log: crate::tasks::TaskLog,
) -> Result<(), String> {
    log.line(format!(
        "received upload of {} bytes for {content} '{target_name}' on storage '{id}'",
        upload.size
    ));
    // A digest computed while receiving is compared here; without one
    // (algorithm sent after the file) the plugin hashes the file itself.
    let mut verify_in_plugin = expected.clone();
    if let (Some(expected), Some(actual)) = (&expected, &upload.checksum_hex) {
        if !expected.matches(actual) {
            let _ = std::fs::remove_file(&upload.path);
            return Err(format!(
                "checksum mismatch for '{target_name}': expected {} {}, got {actual}",
                expected.algorithm(),
                expected.hex()
            ));
        }
        log.line(format!(
            "{} checksum verified: {actual}",
            expected.algorithm()
        ));
        verify_in_plugin = None;
    }
    let result = tokio::task::spawn_blocking(move || {
        let result = state
            .storage
            .plugin(&id)
            .map_err(|e| e.to_string())
            .and_then(|plugin| {
                plugin
                    .import_upload(
                        content,
                        &target_name,
                        &upload.path,
                        verify_in_plugin.as_ref(),
                    )
                    .map_err(|e| e.to_string())
            });
        if result.is_err() {
            // `import_upload` removes it on its own failures; this covers
            // a storage that vanished before it was called.
            let _ = std::fs::remove_file(&upload.path);
        }
        result
    })
    .await
    .map_err(|e| format!("importing the upload failed: {e}"))??;
    log.line(format!("stored as {result}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_kib_unless_suffixed() {
        assert_eq!(parse_size_kib("4"), Ok(4096));
        assert_eq!(parse_size_kib("2M"), Ok(2 << 20));
        assert_eq!(parse_size_kib("3G"), Ok(3 << 30));
        for bad in ["", "M", "1.5G", "-1", "1K", "1 G", "99999999999999999999"] {
            assert!(parse_size_kib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_names_may_not_climb() {
        assert!(upload_target_name("../x.iso").is_err());
        assert!(upload_target_name("a\\..\\x.iso").is_err());
        assert_eq!(
            upload_target_name("C:\\Users\\me\\debian 12.iso").ok(),
            Some("debian_12.iso".to_owned())
        );
        assert!(upload_target_name(".hidden.iso").is_err());
        assert!(check_upload_name("x.exe", "iso").is_err());
        assert!(check_upload_name("x.iso", "iso").is_ok());
        assert!(check_upload_name("x.tar.zst", "vztmpl").is_ok());
    }
}
