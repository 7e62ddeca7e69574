//! What the integration tests share: a running apid on a temp state
//! directory, and logging in.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery staple";
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
        let mut config = api::Config::new("testnode");
        config.listen = listen.parse().unwrap();
        config.state_dir = state_dir.to_path_buf();
        config.local_storage = state_dir.join("vz");
        config.failed_login_delay = FAILED_LOGIN_DELAY;
        config.login_failure_limit = limit;
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
