//! apid's `/nodes/{node}/network` over real HTTPS, inside a fresh network
//! namespace (server and client both run there): the management bridge
//! made "at boot" described from the kernel, edits staged in
//! `interfaces.new` (a bad one refused with its line), revert, and an
//! apply that creates the bridge in the kernel, plans nothing on `vmbr0`
//! and ends confirmed because the management address answers.
//!
//! Needs root and iproute2; skipped with a message otherwise, except
//! under `make test` (`OXBOW_NO_SKIP`), where that is a failure.

use std::path::Path;

use netns_fixture::{is_root, run, Netns};
use reqwest::{Method, StatusCode};
use serde_json::Value;

mod common;

use common::{write_root_password, RunningServer, Session, NODE, PASSWORD};

fn skip() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var_os("OXBOW_NO_SKIP").is_none(),
        "network_api needs root"
    );
    eprintln!("skipped: needs root");
    true
}

/// The node namespace with `vmbr0` as netd leaves it at boot (port
/// `eth0`, 192.0.2.10/24, default route via the peer's 192.0.2.1) and a
/// spare NIC `eth1`.
fn node_with_management_bridge() -> (Netns, Netns) {
    let node = Netns::new("apid-net");
    let peer = Netns::new("apid-netp");
    for (nic, up) in [("eth0", "up0"), ("eth1", "up1")] {
        run(std::process::Command::new("ip").args([
            "link", "add", nic, "netns", &node.name, "type", "veth", "peer", "name", up, "netns",
            &peer.name,
        ]));
        peer.ip(&["link", "set", up, "up"]);
    }
    peer.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
    node.ip(&["link", "add", "vmbr0", "type", "bridge"]);
    node.ip(&["link", "set", "vmbr0", "alias", "oxbow:netd"]);
    node.ip(&["link", "set", "eth0", "master", "vmbr0"]);
    node.ip(&["link", "set", "eth0", "up"]);
    node.ip(&["link", "set", "vmbr0", "up"]);
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "vmbr0"]);
    node.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.1",
        "dev",
        "vmbr0",
        "proto",
        "static",
    ]);
    (node, peer)
}

fn in_runtime<R: Send>(ns: &Netns, f: impl AsyncFnOnce() -> R + Send) -> R {
    ns.enter(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

fn find<'a>(list: &'a Value, iface: &str) -> &'a Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["iface"] == iface)
        .unwrap_or_else(|| panic!("{iface} not listed: {list}"))
}

async fn task_log(s: &Session, server: &RunningServer, upid: &str) -> Vec<String> {
    let (_, log) = s
        .get(server, &format!("/nodes/{NODE}/tasks/{upid}/log?limit=500"))
        .await;
    log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["t"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn network_edits_are_staged_reverted_and_applied() {
    if skip() {
        return;
    }
    let (node, _peer) = node_with_management_bridge();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    write_root_password(&state, PASSWORD);
    let interfaces = state.join("network/interfaces");
    let staged = state.join("network/interfaces.new");
    in_runtime(&node, async || {
        let server = RunningServer::start(&state).await;
        let s = Session::new(&server, "root@pam", PASSWORD).await;
        let base = format!("/nodes/{NODE}/network");

        // No interfaces file yet: vmbr0 is described from the kernel.
        let (status, list) = s.get(&server, &base).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let vmbr0 = find(&list, "vmbr0");
        assert_eq!(vmbr0["type"], "bridge");
        assert_eq!(vmbr0["cidr"], "192.0.2.10/24");
        assert_eq!(vmbr0["netmask"], "255.255.255.0");
        assert_eq!(vmbr0["gateway"], "192.0.2.1");
        assert_eq!(vmbr0["bridge_ports"], "eth0");
        assert_eq!(vmbr0["active"], 1);
        assert_eq!(vmbr0["autostart"], 1);
        assert!(list.get("changes").is_none(), "{list}");
        let (_, bridges) = s.get(&server, &format!("{base}?type=any_bridge")).await;
        assert!(bridges["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "bridge"));

        // A bad edit: 400 naming the line, nothing staged.
        let (status, body) = s
            .form(
                &server,
                Method::POST,
                &base,
                &[
                    ("iface", "vmbr1"),
                    ("type", "bridge"),
                    ("bridge_ports", "nosuch0"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let why = body["errors"]["iface"].as_str().unwrap();
        assert!(why.contains("line ") && why.contains("nosuch0"), "{why}");
        assert!(!staged.exists());

        // Create (form-encoded, as proxmoxer sends it), read, update.
        let (status, body) = s
            .form(
                &server,
                Method::POST,
                &base,
                &[
                    ("iface", "vmbr1"),
                    ("type", "bridge"),
                    ("bridge_ports", "eth1"),
                    ("cidr", "198.51.100.1/24"),
                    ("autostart", "1"),
                    ("comments", "lab"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(staged.exists());
        let (_, list) = s.get(&server, &base).await;
        let changes = list["changes"].as_str().unwrap();
        assert!(changes.contains("+iface vmbr1 inet static"), "{changes}");
        let (_, one) = s.get(&server, &format!("{base}/vmbr1")).await;
        assert_eq!(one["data"]["cidr"], "198.51.100.1/24");
        assert_eq!(one["data"]["comments"], "lab\n");
        assert!(one["data"].get("exists").is_none());
        let (status, body) = s
            .form(
                &server,
                Method::PUT,
                &format!("{base}/vmbr1"),
                &[("type", "bridge"), ("mtu", "1400"), ("delete", "comments")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, one) = s.get(&server, &format!("{base}/vmbr1")).await;
        assert_eq!(one["data"]["mtu"], 1400);
        assert!(one["data"].get("comments").is_none());
        let (status, _) = s
            .form(
                &server,
                Method::PUT,
                &format!("{base}/vmbr1"),
                &[("type", "bond")],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Revert drops everything staged.
        let (status, _) = s.form(&server, Method::DELETE, &base, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!staged.exists());
        let (_, list) = s.get(&server, &base).await;
        assert!(list.get("changes").is_none());

        // Stage vmbr1 and vmbr2, drop vmbr2 again, apply.
        for (name, cidr) in [("vmbr1", "198.51.100.1/24"), ("vmbr2", "203.0.113.1/24")] {
            let (status, body) = s
                .form(
                    &server,
                    Method::POST,
                    &base,
                    &[("iface", name), ("type", "bridge"), ("cidr", cidr)],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, _) = s
            .form(&server, Method::DELETE, &format!("{base}/vmbr2"), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = s
            .form(&server, Method::DELETE, &format!("{base}/vmbr0"), &[])
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "the management bridge stays"
        );
        let (status, body) = s.form(&server, Method::PUT, &base, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let upid = body["data"].as_str().unwrap().to_owned();
        assert!(upid.contains(":srvreload:networking:root@pam:"), "{upid}");
        let exit = s.wait_task(&server, &upid).await;
        let log = task_log(&s, &server, &upid).await;
        assert_eq!(exit, "OK", "{log:?}");
        assert!(
            !log.iter().any(|l| l.contains("vmbr0")
                && !l.contains("management address")
                && !l.contains("does not exist")),
            "an apply of the unchanged vmbr0 must not touch it: {log:?}"
        );
        assert!(
            log.iter().any(|l| l.contains("create bridge vmbr1")),
            "{log:?}"
        );
        assert!(
            log.iter().any(|l| l.contains("change confirmed")),
            "{log:?}"
        );
        server.stop().await;
    });
    // The kernel has the new bridge; vmbr0 kept its port and address.
    let vmbr1 = node.link("vmbr1").expect("vmbr1 was created");
    assert_eq!(vmbr1["linkinfo"]["info_kind"], "bridge");
    let addrs = node.ip(&["-4", "addr", "show", "dev", "vmbr1"]);
    assert!(addrs.contains("198.51.100.1/24"), "{addrs}");
    assert!(node.link("vmbr2").is_none());
    let eth0 = node.link("eth0").unwrap();
    assert_eq!(eth0["master"], "vmbr0");
    let addrs = node.ip(&["-4", "addr", "show", "dev", "vmbr0"]);
    assert!(addrs.contains("192.0.2.10/24"), "{addrs}");
    // The live file now describes both bridges; nothing waits for a
    // confirmation.
    let live = std::fs::read_to_string(&interfaces).unwrap();
    assert!(
        live.contains("iface vmbr0 inet static") && live.contains("iface vmbr1"),
        "{live}"
    );
    assert!(!staged.exists());
    assert!(!Path::new(&format!("{}.pending", interfaces.display())).exists());
}
