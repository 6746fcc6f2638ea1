//! `serve`: the resident service. It loads, verifies and self-tests the
//! active bundle once, owns the audit log and the state directory, and runs
//! the DICOM receiver (`cxr-net`'s SCP over `cxr-store`'s intake) and the
//! one inference worker
//! until SIGTERM or SIGINT. Without a verified bundle it still receives and
//! stores, and answers every study with "no verified model".

mod admin;
mod config;
pub(crate) mod console;
pub(crate) mod http;
mod notes;
mod processor;
pub(crate) mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use crate::serve::worker::{Delivery, Worker};
use anyhow::Context;
use cxr_audit::{AuditLog, DeviceSecret, Event};
use cxr_delivery::forward::{Forwarder, OutboxEvent};
use cxr_engine::Selection;
use cxr_net::scp::{Scp, ScpConfig, ScpEvent, Watermarks};
use cxr_net::scu::SendLimits;
use cxr_report::SrDevice;
use cxr_store::assembly::StudyBoard;
use cxr_store::clock::{Clock as ServiceClock, SystemClock};
use cxr_store::intake::Intake;
use cxr_store::outbox::{Change, Outbox};
use cxr_store::results::{Reason, ResultStore};
use cxr_store::spool::{Spool, SpoolConfig};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::classify::{load_verified, select_for_source, Clock, EngineChoice, Source};
use crate::device::{now_unix_ms, Device, DeviceArgs};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serve with this bundle file instead of the active one; it is
    /// verified on the fly (trust, board, anti-rollback floor).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The DICOM receiver's address (default: the board profile's;
    /// development boards only). Port 0 picks a free port, printed at start.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Our AE title (development boards only).
    #[arg(long)]
    ae_title: Option<String>,
    /// Who may send: `AE@ADDRESS`, `@ADDRESS` (any AE), with ADDRESS an IP,
    /// `loopback` or `any`. Repeatable; replaces the profile's list
    /// (development boards only).
    #[arg(long)]
    allow: Vec<String>,
    /// Seconds without a new instance before a released study is complete
    /// (development boards only).
    #[arg(long)]
    stable_s: Option<f64>,
    /// Send every result to this destination: a C-STORE SCP
    /// (AE@HOST:PORT), a STOW-RS server (dicomweb:URL) or a FHIR server
    /// (fhir:URL). Repeatable; replaces the profile's list (development
    /// boards only).
    #[arg(long)]
    forward: Vec<String>,
    /// The CA certificates (PEM) that https destinations must chain to
    /// (development boards only; the profile's `forward_trust_pem`).
    #[arg(long)]
    forward_trust_pem: Option<std::path::PathBuf>,
    /// The outbox's first retry wait in seconds (doubling to the profile's
    /// cap; development boards only).
    #[arg(long)]
    retry_initial_s: Option<f64>,
    /// The outbox's longest retry wait in seconds (the profile's cap;
    /// development boards only).
    #[arg(long)]
    retry_max_s: Option<f64>,
    /// Hours an input is kept after its results reached every destination
    /// (development boards only).
    #[arg(long)]
    retain_hours: Option<f64>,
    /// Days results are kept (and the outbox retries) before they are
    /// pruned or dead-lettered; fractions allowed (development boards only).
    #[arg(long)]
    retention_days: Option<f64>,
    /// The HTTP side's address, plain HTTP (default: the board profile's;
    /// development boards only). Port 0 picks a free port, printed at start.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Engine (default: the board profile's).
    #[arg(long, value_enum)]
    engine: Option<EngineChoice>,
    /// Matrix-multiply threads for the CPU engine (default: the board profile's).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The verified model and its checked engine.
pub(super) struct Model {
    source: Source,
    selection: Selection,
}

/// Load and self-test the active bundle once. Without one, the reason
/// (audited) is what every study is answered with.
pub(super) fn load_model(
    bundle: Option<&std::path::Path>,
    engine: (Option<EngineChoice>, Option<usize>),
    device: &Device,
    log: &mut dyn crate::device::Recorder,
) -> anyhow::Result<Result<Model, Reason>> {
    let loaded = match load_verified(bundle, device) {
        Ok(source) => match select_for_source(&source, device, engine.0, engine.1)? {
            Ok(selection) => Ok(Model { source, selection }),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    Ok(loaded.map_err(|(code, message)| {
        let _ = log.record(
            now_unix_ms(),
            Event::StartRefused {
                code: code.clone(),
                message: message.clone(),
            },
        );
        Reason {
            code,
            message: format!("No verified model: nothing is classified ({message})"),
        }
    }))
}

/// Audit the receiver's refusals and aborts (a peer that simply closed
/// after its work is not a fault), summarised per address and code.
fn observer(notes: notes::Notes) -> cxr_net::scp::Observer {
    Arc::new(move |event: ScpEvent| {
        let (peer, calling_ae, code, transient) = match &event {
            ScpEvent::Refused {
                peer,
                calling_ae,
                code,
                transient,
            } => (peer, calling_ae, *code, *transient),
            ScpEvent::Aborted {
                peer,
                calling_ae,
                code,
                ..
            } => (peer, calling_ae, *code, false),
        };
        let (kind, detail) = match &event {
            ScpEvent::Refused { .. } => ("association_refused", String::new()),
            ScpEvent::Aborted { detail, .. } => ("association_aborted", detail.clone()),
        };
        console::say(
            kind,
            json!({ "peer": peer.to_string(), "calling_ae": calling_ae, "code": code, "transient": transient, "detail": detail }),
        );
        notes.association_fault(
            peer.ip(),
            peer.to_string(),
            calling_ae.clone(),
            code,
            transient,
        );
    })
}

/// Tell systemd (when it started us with `Type=notify`).
fn sd_notify(message: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = socket.send_to_addr(message.as_bytes(), &addr);
        }
    } else {
        let _ = socket.send_to(message.as_bytes(), &path);
    }
}

/// Every delivery attempt said on the console (a PACS outage is visible
/// as it happens); deliveries and dead letters audited too.
fn outbox_observer(notes: notes::Notes) -> cxr_delivery::forward::OutboxObserver {
    Arc::new(move |event: OutboxEvent| {
        let (state, retry_in_ms) = match event.change {
            Change::Delivered { .. } => ("delivered", None),
            Change::WillRetry { in_ms } => ("failed", Some(in_ms)),
            Change::Dead => ("dead", None),
        };
        console::say(
            match state {
                "delivered" => "delivery_succeeded",
                "dead" => "dead_letter",
                _ => "delivery_failed",
            },
            json!({ "entry": event.entry, "destination": event.destination, "sop_instance_uid": event.sop_instance_uid, "detail": event.detail, "retry_in_ms": retry_in_ms }),
        );
        if retry_in_ms.is_some() {
            return;
        }
        notes.record(Event::OutboxChanged {
            entry: event.entry,
            destination: event.destination,
            sop_instance_uid: event.sop_instance_uid,
            state: state.into(),
            detail: event.detail,
        });
    })
}

/// Result files that do not parse are moved aside, audited and printed,
/// rather than stopping the start (or a study) for good.
fn quarantine_unreadable(store: &ResultStore, audit: &mut AuditLog) -> anyhow::Result<()> {
    for (relative, reason) in store.unreadable_results()? {
        let path = format!("results/{}", relative.display());
        // Recorded before it moves: a log that cannot take it stops the start.
        audit.append(
            now_unix_ms(),
            Event::FileQuarantined {
                path: path.clone(),
                reason: reason.clone(),
            },
        )?;
        let target = store.quarantine(&relative)?;
        console::say(
            "file_quarantined",
            json!({ "path": path, "reason": reason, "moved_to": target.display().to_string() }),
        );
    }
    Ok(())
}

/// Entries queued for a destination the board no longer names are
/// dropped, each audited and printed: they would wait forever, and hold
/// their inputs.
fn drop_removed_destinations(shared: &Shared, configured: &[String]) -> anyhow::Result<()> {
    let mut outbox = shared.outbox.lock().unwrap_or_else(|p| p.into_inner());
    let dropped = outbox.drop_removed_destinations(configured, now_unix_ms())?;
    drop(outbox);
    let mut audit = shared.audit.lock().unwrap_or_else(|p| p.into_inner());
    for e in dropped {
        console::say(
            "outbox_dropped",
            json!({ "entry": e.id, "destination": e.destination, "detail": "the destination is no longer configured" }),
        );
        audit.append(
            now_unix_ms(),
            Event::OutboxChanged {
                entry: e.id,
                destination: e.destination,
                sop_instance_uid: e.sop_instance_uid,
                state: "dropped".into(),
                detail: "destination removed from the board".into(),
            },
        )?;
    }
    Ok(())
}

/// How audit records and operator messages name a study: the hex of its
/// keyed digest, as the inference records carry it.
fn pseudonym(secret: DeviceSecret) -> cxr_http::StudyPseudonym {
    Arc::new(move |uid: &str| cxr_fsio::hex(&secret.study_key(uid)))
}

/// This appliance as the SR names it: its serial and observer UID derive
/// from the device secret, so they are stable per device and reveal nothing.
fn sr_device(secret: &DeviceSecret) -> SrDevice {
    let serial: String = secret.study_key("device-serial")[..8]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    SrDevice {
        manufacturer: cxr_report::sr::APPLIANCE_MANUFACTURER.into(),
        model_name: cxr_report::sr::APPLIANCE_MODEL_NAME.into(),
        device_uid: cxr_report::uid::derived_uid("device-observer", &[&serial]),
        serial_number: serial,
        software_version: format!("cxr-appliance {}", env!("CARGO_PKG_VERSION")),
        implementation_class_uid: cxr_net::part10::IMPLEMENTATION_CLASS_UID.into(),
        implementation_version_name: cxr_net::part10::IMPLEMENTATION_VERSION_NAME.into(),
    }
}

pub(super) fn model_json(model: &Result<Model, Reason>) -> Value {
    match model {
        Ok(m) => {
            let b = m.source.bundle_ref();
            json!({ "ready": true, "bundle": { "model_id": b.model_id, "version": b.version, "digest": cxr_bundle::hex::encode(&b.digest), "key_id": m.source.key_id() }, "engine": m.selection.engine.name(), "precision": m.selection.engine.precision(), "reasons": m.selection.reasons })
        }
        Err(r) => json!({ "ready": false, "code": r.code, "message": r.message }),
    }
}

/// Everything the network side runs with.
struct Network {
    listen: SocketAddr,
    /// The HTTP side, when the board (or `--http-listen`) names an address.
    http: Option<http::HttpSide>,
    /// Where the receiver's association count goes once it exists.
    associations: Arc<std::sync::OnceLock<cxr_net::scp::Associations>>,
    scp: ScpConfig,
    watermarks: Watermarks,
    intake: Arc<Intake>,
    notes: notes::Notes,
    forwarder: Forwarder,
    admin: Arc<admin::Admin>,
    state_dir: PathBuf,
}

/// The spool, with the failpoints a test build honours, its recovery said.
fn open_spool(
    state: &std::path::Path,
    settings: &cxr_board::ServeSettings,
) -> anyhow::Result<Spool> {
    let (spool, recovery) = Spool::open(
        state,
        SpoolConfig {
            quota_bytes: settings.spool_quota_bytes,
            max_instance_bytes: settings.max_instance_bytes,
        },
    )?;
    #[cfg(feature = "testing")]
    let spool = {
        let mut spool = spool;
        if std::env::var_os("CXR_FAILPOINT").is_some() {
            use cxr_bundle::Failpoints;
            spool.set_crash_hook(|name| crate::device::EnvFailpoints::from_env().hit(name));
        }
        spool
    };
    if recovery != Default::default() {
        console::say(
            "spool_recovered",
            json!({ "partial_removed": recovery.partial_removed, "unjournalled_removed": recovery.unjournalled_removed, "torn_bytes": recovery.torn_bytes }),
        );
    }
    Ok(spool)
}

/// Run the runtime until a stop signal, then stop the worker.
fn run_until_stopped(
    network: Network,
    ready: Value,
    board: &StudyBoard,
    (worker, liveness): (std::thread::JoinHandle<()>, Liveness),
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(until_stopped(network, ready, &worker, &liveness))?;
    board.stop();
    let _ = worker.join();
    sd_notify("STOPPING=1");
    console::say("stopped", Value::Null);
    Ok(ExitCode::SUCCESS)
}

/// What `serve` shares between its worker, its network side and its
/// admin socket.
struct Shared {
    model: Arc<Mutex<Result<Model, Reason>>>,
    outbox: Arc<Mutex<Outbox>>,
    clock: Arc<dyn ServiceClock>,
    board: Arc<StudyBoard>,
    intake: Arc<Intake>,
    audit: Arc<Mutex<AuditLog>>,
    notes: notes::Notes,
    wake: Arc<Notify>,
    metrics: Arc<cxr_http::metrics::Metrics>,
    state: PathBuf,
    /// The worker's result store: the HTTP side reads the same publication
    /// log (one tail, so a compaction is seen at once).
    results: ResultStore,
}

/// What the settings say about the network side, checked before anything
/// is opened.
struct NetworkPlan {
    scp: ScpConfig,
    destinations: Vec<String>,
    web_tls: Option<Arc<rustls::ClientConfig>>,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let device = Device::open(&args.device)?;
    let settings = config::settings(args, &device.board)?;
    let plan = NetworkPlan {
        scp: config::scp_config(&settings)?,
        destinations: config::destinations(&settings)?,
        web_tls: config::web_tls(&settings, &device.board.state_dir)?,
    };
    let mut log = device.open_audit()?;
    config::audit_applied(&device.board.state_dir, &device.board, &settings, &mut log)?;
    let engine = (args.engine, args.threads);
    let model = load_model(args.bundle.as_deref(), engine, &device, &mut log)?;
    let status = model_json(&model);
    let state = device.board.state_dir.clone();
    let spool = open_spool(&state, &settings)?;
    let store = ResultStore::open(&state)?;
    quarantine_unreadable(&store, &mut log)?;
    let clock: Arc<dyn ServiceClock> = Arc::new(SystemClock::new());
    let board = Arc::new(StudyBoard::new(Duration::from_secs_f64(settings.stable_s)));
    let audit = Arc::new(Mutex::new(log));
    let shared = Shared {
        model: Arc::new(Mutex::new(model)),
        outbox: Arc::new(Mutex::new(Outbox::open(&state)?)),
        intake: Arc::new(Intake::new(spool, Arc::clone(&board), Arc::clone(&clock))),
        notes: notes::Notes::start(Arc::clone(&audit))?,
        clock,
        board,
        audit,
        wake: Arc::new(Notify::new()),
        metrics: Arc::new(cxr_http::metrics::Metrics::default()),
        state,
        results: store.clone(),
    };
    drop_removed_destinations(&shared, &plan.destinations)?;
    let secret = device.secret()?;
    let report_device = sr_device(&secret);
    let study_pseudonym = pseudonym(device.secret()?);
    let delivery = Delivery {
        device: sr_device(&secret),
        outbox: Arc::clone(&shared.outbox),
        destinations: plan.destinations.clone(),
        wake: Arc::clone(&shared.wake),
        retain: Duration::from_secs_f64(settings.retain_hours * 3600.0),
        secondary_capture: settings.send_secondary_capture,
        // A study's passing fault is retried on the outbox's schedule.
        fault_retry: Duration::from_secs_f64(settings.retry_initial_s),
        pseudonym: Arc::clone(&study_pseudonym),
        result_retention: Duration::from_secs_f64(settings.retention_days * 86_400.0),
    };
    let processor = processor::ServeProcessor {
        model: Arc::clone(&shared.model),
        board: device.board.clone(),
        clock: Clock(StdInstant::now()),
        audit: Arc::clone(&shared.audit),
        secret,
    };
    let parts = (
        Box::new(processor) as Box<dyn crate::serve::worker::Processor>,
        delivery,
    );
    let running = start_worker(&shared.intake, store, parts, &shared.clock, &shared.metrics)?;
    let (pending, studies) = shared.board.backlog();
    let admin = Arc::new(admin::Admin {
        outbox: Arc::clone(&shared.outbox),
        audit: Arc::clone(&shared.audit),
        wake: Arc::clone(&shared.wake),
        status: Mutex::new(status.clone()),
        model: Arc::clone(&shared.model),
        device: Device::open(&args.device)?,
        engine,
        intake: Arc::clone(&shared.intake),
        study_pseudonym: Arc::clone(&study_pseudonym),
        installing: Mutex::new(()),
    });
    let board = Arc::clone(&shared.board);
    let destinations = plan.destinations.clone();
    let network = network(shared, &settings, plan, admin, report_device)?;
    let ready = json!({ "serve": "ready", "dicom": null, "http": null, "ae_title": network.scp.ae_title, "model": status, "backlog": { "instances": pending, "studies": studies }, "destinations": destinations });
    run_until_stopped(network, ready, &board, running)
}

/// The network side: the DICOM receiver's settings, the HTTP side and the
/// outbox's sender.
fn network(
    shared: Shared,
    settings: &cxr_board::ServeSettings,
    plan: NetworkPlan,
    admin: Arc<admin::Admin>,
    report_device: SrDevice,
) -> anyhow::Result<Network> {
    let associations = Arc::new(std::sync::OnceLock::new());
    let http_service = http::http_side(http::HttpWiring {
        settings,
        state: &shared.state,
        results: shared.results.clone(),
        intake: &shared.intake,
        model: &shared.model,
        notes: &shared.notes,
        device: report_device.clone(),
        outbox: &shared.outbox,
        board: &shared.board,
        metrics: &shared.metrics,
        associations: &associations,
        study_pseudonym: Arc::clone(&admin.study_pseudonym),
        operations: Arc::clone(&admin) as Arc<dyn cxr_http::operator::Operations>,
    })?;
    Ok(Network {
        listen: settings.dicom_listen.parse()?,
        http: http_service,
        watermarks: Watermarks {
            spool_headroom: settings.min_headroom_bytes,
            free_disk: settings.min_free_disk_bytes,
        },
        forwarder: Forwarder {
            outbox: shared.outbox,
            root: shared.state.clone(),
            calling_ae: plan.scp.ae_title.clone(),
            policy: config::retry_policy(settings),
            limits: SendLimits::default(),
            clock: shared.clock,
            device: report_device,
            web_tls: plan.web_tls,
            observer: outbox_observer(shared.notes.clone()),
            wake: shared.wake,
        },
        admin,
        scp: plan.scp,
        intake: shared.intake,
        notes: shared.notes,
        state_dir: shared.state,
        associations,
    })
}

/// The one inference worker: study assembly filled from disk, then run
/// on its own thread.
fn start_worker(
    intake: &Arc<Intake>,
    store: ResultStore,
    (processor, delivery): (Box<dyn crate::serve::worker::Processor>, Delivery),
    clock: &Arc<dyn ServiceClock>,
    metrics: &Arc<cxr_http::metrics::Metrics>,
) -> anyhow::Result<(std::thread::JoinHandle<()>, Liveness)> {
    let mut worker = Worker::new(
        Arc::clone(intake),
        store,
        processor,
        Arc::clone(clock),
        delivery,
    )
    .with_metrics(Arc::clone(metrics));
    worker.restore()?;
    worker
        .compact()
        .map_err(|e| anyhow::anyhow!("compacting the journals at start: {e}"))?;
    let liveness = Liveness {
        heartbeat: worker.heartbeat(),
        clock: Arc::clone(clock),
    };
    let worker = std::thread::Builder::new()
        .name("cxr-worker".into())
        .spawn(move || worker.run())?;
    Ok((worker, liveness))
}

/// What the watchdog looks at: the worker's heartbeat on its clock.
struct Liveness {
    heartbeat: Arc<std::sync::atomic::AtomicU64>,
    clock: Arc<dyn ServiceClock>,
}

/// The longest one step of the worker may take (a study on a slow CPU)
/// before the watchdog is no longer fed.
const WORKER_SILENCE: Duration = Duration::from_secs(300);

impl Liveness {
    fn alive(&self, worker: &std::thread::JoinHandle<()>) -> bool {
        let beat = self.heartbeat.load(std::sync::atomic::Ordering::SeqCst);
        let silent = self.clock.monotonic_ms().saturating_sub(beat);
        !worker.is_finished() && silent < WORKER_SILENCE.as_millis() as u64
    }
}

async fn until_stopped(
    n: Network,
    mut ready: Value,
    worker: &std::thread::JoinHandle<()>,
    liveness: &Liveness,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(n.listen)
        .await
        .with_context(|| format!("binding the DICOM receiver to {}", n.listen))?;
    let admin_listener = admin::bind(&n.state_dir)?;
    ready["dicom"] = json!(listener.local_addr()?.to_string());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_side = None;
    if let Some(side) = n.http {
        let http = tokio::net::TcpListener::bind(side.address)
            .await
            .with_context(|| format!("binding the HTTP side to {}", side.address))?;
        ready["http"] = json!(http.local_addr()?.to_string());
        ready["https"] = json!(side.tls.is_some());
        let tls = side.tls.map(|(config, fingerprint)| {
            ready["tls_fingerprint_sha256"] = json!(fingerprint);
            config
        });
        let service = Arc::new(side.service);
        http_side = Some(tokio::spawn(cxr_http::serve(
            http,
            service,
            tls,
            stop_rx.clone(),
        )));
    }
    let scp = Scp::new(listener, n.scp, n.intake, observer(n.notes), n.watermarks);
    let _ = n.associations.set(scp.associations());
    let scp = tokio::spawn(scp.run(stop_rx.clone()));
    let forwarder = tokio::spawn(n.forwarder.run(stop_rx.clone()));
    tokio::spawn(admin::run(admin_listener, n.admin, stop_rx));
    println!("{ready}");
    sd_notify("READY=1");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut watchdog = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = watchdog.tick() => {
                // The watchdog is fed only while the worker is alive and
                // moving: a worker hung in one step gets the service restarted.
                if liveness.alive(worker) {
                    sd_notify("WATCHDOG=1");
                }
            }
        }
    }
    console::say(
        "stopping",
        json!({ "detail": "no new associations or HTTP connections; transfers in progress finish" }),
    );
    let _ = stop_tx.send(true);
    // Uploads and associations in progress finish together; then the
    // sender stops.
    let http_drained = async {
        if let Some(h) = http_side {
            let _ = tokio::time::timeout(cxr_http::DRAIN, h).await;
        }
    };
    let _ = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), scp),
        http_drained
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), forwarder).await;
    let _ = std::fs::remove_file(crate::admin_client::socket_path(&n.state_dir));
    Ok(())
}
