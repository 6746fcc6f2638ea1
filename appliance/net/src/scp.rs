//! The DICOM receiver: C-ECHO and C-STORE SCP on tokio, with `dicom-ul`'s
//! PDU codec and our own association handling (dicom-ul's acceptor can only
//! reject permanently and reads PDUs without a size bound).
//!
//! - Every PDU's length is checked against the negotiated maximum before a
//!   byte of its body is read; the codec then parses in strict mode, behind
//!   `catch_unwind` (it indexes past the end of some malformed items).
//! - The called AE title must be ours; calling AE title and source address
//!   must match the allow-list. Above the global or per-calling-AE cap, or
//!   when the sink is near its quota or its disk near full, the
//!   association is refused with
//!   A-ASSOCIATE-RJ *transient*, local limit exceeded, so the modality
//!   retries later. Every refusal and abort is reported to the observer
//!   (the binary audits it).
//! - Only Verification and the CR, DX and Secondary Capture storage classes
//!   are accepted, with the transfer syntaxes the ingest path decodes.
//! - Data PDVs stream into the [`StoreSink`] (the service's spool); the
//!   C-STORE-RSP says success only once the sink says the instance is
//!   durable.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PDataValue, PDataValueType, Pdu, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::dimse::{echo_response, status, store_response, Event, MessageReader, Request};
use crate::pdu_io::{abort, read_one, send};

/// The DICOM application context (PS3.7 Annex A.2.1).
const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
const VERIFICATION: &str = "1.2.840.10008.1.1";

/// The storage SOP classes served: CR, DX for presentation and for
/// processing, Secondary Capture.
pub const STORAGE_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.7",
];

/// Largest A-ASSOCIATE-RQ read (its items are small; dcmtk sends a few KiB).
const MAX_ASSOCIATE_PDU: u32 = 64 * 1024;

/// Most presentation contexts in one request (dcmtk's storescu proposes
/// about 120 when asked for every storage class).
const MAX_CONTEXTS: usize = 128;

/// Who may associate: a calling AE title (any when `None`) from an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub calling_ae: Option<String>,
    pub from: PeerFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFilter {
    Any,
    Loopback,
    Address(IpAddr),
}

impl PeerFilter {
    fn matches(self, ip: IpAddr) -> bool {
        match self {
            PeerFilter::Any => true,
            PeerFilter::Loopback => ip.is_loopback(),
            PeerFilter::Address(a) => a == ip,
        }
    }
}

/// What the command said the data set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    /// The calling AE title and address, as data for the record.
    pub source: String,
    /// The association it came on (for the study completion rule).
    pub association: u64,
}

/// The status a C-STORE-RSP (or a STOW-RS entry) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReply {
    pub status: u16,
    /// Why, for a failure: a stable code and a short message.
    pub comment: Option<String>,
    /// Set on success only: the sink made the instance durable.
    pub durable: bool,
    /// The data set's SOP Class and Instance UIDs, once it was read.
    pub instance: Option<(String, String)>,
}

impl StoreReply {
    pub fn refused(status: u16, code: &str, message: impl std::fmt::Display) -> Self {
        StoreReply {
            status,
            comment: Some(format!("{code}: {message}")),
            durable: false,
            instance: None,
        }
    }

    /// The reply when storing faulted inside (a panic off the network
    /// task): nothing was acknowledged, so the sender may retry.
    pub fn internal_fault() -> Self {
        StoreReply::refused(
            status::PROCESSING_FAILURE,
            "STORE_PANICKED",
            "internal fault while storing",
        )
    }

    /// The same reply, naming the instance it is about.
    pub fn about(mut self, sop_class_uid: &str, sop_instance_uid: &str) -> Self {
        self.instance = Some((sop_class_uid.to_owned(), sop_instance_uid.to_owned()));
        self
    }
}

/// Where the receiver hands each instance: the service's intake, which
/// checks it and makes it durable. The receiver answers with the reply's
/// status, and answers success only for a reply that says durable.
pub trait StoreSink: Send + Sync + 'static {
    /// One instance being received; dropping it discards what was written.
    type Incoming: Send + 'static;

    /// Start receiving an instance, or refuse it before its data arrives.
    fn begin(&self, request: &StoreRequest) -> Result<Self::Incoming, StoreReply>;
    /// One fragment of the data set, in order; an error refuses the instance.
    fn write(&self, incoming: &mut Self::Incoming, chunk: &[u8]) -> Result<(), StoreReply>;
    /// Check and commit a completely received instance. Blocking: the
    /// receiver calls it off the network task.
    fn finish(&self, incoming: Self::Incoming, request: &StoreRequest) -> StoreReply;
    /// Bytes the sink may still take before its quota, and bytes free on
    /// its disk, `None` when unknown (new associations are refused below
    /// the watermarks, and when the free space is unknown).
    fn headroom(&self) -> (u64, Option<u64>);
    /// An association ended (released, aborted or dropped): its studies may
    /// complete.
    fn association_ended(&self, association: u64);
}

/// The receiver's settings.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    pub ae_title: String,
    pub allow: Vec<AllowRule>,
    /// The largest P-DATA PDU we accept (advertised as our Maximum Length).
    pub max_pdu: u32,
    /// For the A-ASSOCIATE-RQ after connecting.
    pub acse_timeout: Duration,
    /// For the next PDU while a message is partly received.
    pub dimse_timeout: Duration,
    /// For the next message between messages.
    pub idle_timeout: Duration,
    pub max_associations: usize,
    pub max_per_calling_ae: usize,
    /// The transfer syntaxes offered, in preference order.
    pub transfer_syntaxes: Vec<String>,
}

impl ScpConfig {
    /// The development defaults: `CXR_APPLIANCE`, any calling AE from loopback.
    pub fn development() -> Self {
        ScpConfig {
            ae_title: "CXR_APPLIANCE".into(),
            allow: vec![AllowRule {
                calling_ae: None,
                from: PeerFilter::Loopback,
            }],
            max_pdu: 256 * 1024,
            acse_timeout: Duration::from_secs(10),
            dimse_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_associations: 16,
            max_per_calling_ae: 4,
            transfer_syntaxes: cxr_dicom::decodable_transfer_syntaxes()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn allows(&self, calling_ae: &str, ip: IpAddr) -> bool {
        self.allow.iter().any(|r| {
            r.from.matches(ip) && r.calling_ae.as_deref().is_none_or(|ae| ae == calling_ae)
        })
    }
}

/// What the receiver reports (the binary audits each one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScpEvent {
    /// An association refused at negotiation.
    Refused {
        peer: SocketAddr,
        calling_ae: String,
        code: &'static str,
        transient: bool,
    },
    /// An association aborted by us (or dropped) before its release.
    Aborted {
        peer: SocketAddr,
        calling_ae: String,
        code: &'static str,
        detail: String,
    },
}

pub type Observer = Arc<dyn Fn(ScpEvent) + Send + Sync>;

/// Associations in progress, globally and per calling AE title.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ae: HashMap<String, usize>,
}

struct Shared<S: StoreSink> {
    config: ScpConfig,
    sink: Arc<S>,
    observer: Observer,
    counts: Arc<Mutex<Counts>>,
    sockets: AtomicUsize,
    next_association: AtomicU64,
    watermarks: Watermarks,
}

/// New associations are refused (transiently) below either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Bytes the sink (the spool) may still take before its quota.
    pub spool_headroom: u64,
    /// Bytes free on the sink's file system.
    pub free_disk: u64,
}

/// An open socket's place in the count, given back on drop (a panicking
/// association task included).
struct SocketSlot<S: StoreSink>(Arc<Shared<S>>);

impl<S: StoreSink> Drop for SocketSlot<S> {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An admitted association's place in the counts, given back on drop.
struct Admission<S: StoreSink> {
    shared: Arc<Shared<S>>,
    calling_ae: String,
}

impl<S: StoreSink> Drop for Admission<S> {
    fn drop(&mut self) {
        let mut c = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ae.get_mut(&self.calling_ae) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ae.remove(&self.calling_ae);
            }
        }
    }
}

/// An accepted presentation context.
#[derive(Debug, Clone)]
struct Accepted {
    abstract_syntax: String,
    transfer_syntax: String,
}

/// The answer to each proposed context, and the accepted ones by id.
fn negotiate_contexts(
    rq: &AssociationRQ,
    config: &ScpConfig,
) -> (Vec<PresentationContextResult>, HashMap<u8, Accepted>) {
    let mut results = Vec::new();
    let mut accepted = HashMap::new();
    for pc in &rq.presentation_contexts {
        let abstract_syntax = pc.abstract_syntax.trim_end_matches('\0').to_owned();
        let served =
            abstract_syntax == VERIFICATION || STORAGE_CLASSES.contains(&abstract_syntax.as_str());
        let proposed: Vec<&str> = pc
            .transfer_syntaxes
            .iter()
            .map(|t| t.trim_end_matches('\0'))
            .collect();
        let chosen = config
            .transfer_syntaxes
            .iter()
            .find(|t| proposed.contains(&t.as_str()));
        let (reason, ts) = match (served, chosen) {
            (false, _) => (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                "1.2.840.10008.1.2".to_owned(),
            ),
            (true, None) => (
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                "1.2.840.10008.1.2".to_owned(),
            ),
            (true, Some(t)) => {
                accepted.insert(
                    pc.id,
                    Accepted {
                        abstract_syntax: abstract_syntax.clone(),
                        transfer_syntax: t.clone(),
                    },
                );
                (PresentationContextResultReason::Acceptance, t.clone())
            }
        };
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            transfer_syntax: ts,
        });
    }
    (results, accepted)
}

impl<S: StoreSink> Shared<S> {
    fn report(&self, event: ScpEvent) {
        (self.observer)(event);
    }

    /// Check an association request: Ok with its admission, or why not.
    fn admit(
        self: &Arc<Self>,
        rq: &AssociationRQ,
        peer: SocketAddr,
    ) -> Result<Admission<S>, Refusal> {
        let user = |reason, code| Refusal {
            source: AssociationRJSource::ServiceUser(reason),
            code,
            transient: false,
        };
        let calling = rq.calling_ae_title.trim().to_owned();
        let mut ids = std::collections::HashSet::new();
        let contexts_ok = rq.presentation_contexts.len() <= MAX_CONTEXTS
            && rq
                .presentation_contexts
                .iter()
                .all(|pc| pc.id % 2 == 1 && ids.insert(pc.id));
        if !contexts_ok {
            return Err(user(
                AssociationRJServiceUserReason::NoReasonGiven,
                "ASSOCIATION_BAD_CONTEXTS",
            ));
        }
        if rq.application_context_name.trim_end_matches('\0') != APPLICATION_CONTEXT {
            return Err(user(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
                "ASSOCIATION_BAD_CONTEXT",
            ));
        }
        if rq.called_ae_title.trim() != self.config.ae_title {
            return Err(user(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                "ASSOCIATION_CALLED_AE",
            ));
        }
        if !self.config.allows(&calling, peer.ip()) {
            return Err(user(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                "ASSOCIATION_NOT_ALLOWED",
            ));
        }
        let limit = |code| Refusal {
            source: AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
            code,
            transient: true,
        };
        let (headroom, free_disk) = self.sink.headroom();
        if headroom < self.watermarks.spool_headroom {
            return Err(limit("ASSOCIATION_SPOOL_WATERMARK"));
        }
        if free_disk.is_none_or(|free| free < self.watermarks.free_disk) {
            return Err(limit("ASSOCIATION_DISK_WATERMARK"));
        }
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let for_ae = c.per_ae.get(&calling).copied().unwrap_or(0);
        if c.total >= self.config.max_associations || for_ae >= self.config.max_per_calling_ae {
            return Err(limit("ASSOCIATION_LIMIT"));
        }
        c.total += 1;
        *c.per_ae.entry(calling.clone()).or_insert(0) += 1;
        Ok(Admission {
            shared: Arc::clone(self),
            calling_ae: calling,
        })
    }
}

/// Why an association is refused: the A-ASSOCIATE-RJ's source and reason,
/// whether it is transient, and our stable code.
#[derive(Debug)]
struct Refusal {
    source: AssociationRJSource,
    code: &'static str,
    transient: bool,
}

impl Refusal {
    fn pdu(&self) -> Pdu {
        let result = if self.transient {
            AssociationRJResult::Transient
        } else {
            AssociationRJResult::Permanent
        };
        Pdu::AssociationRJ(AssociationRJ {
            result,
            source: self.source.clone(),
        })
    }
}

/// A receiver bound to its listener.
pub struct Scp<S: StoreSink> {
    shared: Arc<Shared<S>>,
    listener: TcpListener,
}

impl<S: StoreSink> std::fmt::Debug for Scp<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scp").finish_non_exhaustive()
    }
}

/// A handle that counts the receiver's open associations.
#[derive(Clone)]
pub struct Associations(Arc<Mutex<Counts>>);

impl std::fmt::Debug for Associations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Associations")
            .field("open", &self.open())
            .finish()
    }
}

impl Associations {
    /// Associations admitted and not yet ended.
    pub fn open(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl<S: StoreSink> Scp<S> {
    /// The count of open associations, readable while the receiver runs.
    pub fn associations(&self) -> Associations {
        Associations(Arc::clone(&self.shared.counts))
    }

    pub fn new(
        listener: TcpListener,
        config: ScpConfig,
        sink: Arc<S>,
        observer: Observer,
        watermarks: Watermarks,
    ) -> Self {
        Scp {
            shared: Arc::new(Shared {
                config,
                sink,
                observer,
                counts: Arc::new(Mutex::new(Counts::default())),
                sockets: AtomicUsize::new(0),
                next_association: AtomicU64::new(1),
                watermarks,
            }),
            listener,
        }
    }

    /// Accept associations until `stop` turns true; associations in
    /// progress are told to stop between messages.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        // Sockets beyond this are closed unanswered: a flood far above the
        // caps must not cost a task and a buffer each.
        let socket_cap = self.shared.config.max_associations * 2 + 8;
        let mut stop_accepting = stop.clone();
        let mut associations = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = stop_accepting.wait_for(|s| *s) => break,
                Some(_) = associations.join_next(), if !associations.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of descriptors, say: pause rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.shared.sockets.load(Ordering::SeqCst) >= socket_cap {
                drop(stream);
                continue;
            }
            self.shared.sockets.fetch_add(1, Ordering::SeqCst);
            let slot = SocketSlot(Arc::clone(&self.shared));
            let shared = Arc::clone(&self.shared);
            let stop = stop.clone();
            associations.spawn(async move {
                association(shared, stream, peer, stop).await;
                drop(slot);
            });
        }
        // Idle associations end at once; a transfer in progress finishes
        // its message (bounded by the DIMSE timeout) and is answered.
        while associations.join_next().await.is_some() {}
    }
}

async fn association<S: StoreSink>(
    shared: Arc<Shared<S>>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let rq = match read_one(
        &mut stream,
        &mut buf,
        MAX_ASSOCIATE_PDU,
        shared.config.acse_timeout,
    )
    .await
    {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(other) => {
            let detail = format!("expected A-ASSOCIATE-RQ, got {}", other.short_description());
            shared.report(aborted(peer, "", "PDU_UNEXPECTED", detail));
            return abort(&mut stream).await;
        }
        Err(f) => {
            shared.report(aborted(peer, "", f.code(), f.detail()));
            return abort(&mut stream).await;
        }
    };
    let calling_ae = rq.calling_ae_title.trim().to_owned();
    let admission = match shared.admit(&rq, peer) {
        Ok(a) => a,
        Err(refusal) => {
            let rj = refusal.pdu();
            let _ = tokio::time::timeout(shared.config.acse_timeout, send(&mut stream, &rj)).await;
            let _ = stream.shutdown().await;
            shared.report(ScpEvent::Refused {
                peer,
                calling_ae,
                code: refusal.code,
                transient: refusal.transient,
            });
            return;
        }
    };
    let (results, contexts) = negotiate_contexts(&rq, &shared.config);
    let ac = acceptance(&rq, results, shared.config.max_pdu);
    let sent = tokio::time::timeout(shared.config.acse_timeout, send(&mut stream, &ac)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let id = shared.next_association.fetch_add(1, Ordering::SeqCst);
    // Whatever way the session ends (a panic included), its studies may
    // then complete.
    let _ended = Ended(Arc::clone(&shared.sink), id);
    let mut session = Session {
        shared: Arc::clone(&shared),
        stream,
        buf,
        contexts,
        reader: MessageReader::default(),
        transfer: None,
        peer,
        calling_ae,
        association: id,
    };
    session.serve(stop).await;
    drop(admission);
}

/// The A-ASSOCIATE-AC for `rq`: the answer to each context, our maximum
/// P-DATA length and our implementation's identity.
fn acceptance(rq: &AssociationRQ, results: Vec<PresentationContextResult>, max_pdu: u32) -> Pdu {
    Pdu::AssociationAC(AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.into(),
        presentation_contexts: results,
        user_variables: vec![
            UserVariableItem::MaxLength(max_pdu),
            UserVariableItem::ImplementationClassUID(
                crate::part10::IMPLEMENTATION_CLASS_UID.into(),
            ),
            UserVariableItem::ImplementationVersionName(
                crate::part10::IMPLEMENTATION_VERSION_NAME.into(),
            ),
        ],
    })
}

/// Tells study assembly that an association ended, when dropped.
struct Ended<S: StoreSink>(Arc<S>, u64);

impl<S: StoreSink> Drop for Ended<S> {
    fn drop(&mut self) {
        self.0.association_ended(self.1);
    }
}

fn aborted(peer: SocketAddr, calling_ae: &str, code: &'static str, detail: String) -> ScpEvent {
    ScpEvent::Aborted {
        peer,
        calling_ae: calling_ae.to_owned(),
        code,
        detail,
    }
}

/// A C-STORE being received.
struct Transfer<I> {
    message_id: u16,
    context: u8,
    request: StoreRequest,
    incoming: Option<I>,
    /// Set once the instance is refused: the rest of its data is discarded.
    refusal: Option<StoreReply>,
}

/// One established association.
struct Session<S: StoreSink> {
    shared: Arc<Shared<S>>,
    stream: TcpStream,
    buf: Vec<u8>,
    contexts: HashMap<u8, Accepted>,
    reader: MessageReader,
    transfer: Option<Transfer<S::Incoming>>,
    peer: SocketAddr,
    calling_ae: String,
    association: u64,
}

/// How a session ends.
enum End {
    Released,
    Aborted(&'static str, String),
}

impl<S: StoreSink> Session<S> {
    async fn serve(&mut self, mut stop: watch::Receiver<bool>) {
        let end = loop {
            let mid_message = self.transfer.is_some();
            let timeout = if mid_message {
                self.shared.config.dimse_timeout
            } else {
                self.shared.config.idle_timeout
            };
            let pdu = tokio::select! {
                r = read_one(&mut self.stream, &mut self.buf, self.shared.config.max_pdu, timeout) => r,
                _ = stop.wait_for(|s| *s), if !mid_message => {
                    break End::Aborted("SERVICE_STOPPING", "the service is stopping".into());
                }
            };
            match pdu {
                Ok(Pdu::PData { data }) => {
                    if let Err((code, detail)) = self.p_data(data).await {
                        break End::Aborted(code, detail);
                    }
                }
                Ok(Pdu::ReleaseRQ) => {
                    let rp = send(&mut self.stream, &Pdu::ReleaseRP);
                    let _ = tokio::time::timeout(self.shared.config.acse_timeout, rp).await;
                    let _ = self.stream.shutdown().await;
                    break End::Released;
                }
                Ok(Pdu::AbortRQ { .. }) => {
                    break End::Aborted(
                        "ASSOCIATION_ABORTED_BY_PEER",
                        "A-ABORT from the peer".into(),
                    )
                }
                Ok(other) => {
                    break End::Aborted(
                        "PDU_UNEXPECTED",
                        format!("unexpected {}", other.short_description()),
                    )
                }
                Err(f) => break End::Aborted(f.code(), f.detail()),
            }
        };
        if let End::Aborted(code, detail) = end {
            // Whatever was being received goes (the sink discards it when
            // it is dropped): it was never acknowledged.
            self.transfer = None;
            if code != "ASSOCIATION_ABORTED_BY_PEER" && code != "ASSOCIATION_DROPPED" {
                abort(&mut self.stream).await;
            }
            self.shared
                .report(aborted(self.peer, &self.calling_ae, code, detail));
        }
    }

    async fn p_data(&mut self, values: Vec<PDataValue>) -> Result<(), (&'static str, String)> {
        for v in values {
            let Some(context) = self.contexts.get(&v.presentation_context_id).cloned() else {
                return Err((
                    "DIMSE_UNKNOWN_CONTEXT",
                    format!(
                        "presentation context {} was not accepted",
                        v.presentation_context_id
                    ),
                ));
            };
            let is_command = v.value_type == PDataValueType::Command;
            let event = self
                .reader
                .push(v.presentation_context_id, is_command, v.is_last, &v.data)
                .map_err(|e| (e.code(), e.to_string()))?;
            match event {
                None => {}
                Some(Event::Command(set)) => {
                    let request = set.request().map_err(|e| (e.code(), e.to_string()))?;
                    self.command(request, v.presentation_context_id, &context)
                        .await?;
                }
                Some(Event::Data { chunk, last }) => {
                    self.data(chunk);
                    if last {
                        self.finish_store().await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn respond(
        &mut self,
        context: u8,
        command: Vec<u8>,
    ) -> Result<(), (&'static str, String)> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        };
        let sent = tokio::time::timeout(
            self.shared.config.dimse_timeout,
            send(&mut self.stream, &pdu),
        );
        match sent.await {
            Ok(Ok(())) => Ok(()),
            _ => Err((
                "ASSOCIATION_DROPPED",
                "the response could not be sent".into(),
            )),
        }
    }

    async fn command(
        &mut self,
        request: Request,
        context_id: u8,
        context: &Accepted,
    ) -> Result<(), (&'static str, String)> {
        match request {
            Request::Echo { message_id } => {
                let status = if context.abstract_syntax == VERIFICATION {
                    status::SUCCESS
                } else {
                    status::SOP_CLASS_NOT_SUPPORTED
                };
                self.respond(context_id, echo_response(message_id, status))
                    .await
            }
            Request::Store {
                message_id,
                sop_class_uid,
                sop_instance_uid,
                ..
            } => {
                let request = StoreRequest {
                    sop_class_uid,
                    sop_instance_uid,
                    transfer_syntax: context.transfer_syntax.clone(),
                    source: format!("{}@{}", self.calling_ae, self.peer.ip()),
                    association: self.association,
                };
                let (incoming, refusal) = if request.sop_class_uid != context.abstract_syntax {
                    let reply = StoreReply::refused(
                        status::SOP_CLASS_NOT_SUPPORTED,
                        "DIMSE_CONTEXT_MISMATCH",
                        "SOP class differs from its presentation context",
                    );
                    (None, Some(reply))
                } else {
                    match self.shared.sink.begin(&request) {
                        Ok(i) => (Some(i), None),
                        Err(reply) => (None, Some(reply)),
                    }
                };
                self.transfer = Some(Transfer {
                    message_id,
                    context: context_id,
                    request,
                    incoming,
                    refusal,
                });
                Ok(())
            }
        }
    }

    /// One data fragment: to the sink, unless the instance is refused.
    fn data(&mut self, chunk: &[u8]) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if let Some(incoming) = t.incoming.as_mut() {
            if let Err(refusal) = self.shared.sink.write(incoming, chunk) {
                t.incoming = None;
                t.refusal = Some(refusal);
            }
        }
    }

    async fn finish_store(&mut self) -> Result<(), (&'static str, String)> {
        let Some(t) = self.transfer.take() else {
            return Ok(());
        };
        let reply = match (t.refusal, t.incoming) {
            (Some(r), _) => r,
            (None, Some(incoming)) => {
                let sink = Arc::clone(&self.shared.sink);
                let request = t.request.clone();
                tokio::task::spawn_blocking(move || sink.finish(incoming, &request))
                    .await
                    .unwrap_or_else(|_| StoreReply::internal_fault())
            }
            (None, None) => StoreReply::refused(
                status::PROCESSING_FAILURE,
                "STORE_LOST",
                "no transfer in progress",
            ),
        };
        // Success is acknowledged only when the sink vouches the instance
        // is durable.
        let reply = if reply.status == status::SUCCESS && !reply.durable {
            StoreReply::refused(
                status::PROCESSING_FAILURE,
                "STORE_NOT_DURABLE",
                "the instance was not made durable",
            )
        } else {
            reply
        };
        let rsp = store_response(
            t.message_id,
            &t.request.sop_class_uid,
            &t.request.sop_instance_uid,
            reply.status,
            reply.comment.as_deref(),
        );
        self.respond(t.context, rsp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    /// A sink that takes nothing and reports the given headroom.
    struct Headroom(u64, Option<u64>);

    impl StoreSink for Headroom {
        type Incoming = ();

        fn begin(&self, _: &StoreRequest) -> Result<(), StoreReply> {
            Err(StoreReply::refused(
                status::PROCESSING_FAILURE,
                "TEST",
                "no",
            ))
        }

        fn write(&self, _: &mut (), _: &[u8]) -> Result<(), StoreReply> {
            Ok(())
        }

        fn finish(&self, _: (), _: &StoreRequest) -> StoreReply {
            StoreReply::refused(status::PROCESSING_FAILURE, "TEST", "no")
        }

        fn headroom(&self) -> (u64, Option<u64>) {
            (self.0, self.1)
        }

        fn association_ended(&self, _: u64) {}
    }

    fn admission_code(sink: Headroom) -> Option<&'static str> {
        let shared = Arc::new(Shared {
            config: ScpConfig::development(),
            sink: Arc::new(sink),
            observer: Arc::new(|_| {}),
            counts: Arc::new(Mutex::new(Counts::default())),
            sockets: AtomicUsize::new(0),
            next_association: AtomicU64::new(1),
            watermarks: Watermarks {
                spool_headroom: 1 << 20,
                free_disk: 1 << 20,
            },
        });
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".into(),
            called_ae_title: "CXR_APPLIANCE".into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: VERIFICATION.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
            }],
            user_variables: Vec::new(),
        };
        let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
        shared.admit(&rq, peer).err().map(|refusal| {
            assert!(refusal.transient, "{}", refusal.code);
            refusal.code
        })
    }

    #[test]
    fn associations_are_refused_below_the_watermarks_and_when_free_space_is_unknown() {
        assert_eq!(admission_code(Headroom(u64::MAX, Some(u64::MAX))), None);
        assert_eq!(
            admission_code(Headroom(1, Some(u64::MAX))),
            Some("ASSOCIATION_SPOOL_WATERMARK")
        );
        assert_eq!(
            admission_code(Headroom(u64::MAX, Some(1))),
            Some("ASSOCIATION_DISK_WATERMARK")
        );
        assert_eq!(
            admission_code(Headroom(u64::MAX, None)),
            Some("ASSOCIATION_DISK_WATERMARK")
        );
    }
}
