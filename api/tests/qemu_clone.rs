//! `POST /nodes/{node}/qemu/{vmid}/clone` over real HTTPS, with a real
//! init supervisor (`init supervise`), so apid knows the source is
//! stopped: a full clone copies the source's disk images (sparse, byte
//! for byte), keeps its configuration, gives the copy new MACs and its own
//! name; what cannot be done is refused before anything is made.
//!
//! Needs the `init` binary of this workspace (`cargo test --workspace`
//! builds it). Skipped with a message otherwise, except under `make test`
//! (`OXBOW_NO_SKIP`), where that is a failure.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

mod common;

use common::{RunningServer, Session, NODE};

async fn task(root: &Session, server: &RunningServer, answer: (StatusCode, Value)) -> String {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{body}");
    root.wait_task(server, body["data"].as_str().unwrap()).await
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vm_is_cloned_with_copies_of_its_disks() {
    let state = tempfile::tempdir().unwrap();
    let st = state.path();
    let Some((_init, server, root)) = common::server_with_init(st).await else {
        return;
    };
    let qemu = format!("/nodes/{NODE}/qemu");

    // The source: a 1 GiB disk with data at its start and in its middle,
    // a NIC, a CD drive with no medium.
    let form = [
        ("vmid", "100"),
        ("name", "web"),
        ("memory", "256"),
        ("virtio0", "local:1"),
        ("net0", "virtio,bridge=vmbr0"),
        ("ide2", "none,media=cdrom"),
        ("description", "the original"),
    ];
    let exit = task(&root, &server, root.post_form(&server, &qemu, &form).await).await;
    assert_eq!(exit, "OK");
    let source_disk = st.join("vz/images/100/vm-100-disk-0.raw");
    write_at(&source_disk, 0, b"OXBOW-BOOT-SECTOR");
    write_at(&source_disk, 512 << 20, b"OXBOW-MIDDLE");
    let (_, source) = root.get(&server, &format!("{qemu}/100/config")).await;
    let source = source["data"].clone();

    // Refusals: nothing is made.
    for (form, param) in [
        (vec![("newid", "100")], "newid"),
        (vec![("newid", "101"), ("full", "0")], "full"),
        (vec![("newid", "101"), ("snapname", "before")], "snapname"),
        (vec![("newid", "101"), ("target", "elsewhere")], "target"),
        (vec![("newid", "101"), ("format", "qcow2")], "format"),
        (vec![("newid", "101"), ("storage", "nowhere")], "storage"),
        (vec![("newid", "101"), ("name", "not a name")], "name"),
    ] {
        let (status, body) = root
            .post_form(&server, &format!("{qemu}/100/clone"), &form)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
        assert!(body["errors"][param].is_string(), "{form:?}: {body}");
    }
    let (status, _) = root
        .post_form(&server, &format!("{qemu}/999/clone"), &[("newid", "101")])
        .await;
    assert_ne!(status, StatusCode::OK, "a clone of no VM");
    assert!(!st.join("qemu-server/101.conf").exists());
    assert!(!st.join("vz/images/101").exists());

    // The clone.
    let exit = task(
        &root,
        &server,
        root.post_form(
            &server,
            &format!("{qemu}/100/clone"),
            &[("newid", "101"), ("name", "web-copy"), ("full", "1")],
        )
        .await,
    )
    .await;
    assert_eq!(exit, "OK");
    let (_, copy) = root.get(&server, &format!("{qemu}/101/config")).await;
    let copy = &copy["data"];
    assert_eq!(copy["name"], "web-copy");
    assert_eq!(copy["memory"], source["memory"]);
    assert_eq!(copy["ide2"], source["ide2"]);
    assert_eq!(copy["description"], "the original");
    assert_eq!(copy["virtio0"], "local:101/vm-101-disk-0.raw,size=1G");
    let (source_net, copy_net) = (
        source["net0"].as_str().unwrap(),
        copy["net0"].as_str().unwrap(),
    );
    assert!(copy_net.starts_with("virtio=") && copy_net.ends_with(",bridge=vmbr0"));
    assert_ne!(copy_net, source_net, "the copy has its own MAC");
    let copy_disk = st.join("vz/images/101/vm-101-disk-0.raw");
    let meta = std::fs::metadata(&copy_disk).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    // Two 1 MiB blocks hold data; the rest of the gigabyte is a hole.
    assert!(meta.blocks() * 512 <= 4 << 20, "the copy stays sparse");
    assert_eq!(read_at(&copy_disk, 0, 17), b"OXBOW-BOOT-SECTOR");
    assert_eq!(read_at(&copy_disk, 512 << 20, 12), b"OXBOW-MIDDLE");
    assert_eq!(read_at(&copy_disk, 1 << 20, 16), [0; 16]);
    // The source is as it was.
    let (_, after) = root.get(&server, &format!("{qemu}/100/config")).await;
    assert_eq!(after["data"], source);

    // Without a name: Proxmox's. The VMID is taken now.
    let exit = task(
        &root,
        &server,
        root.post_form(&server, &format!("{qemu}/100/clone"), &[("newid", "102")])
            .await,
    )
    .await;
    assert_eq!(exit, "OK");
    let (_, third) = root.get(&server, &format!("{qemu}/102/config")).await;
    assert_eq!(third["data"]["name"], "Copy-of-VM-web");
    let (status, _) = root
        .post_form(&server, &format!("{qemu}/100/clone"), &[("newid", "101")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
}
