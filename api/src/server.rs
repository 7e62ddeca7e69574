//! The HTTPS listener, connections and request dispatch.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::access::AccessStore;
use crate::app_state::{unix_now, AppState};
use crate::auth::{authenticate_request, Caller};
use crate::config::{validate_node_name, Config};
use crate::endpoints::access::NO_ROOT_PASSWORD_WARNING;
use crate::error::ServerError;
use crate::login_throttle::LoginThrottle;
use crate::params::{BodyError, Params};
use crate::response::{to_http_response, ApiError, HttpResponse};
use crate::router::{api_path, takes_upload, Call, Endpoint, Permission};
use crate::state_dir::{RootPassword, StateDir};
use crate::tasks::TaskStore;
use crate::ticket::TicketSigner;
use crate::upload::{UploadBody, DISCARD_LIMIT_BYTES};

/// The largest request body apid reads.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long running requests may finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The listen backlog.
const LISTEN_BACKLOG: i32 = 1024;

/// A bound, ready apid: call [`Server::serve`] to answer requests.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: TlsAcceptor,
    state: Arc<AppState>,
}

/// Prepares the state directory (signing key, TLS certificate) and binds
/// the listening socket.
pub async fn bind(config: Config) -> Result<Server, ServerError> {
    validate_node_name(&config.node)?;
    let state_dir = StateDir::new(&config.state_dir);
    state_dir.prepare()?;
    let signing_key = state_dir.load_or_create_signing_key()?;
    crate::tls::ensure_certificate(&state_dir, &config.node)?;
    let tls_config = crate::tls::server_config(&state_dir)?;

    match state_dir.root_password() {
        RootPassword::Hash(_) => {}
        RootPassword::Missing => tracing::warn!("{NO_ROOT_PASSWORD_WARNING}"),
        RootPassword::Unusable(why) => tracing::error!("{why}; every login will fail"),
    }

    let std_listener = listen(config.listen)?;
    let listener = TcpListener::from_std(std_listener).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let access = AccessStore::load(&state_dir)?;
    let storage_cfg = state_dir.root().join("storage.cfg");
    let storage_config = storage::StorageConfig::load(&storage_cfg, &config.local_storage)
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    create_dir_storage_paths(&storage_config, &config.node);
    let storage = storage::Storages::new(storage_config, &config.node)
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let tasks = Arc::new(TaskStore::open(
        state_dir.root().join("tasks"),
        &config.node,
    )?);
    let vms = crate::guests::VmStore::open(
        state_dir.root().join("qemu-server"),
        &config.node,
        crate::guests::GuestKind::Qemu,
    )?;
    let cts = crate::guests::VmStore::open(
        state_dir.root().join("lxc"),
        &config.node,
        crate::guests::GuestKind::Lxc,
    )?;
    let state = Arc::new(AppState {
        node: config.node,
        access,
        storage,
        vms,
        cts,
        resources_cache: Default::default(),
        runtime: crate::guests::VmRuntime::new(
            config.init_socket.clone(),
            config.run_dir.clone(),
            config.vmm_binary.clone(),
            config.ctr_binary.clone(),
        )
        .with_kernel_cache(config.kernel_cache.clone()),
        tasks,
        state_dir,
        signer: TicketSigner::new(&signing_key),
        login_throttle: LoginThrottle::new(config.login_failure_limit),
        failed_login_delay: config.failed_login_delay,
        network: crate::network::NetworkSettings::new(
            &config.interfaces,
            &config.management_bridge,
            config.network_confirm_timeout,
        ),
        firewall: crate::firewall::FirewallSettings::new(&config.firewall_dir),
    });
    Ok(Server {
        listener,
        local_addr,
        tls: TlsAcceptor::from(tls_config),
        state,
    })
}

/// Creates the paths of the enabled `dir` storages of this node, as
/// Proxmox does when it activates them (unless `mkdir 0`). A failure is
/// logged; the storage then reports itself inactive.
fn create_dir_storage_paths(config: &storage::StorageConfig, node: &str) {
    for entry in config.entries() {
        if entry.kind() != "dir"
            || entry.is_disabled()
            || !entry.is_available_on(node)
            || entry.get("mkdir") == Some("0")
        {
            continue;
        }
        if let Some(path) = entry.path() {
            if let Err(e) = std::fs::create_dir_all(path) {
                tracing::warn!(storage = %entry.id(), path = %path.display(), "cannot create the storage directory: {e}");
            }
        }
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    bind(config).await?.serve(shutdown).await
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("node", &self.state.node)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address the server listens on (with the real port if port 0
    /// was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers requests until `shutdown` completes, then stops accepting,
    /// lets running requests finish for a moment and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tracing::info!(
            address = %self.local_addr,
            node = %self.state.node,
            "apid listening (HTTPS)"
        );
        tokio::spawn(crate::endpoints::qemu::start_onboot_vms(
            Arc::clone(&self.state),
            self.state.runtime.run_dir.join("onboot.done"),
        ));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let task = serve_connection(
                        stream,
                        peer,
                        self.tls.clone(),
                        Arc::clone(&self.state),
                        graceful.watcher(),
                    );
                    tokio::spawn(task);
                }
                Err(e) => {
                    // Running out of file descriptors and the like pass;
                    // do not spin while they last.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(self.listener);
        tracing::info!("shutting down");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::info!("closing connections that are still busy");
            }
        }
        Ok(())
    }
}

/// A listening socket for `addr`. An unspecified IPv6 address also takes
/// IPv4 connections; if the kernel has no IPv6, IPv4 alone is used.
fn listen(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    match listen_exactly(addr) {
        Ok(listener) => Ok(listener),
        Err(e)
            if addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && e.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32) =>
        {
            let fallback = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            tracing::warn!("IPv6 is not available; listening on {fallback} instead");
            listen_exactly(fallback).map_err(|source| ServerError::Bind {
                addr: fallback,
                source,
            })
        }
        Err(source) => Err(ServerError::Bind { addr, source }),
    }
}

fn listen_exactly(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    state: Arc<AppState>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(tls_stream)) => tls_stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let source = peer.ip().to_canonical();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle_request(state, source, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls_stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}

/// Answers one request: authenticates it unless its endpoint is public,
/// reads its parameters and calls the endpoint.
pub async fn handle_request(
    state: Arc<AppState>,
    source: IpAddr,
    request: Request<Incoming>,
) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let result = dispatch(&state, source, &parts, body).await;
    if let Err(error) = &result {
        tracing::debug!(
            %source,
            method = %parts.method,
            path = parts.uri.path(),
            status = error.status.as_u16(),
            "{}",
            error.message
        );
    }
    to_http_response(result)
}

async fn dispatch(
    state: &Arc<AppState>,
    source: IpAddr,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> crate::response::ApiResult {
    let method = &parts.method;
    let path = api_path(parts.uri.path());
    let endpoint = path.and_then(|p| crate::router::ROUTES.find(method, p));

    // Everything but logging in, unknown paths included, needs a ticket or
    // token first, so probing without one learns nothing.
    let public = endpoint
        .as_ref()
        .is_some_and(|(endpoint, _)| matches!(endpoint.permission, Permission::World));
    let caller: Option<Caller> = if public {
        None
    } else {
        Some(authenticate_request(
            &state.signer,
            &state.access,
            method,
            &parts.headers,
            unix_now(),
        )?)
    };

    let Some((endpoint, path_params)) = endpoint else {
        return Err(match path {
            Some(path) => ApiError::not_implemented(method.as_str(), path),
            None => ApiError::new(StatusCode::NOT_FOUND, "Not Found"),
        });
    };

    let mut params = Params::from_query(parts.uri.query().unwrap_or(""));
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let mut upload = None;
    // Whether parts of the upload (a file and maybe text after it) are
    // still unread, so missing parameters may yet come.
    let mut upload_pending = false;
    if takes_upload(endpoint) {
        let mut body = UploadBody::new(content_type, body)?;
        upload_pending = body.read_fields(&mut params).await?.is_some();
        upload = Some(body);
    } else if !(method == Method::GET || method == Method::HEAD) {
        let bytes = read_body(body).await?;
        params
            .add_body(content_type, &bytes)
            .map_err(body_error_to_api_error)?;
    }
    for (name, value) in path_params {
        params.insert(name, value);
    }
    let checked = check_call(state, endpoint, caller.as_ref(), params, upload_pending);
    let params = match (checked, upload) {
        (Ok(params), body) => {
            upload = body;
            params
        }
        (Err(error), Some(body)) => {
            body.discard_rest(DISCARD_LIMIT_BYTES).await;
            return Err(error);
        }
        (Err(error), None) => return Err(error),
    };
    let call = Call {
        params,
        caller,
        source,
        upload,
    };
    (endpoint.handler)(Arc::clone(state), call).await
}

/// Validates the parameters and checks the permission. With
/// `upload_pending`, parameters still to come in the body may be missing.
fn check_call(
    state: &AppState,
    endpoint: &Endpoint,
    caller: Option<&Caller>,
    params: Params,
    upload_pending: bool,
) -> Result<Params, ApiError> {
    let params = match crate::schema::validate(endpoint.params, endpoint.extra, &params) {
        Ok(params) => params,
        Err(errors) if upload_pending => {
            // The handler validates again once the whole body is read;
            // what is here already must be right.
            let wrong: BTreeMap<String, String> = errors
                .into_iter()
                .filter(|(_, why)| why != crate::schema::MISSING)
                .collect();
            if !wrong.is_empty() {
                return Err(ApiError::parameters(wrong));
            }
            params
        }
        Err(errors) => return Err(ApiError::parameters(errors)),
    };
    if let Some(caller) = caller {
        if !endpoint
            .permission
            .allows(&state.access.config(), caller, &params)
        {
            return Err(ApiError::forbidden());
        }
    }
    Ok(params)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot read the request body",
        )),
    }
}

fn body_error_to_api_error(error: BodyError) -> ApiError {
    match error {
        BodyError::UnsupportedContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.to_string())
        }
        BodyError::NonScalarValue(ref name) => ApiError::parameter(name.clone(), error.to_string()),
        BodyError::InvalidJson(_) | BodyError::JsonNotAnObject | BodyError::InvalidUtf8 => {
            ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
        }
    }
}
