//! The supervisor run as an ordinary process on the host: ordering,
//! readiness, restarts, start limits, transient units and the reverse stop.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use init::control::{Client, Request, UnitStatus};
use init::service::{RestartPolicy, UnitSpec};

struct Sup {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Sup {
    fn start(table: &str) -> Sup {
        Sup::start_with(table, &[])
    }

    /// `extra` arguments may name files in the test directory as `@DIR@/…`.
    fn start_with(table: &str, extra: &[&str]) -> Sup {
        let dir = tempfile::tempdir().unwrap();
        let table = table.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(dir.path().join("services.toml"), table).unwrap();
        let socket = dir.path().join("init.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_init"))
            .args(["supervise", "--table"])
            .arg(dir.path().join("services.toml"))
            .arg("--socket")
            .arg(&socket)
            .arg("--log-dir")
            .arg(dir.path().join("log"))
            .args(
                extra
                    .iter()
                    .map(|a| a.replace("@DIR@", &dir.path().display().to_string())),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while Client::connect(&socket).is_err() {
            assert!(Instant::now() < end, "control socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sup { child, socket, dir }
    }

    fn call(&self, req: Request) -> Result<serde_json::Value, String> {
        Client::connect(&self.socket)
            .and_then(|mut c| c.call(&req))
            .map_err(|e| e.to_string())
    }

    fn status(&self, unit: &str) -> UnitStatus {
        serde_json::from_value(self.call(Request::Status { unit: unit.into() }).unwrap()).unwrap()
    }

    fn wait_for(&self, what: &str, f: impl Fn(&Sup) -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !f(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks for a shutdown and returns the supervisor's console output.
    fn shutdown(mut self) -> String {
        self.call(Request::Poweroff).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "supervisor exited with {st}");
                break;
            }
            assert!(Instant::now() < end, "supervisor did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pos(hay: &str, needle: &str) -> usize {
    hay.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in output:\n{hay}"))
}

#[test]
fn order_readiness_restart_and_reverse_stop() {
    let sup = Sup::start(
        r#"
[[service]]
name = "second"
exec = ["/bin/sh", "-c", "echo second-started; exec sleep 1000"]
after = ["first"]
restart = "always"

[[service]]
name = "first"
exec = ["/bin/sh", "-c", "sleep 0.3; touch @DIR@/first.ready; exec sleep 1000"]
ready = { file = "@DIR@/first.ready" }

[[service]]
name = "broken"
exec = ["/nonexistent/binary"]
start_limit = 2
"#,
    );
    sup.wait_for("second running", |s| s.status("second").pid.is_some());
    let first = sup.status("first");
    assert_eq!(format!("{:?}", first.state), "Running");
    // `second` only starts once `first` is ready.
    let ready_at = std::fs::metadata(sup.path("first.ready"))
        .unwrap()
        .modified()
        .unwrap();
    let second = sup.status("second");
    let started = std::time::UNIX_EPOCH + Duration::from_secs(second.started_at.unwrap());
    assert!(started + Duration::from_secs(1) >= ready_at);
    // Its output goes to its log file.
    sup.wait_for("second's log", |s| {
        std::fs::read_to_string(s.path("log/second.log"))
            .unwrap_or_default()
            .contains("second-started")
    });

    // Killing a restart=always service brings it back with a new pid.
    let old = second.pid.unwrap();
    sup.call(Request::Kill {
        unit: "second".into(),
        signal: "KILL".into(),
    })
    .unwrap();
    sup.wait_for("second restarted", |s| {
        let st = s.status("second");
        st.pid.is_some_and(|p| p != old) && st.restarts == 1
    });
    assert_eq!(
        sup.status("second").last_exit.as_deref(),
        Some("killed by SIGKILL")
    );

    // A missing binary is reported, retried up to its start limit, then failed;
    // the rest keeps running.
    sup.wait_for("broken failed", |s| {
        format!("{:?}", s.status("broken").state) == "Failed"
    });
    assert!(sup.status("first").pid.is_some());

    // Bad requests change nothing.
    assert!(sup
        .call(Request::Status {
            unit: "nope".into()
        })
        .unwrap_err()
        .contains("no such unit"));
    assert!(sup
        .call(Request::Kill {
            unit: "first".into(),
            signal: "BOGUS".into()
        })
        .unwrap_err()
        .contains("unknown signal"));

    let out = sup.shutdown();
    assert!(out.contains("cannot start /nonexistent/binary"), "{out}");
    // Reverse start order: second (started last) stops before first.
    assert!(
        pos(&out, "stopped second") < pos(&out, "stopped first"),
        "{out}"
    );
}

#[test]
fn transient_units() {
    let sup = Sup::start("");
    let marker = sup.path("ran");
    let mut spec = UnitSpec::new(
        "vmm:100",
        &[
            "/bin/sh",
            "-c",
            &format!("echo $GREETING > {}; exit 3", marker.display()),
        ],
    );
    spec.env.insert("GREETING".into(), "hello".into());
    spec.restart = RestartPolicy::Never;
    sup.call(Request::Run { unit: spec.clone() }).unwrap();
    sup.wait_for("transient exit", |s| {
        s.status("vmm:100").last_exit_code == Some(3)
    });
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "hello");
    assert_eq!(format!("{:?}", sup.status("vmm:100").state), "Failed");

    // Restarted only after exiting with the given status: a VMM whose guest
    // reboots (3) once and then powers off (0).
    let runs = sup.path("runs");
    let mut vm = UnitSpec::new(
        "vmm:102",
        &[
            "/bin/sh",
            "-c",
            &format!(
                "echo x >> {0}; [ $(wc -l < {0}) -ge 2 ] && exit 0; exit 3",
                runs.display()
            ),
        ],
    );
    vm.restart = RestartPolicy::OnStatus(3);
    sup.call(Request::Run { unit: vm }).unwrap();
    sup.wait_for("reboot then poweroff", |s| {
        let st = s.status("vmm:102");
        st.last_exit_code == Some(0) && format!("{:?}", st.state) == "Stopped"
    });
    assert_eq!(sup.status("vmm:102").restarts, 1);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);

    // A long-running transient unit: a second run with the same name is refused.
    let long = UnitSpec::new("ctr:101", &["/bin/sleep", "1000"]);
    sup.call(Request::Run { unit: long.clone() }).unwrap();
    let err = sup.call(Request::Run { unit: long }).unwrap_err();
    assert!(err.contains("already active"), "{err}");
    let err = sup
        .call(Request::Remove {
            unit: "ctr:101".into(),
        })
        .unwrap_err();
    assert!(err.contains("still active"), "{err}");
    sup.call(Request::Stop {
        unit: "ctr:101".into(),
    })
    .unwrap();
    sup.wait_for("stopped", |s| {
        format!("{:?}", s.status("ctr:101").state) == "Stopped"
    });
    sup.call(Request::Remove {
        unit: "ctr:101".into(),
    })
    .unwrap();
    assert!(sup
        .call(Request::Status {
            unit: "ctr:101".into()
        })
        .is_err());

    // Invalid specs are refused with a reason.
    let bad = UnitSpec::new("bad/name", &["/bin/true"]);
    assert!(sup
        .call(Request::Run { unit: bad })
        .unwrap_err()
        .contains("not a valid unit name"));
    let bad = UnitSpec::new("rel", &["true"]);
    assert!(sup
        .call(Request::Run { unit: bad })
        .unwrap_err()
        .contains("absolute"));
    let missing = UnitSpec::new("missing", &["/nonexistent"]);
    assert!(sup
        .call(Request::Run { unit: missing })
        .unwrap_err()
        .contains("failed to start"));
    sup.shutdown();
}

#[test]
fn transient_units_wait_for_the_gate() {
    let sup = Sup::start_with(
        "[[service]]\nname = \"svc\"\nexec = [\"/bin/sleep\", \"1000\"]\n",
        &["--transient-gate", "@DIR@/gate"],
    );
    // Services are not held back by the gate.
    sup.wait_for("service running", |s| {
        format!("{:?}", s.status("svc").state) == "Running"
    });
    let mut spec = UnitSpec::new("vmm:200", &["/bin/sleep", "1000"]);
    spec.restart = RestartPolicy::Never;
    let st: UnitStatus =
        serde_json::from_value(sup.call(Request::Run { unit: spec }).unwrap()).unwrap();
    assert_eq!(format!("{:?}", st.state), "Waiting");
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        sup.status("vmm:200").pid.is_none(),
        "started before the gate"
    );
    std::fs::write(sup.path("gate"), "").unwrap();
    sup.wait_for("transient unit running", |s| {
        s.status("vmm:200").pid.is_some()
    });
    sup.shutdown();
}

#[test]
fn settled_only_once_every_service_is_ready() {
    // `slow` becomes ready about a second after it starts; `fast` at once.
    let sup = Sup::start_with(
        "[[service]]\nname = \"fast\"\nexec = [\"/bin/sleep\", \"1000\"]\n\
         [[service]]\nname = \"slow\"\n\
         exec = [\"/bin/sh\", \"-c\", \"sleep 1; touch @DIR@/slow.ready; exec sleep 1000\"]\n\
         ready = { file = \"@DIR@/slow.ready\" }\n",
        &["--settled", "@DIR@/settled"],
    );
    sup.wait_for("fast running", |s| {
        format!("{:?}", s.status("fast").state) == "Running"
    });
    if format!("{:?}", sup.status("slow").state) != "Running" {
        assert!(
            !sup.path("settled").exists(),
            "settled while `slow` was still starting"
        );
    }
    sup.wait_for("settled", |s| s.path("settled").exists());
    assert_eq!(format!("{:?}", sup.status("slow").state), "Running");
    sup.shutdown();
}

#[test]
fn stop_escalates_to_kill_after_timeout() {
    let sup = Sup::start(
        r#"
[[service]]
name = "stubborn"
exec = ["/bin/sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
stop_timeout = 1
"#,
    );
    sup.wait_for("running", |s| s.status("stubborn").pid.is_some());
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let out = sup.shutdown();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(out.contains("did not stop in 1 s: killing it"), "{out}");
}

#[test]
fn malformed_table_still_runs_the_supervisor() {
    let sup = Sup::start("[[service]\nname=");
    assert_eq!(sup.call(Request::Ping).unwrap(), serde_json::json!("pong"));
    let out = sup.shutdown();
    assert!(out.contains("not valid TOML"), "{out}");
}

#[test]
fn oxctl_client() {
    let sup = Sup::start("[[service]]\nname = \"svc\"\nexec = [\"/bin/sleep\", \"1000\"]\n");
    sup.wait_for("running", |s| s.status("svc").pid.is_some());
    let out = Command::new(env!("CARGO_BIN_EXE_init"))
        .args(["ctl", "--socket"])
        .arg(&sup.socket)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"svc\""));
    let out = Command::new(env!("CARGO_BIN_EXE_init"))
        .args(["ctl", "--socket"])
        .arg(&sup.socket)
        .args(["status", "ghost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such unit"));
    sup.shutdown();
}

/// The supervisor's voluntary context switches so far, all threads.
fn wakeups(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[test]
fn sleeps_while_nothing_is_due() {
    let sup = Sup::start(
        r#"
[[service]]
name = "idle"
exec = ["/bin/sleep", "1000"]
"#,
    );
    sup.wait_for("idle running", |s| {
        format!("{:?}", s.status("idle").state) == "Running"
    });
    // Let the status calls' connections close.
    std::thread::sleep(Duration::from_millis(300));
    let pid = sup.child.id();
    let before = wakeups(pid);
    std::thread::sleep(Duration::from_millis(1500));
    let woke = wakeups(pid) - before;
    // A timer tick would wake it 15 times; an idle PID 1 sleeps.
    assert!(woke <= 1, "the idle supervisor woke {woke} times in 1.5 s");
    // Still answers at once, and restarts what fails on time.
    sup.call(Request::Kill {
        unit: "idle".into(),
        signal: "KILL".into(),
    })
    .unwrap();
    sup.wait_for("idle restarted", |s| {
        format!("{:?}", s.status("idle").state) == "Running" && s.status("idle").restarts == 1
    });
    sup.shutdown();
}
