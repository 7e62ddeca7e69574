//! `POST /nodes/{node}/qemu/{vmid}/clone`: a full clone of a stopped VM.
//!
//! The new VM gets the source's configuration with a copy of every disk
//! image the source owns, new MAC addresses, and its own name. What a
//! Proxmox user may ask for that Oxbow cannot do yet is refused before
//! anything is made: linked clones (`full=0`), clones of a snapshot, of a
//! running VM (Proxmox mirrors the disks of one while it runs), or onto
//! another node.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use guestconf::{DiskBus, DiskFile, GuestConfig};
use hyper::Method;

use crate::access::permissions::has_privileges;
use crate::app_state::AppState;
use crate::endpoints::nodes::this_node;
use crate::endpoints::qemu::{add_to_pool, vm_task, vmid_of, NODE, VMID};
use crate::guests::VmState;
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint};
use crate::schema::{boolean, formats, integer, string};
use crate::tasks::TaskLog;

/// The clone endpoint.
pub static ENDPOINTS: &[Endpoint] = &[Endpoint {
    method: Method::POST,
    path: "/nodes/{node}/qemu/{vmid}/clone",
    description: "Create a copy of a stopped VM: its configuration, a copy of every \
                  disk image it owns, new MAC addresses.",
    params: &[
        NODE,
        VMID,
        integer("newid", 100, 999_999_999, "The VMID of the copy."),
        string("name", None, "The copy's name (a DNS name).").optional(),
        string("description", None, "The copy's description.").optional(),
        boolean(
            "full",
            "Copy every disk (the default, and the only kind of clone Oxbow makes).",
        )
        .optional(),
        string(
            "pool",
            Some(&formats::POOL_ID),
            "Add the copy to this pool.",
        )
        .optional(),
        string(
            "storage",
            None,
            "Where the disk copies go (default: each disk's own storage).",
        )
        .optional(),
        string("format", None, "The copies' format: raw only.").optional(),
        string("target", Some(&formats::NODE), "This node only.").optional(),
        string(
            "snapname",
            None,
            "Not supported: there are no snapshots yet.",
        )
        .optional(),
        integer("bwlimit", 0, u32::MAX as i64, "Accepted for compatibility.").optional(),
    ],
    extra: None,
    permission: privs("/vms/{vmid}", &["VM.Clone"]),
    handler: |s, c| Box::pin(clone_vm(s, c)),
}];

async fn clone_vm(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    let newid: u32 = call
        .params
        .number::<u32>("newid")
        .ok_or_else(|| ApiError::parameter("newid", "a VMID is required"))?;
    let source = state
        .vms
        .get(vmid)
        .ok_or_else(|| ApiError::failed(format!("VM {vmid} does not exist")))?;
    // (The source exists, so `newid == vmid` is refused here too.)
    if state.vms.exists(newid) || state.cts.exists(newid) {
        return Err(ApiError::parameter(
            "newid",
            format!("VM {newid} already exists on node '{}'", state.node),
        ));
    }
    if call.params.get("full") == Some("0") {
        return Err(ApiError::parameter(
            "full",
            "linked clones are not supported yet: clone with full=1",
        ));
    }
    if call.params.get("snapname").is_some() {
        return Err(ApiError::parameter(
            "snapname",
            "snapshots are not supported yet",
        ));
    }
    if let Some(target) = call.params.get("target") {
        if target != state.node {
            return Err(ApiError::parameter(
                "target",
                format!("cloning to another node ('{target}') is not supported"),
            ));
        }
    }
    if let Some(format) = call.params.get("format") {
        if format != "raw" {
            return Err(ApiError::parameter(
                "format",
                format!("'{format}': clones are raw images"),
            ));
        }
    }
    if let Some(name) = call.params.get("name") {
        guestconf::validate_vm_key("name", name).map_err(|e| ApiError::parameter("name", e))?;
    }
    let cfg = state.access.config();
    if !has_privileges(
        &cfg,
        &caller.auth_id,
        &format!("/vms/{newid}"),
        &["VM.Allocate"],
        false,
    ) {
        return Err(ApiError::forbidden());
    }
    let pool = call.params.get("pool").map(str::to_owned);
    if let Some(pool) = &pool {
        if !cfg.pools.contains_key(pool) {
            return Err(ApiError::parameter(
                "pool",
                format!("pool '{pool}' does not exist"),
            ));
        }
    }
    let target_storage = match call.params.get("storage") {
        Some(id) => {
            let id = storage::StorageId::new(id)
                .map_err(|e| ApiError::parameter("storage", e.to_string()))?;
            state
                .storage
                .plugin(&id)
                .map_err(|e| ApiError::parameter("storage", e.to_string()))?;
            Some(id)
        }
        None => None,
    };
    // The disks to copy, and the storages that pay for them.
    let disks = disks_of(&source, vmid).map_err(ApiError::failed)?;
    for disk in &disks {
        let storage = target_storage.as_ref().unwrap_or(disk.volume.storage());
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
    drop(cfg);
    let name = call.params.get("name").map(str::to_owned);
    let description = call.params.get("description").map(str::to_owned);
    // Proxmox makes a linked clone of a template unless asked for a full
    // one; Oxbow makes full clones only, and says so.
    let linked_by_default =
        crate::endpoints::qemu::is_template(&source) && call.params.get("full").is_none();
    vm_task(
        &state,
        "qmclone",
        vmid,
        &caller,
        move |state, log| async move {
            let source_lock = state.vms.lock(vmid);
            let _source = source_lock.lock().await;
            let target_lock = state.vms.lock(newid);
            let _target = target_lock.lock().await;
            let source = state
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            if state.vms.exists(newid) || state.cts.exists(newid) {
                return Err(format!("VM {newid} already exists"));
            }
            if state.runtime.state(vmid).await? != VmState::Stopped {
                return Err(format!(
                    "VM {vmid} is running: cloning a running VM is not supported yet"
                ));
            }
            let disks = disks_of(&source, vmid)?;
            if linked_by_default {
                log.line("linked clones are not supported yet: making a full clone");
            }
            // The copies are long blocking I/O: off the runtime's threads.
            let (task_state, task_log) = (Arc::clone(&state), log.clone());
            tokio::task::spawn_blocking(move || {
                let (state, log) = (task_state, task_log);
                let mut made: Vec<storage::VolumeId> = Vec::new();
                let result = (|| {
                    let mut config = GuestConfig::new();
                    for entry in source.main().entries() {
                        let (key, value) = (entry.key(), entry.value());
                        let value = match disks.iter().find(|d| d.key == key) {
                            Some(disk) => {
                                let storage =
                                    target_storage.as_ref().unwrap_or(disk.volume.storage());
                                let copy =
                                    copy_disk(&state, disk, storage, newid, &log, &mut made)?;
                                value.replacen(&disk.file, &copy, 1)
                            }
                            None => value.to_string(),
                        };
                        config.set(key, &value).map_err(|e| format!("{key}: {e}"))?;
                    }
                    finish_config(
                        &mut config,
                        &source,
                        vmid,
                        name.as_deref(),
                        description.as_deref(),
                    )?;
                    state.vms.write(newid, config).map_err(|e| e.to_string())
                })();
                if result.is_err() {
                    for volume in &made {
                        let _ = state.storage.free(volume);
                    }
                }
                result
            })
            .await
            .map_err(|e| format!("the copy failed: {e}"))??;
            log.line(format!("created VM {newid} as a full clone of VM {vmid}"));
            if let Some(pool) = pool {
                add_to_pool(&state, &format!("VM {newid}"), newid, &pool, &log);
            }
            Ok(())
        },
    )
}

/// A disk image of the source VM, to be copied.
struct Disk {
    key: String,
    /// The file part of the key's value as written
    /// (`local:100/vm-100-disk-0.raw`).
    file: String,
    volume: storage::VolumeId,
}

/// The source's disks whose images it owns: every disk key (not a CD
/// drive) whose file is a volume of VM `vmid`. An image another guest
/// owns, or a host path, cannot be copied for the new VM and is refused.
fn disks_of(config: &GuestConfig, vmid: u32) -> Result<Vec<Disk>, String> {
    let mut disks = Vec::new();
    for entry in config.main().entries() {
        let (key, value) = (entry.key(), entry.value());
        if DiskBus::from_key(key).is_none() || value.split(',').any(|p| p == "media=cdrom") {
            continue;
        }
        let file = value.split(',').next().unwrap_or_default();
        match DiskFile::parse(file) {
            Ok(DiskFile::Volume(_)) => {
                let volume: storage::VolumeId = file
                    .parse()
                    .map_err(|e| format!("{key}: volume '{file}': {e}"))?;
                if !owned_by(&volume, vmid) {
                    return Err(format!(
                        "{key}: '{file}' is not an image of VM {vmid}: cannot clone it"
                    ));
                }
                disks.push(Disk {
                    key: key.to_string(),
                    file: file.to_string(),
                    volume,
                });
            }
            Ok(DiskFile::Path(_) | DiskFile::HostCdrom) => {
                return Err(format!(
                    "{key}: '{file}' is not a storage volume: cannot clone it"
                ))
            }
            _ => {}
        }
    }
    Ok(disks)
}

/// Whether `volume` is one of VM `vmid`'s own images, by Proxmox's names
/// (`vm-<vmid>-…`, or `base-<vmid>-…` for a template's).
fn owned_by(volume: &storage::VolumeId, vmid: u32) -> bool {
    let name = volume.volname().rsplit('/').next().unwrap_or_default();
    name.starts_with(&format!("vm-{vmid}-")) || name.starts_with(&format!("base-{vmid}-"))
}

/// Allocates a volume of the source's size for VM `newid` on `storage`
/// and copies the image into it; returns the new volume id.
fn copy_disk(
    state: &AppState,
    disk: &Disk,
    storage: &storage::StorageId,
    newid: u32,
    log: &TaskLog,
    made: &mut Vec<storage::VolumeId>,
) -> Result<String, String> {
    let from = state
        .storage
        .path(&disk.volume)
        .map_err(|e| format!("{}: {e}", disk.key))?;
    let mut source =
        File::open(&from).map_err(|e| format!("{}: {}: {e}", disk.key, from.display()))?;
    let size = source
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{}: {e}", disk.key))?;
    source.rewind().map_err(|e| format!("{}: {e}", disk.key))?;
    let newid_typed = storage::Vmid::new(newid).map_err(|e| e.to_string())?;
    let volume = state
        .storage
        .allocate(storage, newid_typed, size, None)
        .map_err(|e| format!("{}: {e}", disk.key))?;
    made.push(volume.clone());
    let to = state
        .storage
        .path(&volume)
        .map_err(|e| format!("{}: {e}", disk.key))?;
    log.line(format!(
        "{}: copying {} ({size} bytes) to {volume}",
        disk.key, disk.volume
    ));
    copy_image(&mut source, &to, size)
        .map_err(|e| format!("{}: copying to {volume}: {e}", disk.key))?;
    Ok(volume.to_string())
}

/// Copies `size` bytes of `source` into the fresh image `to`. Into a
/// regular file (a new, sparse image) blocks of zeros are skipped, so the
/// copy stays as sparse as its source; a block device gets every block,
/// since what a new logical volume holds is not known to be zeros.
fn copy_image(source: &mut File, to: &Path, size: u64) -> std::io::Result<()> {
    const BLOCK: usize = 1 << 20;
    let mut target = OpenOptions::new().write(true).open(to)?;
    let sparse = !target.metadata()?.file_type().is_block_device();
    let mut buf = vec![0u8; BLOCK];
    let mut done = 0u64;
    while done < size {
        let want = BLOCK.min(usize::try_from(size - done).unwrap_or(BLOCK));
        source.read_exact(&mut buf[..want])?;
        if sparse && buf[..want].iter().all(|b| *b == 0) {
            target.seek(SeekFrom::Current(want as i64))?;
        } else {
            target.write_all(&buf[..want])?;
        }
        done += want as u64;
    }
    if sparse {
        target.set_len(size)?;
    }
    target.sync_all()
}

/// The copy's own settings: its name, description, new MACs; a template's
/// copy is an ordinary VM.
fn finish_config(
    config: &mut GuestConfig,
    source: &GuestConfig,
    vmid: u32,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(), String> {
    let name = match name {
        Some(name) => name.to_string(),
        None => format!(
            "Copy-of-VM-{}",
            source.get("name").unwrap_or(&vmid.to_string())
        ),
    };
    config
        .set("name", &name)
        .map_err(|e| format!("name: {e}"))?;
    if let Some(text) = description
        .map(str::to_owned)
        .or_else(|| source.description())
    {
        config.set_description(&text);
    }
    config.delete("template");
    let nets: Vec<(String, String)> = config
        .main()
        .entries()
        .filter(|e| e.key().starts_with("net"))
        .map(|e| (e.key().to_string(), e.value().to_string()))
        .collect();
    for (key, value) in nets {
        let fresh = crate::endpoints::qemu::with_new_mac(&value);
        config
            .set(&key, &fresh)
            .map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}
