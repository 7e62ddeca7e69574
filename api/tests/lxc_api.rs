//! apid's container endpoints over real HTTPS, with a real init supervisor
//! (`init supervise`) running the real `ctr` monitor as unit `ctr:<vmid>`:
//! create from a template (busybox-static as its userland), config,
//! start, status, apid restarted while the container runs on, shutdown,
//! destroy; and refusals that leave nothing behind.
//!
//! Needs root, the kernel's namespaces and busybox-static, and the `init`
//! and `ctr` binaries of this workspace (`cargo test --workspace` builds
//! them). Skipped with a message otherwise, except under `make test`
//! (`OXBOW_NO_SKIP`), where that is a failure.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

mod common;

use common::{send, write_root_password, RunningServer, Session, NODE, PASSWORD};

const BUSYBOX: &str = "/bin/busybox";
const TEMPLATE: &str = "tiny-1.0_amd64.tar.zst";

/// The workspace's binaries, next to this test's executable.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some("needs busybox-static (scripts/install-deps.sh)".into());
    }
    for b in ["init", "ctr"] {
        if !workspace_binary(b).is_file() {
            return Some(format!(
                "needs the {b} binary: cargo build -p {b} (or cargo test --workspace)"
            ));
        }
    }
    None
}

/// init's supervisor as a process, with its control socket.
struct Supervisor {
    child: Child,
    socket: PathBuf,
}

impl Supervisor {
    fn start(dir: &Path) -> Supervisor {
        std::fs::write(dir.join("services.toml"), "").unwrap();
        let socket = dir.join("init.sock");
        let child = Command::new(workspace_binary("init"))
            .args(["supervise", "--table"])
            .arg(dir.join("services.toml"))
            .arg("--socket")
            .arg(&socket)
            .arg("--log-dir")
            .arg(dir.join("log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < end, "init's control socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        Supervisor { child, socket }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A template whose init says it is up and exits on SIGPWR.
fn make_template(vztmpl: &Path) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "root", "run",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "hostname", "cat"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    let init = "#!/bin/sh\ntrap 'echo TINY-CT down; exit 0' PWR\n\
                echo \"TINY-CT up $(hostname)\"\n\
                while :; do sleep 1 & wait $!; done\n";
    std::fs::write(r.join("sbin/init"), init).unwrap();
    let mut perms = std::fs::metadata(r.join("sbin/init"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(r.join("sbin/init"), perms).unwrap();
    std::fs::create_dir_all(vztmpl).unwrap();
    ctr::template::pack_dir(r, &vztmpl.join(TEMPLATE), 3).unwrap();
}

async fn server(state: &Path, init_socket: &Path) -> RunningServer {
    let (socket, run) = (init_socket.to_path_buf(), state.join("run"));
    let ctr = workspace_binary("ctr");
    RunningServer::start_configured(state, move |config| {
        config.init_socket = socket;
        config.run_dir = run;
        config.ctr_binary = ctr;
    })
    .await
}

async fn put(
    root: &Session,
    server: &RunningServer,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    send(root.request(server, Method::PUT, path).form(form)).await
}

async fn delete(root: &Session, server: &RunningServer, path: &str) -> (StatusCode, Value) {
    send(root.request(server, Method::DELETE, path)).await
}

/// Runs a task and asserts it ended `OK`.
async fn task_ok(root: &Session, server: &RunningServer, what: &str, answer: (StatusCode, Value)) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    let upid = body["data"].as_str().unwrap();
    let exit = root.wait_task(server, upid).await;
    if exit != "OK" {
        let (_, log) = root
            .get(server, &format!("/nodes/{NODE}/tasks/{upid}/log?limit=100"))
            .await;
        panic!("{what}: {exit}\n{log}");
    }
}

async fn wait_status(root: &Session, server: &RunningServer, vmid: u32, want: &str) -> Value {
    let path = format!("/nodes/{NODE}/lxc/{vmid}/status/current");
    for _ in 0..200 {
        let (status, body) = root.get(server, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["data"]["status"] == want {
            return body["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("CT {vmid} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_through_its_life_over_the_api() {
    if let Some(why) = skip_reason() {
        if std::env::var_os("OXBOW_NO_SKIP").is_some() {
            panic!("cannot run: {why} (OXBOW_NO_SKIP is set)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    write_root_password(st, PASSWORD);
    make_template(&st.join("vz/template/cache"));
    let sup = Supervisor::start(st);
    let server = server(st, &sup.socket).await;
    let root = Session::new(&server, "root@pam", PASSWORD).await;
    let lxc = format!("/nodes/{NODE}/lxc");
    let ostemplate = format!("local:vztmpl/{TEMPLATE}");

    // Refusals: nothing is created.
    let bad: &[(&[(&str, &str)], &str)] = &[
        (
            &[("unprivileged", "0"), ("rootfs", "local:1")],
            "unprivileged",
        ),
        (&[], "rootfs"),
        (&[("rootfs", "nowhere:1")], "rootfs"),
        (&[("rootfs", "local:1"), ("memory", "8")], "memory"),
        (&[("rootfs", "local:1"), ("password", "abc")], "password"),
    ];
    for (extra, param) in bad {
        let mut form: Vec<(&str, &str)> = vec![("vmid", "200"), ("ostemplate", &ostemplate)];
        form.extend_from_slice(extra);
        let (status, body) = root.post_form(&server, &lxc, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra:?}: {body}");
        assert!(body["errors"][*param].is_string(), "{extra:?}: {body}");
    }
    for template in ["local:vztmpl/missing.tar.zst", "local:iso/x.iso"] {
        let form = [
            ("vmid", "200"),
            ("ostemplate", template),
            ("rootfs", "local:1"),
        ];
        let (status, body) = root.post_form(&server, &lxc, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{template}: {body}");
    }
    assert!(!st.join("lxc/200.conf").exists());
    assert!(!st.join("vz/images/200").exists());

    // Create.
    let form = [
        ("vmid", "200"),
        ("ostemplate", ostemplate.as_str()),
        ("rootfs", "local:1"),
        ("hostname", "tiny"),
        ("memory", "128"),
        ("swap", "0"),
        ("password", "tiny-secret"),
        (
            "ssh-public-keys",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxbow test@oxbow",
        ),
    ];
    task_ok(
        &root,
        &server,
        "create",
        root.post_form(&server, &lxc, &form).await,
    )
    .await;
    let (_, config) = root.get(&server, &format!("{lxc}/200/config")).await;
    let config = &config["data"];
    assert_eq!(config["hostname"], "tiny");
    assert_eq!(
        config["rootfs"],
        "local:200/subvol-200-disk-0.subvol,size=1G"
    );
    assert_eq!(config["unprivileged"], 1);
    assert_eq!(config["memory"], 128);
    assert!(st.join("lxc/200.conf").is_file());
    let rootfs = st.join("vz/images/200/subvol-200-disk-0.subvol");
    assert_eq!(
        std::fs::metadata(rootfs.join("sbin/init")).unwrap().uid(),
        100_000
    );
    let shadow = std::fs::read_to_string(rootfs.join("etc/shadow")).unwrap();
    assert!(shadow.starts_with("root:$6$"), "{shadow}");
    let keys = std::fs::read_to_string(rootfs.join("root/.ssh/authorized_keys")).unwrap();
    assert!(keys.contains("test@oxbow"), "{keys}");
    // The VMID is taken for VMs too.
    let (status, _) = root
        .post_form(&server, &format!("/nodes/{NODE}/qemu"), &[("vmid", "200")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, next) = root.get(&server, "/cluster/nextid?vmid=200").await;
    assert!(next["errors"]["vmid"].is_string(), "{next}");

    // Config changes; a stale digest is refused.
    let (status, body) = put(
        &root,
        &server,
        &format!("{lxc}/200/config"),
        &[("cores", "2")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = put(
        &root,
        &server,
        &format!("{lxc}/200/config"),
        &[
            ("cores", "1"),
            ("digest", "0000000000000000000000000000000000000000"),
        ],
    )
    .await;
    assert_ne!(status, StatusCode::OK);

    // Start: the monitor runs as init's unit, the guest's init says so.
    task_ok(
        &root,
        &server,
        "start",
        root.post_form(&server, &format!("{lxc}/200/status/start"), &[])
            .await,
    )
    .await;
    let current = wait_status(&root, &server, 200, "running").await;
    assert!(current["pid"].as_i64().unwrap_or(0) > 1, "{current}");
    let console = st.join("run/ct-200.console.log");
    let end = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("TINY-CT up tiny")
    {
        assert!(
            Instant::now() < end,
            "the container's init never said it was up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, list) = root.get(&server, &lxc).await;
    assert_eq!(list["data"][0]["status"], "running", "{list}");
    let (_, resources) = root.get(&server, "/cluster/resources?type=vm").await;
    let entry = resources["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "lxc/200")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (entry["type"].as_str(), entry["status"].as_str()),
        (Some("lxc"), Some("running")),
        "{resources}"
    );
    let (status, _) = delete(&root, &server, &format!("{lxc}/200")).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "a running container is not destroyed"
    );

    // apid goes away and comes back: the container runs on.
    server.stop().await;
    let server = self::server(st, &sup.socket).await;
    let root = Session::new(&server, "root@pam", PASSWORD).await;
    let again = wait_status(&root, &server, 200, "running").await;
    assert_eq!(again["pid"], current["pid"], "the container was restarted");

    // Shutdown: SIGPWR to the guest's init, which exits.
    task_ok(
        &root,
        &server,
        "shutdown",
        root.post_form(
            &server,
            &format!("{lxc}/200/status/shutdown"),
            &[("timeout", "20")],
        )
        .await,
    )
    .await;
    wait_status(&root, &server, 200, "stopped").await;
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(console_text.contains("TINY-CT down"), "{console_text}");

    // Destroy: config and root directory are gone.
    task_ok(
        &root,
        &server,
        "destroy",
        delete(&root, &server, &format!("{lxc}/200")).await,
    )
    .await;
    assert!(!st.join("lxc/200.conf").exists());
    assert!(!rootfs.exists());
    let (status, _) = root.get(&server, &format!("{lxc}/200/config")).await;
    assert_ne!(status, StatusCode::OK);
    server.stop().await;
}
