//! Tasks: long operations that run in the background and are followed by
//! their UPID.
//!
//! A UPID names a task the way Proxmox VE does:
//! `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`, with the
//! pid, the process start time (clock ticks since boot) and the task's
//! start time (unix seconds) in upper-case hex, at least 8 digits.
//!
//! Every task has a log file, `<state>/tasks/<X>/<UPID>` where `X` is the
//! last hex digit of the start time. A finished task's log ends with
//! `TASK OK` or `TASK ERROR: <why>`, and a line `<UPID> <endtime hex>
//! <status>` is appended to `<state>/tasks/index`. Running tasks are listed
//! in `<state>/tasks/active`; a task found there at start-up belonged to an
//! apid that died, and is recorded as stopped with `unexpected status`.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::app_state::unix_now;
use crate::error::ServerError;

/// A task id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Upid {
    /// The node the task runs on.
    pub node: String,
    /// The pid of the process running it.
    pub pid: u32,
    /// That process's start time, in clock ticks since boot.
    pub pstart: u64,
    /// Unix time the task started.
    pub starttime: i64,
    /// What it does, such as `qmstart`.
    pub kind: String,
    /// What it works on, such as a VMID; may be empty.
    pub id: String,
    /// Who started it (a user or token id).
    pub user: String,
}

impl Upid {
    /// Parses a UPID; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Upid> {
        let rest = text.strip_prefix("UPID:")?.strip_suffix(':')?;
        let mut fields = rest.splitn(7, ':');
        let node = fields.next()?;
        let pid = fields.next()?;
        let pstart = fields.next()?;
        let starttime = fields.next()?;
        let kind = fields.next()?;
        let id = fields.next()?;
        let user = fields.next()?;
        let hex8 = |s: &str| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let plain = |s: &str| !s.contains(['\n', '\r', '/', ' ']);
        if node.is_empty()
            || !hex8(pid)
            || !hex8(pstart)
            || !hex8(starttime)
            || kind.is_empty()
            || user.is_empty()
            || ![node, kind, id, user].into_iter().all(plain)
            || kind.contains(':')
            || id.contains(':')
        {
            return None;
        }
        Some(Upid {
            node: node.to_owned(),
            pid: u32::from_str_radix(pid, 16).ok()?,
            pstart: u64::from_str_radix(pstart, 16).ok()?,
            starttime: i64::from_str_radix(starttime, 16).ok()?,
            kind: kind.to_owned(),
            id: id.to_owned(),
            user: user.to_owned(),
        })
    }

    /// The task's fields as Proxmox lists them.
    pub fn to_json(&self) -> Value {
        json!({
            "upid": self.to_string(),
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.kind,
            "id": self.id,
            "user": self.user,
        })
    }
}

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.kind, self.id, self.user
        )
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// Unix time it ended.
    pub endtime: i64,
    /// `OK`, or the error text.
    pub status: String,
}

#[derive(Debug, Clone)]
struct TaskRecord {
    upid: Upid,
    end: Option<TaskEnd>,
}

/// A running task's log.
#[derive(Debug, Clone)]
pub struct TaskLog {
    path: PathBuf,
}

impl TaskLog {
    /// Appends a line to the log.
    pub fn line(&self, text: impl AsRef<str>) {
        let result = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{}", text.as_ref()));
        if let Err(e) = result {
            tracing::warn!("cannot write task log {}: {e}", self.path.display());
        }
    }
}

/// The filters of a task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks of users whose id contains this.
    pub user: Option<String>,
    /// Only tasks of this type.
    pub kind: Option<String>,
    /// Only tasks on this guest.
    pub vmid: Option<String>,
    /// Only failed tasks.
    pub errors: bool,
    /// Which: finished (`archive`), `active`, or `all`.
    pub source: String,
    /// Only tasks started at or after this unix time.
    pub since: Option<i64>,
    /// Only tasks started at or before this unix time.
    pub until: Option<i64>,
}

/// The tasks of this node: running ones and the history.
#[derive(Debug)]
pub struct TaskStore {
    dir: PathBuf,
    node: String,
    pid: u32,
    pstart: u64,
    tasks: Mutex<BTreeMap<Upid, TaskRecord>>,
    counter: Mutex<i64>,
}

/// The most finished tasks kept in memory (the log files stay).
const HISTORY_LIMIT: usize = 10_000;

fn process_start_ticks() -> u64 {
    // Field 22 of /proc/self/stat, counted after the parenthesised name.
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name.split_whitespace().nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

impl TaskStore {
    /// Opens the task history under `dir`; tasks left running by an
    /// earlier apid are recorded as stopped.
    pub fn open(dir: impl Into<PathBuf>, node: &str) -> Result<TaskStore, ServerError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| ServerError::io("cannot create", &dir, e))?;
        let mut tasks = BTreeMap::new();
        let index = dir.join("index");
        if let Ok(text) = fs::read_to_string(&index) {
            for line in text.lines() {
                let mut fields = line.splitn(3, ' ');
                let (Some(upid), Some(end), status) = (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let (Some(upid), Ok(endtime)) = (Upid::parse(upid), i64::from_str_radix(end, 16))
                else {
                    continue;
                };
                let end = TaskEnd {
                    endtime,
                    status: status.unwrap_or("unknown").to_owned(),
                };
                tasks.insert(
                    upid.clone(),
                    TaskRecord {
                        upid,
                        end: Some(end),
                    },
                );
            }
        }
        let store = TaskStore {
            dir,
            node: node.to_owned(),
            pid: std::process::id(),
            pstart: process_start_ticks(),
            tasks: Mutex::new(tasks),
            counter: Mutex::new(0),
        };
        let active = store.dir.join("active");
        if let Ok(text) = fs::read_to_string(&active) {
            for upid in text.lines().filter_map(Upid::parse) {
                let finished = store
                    .lock()
                    .get(&upid)
                    .is_some_and(|record| record.end.is_some());
                if !finished {
                    let log = TaskLog {
                        path: store.log_path(&upid),
                    };
                    log.line("TASK ERROR: unexpected status");
                    store.finish(&upid, "unexpected status".to_owned());
                }
            }
        }
        let _ = fs::remove_file(&active);
        store.trim();
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Upid, TaskRecord>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trim(&self) {
        let mut tasks = self.lock();
        while tasks.len() > HISTORY_LIMIT {
            let oldest = tasks
                .values()
                .filter(|r| r.end.is_some())
                .min_by_key(|r| r.upid.starttime)
                .map(|r| r.upid.clone());
            match oldest {
                Some(upid) => tasks.remove(&upid),
                None => break,
            };
        }
    }

    /// The log file of `upid`.
    pub fn log_path(&self, upid: &Upid) -> PathBuf {
        let digit = format!("{:X}", upid.starttime & 0xf);
        self.dir.join(digit).join(upid.to_string())
    }

    /// A new UPID of this process.
    fn new_upid(&self, kind: &str, id: &str, user: &str) -> Upid {
        // Two tasks started in the same second by the same process would get
        // the same UPID; the start time is bumped to keep them apart.
        let now = unix_now();
        let mut last = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        let starttime = now.max(*last + 1);
        *last = starttime;
        Upid {
            node: self.node.clone(),
            pid: self.pid,
            pstart: self.pstart,
            starttime,
            kind: kind.to_owned(),
            id: id.to_owned(),
            user: user.to_owned(),
        }
    }

    fn write_active(&self) {
        let text: String = self
            .lock()
            .values()
            .filter(|r| r.end.is_none())
            .map(|r| format!("{}\n", r.upid))
            .collect();
        let path = self.dir.join("active");
        if let Err(e) = crate::state_dir::write_atomically(&path, text.as_bytes(), 0o644) {
            tracing::warn!("cannot record the running tasks: {e}");
        }
    }

    fn finish(&self, upid: &Upid, status: String) {
        let end = TaskEnd {
            endtime: unix_now(),
            status,
        };
        let line = format!("{upid} {:08X} {}\n", end.endtime, end.status);
        let index = self.dir.join("index");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("cannot append to {}: {e}", index.display());
        }
        self.lock().insert(
            upid.clone(),
            TaskRecord {
                upid: upid.clone(),
                end: Some(end),
            },
        );
    }

    /// Starts task `kind` on `id` for `user`, running `work` in the
    /// background, and returns its UPID at once. `work` logs through the
    /// [`TaskLog`] it gets; its error text becomes the exit status.
    pub fn spawn<F, Fut>(
        self: &Arc<Self>,
        kind: &str,
        id: &str,
        user: &str,
        work: F,
    ) -> Result<Upid, ServerError>
    where
        F: FnOnce(TaskLog) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let upid = self.new_upid(kind, id, user);
        let path = self.log_path(&upid);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| ServerError::io("cannot create", parent, e))?;
        }
        fs::write(&path, b"").map_err(|e| ServerError::io("cannot create", &path, e))?;
        self.lock().insert(
            upid.clone(),
            TaskRecord {
                upid: upid.clone(),
                end: None,
            },
        );
        self.write_active();
        let log = TaskLog { path };
        let store = Arc::clone(self);
        let task_upid = upid.clone();
        tokio::spawn(async move {
            let result = work(log.clone()).await;
            let status = match result {
                Ok(()) => {
                    log.line("TASK OK");
                    "OK".to_owned()
                }
                Err(why) => {
                    let why = why.replace(['\n', '\r'], " ");
                    log.line(format!("TASK ERROR: {why}"));
                    why
                }
            };
            store.finish(&task_upid, status);
            store.write_active();
            store.trim();
        });
        Ok(upid)
    }

    /// `running`/`stopped` and the exit status, as `tasks/{upid}/status`
    /// answers; `None` for an unknown task.
    pub fn status(&self, upid: &Upid) -> Option<Value> {
        let tasks = self.lock();
        let record = tasks.get(upid)?;
        let mut out = record.upid.to_json();
        if let Some(object) = out.as_object_mut() {
            match &record.end {
                None => {
                    object.insert("status".into(), json!("running"));
                }
                Some(end) => {
                    object.insert("status".into(), json!("stopped"));
                    object.insert("exitstatus".into(), json!(end.status));
                    object.insert("endtime".into(), json!(end.endtime));
                }
            }
        }
        Some(out)
    }

    /// Whether `upid` is known.
    pub fn exists(&self, upid: &Upid) -> bool {
        self.lock().contains_key(upid)
    }

    /// Lines `start..start+limit` of the log, numbered from 1, and the
    /// total number of lines.
    pub fn log(&self, upid: &Upid, start: usize, limit: usize) -> Option<(Vec<Value>, usize)> {
        if !self.exists(upid) {
            return None;
        }
        let text = fs::read_to_string(self.log_path(upid)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let total = lines.len();
        let page = lines
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, line)| json!({"n": i + 1, "t": line}))
            .collect();
        Some((page, total))
    }

    /// Tasks matching `filter`, newest first, with `allowed` deciding which
    /// the caller may see; a page of them and the total.
    pub fn list(
        &self,
        filter: &TaskFilter,
        allowed: impl Fn(&Upid) -> bool,
        start: usize,
        limit: usize,
    ) -> (Vec<Value>, usize) {
        let tasks = self.lock();
        let mut matching: Vec<&TaskRecord> = tasks
            .values()
            .filter(|r| match filter.source.as_str() {
                "active" => r.end.is_none(),
                "all" => true,
                _ => r.end.is_some(),
            })
            .filter(|r| {
                filter
                    .user
                    .as_ref()
                    .is_none_or(|u| r.upid.user.contains(u.as_str()))
            })
            .filter(|r| filter.kind.as_ref().is_none_or(|k| &r.upid.kind == k))
            .filter(|r| filter.vmid.as_ref().is_none_or(|v| &r.upid.id == v))
            .filter(|r| !filter.errors || r.end.as_ref().is_some_and(|e| e.status != "OK"))
            .filter(|r| filter.since.is_none_or(|s| r.upid.starttime >= s))
            .filter(|r| filter.until.is_none_or(|u| r.upid.starttime <= u))
            .filter(|r| allowed(&r.upid))
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.upid.starttime));
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(start)
            .take(limit)
            .map(|r| {
                let mut item = r.upid.to_json();
                if let (Some(object), Some(end)) = (item.as_object_mut(), &r.end) {
                    object.insert("endtime".into(), json!(end.endtime));
                    object.insert("status".into(), json!(end.status));
                }
                item
            })
            .collect();
        (page, total)
    }

    /// The directory of the task files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "UPID:pve1:000012AB:0001E240:6554A1B2:qmstart:100:root@pam:";

    #[test]
    fn upids_round_trip() {
        let upid = Upid::parse(EXAMPLE).unwrap();
        assert_eq!(upid.node, "pve1");
        assert_eq!(upid.pid, 0x12ab);
        assert_eq!(upid.pstart, 123_456);
        assert_eq!(upid.starttime, 0x6554_a1b2);
        assert_eq!(upid.kind, "qmstart");
        assert_eq!(upid.id, "100");
        assert_eq!(upid.user, "root@pam");
        assert_eq!(upid.to_string(), EXAMPLE);
    }

    #[test]
    fn upid_fields_are_padded_and_tokens_allowed() {
        let upid = Upid {
            node: "n".into(),
            pid: 1,
            pstart: 0x1_2345_6789,
            starttime: 2,
            kind: "vzdump".into(),
            id: String::new(),
            user: "a@pve!ci".into(),
        };
        let text = upid.to_string();
        assert_eq!(text, "UPID:n:00000001:123456789:00000002:vzdump::a@pve!ci:");
        assert_eq!(Upid::parse(&text), Some(upid));
    }

    #[test]
    fn malformed_upids_are_refused() {
        for bad in [
            "",
            "UPID:pve1:12AB:0001E240:6554A1B2:qmstart:100:root@pam:",
            "UPID:pve1:000012AB:0001E240:6554A1B2:qmstart:100:root@pam",
            "UPID:pve1:000012AG:0001E240:6554A1B2:qmstart:100:root@pam:",
            "UPID::000012AB:0001E240:6554A1B2:qmstart:100:root@pam:",
            "UPID:pve1:000012AB:0001E240:6554A1B2:qmstart:100::",
            "UPID:p/../x:000012AB:0001E240:6554A1B2:qmstart:100:root@pam:",
            "XPID:pve1:000012AB:0001E240:6554A1B2:qmstart:100:root@pam:",
        ] {
            assert!(Upid::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn tasks_run_log_and_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(TaskStore::open(dir.path(), "pve1").unwrap());
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let ok = store
            .spawn("qmstart", "100", "root@pam", |log| async move {
                log.line("starting");
                let _ = wait.await;
                Ok(())
            })
            .unwrap();
        let failed = store
            .spawn("qmstop", "101", "alice@pve", |log| async move {
                log.line("stopping");
                Err("it broke\nbadly".to_owned())
            })
            .unwrap();
        assert_ne!(ok, failed);
        assert_eq!(store.status(&ok).unwrap()["status"], "running");
        let active = fs::read_to_string(dir.path().join("active")).unwrap();
        assert!(active.contains(&ok.to_string()));
        release.send(()).unwrap();
        for _ in 0..100 {
            if store.status(&ok).unwrap()["status"] == "stopped"
                && store.status(&failed).unwrap()["status"] == "stopped"
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(store.status(&ok).unwrap()["exitstatus"], "OK");
        assert_eq!(
            store.status(&failed).unwrap()["exitstatus"],
            "it broke badly"
        );
        let (lines, total) = store.log(&failed, 0, 50).unwrap();
        assert_eq!(total, 2);
        assert_eq!(lines[0], json!({"n": 1, "t": "stopping"}));
        assert_eq!(lines[1], json!({"n": 2, "t": "TASK ERROR: it broke badly"}));
        let (lines, _) = store.log(&ok, 1, 1).unwrap();
        assert_eq!(lines, vec![json!({"n": 2, "t": "TASK OK"})]);

        let all = TaskFilter {
            source: "archive".into(),
            ..TaskFilter::default()
        };
        let (listed, total) = store.list(&all, |_| true, 0, 50);
        assert_eq!(total, 2);
        assert_eq!(listed[0]["upid"], failed.to_string(), "newest first");
        let errors = TaskFilter {
            errors: true,
            ..all.clone()
        };
        assert_eq!(store.list(&errors, |_| true, 0, 50).1, 1);
        let mine = TaskFilter {
            user: Some("alice".into()),
            ..all.clone()
        };
        assert_eq!(store.list(&mine, |_| true, 0, 50).1, 1);
        assert_eq!(store.list(&all, |u| u.user == "root@pam", 0, 50).1, 1);

        // A new store reads the history back.
        let again = TaskStore::open(dir.path(), "pve1").unwrap();
        assert_eq!(
            again.status(&failed).unwrap()["exitstatus"],
            "it broke badly"
        );
    }

    #[test]
    fn tasks_of_a_dead_apid_are_stopped_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let upid = Upid::parse(EXAMPLE).unwrap();
        let log = dir.path().join("2").join(EXAMPLE);
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "starting\n").unwrap();
        fs::write(dir.path().join("active"), format!("{EXAMPLE}\n")).unwrap();
        let store = TaskStore::open(dir.path(), "pve1").unwrap();
        let status = store.status(&upid).unwrap();
        assert_eq!(status["status"], "stopped");
        assert_eq!(status["exitstatus"], "unexpected status");
        assert_eq!(store.log(&upid, 0, 50).unwrap().1, 2);
    }
}
