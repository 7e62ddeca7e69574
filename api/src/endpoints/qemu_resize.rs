//! `PUT /nodes/{node}/qemu/{vmid}/resize`: grow a VM's disk.
//!
//! As in Proxmox VE: `size` is the new size, or with a leading `+` the
//! growth; disks never shrink; the same size changes nothing. The image
//! grows on its storage, a running VM's VMM tells the guest at once (the
//! virtio configuration interrupt, as QEMU's `block_resize` does), and the
//! disk's `size=` in the configuration follows. Inside the guest, the
//! partitions and file systems are the guest's to grow.

use std::path::PathBuf;
use std::sync::Arc;

use guestconf::{DiskBus, DiskDevice, DiskFile, DiskMedia, GuestConfig, PropertyString};
use hyper::Method;
use serde_json::json;

use crate::access::permissions::has_privileges;
use crate::app_state::AppState;
use crate::endpoints::nodes::this_node;
use crate::endpoints::qemu::{vm_task, vmid_of, NODE, VMID};
use crate::response::{ApiError, ApiResult};
use crate::router::{privs, Call, Endpoint};
use crate::schema::{boolean, string, Format};

/// A disk's key: `virtio0`, `scsi1`, `sata2`, `ide3`.
pub(crate) static DISK_KEY: Format = Format {
    name: "pve-qm-disk-key",
    check: |v| match DiskBus::from_key(v) {
        Some(_) => Ok(()),
        None => Err(format!(
            "'{v}' is not a disk (virtio0-15, scsi0-30, sata0-5, ide0-3)"
        )),
    },
};

/// Proxmox's `\+?\d+(\.\d+)?[KMGT]?`.
static SIZE_CHANGE: Format = Format {
    name: "disk-size-change",
    check: |v| SizeChange::parse(v).map(|_| ()),
};

/// The resize endpoint.
pub static ENDPOINTS: &[Endpoint] = &[Endpoint {
    method: Method::PUT,
    path: "/nodes/{node}/qemu/{vmid}/resize",
    description: "Grow a disk image of a VM; a running VM's guest sees the new size at once.",
    params: &[
        NODE,
        VMID,
        string("disk", Some(&DISK_KEY), "The disk to grow."),
        string(
            "size",
            Some(&SIZE_CHANGE),
            "The new size, or with a leading '+' what to add: a number with an optional \
             unit K, M, G or T (none means bytes). Disks never shrink.",
        ),
        string(
            "digest",
            None,
            "Refuse if the configuration changed since this digest.",
        )
        .max_length(40)
        .optional(),
        boolean("skiplock", "Accepted for compatibility.").optional(),
    ],
    extra: None,
    permission: privs("/vms/{vmid}", &["VM.Config.Disk"]),
    handler: |s, c| Box::pin(resize_vm(s, c)),
}];

/// What `size` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeChange {
    /// `+`: added to the current size.
    grow: bool,
    bytes: u64,
}

impl SizeChange {
    fn parse(text: &str) -> Result<SizeChange, String> {
        let (grow, rest) = match text.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let number = rest.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(rest);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(fraction) {
            return Err(format!(
                "'{text}' is not a size: expected a number with an optional unit K, M, G \
                 or T, and a leading '+' to grow by it (32G, +512M)"
            ));
        }
        let bytes = guestconf::parse_disk_size(rest).map_err(|e| e.to_string())?;
        Ok(SizeChange { grow, bytes })
    }

    /// The size a disk of `current` bytes gets, rounded up to whole KiB
    /// (as Proxmox rounds a running VM's), or why not.
    fn apply(self, current: u64) -> Result<u64, String> {
        let wanted = if self.grow {
            current.checked_add(self.bytes)
        } else {
            Some(self.bytes)
        };
        let new = wanted
            .and_then(|b| b.checked_next_multiple_of(1024))
            .ok_or("the size is too large")?;
        if new < current {
            return Err(format!(
                "shrinking disks is not supported ({current} bytes now, {new} asked for)"
            ));
        }
        Ok(new)
    }
}

/// The disk `key` of `config` and its volume, or why it cannot grow.
fn volume_of(config: &GuestConfig, key: &str) -> Result<(String, storage::VolumeId), String> {
    let value = config
        .get(key)
        .ok_or_else(|| format!("disk '{key}' does not exist"))?;
    let disk = DiskDevice::parse(key, value).map_err(|e| format!("{key}: {e}"))?;
    if disk.media == DiskMedia::Cdrom {
        return Err("you can't resize a cdrom".into());
    }
    match &disk.file {
        DiskFile::Volume(volume) => {
            let volume = volume.to_string();
            let id: storage::VolumeId = volume
                .parse()
                .map_err(|e| format!("{key}: volume '{volume}': {e}"))?;
            if id.is_base_image() {
                return Err(format!(
                    "disk '{key}' is a template's base image, which does not change"
                ));
            }
            Ok((value.to_string(), id))
        }
        _ => Err(format!(
            "disk '{key}' has no associated volume: only a storage's images can be resized"
        )),
    }
}

async fn resize_vm(state: Arc<AppState>, call: Call) -> ApiResult {
    this_node(&state, call.param("node"))?;
    let caller = call.caller()?.clone();
    let vmid = vmid_of(&call);
    let key = call.param("disk").to_string();
    let change =
        SizeChange::parse(call.param("size")).map_err(|e| ApiError::parameter("size", e))?;
    let config = state
        .vms
        .get(vmid)
        .ok_or_else(|| ApiError::failed(format!("VM {vmid} does not exist")))?;
    let digest = call.params.get("digest").map(str::to_owned);
    super::check_digest(digest.as_deref(), || config.digest()).map_err(ApiError::failed)?;
    // Everything a client can get wrong is refused here, before a task.
    let (_, volume) = volume_of(&config, &key).map_err(|e| ApiError::parameter("disk", e))?;
    if !has_privileges(
        &state.access.config(),
        &caller.auth_id,
        &format!("/storage/{}", volume.storage()),
        &["Datastore.AllocateSpace"],
        false,
    ) {
        return Err(ApiError::forbidden());
    }
    let current = state
        .storage
        .volume_size(&volume)
        .map_err(|e| ApiError::failed(format!("{key}: {e}")))?;
    change
        .apply(current)
        .map_err(|e| ApiError::parameter("size", e))?;
    vm_task(
        &state,
        "resize",
        vmid,
        &caller,
        move |state, log| async move {
            let lock = state.vms.lock(vmid);
            let _guard = lock.lock().await;
            let running = state.runtime.is_running(vmid).await;
            let mut config = state
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            super::check_digest(digest.as_deref(), || config.digest())?;
            let (value, volume) = volume_of(&config, &key)?;
            let current = state
                .storage
                .volume_size(&volume)
                .map_err(|e| format!("{key}: {e}"))?;
            let new = change.apply(current)?;
            if new == current {
                log.line(format!("{key} ({volume}) is {current} bytes already"));
                return Ok(());
            }
            let grown = {
                let (state, volume) = (Arc::clone(&state), volume.clone());
                tokio::task::spawn_blocking(move || state.storage.resize(&volume, new))
                    .await
                    .map_err(|e| e.to_string())?
            };
            grown.map_err(|e| format!("{key}: {e}"))?;
            log.line(format!(
                "{key}: {volume} grew from {current} to {new} bytes"
            ));
            let mut disk = PropertyString::parse(&value).map_err(|e| format!("{key}: {e}"))?;
            disk.set(Some("size"), &guestconf::format_disk_size(new))
                .map_err(|e| format!("{key}: {e}"))?;
            config
                .set(&key, &disk.to_string())
                .map_err(|e| format!("{key}: {e}"))?;
            state
                .vms
                .write(vmid, config.clone())
                .map_err(|e| format!("{key}: the image grew, but the configuration: {e}"))?;
            if !running {
                return Ok(());
            }
            let path: PathBuf = state
                .storage
                .path(&volume)
                .map_err(|e| format!("{key}: {e}"))?;
            let request = json!({ "cmd": "resize-disk", "path": path.display().to_string() });
            match state.runtime.vmm_request(vmid, request).await {
                Ok(answer) => {
                    log.line(format!(
                        "{key}: the running guest was told: {} sectors",
                        answer["sectors"]
                    ));
                    let run_dir = &state.runtime.run_dir;
                    crate::guests::pending::took_effect(run_dir, vmid, &config, &[key]);
                    Ok(())
                }
                Err(e) => Err(format!(
                    "{key}: the image grew and the configuration says so, but the running \
                     VM was not told ({e}): its guest sees the new size at the next start"
                )),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_proxmox_writes_them() {
        let p = |t: &str| SizeChange::parse(t);
        assert_eq!(
            p("32G"),
            Ok(SizeChange {
                grow: false,
                bytes: 32 << 30
            })
        );
        assert_eq!(
            p("+512M"),
            Ok(SizeChange {
                grow: true,
                bytes: 512 << 20
            })
        );
        assert_eq!(p("+1.5K").unwrap().bytes, 1536);
        assert_eq!(p("4096").unwrap().bytes, 4096);
        for bad in [
            "", "+", "-1G", "1GiB", "1.G", ".5G", "1g", "1 G", "++1G", "1P", "G",
        ] {
            assert!(p(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn growth_is_rounded_to_kib_and_shrinking_refused() {
        let grow = |g, bytes| SizeChange { grow: g, bytes };
        assert_eq!(grow(true, 1 << 30).apply(1 << 30), Ok(2 << 30));
        assert_eq!(grow(false, 3 << 30).apply(1 << 30), Ok(3 << 30));
        assert_eq!(grow(false, 1 << 30).apply(1 << 30), Ok(1 << 30));
        assert_eq!(grow(true, 1).apply(1 << 20), Ok((1 << 20) + 1024));
        assert!(grow(false, 1 << 20).apply(1 << 30).is_err());
        assert!(grow(true, u64::MAX).apply(1 << 30).is_err());
    }
}
