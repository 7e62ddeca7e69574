//! `PUT /nodes/{node}/qemu/{vmid}/resize` over real HTTPS, with a real
//! init supervisor (`init supervise`), so apid knows the VM is stopped:
//! the image grows sparsely with its data kept, `size=` follows, the same
//! size changes nothing, and what cannot be done is refused before
//! anything changes. (A running VM's guest seeing the new size is proven
//! in the appliance, `qemu-tests/tests/api_proxmoxer.rs`.)
//!
//! Needs the `init` binary of this workspace (`cargo test --workspace`
//! builds it). Skipped with a message otherwise, except under `make test`
//! (`OXBOW_NO_SKIP`), where that is a failure.

use std::os::unix::fs::MetadataExt;

use reqwest::{Method, StatusCode};
use serde_json::Value;

mod common;

use common::{RunningServer, Session, NODE};

async fn task(root: &Session, server: &RunningServer, answer: (StatusCode, Value)) -> String {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{body}");
    root.wait_task(server, body["data"].as_str().unwrap()).await
}

/// VM 100's configuration.
async fn config(root: &Session, server: &RunningServer) -> Value {
    let path = format!("/nodes/{NODE}/qemu/100/config");
    root.get(server, &path).await.1["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vms_disk_grows_and_never_shrinks() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    let Some((_init, server, root)) = common::server_with_init(st).await else {
        return;
    };
    let qemu = format!("/nodes/{NODE}/qemu");
    let resize = format!("{qemu}/100/resize");

    // A 1 GiB disk with data at its start, a CD drive, a disk on a host path.
    let host_disk = st.join("host.raw");
    std::fs::write(&host_disk, vec![0u8; 1 << 20]).unwrap();
    let host_disk_value = host_disk.display().to_string();
    let form = [
        ("vmid", "100"),
        ("memory", "256"),
        ("virtio0", "local:1,discard=on"),
        ("virtio1", host_disk_value.as_str()),
        ("ide2", "none,media=cdrom"),
    ];
    let exit = task(&root, &server, root.post_form(&server, &qemu, &form).await).await;
    assert_eq!(exit, "OK");
    let image = st.join("vz/images/100/vm-100-disk-0.raw");
    std::fs::write(&image, b"OXBOW-DATA").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let before = config(&root, &server).await;
    assert_eq!(
        before["virtio0"],
        "local:100/vm-100-disk-0.raw,discard=on,size=1G"
    );

    // Refusals, each naming its parameter; nothing changes.
    for (form, param) in [
        (vec![("disk", "virtio0"), ("size", "512M")], "size"),
        (vec![("disk", "virtio0"), ("size", "-1G")], "size"),
        (vec![("disk", "virtio0"), ("size", "1GB")], "size"),
        (vec![("disk", "virtio0"), ("size", "+99999999T")], "size"),
        (vec![("disk", "virtio7"), ("size", "+1G")], "disk"),
        (vec![("disk", "net0"), ("size", "+1G")], "disk"),
        (vec![("disk", "ide2"), ("size", "+1G")], "disk"),
        (vec![("disk", "virtio1"), ("size", "+1G")], "disk"),
        (vec![("size", "+1G")], "disk"),
    ] {
        let (status, body) = root.form(&server, Method::PUT, &resize, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
        assert!(body["errors"][param].is_string(), "{form:?}: {body}");
    }
    let (status, body) = root
        .form(
            &server,
            Method::PUT,
            &resize,
            &[("disk", "virtio0"), ("size", "+1G"), ("digest", "0000")],
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status, _) = root
        .form(
            &server,
            Method::PUT,
            &format!("{qemu}/999/resize"),
            &[("disk", "virtio0"), ("size", "+1G")],
        )
        .await;
    assert_ne!(status, StatusCode::OK, "a resize of no VM");
    assert_eq!(config(&root, &server).await, before);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 1 << 30);
    assert_eq!(std::fs::metadata(&host_disk).unwrap().len(), 1 << 20);

    // +1G, then an absolute 3G: sparse, the data kept, size= follows and
    // the other options stay.
    let grow = |size: &'static str| [("disk", "virtio0"), ("size", size)];
    let exit = task(
        &root,
        &server,
        root.form(&server, Method::PUT, &resize, &grow("+1G")).await,
    )
    .await;
    assert_eq!(exit, "OK");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 2 << 30);
    assert_eq!(
        config(&root, &server).await["virtio0"],
        "local:100/vm-100-disk-0.raw,discard=on,size=2G"
    );
    let digest = config(&root, &server).await["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let exit = task(
        &root,
        &server,
        root.form(
            &server,
            Method::PUT,
            &resize,
            &[("disk", "virtio0"), ("size", "3G"), ("digest", &digest)],
        )
        .await,
    )
    .await;
    assert_eq!(exit, "OK");
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 3 << 30);
    assert!(meta.blocks() * 512 < 1 << 20, "the image stays sparse");
    assert_eq!(&std::fs::read(&image).unwrap()[..10], b"OXBOW-DATA");
    let after = config(&root, &server).await;
    assert_eq!(
        after["virtio0"],
        "local:100/vm-100-disk-0.raw,discard=on,size=3G"
    );

    // The same size again: a task that changes nothing.
    let exit = task(
        &root,
        &server,
        root.form(&server, Method::PUT, &resize, &grow("3G")).await,
    )
    .await;
    assert_eq!(exit, "OK");
    assert_eq!(config(&root, &server).await, after);
    // An odd growth is rounded up to whole KiB.
    let exit = task(
        &root,
        &server,
        root.form(&server, Method::PUT, &resize, &grow("+100"))
            .await,
    )
    .await;
    assert_eq!(exit, "OK");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), (3 << 30) + 1024);
    assert_eq!(
        config(&root, &server).await["virtio0"],
        "local:100/vm-100-disk-0.raw,discard=on,size=3145729K"
    );
    server.stop().await;
}
