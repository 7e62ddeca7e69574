//! What the integration tests share: a running apid on a temp state
//! directory, and logging in.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery staple";
/// The node name of the test servers.
pub const NODE: &str = "testnode";
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(1600);

/// A running apid on 127.0.0.1 with an ephemeral port.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), api::ServerError>>,
}

impl RunningServer {
    pub async fn start(state_dir: &Path) -> RunningServer {
        RunningServer::start_with(state_dir, "127.0.0.1:0", api::LoginFailureLimit::default()).await
    }

    pub async fn start_with(
        state_dir: &Path,
        listen: &str,
        limit: api::LoginFailureLimit,
    ) -> RunningServer {
        RunningServer::start_configured(state_dir, |config| {
            config.listen = listen.parse().unwrap();
            config.login_failure_limit = limit;
        })
        .await
    }

    /// A server on `state_dir` with the tests' defaults, then `adjust`.
    pub async fn start_configured(
        state_dir: &Path,
        adjust: impl FnOnce(&mut api::Config),
    ) -> RunningServer {
        let mut config = api::Config::new(NODE);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.state_dir = state_dir.to_path_buf();
        config.local_storage = state_dir.join("vz");
        config.failed_login_delay = FAILED_LOGIN_DELAY;
        config.interfaces = state_dir.join("network/interfaces");
        config.firewall_dir = state_dir.join("firewall");
        adjust(&mut config);
        let server = api::bind(config).await.expect("apid binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        RunningServer {
            addr,
            base: format!("https://127.0.0.1:{}/api2/json", addr.port()),
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

pub fn write_root_password(state_dir: &Path, password: &str) {
    let private = state_dir.join("priv");
    std::fs::create_dir_all(&private).unwrap();
    let hash = installer::hash_password(password).unwrap();
    std::fs::write(private.join("root.shadow"), format!("{hash}\n")).unwrap();
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn login(server: &RunningServer, username: &str, password: &str) -> reqwest::Response {
    client()
        .post(server.url("/access/ticket"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// A logged-in caller.
pub struct Session {
    http: reqwest::Client,
    ticket: String,
    csrf: String,
}

impl Session {
    pub async fn new(server: &RunningServer, user: &str, password: &str) -> Session {
        let response = login(server, user, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {user}");
        let body: Value = response.json().await.unwrap();
        Session {
            http: client(),
            ticket: body["data"]["ticket"].as_str().unwrap().to_owned(),
            csrf: body["data"]["CSRFPreventionToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    pub fn request(
        &self,
        server: &RunningServer,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, server.url(path))
            .header("Cookie", format!("PVEAuthCookie={}", self.ticket))
            .header("CSRFPreventionToken", &self.csrf)
    }

    pub async fn get(&self, server: &RunningServer, path: &str) -> (StatusCode, Value) {
        send(self.request(server, Method::GET, path)).await
    }

    /// A request with a form-encoded body, as proxmoxer sends it.
    pub async fn form(
        &self,
        server: &RunningServer,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        send(self.request(server, method, path).form(form)).await
    }

    pub async fn post_form(
        &self,
        server: &RunningServer,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        send(self.request(server, Method::POST, path).form(form)).await
    }

    pub async fn upload(&self, server: &RunningServer, form: Form) -> (StatusCode, Value) {
        let path = format!("/nodes/{NODE}/storage/local/upload");
        send(self.request(server, Method::POST, &path).multipart(form)).await
    }

    /// Waits for a task to stop (two minutes at most: a gigabyte's copy
    /// on a loaded machine takes a while) and returns its exit status.
    pub async fn wait_task(&self, server: &RunningServer, upid: &str) -> String {
        for _ in 0..2400 {
            let (status, body) = self
                .get(server, &format!("/nodes/{NODE}/tasks/{upid}/status"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["data"]["status"] == "stopped" {
                return body["data"]["exitstatus"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {upid} did not stop");
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// The workspace's binaries, next to the test's executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// init's supervisor (`init supervise`) as a process, with its control
/// socket, for the tests whose guests run as init's units.
pub struct Supervisor {
    child: Child,
    pub socket: PathBuf,
}

impl Supervisor {
    pub fn start(dir: &Path) -> Supervisor {
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

/// apid on `state` with a real init supervisor behind it, so it knows its
/// guests' states, and root's session; `None` (after saying why) when the
/// workspace's `init` binary is not built, which fails instead under
/// `make test` (`OXBOW_NO_SKIP`).
#[allow(dead_code)] // Not every test file uses it.
pub async fn server_with_init(state: &Path) -> Option<(Supervisor, RunningServer, Session)> {
    if !workspace_binary("init").is_file() {
        let why = "needs the init binary: cargo build -p init (or cargo test --workspace)";
        assert!(
            std::env::var_os("OXBOW_NO_SKIP").is_none(),
            "cannot run: {why} (OXBOW_NO_SKIP is set)"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    write_root_password(state, PASSWORD);
    let sup = Supervisor::start(state);
    let (socket, run) = (sup.socket.clone(), state.join("run"));
    let server = RunningServer::start_configured(state, move |config| {
        config.init_socket = socket;
        config.run_dir = run;
    })
    .await;
    let root = Session::new(&server, "root@pam", PASSWORD).await;
    Some((sup, server, root))
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
