//! The HTTP side's wiring: the same intake, results, model, outbox and
//! study board as the DICOM receiver; logins audited through the notes
//! queue; the gauges `/metrics` reads at each scrape.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use cxr_audit::Event;
use cxr_http::credentials::CredentialStore;
use cxr_http::metrics::{Gauges, Metrics};
use cxr_http::{HttpConfig, HttpEvent, HttpObserver, HttpService, Readiness, Sessions};
use cxr_net::scp::{Associations, Watermarks};
use cxr_report::SrDevice;
use cxr_store::assembly::StudyBoard;
use cxr_store::intake::Intake;
use cxr_store::outbox::{EntryState, Outbox};
use cxr_store::results::{Reason, ResultStore};

use super::{notes, Model};

/// What the HTTP side shares with the rest of the service.
pub(super) struct HttpWiring<'a> {
    pub settings: &'a cxr_board::ServeSettings,
    pub state: &'a Path,
    pub results: ResultStore,
    pub intake: &'a Arc<Intake>,
    pub model: &'a Arc<Mutex<Result<Model, Reason>>>,
    pub notes: &'a notes::Notes,
    pub device: SrDevice,
    pub outbox: &'a Arc<Mutex<Outbox>>,
    pub board: &'a Arc<StudyBoard>,
    pub metrics: &'a Arc<Metrics>,
    /// Set once the DICOM receiver exists (it binds after this is built).
    pub associations: &'a Arc<OnceLock<Associations>>,
    pub operations: Arc<dyn cxr_http::operator::Operations>,
    pub study_pseudonym: cxr_http::StudyPseudonym,
}

/// Ready when a verified model serves and the audit log takes records
/// (otherwise every study would be refused).
fn readiness(model: &Arc<Mutex<Result<Model, Reason>>>, notes: &notes::Notes) -> Readiness {
    let model = Arc::clone(model);
    let notes = notes.clone();
    Arc::new(move || {
        if let Err(r) = &*model.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err((r.code.clone(), r.message.clone()));
        }
        notes.audit_health()
    })
}

/// Logins and exports, into the audit log.
fn http_observer(notes: &notes::Notes) -> HttpObserver {
    let notes = notes.clone();
    Arc::new(move |event| match event {
        HttpEvent::Login {
            user,
            peer,
            granted,
            detail,
        } => notes.record(Event::Login {
            user,
            peer,
            granted,
            detail,
        }),
        HttpEvent::Export {
            actor,
            peer,
            channel,
            study_key,
            what,
            repeats,
        } => notes.record_now(Event::Exported {
            actor,
            peer,
            channel,
            study_key,
            what,
            repeats,
        }),
    })
}

fn gauges(w: &HttpWiring<'_>) -> Arc<dyn Fn() -> Gauges + Send + Sync> {
    let (intake, outbox, board) = (
        Arc::clone(w.intake),
        Arc::clone(w.outbox),
        Arc::clone(w.board),
    );
    let associations = Arc::clone(w.associations);
    Arc::new(move || {
        let (queued_instances, queued_studies) = board.backlog();
        let (used, headroom, free) = {
            let spool = intake.spool();
            (
                spool.used_bytes(),
                spool.headroom(),
                spool.free_disk_bytes(),
            )
        };
        let (pending, dead) = {
            let outbox = outbox.lock().unwrap_or_else(|p| p.into_inner());
            let count = |s: EntryState| outbox.entries().filter(|e| e.state == s).count() as u64;
            (count(EntryState::Pending), count(EntryState::Dead))
        };
        Gauges {
            queued_instances: queued_instances as u64,
            queued_studies: queued_studies as u64,
            open_associations: associations.get().map_or(0, |a| a.open() as u64),
            spool_used_bytes: used,
            spool_headroom_bytes: headroom,
            disk_free_bytes: free,
            outbox_pending: pending,
            outbox_dead: dead,
        }
    })
}

/// The HTTP side as the network task starts it.
pub(super) struct HttpSide {
    pub address: SocketAddr,
    pub service: HttpService,
    /// HTTPS only, with this configuration (and certificate fingerprint).
    pub tls: Option<(Arc<rustls::ServerConfig>, String)>,
}

/// The names a self-signed certificate covers: localhost, the listening
/// address (unless it is a wildcard) and this machine's host name.
pub(crate) fn certificate_names(address: &SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !address.ip().is_unspecified() && !address.ip().is_loopback() {
        names.push(address.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            names.push(host.to_owned());
        }
    }
    names
}

/// Make the certificate on first start, then load it.
pub(crate) fn tls_config(
    state: &Path,
    address: &SocketAddr,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    use cxr_http::tls;
    let (date, _) = cxr_report::sr::date_time(crate::device::now_unix_ms());
    let today = (
        date[..4].parse().unwrap_or(2026),
        date[4..6].parse().unwrap_or(1),
        date[6..8].parse().unwrap_or(1),
    );
    let tls_error = |e: tls::TlsError| anyhow::anyhow!("{}: {e}", e.code());
    tls::ensure_certificate(state, &certificate_names(address), today).map_err(tls_error)?;
    let config = tls::server_config(state).map_err(tls_error)?;
    let info = tls::certificate_info(state).map_err(tls_error)?;
    Ok((config, info.fingerprint_sha256))
}

/// The HTTP side, when the board (or `--http-listen`) names an address.
pub(super) fn http_side(w: HttpWiring<'_>) -> anyhow::Result<Option<HttpSide>> {
    let settings = w.settings;
    let Some(listen) = &settings.http_listen else {
        return Ok(None);
    };
    let address: SocketAddr = listen
        .parse()
        .with_context(|| format!("serve.http_listen {listen:?}"))?;
    // Uploads a crash left behind were never installed.
    let _ = std::fs::remove_dir_all(cxr_http::operator::upload_dir(w.state));
    let service = HttpService {
        config: HttpConfig {
            max_body_bytes: settings.http_max_body_bytes,
            max_connections: settings.http_max_connections,
            max_connections_per_address: (settings.http_max_connections / 4).max(1),
            header_timeout: Duration::from_secs(settings.http_header_timeout_s),
            body_idle_timeout: Duration::from_secs(settings.http_body_timeout_s),
            metrics_open_to_loopback: settings.http_metrics_open_to_loopback,
            secure_cookies: settings.http_tls,
            ..HttpConfig::default()
        },
        intake: Arc::clone(w.intake),
        results: w.results.clone(),
        credentials: CredentialStore::new(w.state),
        sessions: Sessions::new(),
        ready: readiness(w.model, w.notes),
        study_pseudonym: Arc::clone(&w.study_pseudonym),
        watermarks: Watermarks {
            spool_headroom: settings.min_headroom_bytes,
            free_disk: settings.min_free_disk_bytes,
        },
        observer: http_observer(w.notes),
        gauges: gauges(&w),
        metrics: Arc::clone(w.metrics),
        device: w.device,
        outbox: Arc::clone(w.outbox),
        operations: w.operations,
        jobs: cxr_http::operator::Jobs::default(),
        upload_dir: cxr_http::operator::upload_dir(w.state),
        identities: Default::default(),
        exports: Default::default(),
    };
    let tls = if settings.http_tls {
        Some(tls_config(w.state, &address)?)
    } else {
        None
    };
    Ok(Some(HttpSide {
        address,
        service,
        tls,
    }))
}
