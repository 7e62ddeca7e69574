//! What a running VM runs with, and what waits for its next start.
//!
//! Proxmox VE keeps a running VM's changes that need a restart in the
//! configuration's `[PENDING]` section. Oxbow writes every change into the
//! configuration at once and keeps, beside the VM's control socket, the
//! configuration the VM was started with (`<run_dir>/<vmid>.running.conf`),
//! updated with each change that takes effect while it runs (a NIC's
//! bridge or cable, a grown disk, a name). The two give the same answers
//! as Proxmox's: `GET …/pending` lists each key with its running `value`
//! and its `pending` one (or `delete`), and `GET …/config?current=1` shows
//! the running values. The file is under `/run`: it goes with the node's
//! boot, as the VMs do.

use std::path::{Path, PathBuf};

use guestconf::GuestConfig;
use serde_json::{json, Value};

/// Keys that take effect at once on a running VM, as Proxmox's "fast plug"
/// options do: they describe the VM, not its hardware.
const AT_ONCE: &[&str] = &[
    "name",
    "description",
    "onboot",
    "startup",
    "protection",
    "tags",
    "lock",
    "hookscript",
    "vmstatestorage",
];

/// Whether a change of `key` takes effect on a running VM at once, apart
/// from the devices that are changed live (NICs, disk sizes).
pub fn applies_at_once(key: &str) -> bool {
    AT_ONCE.contains(&key)
}

/// Where VM `vmid`'s running configuration is kept.
pub fn running_path(run_dir: &Path, vmid: u32) -> PathBuf {
    run_dir.join(format!("{vmid}.running.conf"))
}

/// Records `config` as what VM `vmid` runs with.
pub fn save(run_dir: &Path, vmid: u32, config: &GuestConfig) -> Result<(), String> {
    let path = running_path(run_dir, vmid);
    crate::state_dir::write_atomically(&path, config.to_string().as_bytes(), 0o600)
        .map_err(|e| e.to_string())
}

/// What VM `vmid` was started with, if it was recorded.
pub fn load(run_dir: &Path, vmid: u32) -> Option<GuestConfig> {
    let text = std::fs::read_to_string(running_path(run_dir, vmid)).ok()?;
    GuestConfig::parse(&text).ok()
}

/// Takes the current values of `keys` (deleted where the current
/// configuration has none) into VM `vmid`'s running configuration, after
/// they were applied to the running VM. Nothing is recorded for a VM
/// started before there was a record.
pub fn took_effect(run_dir: &Path, vmid: u32, current: &GuestConfig, keys: &[String]) {
    let Some(mut running) = load(run_dir, vmid) else {
        return;
    };
    for key in keys {
        if key == "description" {
            running.set_description(&current.description().unwrap_or_default());
            continue;
        }
        let result = match current.get(key) {
            Some(value) => running.set(key, value).map(|_| ()),
            None => {
                running.delete(key);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(vmid, key, "cannot record a running value: {e}");
            return;
        }
    }
    if let Err(e) = save(run_dir, vmid, &running) {
        tracing::warn!(vmid, "cannot record the running configuration: {e}");
    }
}

/// `GET …/pending`'s items: every key of `current` and of `running` (the
/// running configuration, `None` for a stopped VM), in key order, with
/// `value` (what runs), `pending` (what the next start brings) or
/// `delete: 1` (a key the next start drops).
pub fn items(current: &GuestConfig, running: Option<&GuestConfig>) -> Vec<Value> {
    let entries = |config: &GuestConfig| -> std::collections::BTreeMap<String, String> {
        let mut map: std::collections::BTreeMap<String, String> = config
            .main()
            .entries()
            .map(|e| (e.key().to_owned(), e.value().to_owned()))
            .collect();
        if let Some(d) = config.description().filter(|d| !d.is_empty()) {
            map.insert("description".into(), d);
        }
        map
    };
    let now = entries(current);
    let Some(running) = running else {
        return now
            .into_iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
    };
    let then = entries(running);
    let keys: std::collections::BTreeSet<&String> = now.keys().chain(then.keys()).collect();
    keys.into_iter()
        .map(|key| match (then.get(key), now.get(key)) {
            (Some(a), Some(b)) if a == b => json!({ "key": key, "value": a }),
            (Some(a), Some(b)) => json!({ "key": key, "value": a, "pending": b }),
            (None, Some(b)) => json!({ "key": key, "pending": b }),
            (Some(a), None) => json!({ "key": key, "value": a, "delete": 1 }),
            (None, None) => unreachable!("a key of neither"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> GuestConfig {
        GuestConfig::parse(text).unwrap()
    }

    #[test]
    fn pending_items_compare_the_running_and_the_current_configuration() {
        let running = config("#old\nmemory: 512\nnet0: virtio=AA:BB:CC:DD:EE:FF\ncores: 1\n");
        let current = config("#new\nmemory: 1024\nnet0: virtio=AA:BB:CC:DD:EE:FF\nsockets: 2\n");
        assert_eq!(
            items(&current, Some(&running)),
            [
                json!({"key": "cores", "value": "1", "delete": 1}),
                json!({"key": "description", "value": "old", "pending": "new"}),
                json!({"key": "memory", "value": "512", "pending": "1024"}),
                json!({"key": "net0", "value": "virtio=AA:BB:CC:DD:EE:FF"}),
                json!({"key": "sockets", "pending": "2"}),
            ]
        );
        // Stopped: nothing pending.
        assert_eq!(
            items(&current, None)[1],
            json!({"key": "memory", "value": "1024"})
        );
    }

    #[test]
    fn changes_that_took_effect_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let running = config("memory: 512\nname: a\nonboot: 1\n");
        took_effect(dir.path(), 100, &running, &["name".into()]);
        assert!(load(dir.path(), 100).is_none(), "no record, nothing made");
        save(dir.path(), 100, &running).unwrap();
        let current = config("#note\nmemory: 1024\nname: b\n");
        let keys = ["name".to_string(), "onboot".into(), "description".into()];
        took_effect(dir.path(), 100, &current, &keys);
        let now = load(dir.path(), 100).unwrap();
        assert_eq!(
            (now.get("memory"), now.get("name"), now.get("onboot")),
            (Some("512"), Some("b"), None)
        );
        assert_eq!(now.description().as_deref(), Some("note"));
        assert!(applies_at_once("name") && !applies_at_once("memory"));
    }
}
