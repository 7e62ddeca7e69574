//! `POST /nodes/{node}/qemu/{vmid}/template`: turn a stopped VM into a
//! template.
//!
//! As in Proxmox VE: each disk image becomes a read-only base image
//! (`vm-100-disk-0.raw` is renamed `base-100-disk-0.raw`, mode 0444), the
//! configuration gets `template: 1`, and the VM no longer starts; it is
//! cloned instead (`POST …/clone`, full clones). With `disk`, only that
//! disk is converted (a template's later disk). The configuration is
//! written after each disk, so a failure halfway leaves it true to the
//! images.

use std::sync::Arc;

use guestconf::{DiskBus, DiskDevice, DiskFile, DiskMedia, GuestConfig};
use hyper::Method;

use crate::app_state::AppState;
use crate::endpoints::nodes::this_node;
use crate::endpoints::qemu::{is_template, vm_task, vmid_of, NODE, VMID};
use crate::endpoints::qemu_resize::DISK_KEY;
use crate::guests::VmState;
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint};
use crate::schema::string;

/// The template endpoint.
pub static ENDPOINTS: &[Endpoint] = &[Endpoint {
    method: Method::POST,
    path: "/nodes/{node}/qemu/{vmid}/template",
    description: "Turn a stopped VM into a template: its disk images become read-only \
                  base images and it no longer starts.",
    params: &[
        NODE,
        VMID,
        string("disk", Some(&DISK_KEY), "Convert only this disk.").optional(),
    ],
    extra: None,
    permission: privs("/vms/{vmid}", &["VM.Allocate"]),
    handler: |s, c| Box::pin(make_template(s, c)),
}];

/// The disks to convert: `(key, value, volume)` of each storage image that
/// is not a base image yet (all of them, or `only`), or why not.
fn disks_to_convert(
    config: &GuestConfig,
    only: Option<&str>,
) -> Result<Vec<(String, String, storage::VolumeId)>, String> {
    let mut out = Vec::new();
    for entry in config.main().entries() {
        let (key, value) = (entry.key(), entry.value());
        if DiskBus::from_key(key).is_none() || only.is_some_and(|k| k != key) {
            continue;
        }
        let disk = DiskDevice::parse(key, value).map_err(|e| format!("{key}: {e}"))?;
        if disk.media == DiskMedia::Cdrom {
            if only.is_some() {
                return Err(format!("{key} is a CD drive"));
            }
            continue;
        }
        let DiskFile::Volume(volume) = &disk.file else {
            return Err(format!(
                "{key}: only a storage's images can become base images, not '{}'",
                value.split(',').next().unwrap_or_default()
            ));
        };
        let text = volume.to_string();
        let id: storage::VolumeId = text
            .parse()
            .map_err(|e| format!("{key}: volume '{text}': {e}"))?;
        if id.is_base_image() {
            continue;
        }
        out.push((key.to_string(), value.to_string(), id));
    }
    if let Some(key) = only {
        if config.get(key).is_none() {
            return Err(format!("disk '{key}' does not exist"));
        }
    }
    Ok(out)
}

async fn make_template(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    let only = call.params.get("disk").map(str::to_owned);
    let config = state
        .vms
        .get(vmid)
        .ok_or_else(|| ApiError::failed(format!("VM {vmid} does not exist")))?;
    if is_template(&config) && only.is_none() {
        return Err(ApiError::failed(
            "you can't convert a template to a template",
        ));
    }
    disks_to_convert(&config, only.as_deref()).map_err(|e| ApiError::parameter("disk", e))?;
    if state.runtime.state(vmid).await.map_err(ApiError::failed)? != VmState::Stopped {
        return Err(ApiError::failed(
            "you can't convert a VM to template if VM is running",
        ));
    }
    vm_task(
        &state,
        "qmtemplate",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.vms.lock(vmid);
            let _guard = lock.lock().await;
            let mut config = state
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            if state.runtime.state(vmid).await? != VmState::Stopped {
                return Err("you can't convert a VM to template if VM is running".into());
            }
            for (key, value, volume) in disks_to_convert(&config, only.as_deref())? {
                let base = {
                    let (state, volume) = (Arc::clone(&state), volume.clone());
                    tokio::task::spawn_blocking(move || state.storage.create_base(&volume))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("{key}: {e}"))?
                };
                let new_value = value.replacen(&volume.to_string(), &base.to_string(), 1);
                config
                    .set(&key, &new_value)
                    .map_err(|e| format!("{key}: {e}"))?;
                state.vms.write(vmid, config.clone()).map_err(|e| {
                    format!("{key}: {volume} is now {base}, but the configuration: {e}")
                })?;
                log.line(format!("{key}: {volume} is now the base image {base}"));
            }
            config
                .set("template", "1")
                .map_err(|e| format!("template: {e}"))?;
            state.vms.write(vmid, config).map_err(|e| e.to_string())?;
            log.line(format!("VM {vmid} is a template"));
            Ok(())
        },
    )
}
