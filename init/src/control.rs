//! The control protocol of init.
//!
//! A client connects to the unix socket (`/run/oxbow/init.sock`, mode 0600)
//! and sends one JSON object per line; init answers each with one JSON line:
//! `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`. The requests are
//! the variants of [`Request`], tagged by `cmd`:
//!
//! ```text
//! {"cmd":"ping"}
//! {"cmd":"list"}
//! {"cmd":"status","unit":"apid"}
//! {"cmd":"start","unit":"apid"}     {"cmd":"stop","unit":"apid"}
//! {"cmd":"restart","unit":"apid"}
//! {"cmd":"kill","unit":"apid","signal":"KILL"}
//! {"cmd":"run","unit":{"name":"vmm:100","exec":["/usr/lib/oxbow/vmm",…],"restart":{"on-status":3}}}
//! {"cmd":"remove","unit":"vmm:100"}
//! {"cmd":"poweroff"}                {"cmd":"reboot"}
//! ```
//!
//! The same protocol runs over the test control channel (a serial port),
//! which only a kernel command-line flag enables.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::service::UnitSpec;

/// The default path of the control socket.
pub const SOCKET_PATH: &str = "/run/oxbow/init.sock";

/// A request to init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answers `"pong"`.
    Ping,
    /// Status of every unit.
    List,
    /// Status of one unit.
    Status {
        /// Unit name.
        unit: String,
    },
    /// Starts a stopped or failed unit.
    Start {
        /// Unit name.
        unit: String,
    },
    /// Stops a unit (TERM, timeout, KILL) and keeps it stopped.
    Stop {
        /// Unit name.
        unit: String,
    },
    /// Stops then starts a unit.
    Restart {
        /// Unit name.
        unit: String,
    },
    /// Sends a signal to a unit's main process; its restart policy applies.
    Kill {
        /// Unit name.
        unit: String,
        /// Signal name such as `TERM` or `SIGKILL`.
        signal: String,
    },
    /// Starts a transient unit.
    Run {
        /// The unit to run.
        unit: UnitSpec,
    },
    /// Forgets a stopped transient unit.
    Remove {
        /// Unit name.
        unit: String,
    },
    /// Shuts the machine down and powers it off.
    Poweroff,
    /// Shuts the machine down and reboots it.
    Reboot,
}

/// The state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    /// Waiting for its dependencies.
    Waiting,
    /// Started, not yet ready.
    Starting,
    /// Started and ready.
    Running,
    /// Waiting out the restart back-off.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped (by request, or it exited and is not restarted).
    Stopped,
    /// Hit its start limit, or could not be started.
    Failed,
}

/// What `status` and `list` report of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Unit name.
    pub name: String,
    /// `service` or `transient`.
    pub kind: String,
    /// Current state.
    pub state: UnitState,
    /// Main process, when running.
    pub pid: Option<i32>,
    /// Unix time of the last start.
    pub started_at: Option<u64>,
    /// How many times it was restarted after exiting.
    pub restarts: u32,
    /// How the last run ended, e.g. `exited with status 1`.
    pub last_exit: Option<String>,
    /// The last exit code, when it exited normally.
    pub last_exit_code: Option<i32>,
    /// cgroup path, relative to the cgroup root.
    pub cgroup: Option<String>,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The reason on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `data`.
    pub fn ok(data: impl Serialize) -> Response {
        Response {
            ok: true,
            data: Some(serde_json::to_value(data).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    /// A failure with a reason.
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(msg.into()),
        }
    }
}

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be used.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// init's answer was not a valid response.
    #[error("malformed answer from init: {0}")]
    Protocol(String),
    /// init refused the request.
    #[error("{0}")]
    Refused(String),
}

/// A connection to init's control socket.
#[derive(Debug)]
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let io = |source| ClientError::Io {
            path: path.display().to_string(),
            source,
        };
        let s = UnixStream::connect(path).map_err(io)?;
        let writer = s.try_clone().map_err(io)?;
        Ok(Client {
            path: path.display().to_string(),
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends a request and returns the `data` of a successful answer.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line =
            serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        self.reader
            .read_line(&mut answer)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        let resp: Response = serde_json::from_str(&answer)
            .map_err(|e| ClientError::Protocol(format!("{e}: {answer:?}")))?;
        if resp.ok {
            Ok(resp.data.unwrap_or(serde_json::Value::Null))
        } else {
            Err(ClientError::Refused(resp.error.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"kill","unit":"apid","signal":"KILL"}"#).unwrap();
        assert_eq!(
            r,
            Request::Kill {
                unit: "apid".into(),
                signal: "KILL".into()
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"cmd":"run","unit":{"name":"vmm:1","exec":["/bin/sleep","9"],"restart":"never"}}"#,
        )
        .unwrap();
        match r {
            Request::Run { unit } => assert_eq!(unit.exec, ["/bin/sleep", "9"]),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format-disk"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Response::err("no such unit")).unwrap(),
            r#"{"ok":false,"error":"no such unit"}"#
        );
    }
}
