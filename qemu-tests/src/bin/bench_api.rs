//! `bench-api`: apid against a floor, side by side, under wrk.
//!
//! Starts init's supervisor (for the VM states apid asks about) and a
//! release apid on a fresh state directory holding `--vms` VM
//! configurations, logs in, and fetches the two bodies measured:
//! `GET /version` and `GET /cluster/resources`. The floor is a bare hyper +
//! rustls server in this process that answers each path with bytes of the
//! same size, pre-serialized (and, for the large body, also serialized
//! from a JSON value per request). wrk (Debian's) loads each over TLS
//! keep-alive with the same threads, connections and duration, one after
//! the other; the table gives req/s, p50 and p99 and the ratio to the
//! floor.
//!
//! ```text
//! bench-api [--vms 1000] [--connections 32] [--seconds 10] [--bins target/release]
//! ```

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const PASSWORD: &str = "bench-password";

struct Options {
    vms: u32,
    connections: u32,
    seconds: u32,
    bins: PathBuf,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        vms: 1000,
        connections: 32,
        seconds: 10,
        bins: PathBuf::from("target/release"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--vms" => o.vms = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--bins" => o.bins = PathBuf::from(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A realistic VM configuration, as Proxmox writes them.
fn vm_config(vmid: u32) -> String {
    let mac = format!(
        "02:00:00:{:02X}:{:02X}:{:02X}",
        vmid >> 16 & 0xff,
        vmid >> 8 & 0xff,
        vmid & 0xff
    );
    format!(
        "boot: order=scsi0;ide2;net0\ncores: {}\nide2: none,media=cdrom\nmemory: {}\n\
         name: vm-{vmid}.example.org\nnet0: virtio={mac},bridge=vmbr0,firewall=1\n\
         onboot: 0\nostype: l26\nscsi0: local:{vmid}/vm-{vmid}-disk-0.raw,size=32G\n\
         scsihw: virtio-scsi-pci\nsockets: 1\n",
        1 + vmid % 4,
        1024 << (vmid % 3)
    )
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for_port(port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    for (suffix, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    None
}

fn wrk(url: &str, cookie: &str, o: &Options) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", "--latency"])
        .arg(format!("-c{}", o.connections))
        .arg(format!("-d{}s", o.seconds))
        .args(["-H", &format!("Cookie: PVEAuthCookie={cookie}")])
        .arg(url)
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if text.contains("Non-2xx") {
        bail!("wrk saw errors: {text}");
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in {text}"))?;
    let p50 = field("50%").and_then(duration_ms).context("no p50")?;
    let p99 = field("99%").and_then(duration_ms).context("no p99")?;
    Ok(Load {
        rps,
        p50_ms: p50,
        p99_ms: p99,
    })
}

/// The floor's answers by path.
struct FloorBodies {
    version: Bytes,
    resources: Bytes,
    resources_value: serde_json::Value,
}

async fn floor(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    bodies: Arc<FloorBodies>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let bodies = Arc::clone(&bodies);
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let bodies = Arc::clone(&bodies);
                    async move {
                        let body = match request.uri().path() {
                            "/version" => bodies.version.clone(),
                            "/resources" => bodies.resources.clone(),
                            _ => Bytes::from(
                                serde_json::to_vec(&bodies.resources_value).unwrap_or_default(),
                            ),
                        };
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "application/json;charset=UTF-8",
                            ),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn start_floor(bodies: FloorBodies) -> Result<(u16, tokio::runtime::Runtime)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let port = free_port()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        [127, 0, 0, 1],
        port,
    ))))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    runtime.spawn(floor(listener, acceptor, Arc::new(bodies)));
    Ok((port, runtime))
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let bins = o.bins.canonicalize().context("--bins")?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("priv"))?;
    std::fs::create_dir_all(state.join("qemu-server"))?;
    let hash = installer::credentials::hash_password(PASSWORD)?;
    std::fs::write(state.join("priv/root.shadow"), format!("{hash}\n"))?;
    for vmid in 100..100 + o.vms {
        std::fs::write(
            state.join(format!("qemu-server/{vmid}.conf")),
            vm_config(vmid),
        )?;
    }

    // init's supervisor, for apid's questions about VM states.
    let init_socket = dir.path().join("init.sock");
    std::fs::write(dir.path().join("services.toml"), "")?;
    let _init = Guard(
        Command::new(bins.join("init"))
            .args(["supervise", "--table"])
            .arg(dir.path().join("services.toml"))
            .arg("--socket")
            .arg(&init_socket)
            .arg("--log-dir")
            .arg(dir.path().join("log"))
            .stderr(Stdio::null())
            .spawn()
            .context("starting init supervise")?,
    );
    let api_port = free_port()?;
    let _apid = Guard(
        Command::new(bins.join("apid"))
            .args([
                "--listen",
                &format!("127.0.0.1:{api_port}"),
                "--node",
                "bench",
            ])
            .arg("--state-dir")
            .arg(&state)
            .arg("--local-storage")
            .arg(dir.path().join("vz"))
            .arg("--init-socket")
            .arg(&init_socket)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .env("APID_LOG", "warn")
            .spawn()
            .context("starting apid")?,
    );
    wait_for_port(api_port)?;
    let base = format!("https://127.0.0.1:{api_port}/api2/json");
    let http = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let login: serde_json::Value = http
        .post(format!("{base}/access/ticket"))
        .form(&[("username", "root@pam"), ("password", PASSWORD)])
        .send()?
        .json()?;
    let ticket = login["data"]["ticket"]
        .as_str()
        .context("login failed")?
        .to_string();
    let cookie = ticket.replace(':', "%3A").replace('@', "%40");
    let fetch = |path: &str| -> Result<Bytes> {
        let response = http
            .get(format!("{base}{path}"))
            .header("Cookie", format!("PVEAuthCookie={cookie}"))
            .send()?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
        Ok(response.bytes()?)
    };
    let version = fetch("/version")?;
    let resources = fetch("/cluster/resources")?;
    let parsed: serde_json::Value = serde_json::from_slice(&resources)?;
    let vm_count = parsed["data"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["type"] == "qemu").count());
    if vm_count != o.vms as usize {
        bail!(
            "/cluster/resources lists {vm_count} VMs, expected {}",
            o.vms
        );
    }
    let (floor_port, _runtime) = start_floor(FloorBodies {
        version: version.clone(),
        resources: resources.clone(),
        resources_value: parsed,
    })?;

    let api = |path: &str| format!("{base}{path}");
    let fl = |path: &str| format!("https://127.0.0.1:{floor_port}{path}");
    let rows = [
        (
            "GET /version",
            api("/version"),
            fl("/version"),
            version.len(),
        ),
        (
            "GET /cluster/resources",
            api("/cluster/resources"),
            fl("/resources"),
            resources.len(),
        ),
    ];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "wrk -t2 -c{} -d{}s over TLS keep-alive; {} VM configs; {} CPUs",
        o.connections,
        o.seconds,
        o.vms,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let _ = writeln!(
        table,
        "| endpoint | body | apid req/s | p50 | p99 | floor req/s | p50 | p99 | ratio |"
    );
    let _ = writeln!(
        table,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (name, api_url, floor_url, size) in rows {
        let a = wrk(&api_url, &cookie, &o)?;
        let f = wrk(&floor_url, &cookie, &o)?;
        let _ = writeln!(
            table,
            "| {name} | {size} B | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2} |",
            a.rps, a.p50_ms, a.p99_ms, f.rps, f.p50_ms, f.p99_ms, a.rps / f.rps
        );
        eprintln!("{name}: apid {a:?}, floor {f:?}");
    }
    // A caller other than root@pam (with the same privileges, through an
    // ACL) is never served from apid's one-second cache: every request
    // builds the answer.
    let csrf = login["data"]["CSRFPreventionToken"].as_str().unwrap_or("");
    for (path, form) in [
        (
            "/access/users",
            vec![("userid", "bench@pve"), ("password", "bench-password-2")],
        ),
        (
            "/access/acl",
            vec![
                ("path", "/"),
                ("roles", "Administrator"),
                ("users", "bench@pve"),
            ],
        ),
    ] {
        let request = if path == "/access/acl" {
            http.put(format!("{base}{path}"))
        } else {
            http.post(format!("{base}{path}"))
        };
        let response = request
            .header("Cookie", format!("PVEAuthCookie={cookie}"))
            .header("CSRFPreventionToken", csrf)
            .form(&form)
            .send()?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
    }
    let other: serde_json::Value = http
        .post(format!("{base}/access/ticket"))
        .form(&[("username", "bench@pve"), ("password", "bench-password-2")])
        .send()?
        .json()?;
    let other_cookie = other["data"]["ticket"]
        .as_str()
        .context("login of bench@pve failed")?
        .replace(':', "%3A")
        .replace('@', "%40");
    let uncached = wrk(&api("/cluster/resources"), &other_cookie, &o)?;
    let floor_again = wrk(&fl("/resources"), &cookie, &o)?;
    let _ = writeln!(
        table,
        "| GET /cluster/resources, built per request (caller bench@pve) | {} B | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2} |",
        resources.len(),
        uncached.rps,
        uncached.p50_ms,
        uncached.p99_ms,
        floor_again.rps,
        floor_again.p50_ms,
        floor_again.p99_ms,
        uncached.rps / floor_again.rps
    );
    let serialized = wrk(&fl("/resources-serialized"), &cookie, &o)?;
    let _ = writeln!(
        table,
        "\nFloor serializing the large body per request: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        serialized.rps, serialized.p50_ms, serialized.p99_ms
    );
    print!("{table}");
    Ok(())
}
