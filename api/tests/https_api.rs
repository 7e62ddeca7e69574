//! apid over real HTTPS: logging in, tickets, CSRF tokens, refusals,
//! reason phrases and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{client, login, write_root_password, RunningServer, PASSWORD};

fn percent_encode_ticket(ticket: &str) -> String {
    ticket
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// Sends one raw HTTP/1.1 request over TLS, trusting apid's certificate as
/// the only root, and returns the status line and the body.
async fn raw_request(addr: SocketAddr, state_dir: &Path, request: &str) -> (String, String) {
    use rustls_pki_types::pem::PemObject;
    let cert_pem = std::fs::read(state_dir.join("priv/apid-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The certificate names 127.0.0.1, so normal verification succeeds.
    let server_name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(server_name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status_line = head.lines().next().unwrap().to_owned();
    (status_line, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ticket_and_csrf_flow() {
    let state = tempfile::tempdir().unwrap();
    write_root_password(state.path(), PASSWORD);
    let server = RunningServer::start(state.path()).await;
    let http = client();

    // The state directory got its generated files with private modes.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(state.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("priv"), 0o700);
    assert_eq!(mode("priv/apid-key.pem"), 0o600);
    assert_eq!(mode("priv/authkey.key"), 0o600);
    assert_eq!(
        std::fs::read(state.path().join("priv/authkey.key"))
            .unwrap()
            .len(),
        32
    );

    // No ticket: 401 with a null data envelope.
    let response = http.get(server.url("/version")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({"data": null})
    );

    // Unknown paths are not revealed without a ticket either.
    let response = http.get(server.url("/nodes")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A wrong password is refused after the delay.
    let started = Instant::now();
    let response = login(&server, "root@pam", "wrong password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "failed login answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({"data": null})
    );

    // The right password gives a ticket in Proxmox's shape.
    let response = login(&server, "root@pam", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let data = &body["data"];
    let ticket = data["ticket"].as_str().unwrap().to_owned();
    let csrf = data["CSRFPreventionToken"].as_str().unwrap().to_owned();
    let ticket_shape =
        regex::Regex::new(r"^PVE:root@pam:[0-9A-F]{8}::[A-Za-z0-9+/]{43}=$").unwrap();
    assert!(ticket_shape.is_match(&ticket), "{ticket}");
    let csrf_shape = regex::Regex::new(r"^[0-9A-F]{8}:[A-Za-z0-9+/]{43}$").unwrap();
    assert!(csrf_shape.is_match(&csrf), "{csrf}");
    assert_eq!(
        &ticket[13..21],
        &csrf[..8],
        "ticket and token share the time"
    );
    assert_eq!(data["username"], "root@pam");
    assert_eq!(data["cap"], serde_json::json!({}));
    assert!(data["clustername"].is_null());

    // The ticket opens GET /version, percent-encoded in the cookie ...
    let cookie = format!("PVEAuthCookie={}", percent_encode_ticket(&ticket));
    let response = http
        .get(server.url("/version"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["version"], "8.2.0");
    assert_eq!(body["data"]["release"], "8.2");
    assert_eq!(body["data"]["oxbow"], env!("CARGO_PKG_VERSION"));
    assert!(body["data"]["repoid"].is_string());

    // ... or plain in the Authorization header.
    let response = http
        .get(server.url("/version"))
        .header("Authorization", format!("PVEAuthCookie={ticket}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A forged ticket is refused.
    let forged = ticket.replace("root@pam", "root@pve");
    let response = http
        .get(server.url("/version"))
        .header("Authorization", format!("PVEAuthCookie={forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A state-changing request on a ticket-protected path needs the CSRF
    // token: without it 401, with it the (unimplemented) path answers 501.
    let response = http
        .post(server.url("/nodes/testnode/status"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http
        .post(server.url("/nodes/testnode/status"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", "6553F100:bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http
        .post(server.url("/nodes/testnode/status"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({"data": null})
    );

    // Posting the ticket as the password renews it (JSON body this time,
    // with the realm given separately).
    let response = http
        .post(server.url("/access/ticket"))
        .json(&serde_json::json!({"username": "root", "realm": "pam", "password": ticket}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let renewed = body["data"]["ticket"].as_str().unwrap();
    assert!(ticket_shape.is_match(renewed), "{renewed}");
    let response = http
        .get(server.url("/version"))
        .header("Authorization", format!("PVEAuthCookie={renewed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A ticket is not a password for another user.
    let response = login(&server, "alice@pve", &ticket).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Missing parameters are a parameter error.
    let response = http
        .post(server.url("/access/ticket"))
        .form(&[("username", "root@pam")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"].is_null());
    assert!(body["errors"]["password"].is_string(), "{body}");

    // Reason phrases carry Proxmox's messages.
    let addr = server.addr;
    let (status, body) = raw_request(
        addr,
        state.path(),
        "GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 401 No ticket");
    assert_eq!(body, r#"{"data":null}"#);
    let request = format!(
        "GET /api2/json/frobnicate HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw_request(addr, state.path(), &request).await;
    assert_eq!(
        status,
        "HTTP/1.1 501 Method 'GET /frobnicate' not implemented"
    );
    let request = format!(
        "POST /api2/json/nodes HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw_request(addr, state.path(), &request).await;
    assert_eq!(status, "HTTP/1.1 401 invalid CSRF prevention token");
    let request = "POST /api2/json/access/ticket HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 17\r\n\
        Connection: close\r\n\r\nusername=root%40p";
    let (status, body) = raw_request(addr, state.path(), request).await;
    assert_eq!(status, "HTTP/1.1 400 Parameter verification failed.");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["errors"]["password"].is_string(), "{body}");

    // Shutdown is quick even with a keep-alive connection open.
    let idle = client();
    let response = idle
        .get(server.url("/version"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // A restart reuses the certificate and the signing key, so the ticket
    // stays valid.
    let cert_before = std::fs::read(state.path().join("priv/apid-cert.pem")).unwrap();
    let server = RunningServer::start(state.path()).await;
    assert_eq!(
        std::fs::read(state.path().join("priv/apid-cert.pem")).unwrap(),
        cert_before
    );
    let response = client()
        .get(server.url("/version"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_shadow_every_login_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let server = RunningServer::start(state.path()).await;
    for password in ["", "root", PASSWORD] {
        let started = Instant::now();
        let response = login(&server, "root@pam", password).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{password:?}");
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_source() {
    let state = tempfile::tempdir().unwrap();
    write_root_password(state.path(), PASSWORD);
    let limit = api::LoginFailureLimit {
        max_failures: 2,
        window: Duration::from_secs(60),
    };
    let server = RunningServer::start_with(state.path(), "127.0.0.1:0", limit).await;

    // Two parallel failures use up the allowance ...
    let (first, second) = tokio::join!(
        login(&server, "root@pam", "guess 1"),
        login(&server, "root@pam", "guess 2")
    );
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);

    // ... after which even the right password is refused at once.
    let started = Instant::now();
    let response = login(&server, "root@pam", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a throttled login should not wait, took {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_wildcard_listener_takes_ipv4_connections() {
    let state = tempfile::tempdir().unwrap();
    write_root_password(state.path(), PASSWORD);
    let server =
        RunningServer::start_with(state.path(), "[::]:0", api::LoginFailureLimit::default()).await;
    let response = login(&server, "root@pam", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

/// Every endpoint but logging in refuses a caller without a ticket or
/// token, before looking at anything else.
#[tokio::test]
async fn every_endpoint_but_login_needs_authentication() {
    let state = tempfile::tempdir().unwrap();
    let server = RunningServer::start(state.path()).await;
    let http = client();
    for endpoint in api::router::ENDPOINTS.iter() {
        let path: String = endpoint
            .path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(endpoint.method.as_str().as_bytes()).unwrap();
        let response = http
            .request(method, server.url(&path))
            .send()
            .await
            .unwrap();
        let expected = if endpoint.path == "/access/ticket" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(
            response.status(),
            expected,
            "{} {} without a ticket",
            endpoint.method,
            endpoint.path
        );
    }
    server.stop().await;
}

/// The published description of the API is the one in docs/, so the docs
/// cannot drift from the declarations. `OXBOW_BLESS=1` rewrites it.
#[test]
fn the_published_api_description_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-schema.json");
    let current = format!(
        "{}\n",
        serde_json::to_string_pretty(&api::router::describe()).unwrap()
    );
    if std::env::var_os("OXBOW_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == current,
        "docs/api-schema.json is out of date: run OXBOW_BLESS=1 cargo test -p api --test https_api"
    );
}

/// `/cluster/resources` and the VM list come from the in-memory index of
/// the configuration files present at start and written since.
#[tokio::test]
async fn cluster_resources_list_nodes_vms_and_storage() {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("qemu-server")).unwrap();
    std::fs::write(
        state.path().join("qemu-server/100.conf"),
        "cores: 2\nmemory: 1024\nname: web \"one\"\nsockets: 2\nscsi0: local:100/vm-100-disk-0.raw,size=8G\n",
    )
    .unwrap();
    std::fs::write(state.path().join("qemu-server/101.conf"), "memory: 256\n").unwrap();
    write_root_password(state.path(), PASSWORD);
    let server = RunningServer::start(state.path()).await;
    let response = login(&server, "root@pam", PASSWORD).await;
    let body: Value = response.json().await.unwrap();
    let cookie = format!(
        "PVEAuthCookie={}",
        percent_encode_ticket(body["data"]["ticket"].as_str().unwrap())
    );
    let get = |path: &'static str| {
        let request = client()
            .get(server.url(path))
            .header("Cookie", &cookie)
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let all = get("/cluster/resources").await;
    let items = all["data"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["node", "storage", "qemu", "qemu"], "{all}");
    let vm = items.iter().find(|i| i["vmid"] == 100).unwrap();
    assert_eq!(vm["id"], "qemu/100");
    assert_eq!(vm["name"], "web \"one\"");
    assert_eq!(vm["maxcpu"], 4);
    assert_eq!(vm["maxmem"], 1024u64 << 20);
    assert_eq!(vm["maxdisk"], 8u64 << 30);
    // No init to ask in this test: the state is unknown, not guessed.
    assert_eq!(vm["status"], "unknown");
    let other = items.iter().find(|i| i["vmid"] == 101).unwrap();
    assert_eq!(other["name"], "VM 101");
    let vms = get("/cluster/resources?type=vm").await;
    assert_eq!(vms["data"].as_array().unwrap().len(), 2);
    let storage = get("/cluster/resources?type=storage").await;
    assert_eq!(storage["data"][0]["storage"], "local");
    assert_eq!(get("/cluster/nextid").await["data"], "102");
    let empty = get("/cluster/resources?type=pool").await;
    assert_eq!(empty["data"], serde_json::json!([]));

    // A configuration change shows at once, cached answer or not.
    let csrf = body["data"]["CSRFPreventionToken"].as_str().unwrap();
    let changed = client()
        .put(server.url("/nodes/testnode/qemu/101/config"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", csrf)
        .form(&[("name", "renamed")])
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let after = get("/cluster/resources?type=vm").await;
    let renamed = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["vmid"] == 101)
        .unwrap()
        .clone();
    assert_eq!(renamed["name"], "renamed");
    assert!(
        std::fs::read_to_string(state.path().join("qemu-server/101.conf"))
            .unwrap()
            .contains("name: renamed")
    );

    // Another user sees only the VMs it may audit.
    for (method, path, form) in [
        (
            "POST",
            "/access/users",
            vec![("userid", "eve@pve"), ("password", "eve-password")],
        ),
        (
            "PUT",
            "/access/acl",
            vec![
                ("path", "/vms/101"),
                ("roles", "PVEAuditor"),
                ("users", "eve@pve"),
            ],
        ),
    ] {
        let request = if method == "PUT" {
            client().put(server.url(path))
        } else {
            client().post(server.url(path))
        };
        let response = request
            .header("Cookie", &cookie)
            .header("CSRFPreventionToken", csrf)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let eve: Value = login(&server, "eve@pve", "eve-password")
        .await
        .json()
        .await
        .unwrap();
    let eve_cookie = format!(
        "PVEAuthCookie={}",
        percent_encode_ticket(eve["data"]["ticket"].as_str().unwrap())
    );
    let seen: Value = client()
        .get(server.url("/cluster/resources"))
        .header("Cookie", &eve_cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = seen["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["qemu/101"], "{seen}");
    server.stop().await;
}
