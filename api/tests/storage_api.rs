//! apid's storage endpoints over real HTTPS: listing and status, disk
//! allocation and removal, streamed uploads with checksums, refusals.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};

mod common;

use common::{send, write_root_password, RunningServer, Session, NODE, PASSWORD};

async fn start() -> (tempfile::TempDir, RunningServer, Session) {
    let state = tempfile::tempdir().unwrap();
    write_root_password(state.path(), PASSWORD);
    let server = RunningServer::start(state.path()).await;
    let root = Session::new(&server, "root@pam", PASSWORD).await;
    (state, server, root)
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Files in the upload temp directory (none once every upload is done).
fn upload_leftovers(vz: &Path) -> Vec<String> {
    match std::fs::read_dir(vz.join("upload-tmp")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn iso_form(name: &str, data: Vec<u8>) -> Form {
    Form::new()
        .text("content", "iso")
        .part("filename", Part::bytes(data).file_name(name.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storages_are_listed_with_config_and_status() {
    let (_state, server, root) = start().await;

    let (status, body) = root.get(&server, "/storage").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let local = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["storage"] == "local")
        .expect("local is listed")
        .clone();
    assert_eq!(local["type"], "dir");
    assert!(local["content"].as_str().unwrap().contains("iso"));
    assert!(local["path"].as_str().unwrap().ends_with("vz"));
    assert_eq!(local["digest"].as_str().unwrap().len(), 40);
    let (_, body) = root.get(&server, "/storage?type=lvmthin").await;
    assert_eq!(body["data"], serde_json::json!([]));

    let (status, body) = root.get(&server, "/storage/local").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["storage"], "local");

    let (status, body) = root.get(&server, &format!("/nodes/{NODE}/storage")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = body["data"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let local = &list[0];
    assert_eq!(local["storage"], "local");
    assert_eq!(local["active"], 1);
    assert_eq!(local["enabled"], 1);
    let (total, avail) = (
        local["total"].as_u64().unwrap(),
        local["avail"].as_u64().unwrap(),
    );
    assert!(total >= avail && avail > 0, "total {total}, avail {avail}");
    let (_, body) = root
        .get(
            &server,
            &format!("/nodes/{NODE}/storage?content=images&enabled=1"),
        )
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    let (status, body) = root
        .get(&server, &format!("/nodes/{NODE}/storage/local/status"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]["total"].as_u64().unwrap() >= body["data"]["avail"].as_u64().unwrap());
    assert_eq!(body["data"]["type"], "dir");

    let (status, body) = root
        .get(&server, &format!("/nodes/{NODE}/storage/local"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"subdir": "upload"})));

    // Unknown storages and other nodes are refused.
    let (status, _) = root.get(&server, "/storage/nope").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = root.get(&server, "/nodes/other/storage").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_is_allocated_listed_and_deleted() {
    let (state, server, root) = start().await;
    let content = format!("/nodes/{NODE}/storage/local/content");

    let (status, body) = root
        .post_form(
            &server,
            &content,
            &[
                ("filename", "vm-100-disk-1.raw"),
                ("size", "4M"),
                ("vmid", "100"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], "local:100/vm-100-disk-1.raw");
    let file = state.path().join("vz/images/100/vm-100-disk-1.raw");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 4 << 20);
    assert!(meta.blocks() * 512 < meta.len(), "the image is sparse");

    // KiB without suffix, the extension added from the format.
    let (status, body) = root
        .post_form(
            &server,
            &content,
            &[
                ("filename", "vm-100-disk-2"),
                ("size", "1024"),
                ("vmid", "100"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], "local:100/vm-100-disk-2.raw");

    // Bad sizes, names of another guest, format conflicts.
    for form in [
        [
            ("filename", "vm-100-disk-3.raw"),
            ("size", "1.5G"),
            ("vmid", "100"),
        ],
        [
            ("filename", "vm-101-disk-0.raw"),
            ("size", "1M"),
            ("vmid", "100"),
        ],
        [
            ("filename", "../vm-100-disk-3.raw"),
            ("size", "1M"),
            ("vmid", "100"),
        ],
    ] {
        let (status, body) = root.post_form(&server, &content, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
    }

    let (status, body) = root
        .get(&server, &format!("{content}?content=images"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = body["data"].as_array().unwrap();
    let disk = items
        .iter()
        .find(|i| i["volid"] == "local:100/vm-100-disk-1.raw")
        .expect("the new disk is listed");
    assert_eq!(disk["size"], 4 << 20);
    assert_eq!(disk["vmid"], 100);
    assert_eq!(disk["format"], "raw");
    let (_, body) = root.get(&server, &format!("{content}?vmid=101")).await;
    assert_eq!(body["data"], serde_json::json!([]));

    // Attributes by volname and by percent-encoded volume id.
    let (status, body) = root
        .get(&server, &format!("{content}/100%2Fvm-100-disk-1.raw"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["size"], 4 << 20);
    assert_eq!(body["data"]["format"], "raw");
    let (status, body) = root
        .get(
            &server,
            &format!("{content}/local%3A100%2Fvm-100-disk-1.raw"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["path"]
        .as_str()
        .unwrap()
        .ends_with("images/100/vm-100-disk-1.raw"));

    let (status, body) = send(root.request(
        &server,
        Method::DELETE,
        &format!("{content}/local%3A100%2Fvm-100-disk-1.raw"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let upid = body["data"].as_str().unwrap();
    assert!(upid.contains(":imgdel::root@pam:"), "{upid}");
    assert_eq!(root.wait_task(&server, upid).await, "OK");
    assert!(!file.exists());
    let (status, _) = send(root.request(
        &server,
        Method::DELETE,
        &format!("{content}/100%2Fvm-100-disk-1.raw"),
    ))
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_streamed_verified_and_imported() {
    let (state, server, root) = start().await;
    let vz = state.path().join("vz");
    // Larger than the 64 KiB limit of ordinary bodies, in odd-sized data.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    let form = iso_form("test.iso", data.clone())
        .text("checksum-algorithm", "sha256")
        .text("checksum", sha256_hex(&data));
    let (status, body) = root.upload(&server, form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let upid = body["data"].as_str().unwrap();
    assert!(upid.contains(":imgcopy:"), "{upid}");
    assert_eq!(root.wait_task(&server, upid).await, "OK");
    assert_eq!(
        std::fs::read(vz.join("template/iso/test.iso")).unwrap(),
        data
    );
    assert!(upload_leftovers(&vz).is_empty());
    let (_, body) = root
        .get(
            &server,
            &format!("/nodes/{NODE}/storage/local/content?content=iso"),
        )
        .await;
    assert_eq!(body["data"][0]["volid"], "local:iso/test.iso");
    assert_eq!(body["data"][0]["size"], data.len());

    // Text parts after the file work too; the plugin then hashes.
    let form = Form::new()
        .part("filename", Part::bytes(data.clone()).file_name("after.iso"))
        .text("content", "iso")
        .text("checksum-algorithm", "sha256")
        .text("checksum", sha256_hex(&data));
    let (status, body) = root.upload(&server, form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        root.wait_task(&server, body["data"].as_str().unwrap())
            .await,
        "OK"
    );
    assert!(vz.join("template/iso/after.iso").exists());

    // A wrong checksum fails the task and leaves nothing behind.
    let form = iso_form("bad.iso", data.clone())
        .text("checksum-algorithm", "sha256")
        .text("checksum", sha256_hex(b"something else"));
    let (status, body) = root.upload(&server, form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exit = root
        .wait_task(&server, body["data"].as_str().unwrap())
        .await;
    assert!(exit.contains("checksum mismatch"), "{exit}");
    assert!(!vz.join("template/iso/bad.iso").exists());
    assert!(upload_leftovers(&vz).is_empty());

    // Bad names are refused before anything is written.
    for name in ["../x.iso", "x.exe", ".hidden.iso"] {
        let (status, body) = root.upload(&server, iso_form(name, data.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body["errors"]["filename"].is_string(), "{name}: {body}");
    }
    // A wrong extension found only once the content type follows the file.
    let form = Form::new()
        .part("filename", Part::bytes(data.clone()).file_name("late.exe"))
        .text("content", "iso");
    let (status, _) = root.upload(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Not uploadable content, a malformed checksum, no file at all.
    let (status, _) = root
        .upload(
            &server,
            Form::new()
                .text("content", "images")
                .part("filename", Part::bytes(vec![1]).file_name("x.raw")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let form = iso_form("short.iso", data.clone())
        .text("checksum-algorithm", "sha256")
        .text("checksum", "abc");
    let (status, _) = root.upload(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = root
        .upload(&server, Form::new().text("content", "iso"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An existing target fails the task and keeps the old file.
    let (status, body) = root
        .upload(&server, iso_form("test.iso", vec![7; 10]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exit = root
        .wait_task(&server, body["data"].as_str().unwrap())
        .await;
    assert!(exit.contains("already exists"), "{exit}");
    assert_eq!(
        std::fs::read(vz.join("template/iso/test.iso")).unwrap(),
        data
    );

    let isos: Vec<String> = std::fs::read_dir(vz.join("template/iso"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(isos.len(), 2, "{isos:?}");
    assert!(upload_leftovers(&vz).is_empty());

    // Uploads must be multipart.
    let (status, _) = root
        .post_form(
            &server,
            &format!("/nodes/{NODE}/storage/local/upload"),
            &[("content", "iso"), ("filename", "x.iso")],
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_privileges_are_refused() {
    let (state, server, root) = start().await;
    let vz = state.path().join("vz");
    let (status, body) = root
        .post_form(
            &server,
            "/access/users",
            &[("userid", "bob@pve"), ("password", "bobs password 123")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob = Session::new(&server, "bob@pve", "bobs password 123").await;

    let (status, body) = bob.get(&server, "/storage").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], serde_json::json!([]));
    let (status, body) = bob.get(&server, &format!("/nodes/{NODE}/storage")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], serde_json::json!([]));
    for path in [
        "/storage/local".to_owned(),
        format!("/nodes/{NODE}/storage/local/status"),
        format!("/nodes/{NODE}/storage/local/content"),
    ] {
        let (status, _) = bob.get(&server, &path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _) = bob
        .post_form(
            &server,
            &format!("/nodes/{NODE}/storage/local/content"),
            &[
                ("filename", "vm-100-disk-0.raw"),
                ("size", "1M"),
                ("vmid", "100"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = bob
        .upload(&server, iso_form("bob.iso", vec![0; 100_000]))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!vz.join("template/iso/bob.iso").exists());
    assert!(upload_leftovers(&vz).is_empty());

    // With Datastore.Audit bob sees the storage but still may not upload
    // or delete.
    let (status, body) = send(root.request(&server, Method::PUT, "/access/acl").form(&[
        ("path", "/storage/local"),
        ("roles", "PVEAuditor"),
        ("users", "bob@pve"),
    ]))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = bob.get(&server, &format!("/nodes/{NODE}/storage")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (status, _) = bob.upload(&server, iso_form("bob.iso", vec![0; 10])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = root
        .upload(&server, iso_form("shared.iso", vec![1; 10]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        root.wait_task(&server, body["data"].as_str().unwrap())
            .await,
        "OK"
    );
    let (status, body) = bob
        .get(&server, &format!("/nodes/{NODE}/storage/local/content"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["volid"], "local:iso/shared.iso");
    let (status, _) = send(bob.request(
        &server,
        Method::DELETE,
        &format!("/nodes/{NODE}/storage/local/content/iso%2Fshared.iso"),
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(vz.join("template/iso/shared.iso").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_endpoints_keep_the_body_limit() {
    let (_state, server, root) = start().await;
    let comment = "x".repeat(100 * 1024);
    let (status, _) = root
        .post_form(
            &server,
            "/pools",
            &[("poolid", "big"), ("comment", &comment)],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = root
        .post_form(
            &server,
            &format!("/nodes/{NODE}/storage/local/content"),
            &[
                ("filename", "vm-100-disk-0.raw"),
                ("size", "1M"),
                ("vmid", "100"),
                ("pad", &comment),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    server.stop().await;
}
