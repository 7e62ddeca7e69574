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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

mod common;

use common::{
    send, workspace_binary, write_root_password, RunningServer, Session, Supervisor, NODE, PASSWORD,
};

const BUSYBOX: &str = "/bin/busybox";
const TEMPLATE: &str = "tiny-1.0_amd64.tar.zst";

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

/// A template whose init says it is up and exits on SIGPWR.
fn make_template(vztmpl: &Path) {
    let init = "#!/bin/sh\ntrap 'echo TINY-CT down; exit 0' PWR\n\
                echo \"TINY-CT up $(hostname)\"\n\
                while :; do sleep 1 & wait $!; done\n";
    make_template_with(vztmpl, TEMPLATE, init);
}

/// A busybox template named `name` with `init` as its `/sbin/init`.
fn make_template_with(vztmpl: &Path, name: &str, init: &str) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "root", "run",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "hostname", "cat", "ip"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(r.join("sbin/init"), init).unwrap();
    let mut perms = std::fs::metadata(r.join("sbin/init"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(r.join("sbin/init"), perms).unwrap();
    std::fs::create_dir_all(vztmpl).unwrap();
    ctr::template::pack_dir(r, &vztmpl.join(name), 3).unwrap();
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

/// The logs of init's units and the container's console, for a failure.
fn unit_logs(state: &Path, vmid: u32) -> String {
    let mut out = String::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(state.join("log"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.push(state.join(format!("run/ct-{vmid}.console.log")));
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        out.push_str(&format!("--- {}\n{text}\n", p.display()));
    }
    out
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

    // A start that fails (the root has no init) fails its task with how
    // the monitor ended, as Proxmox's does, and leaves the container
    // stopped.
    let (init_path, away) = (rootfs.join("sbin/init"), rootfs.join("sbin/init.away"));
    std::fs::rename(&init_path, &away).unwrap();
    let (status, body) = root
        .post_form(&server, &format!("{lxc}/200/status/start"), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exit = root
        .wait_task(&server, body["data"].as_str().unwrap())
        .await;
    assert!(
        exit.contains("CT 200 failed to start: its process exited with status 1"),
        "{exit}"
    );
    wait_status(&root, &server, 200, "stopped").await;
    std::fs::rename(&away, &init_path).unwrap();

    // Start: the monitor runs as init's unit, the guest's init says so;
    // the task ends once the guest's init runs.
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

/// The init of the firewall test's container: its address, then wait.
const FW_INIT: &str = "#!/bin/sh\ntrap 'exit 0' PWR\n\
                       ip link set lo up\nip addr add 10.77.0.10/24 dev eth0\n\
                       ip link set eth0 up\necho FW-CT up\n\
                       while :; do sleep 1 & wait $!; done\n";

/// A container whose `net0` has `firewall=1`, inside a network namespace
/// of its own with a bridge and a client on it: with the guest's firewall
/// on and `policy_in: DROP` the client's pings are dropped at the
/// container's port; a `Ping(ACCEPT)` rule added while it runs lets them
/// through; the same container without `firewall=1` is not filtered.
/// Its `net0` got a MAC at creation and keeps it when changed.
#[test]
fn a_firewalled_container_port_follows_the_guest_rules() {
    if let Some(why) = skip_reason() {
        if std::env::var_os("OXBOW_NO_SKIP").is_some() {
            panic!("cannot run: {why} (OXBOW_NO_SKIP is set)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let ns = netns_fixture::Netns::new("apid-ctfw");
    let client = netns_fixture::Netns::new("apid-ctfw-client");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    ns.ip(&["link", "add", "br1", "type", "bridge"]);
    ns.ip(&["link", "set", "br1", "up"]);
    ns.ip(&[
        "link",
        "add",
        "cl0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    ns.ip(&["link", "set", "cl0", "master", "br0", "up"]);
    client.ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    let ping = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &client.name,
                "ping",
                "-c1",
                "-W1",
                "10.77.0.10",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // Up to 10 tries when it should pass (the port needs a moment to
    // forward after it joins), 3 when it should not.
    let reachable = || (0..10).any(|_| ping());
    let unreachable = || !(0..3).any(|_| ping());

    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    write_root_password(st, PASSWORD);
    make_template_with(
        &st.join("vz/template/cache"),
        "fw-1.0_amd64.tar.zst",
        FW_INIT,
    );
    ns.enter(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let sup = Supervisor::start(st);
                let server = server(st, &sup.socket).await;
                let root = Session::new(&server, "root@pam", PASSWORD).await;
                let lxc = format!("/nodes/{NODE}/lxc");
                for (path, form) in [("/cluster/firewall/options", vec![("enable", "1")])] {
                    let (status, body) = put(&root, &server, path, &form).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
                let form = [
                    ("vmid", "300"),
                    ("ostemplate", "local:vztmpl/fw-1.0_amd64.tar.zst"),
                    ("rootfs", "local:1"),
                    ("hostname", "fw"),
                    ("net0", "name=eth0,bridge=br0,ip=10.77.0.10/24,firewall=1"),
                ];
                task_ok(
                    &root,
                    &server,
                    "create",
                    root.post_form(&server, &lxc, &form).await,
                )
                .await;
                let (status, body) = put(
                    &root,
                    &server,
                    &format!("{lxc}/300/firewall/options"),
                    &[("enable", "1"), ("policy_in", "DROP")],
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let hwaddr = |config: &Value| {
                    let net0 = config["data"]["net0"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    net0.split(',')
                        .find_map(|p| p.strip_prefix("hwaddr="))
                        .map(str::to_owned)
                        .unwrap_or_else(|| panic!("no hwaddr given: {net0}"))
                };
                let start = format!("{lxc}/300/status/start");
                task_ok(
                    &root,
                    &server,
                    "start",
                    root.post_form(&server, &start, &[]).await,
                )
                .await;
                let mut running = false;
                for _ in 0..200 {
                    let (_, now) = root
                        .get(&server, &format!("{lxc}/300/status/current"))
                        .await;
                    if now["data"]["status"] == "running" {
                        running = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(running, "CT 300 did not run:\n{}", unit_logs(st, 300));
                let (_, config) = root.get(&server, &format!("{lxc}/300/config")).await;
                let mac = hwaddr(&config);
                let console = st.join("run/ct-300.console.log");
                let end = Instant::now() + Duration::from_secs(20);
                while !std::fs::read_to_string(&console)
                    .unwrap_or_default()
                    .contains("FW-CT up")
                {
                    assert!(Instant::now() < end, "the container never came up");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let ruleset = ns.exec("nft", &["list", "ruleset"]);
                assert!(ruleset.contains("veth300i0"), "{ruleset}");
                assert!(unreachable(), "policy_in DROP let a ping through");

                // A rule added while the container runs applies at once.
                let (status, body) = root
                    .post_form(
                        &server,
                        &format!("{lxc}/300/firewall/rules"),
                        &[
                            ("type", "in"),
                            ("action", "ACCEPT"),
                            ("macro", "Ping"),
                            ("enable", "1"),
                        ],
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(reachable(), "Ping(ACCEPT) did not let the ping through");
                let (status, body) =
                    delete(&root, &server, &format!("{lxc}/300/firewall/rules/0")).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(unreachable(), "the rule's removal did not apply");

                // Without firewall=1 the port is not the firewall's.
                let stop = format!("{lxc}/300/status/stop");
                task_ok(
                    &root,
                    &server,
                    "stop",
                    root.post_form(&server, &stop, &[]).await,
                )
                .await;
                wait_status(&root, &server, 300, "stopped").await;
                let (status, body) = put(
                    &root,
                    &server,
                    &format!("{lxc}/300/config"),
                    &[("net0", "name=eth0,bridge=br0,ip=10.77.0.10/24,firewall=0")],
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (_, config) = root.get(&server, &format!("{lxc}/300/config")).await;
                assert_eq!(hwaddr(&config), mac, "a changed net0 keeps its MAC");
                let _ = std::fs::remove_file(&console);
                task_ok(
                    &root,
                    &server,
                    "start",
                    root.post_form(&server, &start, &[]).await,
                )
                .await;
                let end = Instant::now() + Duration::from_secs(20);
                while !std::fs::read_to_string(&console)
                    .unwrap_or_default()
                    .contains("FW-CT up")
                {
                    assert!(Instant::now() < end, "the container never came up again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Any change recompiles with the running guests' ports.
                let (status, body) = put(
                    &root,
                    &server,
                    &format!("{lxc}/300/firewall/options"),
                    &[("policy_in", "DROP")],
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(
                    reachable(),
                    "a port without firewall=1 was filtered: {}",
                    ns.exec("nft", &["list", "ruleset"])
                );

                // net0 changed while the container runs: its port at once.
                let config_path = format!("{lxc}/300/config");
                let set_net0 =
                    async |net0: &str| put(&root, &server, &config_path, &[("net0", net0)]).await;
                let port = || ns.link("veth300i0").expect("the container's port");
                let is_up = |link: &Value| {
                    link["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f == "UP"))
                };
                let (status, body) =
                    set_net0("name=eth0,bridge=br0,ip=10.77.0.10/24,link_down=1").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(!is_up(&port()), "link_down=1 left the port up");
                assert!(unreachable(), "a pulled cable let a ping through");
                let (status, body) = set_net0("name=eth0,bridge=br0,ip=10.77.0.10/24").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(is_up(&port()));
                assert!(reachable(), "the cable plugged back in: no answer");
                // A bridge that is not there: refused, nothing changed.
                let (status, body) = set_net0("name=eth0,bridge=br9,ip=10.77.0.10/24").await;
                assert_ne!(status, StatusCode::OK, "{body}");
                let (_, config) = root.get(&server, &config_path).await;
                assert!(
                    config["data"]["net0"]
                        .as_str()
                        .is_some_and(|n| n.contains("bridge=br0")),
                    "{config}"
                );
                assert_eq!(port()["master"], "br0");
                // Another bridge, away from the client; back, under the
                // firewall (policy_in DROP) from that moment.
                let (status, body) = set_net0("name=eth0,bridge=br1,ip=10.77.0.10/24").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(port()["master"], "br1");
                assert!(unreachable(), "the port left br0 but still answers");
                let (status, body) =
                    set_net0("name=eth0,bridge=br0,ip=10.77.0.10/24,firewall=1").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(port()["master"], "br0");
                assert!(
                    unreachable(),
                    "firewall=1 set while running did not filter: {}",
                    ns.exec("nft", &["list", "ruleset"])
                );
                let (status, body) =
                    set_net0("name=eth0,bridge=br0,ip=10.77.0.10/24,firewall=0").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(reachable(), "firewall=0 set while running still filters");
                let (_, config) = root.get(&server, &config_path).await;
                assert_eq!(hwaddr(&config), mac, "the live changes kept the MAC");
                task_ok(
                    &root,
                    &server,
                    "stop",
                    root.post_form(&server, &stop, &[]).await,
                )
                .await;
                server.stop().await;
            })
    });
}
