//! `cxr-http`: the HTTP side of the service: STOW-RS into the same
//! [`Intake`] as C-STORE, QIDO-RS and WADO-RS, the results API, FHIR R4,
//! the operator's page, login and health, `/metrics`. axum routes over
//! hyper's HTTP/1 connections, accepted here so that the header timeout,
//! the connection cap and the peer address are ours.
//!
//! Every route but `/healthz` and `/readyz` needs a principal: a bearer
//! token, or a session cookie with its CSRF token on every state change.
//!
//! It reads and writes the store (`cxr-store`) through its public API only
//! (the intake, result and outbox types, the spool's records), and must not
//! know how the spool lays out its files, nor how a decision is made.

pub mod credentials;
pub mod tls;

mod access;
mod api;
mod auth;
pub mod dicomweb;
pub mod exports;
mod fhir;
pub mod metrics;
pub mod operator;
mod page;
mod stow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use credentials::CredentialStore;
use cxr_net::multipart;
use cxr_net::scp::Watermarks;
use cxr_store::intake::Intake;
use cxr_store::results::ResultStore;

pub use auth::{Principal, Sessions};

/// The HTTP side's limits and timeouts.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The largest STOW-RS body (bytes); a larger one is answered 413.
    pub max_body_bytes: u64,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A STOW-RS body may pause at most this long between two pieces.
    pub body_idle_timeout: Duration,
    /// Any other request must be answered within this.
    pub request_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one address at most (a quarter of
    /// `max_connections` by default): one client holding its connections
    /// half-open cannot deny everyone else, health probes included.
    pub max_connections_per_address: usize,
    /// Session cookies carry `Secure` (the listener speaks TLS).
    pub secure_cookies: bool,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    pub multipart: multipart::Limits,
    /// `/metrics` answers a loopback peer without credentials (a local
    /// scraper); everyone else needs the viewer role.
    pub metrics_open_to_loopback: bool,
    /// The largest bundle file the page may upload (bytes).
    pub max_bundle_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1 << 30,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 64,
            max_connections_per_address: 16,
            secure_cookies: false,
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            multipart: multipart::Limits::default(),
            metrics_open_to_loopback: false,
            max_bundle_bytes: 4 << 30,
        }
    }
}

/// Why the service is not ready: a stable code and a message.
pub type NotReady = (String, String);

/// Whether a verified model is serving (the binary knows; this crate does not).
pub type Readiness = Arc<dyn Fn() -> Result<(), NotReady> + Send + Sync>;

/// A Study Instance UID's pseudonym in audit records: the keyed digest
/// (HMAC under the device secret) the inference records carry too.
pub type StudyPseudonym = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the audit log hears from the HTTP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    /// A password login, granted or refused.
    Login {
        user: String,
        peer: String,
        granted: bool,
        detail: String,
    },
    /// Study data was read (see [`exports`]).
    Export {
        actor: String,
        peer: String,
        channel: String,
        study_key: String,
        what: String,
        repeats: u32,
    },
}

/// Records an event; `false` when it could not be queued for the audit log
/// (an export: when it is not in the log). It may block on the log: the
/// routes call it off the network task.
pub type HttpObserver = Arc<dyn Fn(HttpEvent) -> bool + Send + Sync>;

/// Everything the routes reach.
pub struct HttpService {
    pub config: HttpConfig,
    pub intake: Arc<Intake>,
    pub results: ResultStore,
    pub credentials: CredentialStore,
    pub sessions: Sessions,
    pub ready: Readiness,
    pub study_pseudonym: StudyPseudonym,
    pub watermarks: Watermarks,
    pub observer: HttpObserver,
    /// This appliance as its results name it (FHIR Device, SR equipment).
    pub device: cxr_report::SrDevice,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The gauges, read at each scrape.
    pub gauges: Arc<dyn Fn() -> crate::metrics::Gauges + Send + Sync>,
    pub outbox: Arc<std::sync::Mutex<cxr_store::outbox::Outbox>>,
    /// The binary's side of the page's actions.
    pub operations: Arc<dyn operator::Operations>,
    pub jobs: operator::Jobs,
    /// Where uploaded bundles wait for their install.
    pub upload_dir: std::path::PathBuf,
    /// The written objects' identities, for QIDO-RS and WADO-RS.
    pub identities: dicomweb::IdentityCache,
    /// Which reads of study data were audited lately.
    pub exports: exports::ExportLedger,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    /// Whether the spool is above both watermarks (as the DICOM receiver
    /// checks before it admits an association); unknown free space is not.
    pub fn below_watermark(&self) -> bool {
        let spool = self.intake.spool();
        spool.headroom() < self.watermarks.spool_headroom
            || spool
                .free_disk_bytes()
                .is_none_or(|free| free < self.watermarks.free_disk)
    }
}

/// Run blocking work (file reads, fsyncs, password hashing) off the
/// network task; a panic in it is answered 500.
pub(crate) async fn off_task<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "HTTP_INTERNAL",
            e.to_string(),
        )
    })
}

/// The peer a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A refusal as the API says it: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cxr-appliance\""),
            );
        }
        response
    }
}

type Routes = Router<Arc<HttpService>>;

/// Health, the results API, login, the operator's page and its actions.
fn api_routes() -> Routes {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/studies", get(api::studies))
        .route("/api/v1/studies/{study}", get(api::study))
        .route("/api/v1/changes", get(api::changes))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/session", get(auth::session))
        .route("/api/v1/worklist", get(operator::worklist))
        .route(
            "/api/v1/studies/{study}/detail",
            get(operator::study_detail),
        )
        .route(
            "/api/v1/studies/{study}/picture",
            get(operator::study_picture),
        )
        .route("/api/v1/studies/{study}/rerun", post(operator::rerun_study))
        .route(
            "/api/v1/deliveries/{entry}/retry",
            post(operator::retry_delivery),
        )
        .route("/api/v1/system", get(operator::system))
        .route("/api/v1/audit/verify", post(operator::verify_audit))
        .route("/api/v1/bundles/rollback", post(operator::rollback_bundle))
        .route("/api/v1/jobs/{id}", get(operator::job))
        .route("/api/v1/access", get(access::list))
        .route("/api/v1/access/users", post(access::add_user))
        .route("/api/v1/access/users/{name}", delete(access::remove_user))
        .route(
            "/api/v1/access/users/{name}/password",
            post(access::set_password),
        )
        .route("/api/v1/access/tokens", post(access::create_token))
        .route("/api/v1/access/tokens/{id}", delete(access::revoke_token))
        .route("/", get(page::index))
        .route("/assets/{name}", get(page::asset))
}

/// The read side of DICOMweb (QIDO-RS, WADO-RS) and FHIR.
fn read_routes() -> Routes {
    let instance = "/dicomweb/studies/{study}/series/{series}/instances/{instance}";
    Router::new()
        .route("/fhir/metadata", get(fhir::metadata))
        .route("/fhir/DiagnosticReport", get(fhir::search_reports))
        .route("/fhir/{kind}/{id}", get(fhir::read))
        .route("/fhir/{kind}/{id}/_history", get(fhir::history))
        .route("/fhir/{kind}/{id}/_history/{vid}", get(fhir::version))
        .route("/dicomweb/studies", get(dicomweb::studies))
        .route("/dicomweb/series", get(dicomweb::all_series))
        .route("/dicomweb/instances", get(dicomweb::all_instances))
        .route("/dicomweb/studies/{study}", get(dicomweb::retrieve_study))
        .route(
            "/dicomweb/studies/{study}/series",
            get(dicomweb::study_series),
        )
        .route(
            "/dicomweb/studies/{study}/instances",
            get(dicomweb::study_instances),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances",
            get(dicomweb::series_instances),
        )
        .route(instance, get(dicomweb::retrieve_instance))
        .route(
            &format!("{instance}/rendered"),
            get(dicomweb::rendered_instance),
        )
}

/// A 408 for a request not answered within `deadline`.
async fn within(
    deadline: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "HTTP_REQUEST_TIMEOUT",
            "the request took too long (fix: send the whole request promptly)",
        )
        .into_response(),
    }
}

/// The routes. STOW-RS and the bundle upload read their own bodies
/// (bounded, with an idle timeout); every other request has a small body
/// limit and an overall deadline.
pub fn router(service: Arc<HttpService>) -> Router {
    let deadline = service.config.request_timeout;
    let https = service.config.secure_cookies;
    let bounded = api_routes()
        .merge(read_routes())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            exports::audited,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(move |request, next| {
            within(deadline, request, next)
        }));
    let uploads = Router::new()
        .route("/dicomweb/studies", post(stow::store_any))
        .route("/dicomweb/studies/{study}", post(stow::store_in_study))
        .route("/api/v1/bundles", post(operator::upload_bundle))
        .layer(DefaultBodyLimit::disable());
    bounded
        .merge(uploads)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "HTTP_NOT_FOUND", "no such resource")
        })
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(move |request, next| {
            transport_security(https, request, next)
        }))
        .with_state(service)
}

/// Under TLS, browsers are told to come back over HTTPS only.
async fn transport_security(
    https: bool,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if https {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// No framing, no sniffing, no caching of patient data, no referrer; and
/// no CORS header at all, so that browsers keep other origins out.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serve one connection (plain or TLS) with the header timeout. When
/// `stop` turns, a request in progress (an upload included) is finished and
/// answered, then the connection closes; an idle one closes at once.
async fn serve_connection<IO>(
    io: IO,
    app: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(Peer(peer));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        // A client may shut its side after the body and wait for the
        // answer (curl --data-binary @- does); that is not an abort.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// How long a stop waits for requests in progress to finish.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Accept connections until `stop`; each is served on its own task with
/// the header timeout (the TLS handshake included), and connections over
/// the cap are answered 503 (closed, under TLS). With `tls`, only HTTPS is
/// spoken on the port. After `stop`, requests in progress are finished
/// (at most [`DRAIN`]) before this returns.
pub async fn serve(
    listener: TcpListener,
    service: Arc<HttpService>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(service.config.max_connections));
    let per_address = AddressSlots::new(service.config.max_connections_per_address);
    let header_timeout = service.config.header_timeout;
    let app = router(service);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok((stream, peer)) = accepted else {
            // Out of descriptors and the like: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(address_slot) = per_address.take(peer.ip()) else {
            if acceptor.is_none() {
                tokio::spawn(refuse_busy(stream));
            }
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if acceptor.is_none() {
                tokio::spawn(refuse_busy(stream));
            }
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            match acceptor {
                None => serve_connection(stream, app, peer, header_timeout, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        serve_connection(tls, app, peer, header_timeout, stop).await;
                    }
                }
            }
            drop(slot);
            drop(address_slot);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
}

/// Open connections per peer address, capped.
#[derive(Clone)]
struct AddressSlots {
    cap: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// One connection's hold on its address's count, given back on drop.
struct AddressSlot {
    address: std::net::IpAddr,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl AddressSlots {
    fn new(cap: usize) -> AddressSlots {
        AddressSlots {
            cap: cap.max(1),
            open: Arc::default(),
        }
    }

    /// A slot for `address`, unless it holds `cap` already.
    fn take(&self, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            address,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body =
        r#"{"error":{"code":"HTTP_BUSY","message":"too many connections (fix: retry later)"}}"#;
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(reply.as_bytes())).await;
}
