//! `POST /nodes/{node}/qemu/{vmid}/template` over real HTTPS, with a real
//! init supervisor (`init supervise`), so apid knows the VM is stopped: the
//! disk image becomes a read-only base image, the VM a template that does
//! not start and is cloned (full clones) with its data, and is destroyed
//! with its base image.
//!
//! Needs the `init` binary of this workspace (`cargo test --workspace`
//! builds it). Skipped with a message otherwise, except under `make test`
//! (`OXBOW_NO_SKIP`), where that is a failure.

use std::os::unix::fs::PermissionsExt;

use reqwest::{Method, StatusCode};
use serde_json::Value;

mod common;

use common::{RunningServer, Session, NODE};

/// Starts a task and waits for it; returns its UPID and exit status.
async fn task(
    root: &Session,
    server: &RunningServer,
    answer: (StatusCode, Value),
) -> (String, String) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{body}");
    let upid = body["data"].as_str().unwrap().to_string();
    let exit = root.wait_task(server, &upid).await;
    (upid, exit)
}

/// The first 12 bytes of a file.
fn head(path: &std::path::Path) -> [u8; 12] {
    let mut buf = [0; 12];
    std::io::Read::read_exact(&mut std::fs::File::open(path).unwrap(), &mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_becomes_a_template_that_is_cloned_not_started() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    let Some((_init, server, root)) = common::server_with_init(st).await else {
        return;
    };
    let qemu = format!("/nodes/{NODE}/qemu");
    let form = [
        ("vmid", "100"),
        ("name", "golden"),
        ("memory", "256"),
        ("virtio0", "local:1"),
        ("ide2", "none,media=cdrom"),
    ];
    let (_, exit) = task(&root, &server, root.post_form(&server, &qemu, &form).await).await;
    assert_eq!(exit, "OK");
    let image = st.join("vz/images/100/vm-100-disk-0.raw");
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap(),
        b"GOLDEN-IMAGE",
    )
    .unwrap();

    // Refused first: a disk that is not there, a CD drive.
    for disk in ["virtio3", "ide2", "net0"] {
        let (status, body) = root
            .post_form(&server, &format!("{qemu}/100/template"), &[("disk", disk)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{disk}: {body}");
        assert!(body["errors"]["disk"].is_string(), "{disk}: {body}");
    }
    assert!(image.is_file());

    let (_, exit) = task(
        &root,
        &server,
        root.post_form(&server, &format!("{qemu}/100/template"), &[])
            .await,
    )
    .await;
    assert_eq!(exit, "OK");
    let base = st.join("vz/images/100/base-100-disk-0.raw");
    assert!(!image.exists());
    assert_eq!(&head(&base), b"GOLDEN-IMAGE");
    assert_eq!(
        std::fs::metadata(&base).unwrap().permissions().mode() & 0o777,
        0o444
    );
    let (_, config) = root.get(&server, &format!("{qemu}/100/config")).await;
    let config = &config["data"];
    assert_eq!(config["template"], 1);
    assert_eq!(config["virtio0"], "local:100/base-100-disk-0.raw,size=1G");
    assert_eq!(config["ide2"], "none,media=cdrom");
    let (_, list) = root.get(&server, &qemu).await;
    assert_eq!(list["data"][0]["template"], 1, "{list}");
    let (_, resources) = root.get(&server, "/cluster/resources?type=vm").await;
    assert_eq!(resources["data"][0]["template"], 1, "{resources}");

    // A template does not start, is not made a template again and its
    // base image does not grow; a linked clone is refused.
    let (status, body) = root
        .post_form(&server, &format!("{qemu}/100/status/start"), &[])
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status, _) = root
        .post_form(&server, &format!("{qemu}/100/template"), &[])
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, body) = root
        .form(
            &server,
            Method::PUT,
            &format!("{qemu}/100/resize"),
            &[("disk", "virtio0"), ("size", "+1G")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = root
        .post_form(
            &server,
            &format!("{qemu}/100/clone"),
            &[("newid", "101"), ("full", "0")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A clone without `full`: Proxmox would link it; Oxbow copies, says
    // so, and the copy is an ordinary VM.
    let (upid, exit) = task(
        &root,
        &server,
        root.post_form(
            &server,
            &format!("{qemu}/100/clone"),
            &[("newid", "101"), ("name", "web1")],
        )
        .await,
    )
    .await;
    assert_eq!(exit, "OK");
    let (_, log) = root
        .get(&server, &format!("/nodes/{NODE}/tasks/{upid}/log"))
        .await;
    assert!(
        log.to_string().contains("making a full clone"),
        "clone log: {log}"
    );
    let (_, copy) = root.get(&server, &format!("{qemu}/101/config")).await;
    let copy = &copy["data"];
    assert!(copy.get("template").is_none(), "{copy}");
    assert_eq!(copy["virtio0"], "local:101/vm-101-disk-0.raw,size=1G");
    let copy_image = st.join("vz/images/101/vm-101-disk-0.raw");
    assert_eq!(&head(&copy_image), b"GOLDEN-IMAGE");
    assert_eq!(
        std::fs::metadata(&copy_image).unwrap().permissions().mode() & 0o222,
        0o200,
        "the copy is writable"
    );

    // Destroyed with its base image.
    let (_, exit) = task(
        &root,
        &server,
        root.form(&server, Method::DELETE, &format!("{qemu}/100"), &[])
            .await,
    )
    .await;
    assert_eq!(exit, "OK");
    assert!(!base.exists());
    assert!(copy_image.is_file());
    server.stop().await;
}
