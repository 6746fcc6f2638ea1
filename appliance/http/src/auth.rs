//! Who is asking, and may they: bearer tokens for machines, session cookies
//! (HttpOnly, SameSite=Strict, Secure under TLS) for people, a CSRF token
//! on every state change made with a cookie, and a login that is rate
//! limited per address and audited whether it succeeds or not.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::credentials::{random_hex, Role};
use super::{ApiError, HttpEvent, HttpService, Peer};
use cxr_fsio::hex;

const COOKIE: &str = "cxr_session";
const CSRF_HEADER: &str = "x-csrf-token";
/// Sessions held at most; the oldest is ended to make room.
const MAX_SESSIONS: usize = 256;
/// Failed logins per address per window before it must wait.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most by the limiter (then it starts afresh).
const MAX_TRACKED: usize = 4096;

/// Who made a request, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user, or `token:ID`.
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    role: Role,
    /// A digest of the user's password hash at login: a new password (or
    /// the user removed and added again) ends the session.
    credential: String,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// Sessions in memory (a restart logs everyone out), keyed by the digest of
/// the cookie value, with the login limiter.
#[derive(Debug)]
pub struct Sessions {
    by_digest: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Password checks are slow on purpose: at most two at once.
    checking: Arc<tokio::sync::Semaphore>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Self {
        Sessions {
            by_digest: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checking: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    fn digest(cookie: &str) -> String {
        hex(&Sha256::digest(cookie.as_bytes()))
    }

    /// The live session for `cookie`, touched.
    fn find(&self, cookie: &str, idle: Duration, lifetime: Duration) -> Option<Session> {
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        let key = Self::digest(cookie);
        let now = Instant::now();
        let live = map.get(&key).is_some_and(|s| {
            now.duration_since(s.last_used) < idle && now.duration_since(s.created) < lifetime
        });
        if !live {
            map.remove(&key);
            return None;
        }
        let session = map.get_mut(&key)?;
        session.last_used = now;
        Some(session.clone())
    }

    fn start(
        &self,
        user: &str,
        role: Role,
        credential: String,
    ) -> Result<(String, String), ApiError> {
        let cookie = random_hex(32).map_err(internal)?;
        let csrf = random_hex(32).map_err(internal)?;
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let now = Instant::now();
        map.insert(
            Self::digest(&cookie),
            Session {
                user: user.to_owned(),
                role,
                credential,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Ok((cookie, csrf))
    }

    fn end(&self, cookie: &str) -> Option<Session> {
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Self::digest(cookie))
    }

    /// Whether `ip` has used up its failed logins; `Some(wait)` if so.
    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (since, count) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.clear();
        }
        let now = Instant::now();
        let slot = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(slot.0) >= FAILURE_WINDOW {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "HTTP_INTERNAL",
        e.to_string(),
    )
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_REQUIRED", message)
}

/// What a session remembers of the password hash it logged in with.
fn credential_digest(hash: &str) -> String {
    hex(&Sha256::digest(hash.as_bytes()))
}

/// The principal behind a request, if it may do what needs `need`.
pub(super) fn authorize(
    service: &HttpService,
    headers: &HeaderMap,
    method: &Method,
    need: Role,
) -> Result<Principal, ApiError> {
    let principal = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("only `Authorization: Bearer TOKEN` is accepted"))?;
        let (id, role) = service
            .credentials
            .current()
            .check_token(token.trim())
            .ok_or_else(|| unauthorized("the token is unknown or revoked"))?;
        Principal {
            name: format!("token:{id}"),
            role,
        }
    } else if let Some(cookie) = cookie_value(headers, COOKIE) {
        let config = &service.config;
        let session = service
            .sessions
            .find(cookie, config.session_idle, config.session_lifetime)
            .ok_or_else(|| unauthorized("the session has ended (fix: log in again)"))?;
        // A user removed, given another role or a new password since
        // logging in is out.
        let current = service.credentials.current();
        let same = |u: &super::credentials::User| {
            u.name == session.user
                && u.role == session.role
                && credential_digest(&u.hash) == session.credential
        };
        if !current.users.iter().any(same) {
            service.sessions.end(cookie);
            return Err(unauthorized("the account changed (fix: log in again)"));
        }
        let safe = matches!(*method, Method::GET | Method::HEAD);
        let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let matches =
            |c: &str| super::credentials::same_bytes(c.as_bytes(), session.csrf.as_bytes());
        if !safe && !csrf.is_some_and(matches) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AUTH_CSRF",
                "a state change with a session cookie needs its X-CSRF-Token header",
            ));
        }
        Principal {
            name: session.user,
            role: session.role,
        }
    } else {
        return Err(unauthorized(
            "log in, or send `Authorization: Bearer TOKEN`",
        ));
    };
    if principal.role < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AUTH_ROLE",
            format!(
                "{} has role {}; this needs {}",
                principal.name,
                principal.role.name(),
                need.name()
            ),
        ));
    }
    Ok(principal)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    user: String,
    password: String,
}

fn session_cookie(value: &str, secure: bool, max_age_s: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("cxr_session=; Max-Age=0"))
}

pub(super) async fn login(
    State(service): State<Arc<HttpService>>,
    Extension(Peer(peer)): Extension<Peer>,
    form: Result<Json<LoginForm>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(form) = form.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "AUTH_BAD_LOGIN",
            format!("{e} (fix: send {{\"user\":…,\"password\":…}} as JSON)"),
        )
    })?;
    if let Some(wait) = service.sessions.blocked(peer.ip()) {
        let mut response = rate_limited().into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return Ok(response);
    }
    let role = check_password(&service, peer, form.user.clone(), form.password).await?;
    let event = |granted: bool, detail: &str| HttpEvent::Login {
        user: form.user.chars().take(64).collect(),
        peer: peer.to_string(),
        granted,
        detail: detail.to_owned(),
    };
    let Some((role, credential)) = role else {
        (service.observer)(event(false, "wrong user or password"));
        return Err(unauthorized("wrong user or password"));
    };
    // A login that cannot be audited is not granted.
    if !(service.observer)(event(true, role.name())) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "AUTH_AUDIT_UNAVAILABLE",
            "the login could not be recorded in the audit log (fix: retry in a moment)",
        ));
    }
    let (cookie, csrf) = service.sessions.start(&form.user, role, credential)?;
    let lifetime = service.config.session_lifetime.as_secs();
    let mut response =
        Json(serde_json::json!({ "user": form.user, "role": role.name(), "csrf": csrf }))
            .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&cookie, service.config.secure_cookies, lifetime),
    );
    Ok(response)
}

fn rate_limited() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "AUTH_RATE_LIMITED",
        "too many failed logins from this address (fix: wait, then try again)",
    )
}

/// The user's role and credential digest when the password is right; a
/// failure is counted against `peer`. One check at a time, off the async
/// workers (argon2 is slow on purpose).
async fn check_password(
    service: &Arc<HttpService>,
    peer: SocketAddr,
    user: String,
    password: String,
) -> Result<Option<(Role, String)>, ApiError> {
    let permit = Arc::clone(&service.sessions.checking)
        .acquire_owned()
        .await
        .map_err(internal)?;
    // Checked again with the permit held, and a failure counted before it
    // is given back: waiting attempts cannot slip past the limit together.
    if service.sessions.blocked(peer.ip()).is_some() {
        return Err(rate_limited());
    }
    let credentials = service.credentials.current();
    let checker = Arc::clone(service);
    super::off_task(move || {
        let _permit = permit;
        let role = credentials.check_password(&user, &password);
        if role.is_none() {
            checker.sessions.failed(peer.ip());
        }
        let credential = credentials
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| credential_digest(&u.hash));
        role.zip(credential)
    })
    .await
}

pub(super) async fn logout(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::POST, Role::Viewer)?;
    if let Some(cookie) = cookie_value(&headers, COOKIE) {
        service.sessions.end(cookie);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", service.config.secure_cookies, 0),
    );
    Ok(response)
}

/// Who the cookie belongs to, and the CSRF token the page sends back.
pub(super) async fn session(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let csrf = cookie_value(&headers, COOKIE).and_then(|c| {
        let config = &service.config;
        service
            .sessions
            .find(c, config.session_idle, config.session_lifetime)
            .map(|s| s.csrf)
    });
    Ok(Json(
        serde_json::json!({ "user": principal.name, "role": principal.role.name(), "csrf": csrf }),
    )
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_old_and_are_found_by_cookie_only() {
        let sessions = Sessions::new();
        let (cookie, csrf) = sessions.start("ada", Role::Admin, "h".into()).unwrap();
        let long = Duration::from_secs(3600);
        let found = sessions.find(&cookie, long, long).unwrap();
        assert_eq!(
            (found.user.as_str(), found.csrf.as_str()),
            ("ada", csrf.as_str())
        );
        assert!(sessions.find(&csrf, long, long).is_none());
        assert!(sessions.find(&cookie, Duration::ZERO, long).is_none());
        assert!(
            sessions.find(&cookie, long, long).is_none(),
            "an expired session is gone"
        );
    }

    #[test]
    fn an_address_is_blocked_after_five_failures_and_others_are_not() {
        let sessions = Sessions::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..4 {
            sessions.failed(a);
        }
        assert!(sessions.blocked(a).is_none());
        sessions.failed(a);
        assert!(sessions.blocked(a).is_some());
        assert!(sessions.blocked(b).is_none());
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = session_cookie("abc", true, 60);
        let text = c.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(text.contains(part), "{text}");
        }
        assert!(!session_cookie("abc", false, 60)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }
}
