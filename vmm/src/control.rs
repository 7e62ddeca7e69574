//! The control socket of a running VM.
//!
//! A client connects to the unix socket given with `--api-socket` (mode
//! 0600) and sends one JSON object per line; the VMM answers each with one
//! JSON line, `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`. The
//! requests are the variants of [`Request`], tagged by `cmd`:
//!
//! ```text
//! {"cmd":"ping"}        -> "pong"
//! {"cmd":"info"}        -> {"state":"running","vcpus":2,"memory_mib":256,"devices":[…],…}
//! {"cmd":"pause"}       {"cmd":"resume"}
//! {"cmd":"shutdown"}    presses the ACPI power button; the guest decides
//! {"cmd":"stop"}        ends the VM at once (exit status 0)
//! {"cmd":"reset"}       ends the VM at once as a guest's reset does
//!                       (exit status 3: whoever runs the VMM starts it again)
//! {"cmd":"set-link","tap":"tap100i0","up":false}
//!                       the NIC on that tap loses (or gets) its carrier
//! {"cmd":"resize-disk","path":"/var/lib/vz/images/100/vm-100-disk-0.raw"}
//!                       the disk on that image takes the image's new,
//!                       larger size -> {"sectors_before":…,"sectors":…}
//! ```
//!
//! Unknown commands and malformed lines get an error and change nothing.
//! New commands (snapshot, migration) are added as new variants.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::exit::ExitReason;
use crate::vm::{RunState, SerialOut, VmHandle};

/// A request to the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check.
    Ping,
    /// vCPUs, memory, devices and state.
    Info,
    /// Parks the vCPUs.
    Pause,
    /// Lets them run again.
    Resume,
    /// Presses the ACPI power button.
    Shutdown,
    /// Ends the VM now.
    Stop,
    /// Ends the VM now as a reset of the guest's does.
    Reset,
    /// Pulls out (or plugs in) the cable of the NIC on tap `tap`.
    SetLink {
        /// The NIC's tap.
        tap: String,
        /// Carrier or none.
        up: bool,
    },
    /// The image of a disk has grown: the guest is told its new size.
    ResizeDisk {
        /// The image's path, as given with `--disk`.
        path: String,
    },
}

/// Answers one request line.
pub fn handle_line(vm: &VmHandle, line: &str) -> Value {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let r: Result<Value, String> = match req {
        Request::Ping => Ok(json!("pong")),
        Request::Info => Ok(info(vm)),
        Request::Pause => vm.pause().map(|_| Value::Null),
        Request::Resume => vm.resume().map(|_| Value::Null),
        Request::Shutdown => vm.shutdown().map(|_| Value::Null),
        Request::Stop => {
            vm.exit.request(ExitReason::Stopped);
            Ok(Value::Null)
        }
        Request::Reset => {
            vm.exit.request(ExitReason::Reset);
            Ok(Value::Null)
        }
        Request::SetLink { tap, up } => set_link(vm, &tap, up),
        Request::ResizeDisk { path } => resize_disk(vm, &path),
    };
    match r {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}

fn set_link(vm: &VmHandle, tap: &str, up: bool) -> Result<Value, String> {
    let (_, link) = vm
        .links
        .iter()
        .find(|(name, _)| name == tap)
        .ok_or_else(|| format!("no NIC on tap {tap}"))?;
    let changed = link
        .set(up)
        .map_err(|e| format!("NIC on tap {tap}: telling the guest: {e}"))?;
    Ok(json!({ "changed": changed }))
}

fn resize_disk(vm: &VmHandle, path: &str) -> Result<Value, String> {
    let (_, capacity) = vm
        .disks
        .iter()
        .find(|(p, _)| p.as_os_str() == path)
        .ok_or_else(|| format!("no disk on {path}"))?;
    let (before, after) = capacity
        .refresh()
        .map_err(|e| format!("disk {path}: {e}"))?;
    Ok(json!({ "sectors_before": before, "sectors": after }))
}

fn info(vm: &VmHandle) -> Value {
    let c = &vm.config;
    let state = match vm.run.state() {
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Exiting => "stopping",
    };
    let serial = match &c.serial {
        SerialOut::Stdio => "stdio".to_string(),
        SerialOut::File(p) => format!("file={}", p.display()),
        SerialOut::Null => "none".to_string(),
    };
    let mut devices = vec![
        json!({"type": "serial", "port": "0x3f8", "irq": crate::acpi::SERIAL_GSI, "output": serial}),
        json!({"type": "i8042", "port": "0x60"}),
        json!({"type": "acpi-ged", "port": format!("{:#x}", crate::acpi::GED_PORT), "irq": crate::acpi::GED_GSI}),
    ];
    devices.extend(vm.bus.pci.info());
    json!({
        "state": state,
        "vcpus": c.cpus,
        "memory_mib": c.memory_mib,
        "kernel": c.kernel.display().to_string(),
        "initrd": c.initrd.as_ref().map(|p| p.display().to_string()),
        "cmdline": c.cmdline,
        "devices": devices,
        "pid": std::process::id(),
    })
}

/// Binds the socket: refuses one that a live VMM answers on, replaces a
/// stale one, and makes it 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running VMM", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the socket on its own thread.
pub fn serve(listener: UnixListener, vm: Arc<VmHandle>) {
    let _ = crate::thread("control").spawn(move || {
        for conn in listener.incoming().flatten() {
            let vm = vm.clone();
            let _ = crate::thread("control-conn").spawn(move || serve_conn(conn, &vm));
        }
    });
}

fn serve_conn(conn: UnixStream, vm: &VmHandle) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let mut reply = handle_line(vm, &line).to_string();
        reply.push('\n');
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends one request to the control socket at `path` and returns the reply
/// line. `request` is either a JSON object or a bare command name.
pub fn client(path: &Path, request: &str) -> std::io::Result<String> {
    let line = if request.trim_start().starts_with('{') {
        request.trim().to_string()
    } else {
        json!({ "cmd": request.trim() }).to_string()
    };
    let mut s = UnixStream::connect(path)?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_unknown_ones_do_not() {
        let r: Request = serde_json::from_str(r#"{"cmd":"shutdown"}"#).unwrap();
        assert_eq!(r, Request::Shutdown);
        let r: Request = serde_json::from_str(r#"{"cmd":"reset"}"#).unwrap();
        assert_eq!(r, Request::Reset);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        let r: Request =
            serde_json::from_str(r#"{"cmd":"set-link","tap":"tap100i0","up":false}"#).unwrap();
        assert_eq!(
            r,
            Request::SetLink {
                tap: "tap100i0".into(),
                up: false
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"set-link","up":true}"#).is_err());
        let r: Request =
            serde_json::from_str(r#"{"cmd":"resize-disk","path":"/d/vm-1-disk-0.raw"}"#).unwrap();
        assert_eq!(
            r,
            Request::ResizeDisk {
                path: "/d/vm-1-disk-0.raw".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"resize-disk"}"#).is_err());

        assert_eq!(
            serde_json::to_string(&Request::Info).unwrap(),
            r#"{"cmd":"info"}"#
        );
    }

    #[test]
    fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("vmm-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        let l = bind(&p).unwrap();
        assert_eq!(bind(&p).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        drop(l);
        // A process another test thread forks holds a copy of the
        // listener until it execs (close-on-exec), so the socket can
        // answer for a moment after the drop: retry briefly.
        let mut l2 = bind(&p);
        for _ in 0..100 {
            if l2.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            l2 = bind(&p);
        }
        let l2 = l2.unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(l2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
