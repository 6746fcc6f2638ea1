//! The outbox's sender: sends due entries one at a time, records every
//! attempt, and sleeps until the next entry is due or new work is queued.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::destination::{Destination, HttpEndpoint};
use crate::web_send;
use cxr_net::scu::{self, SendLimits};
use cxr_report::sr::SrDevice;
use cxr_store::clock::Clock;
use cxr_store::outbox::{Change, Entry, Outbox, Payload, RetryPolicy};
use cxr_store::results::StudyResult;

/// What the sender reports (the binary audits it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub entry: u64,
    pub destination: String,
    pub sop_instance_uid: String,
    pub change: Change,
    pub detail: String,
}

pub type OutboxObserver = Arc<dyn Fn(OutboxEvent) + Send + Sync>;

/// The longest the sender sleeps without looking again.
const TICK: Duration = Duration::from_secs(1);

/// The shortest pause between two looks at the outbox.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// Sends in flight at once.
const CONCURRENT_SENDS: usize = 4;

/// Run futures concurrently on this task and wait for all of them.
async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Due entries in groups sent together: at most [`CONCURRENT_SENDS`] each,
/// and never two FHIR transactions to one server at once (two conditional
/// creates of the same Device racing would both create it, and every later
/// `ifNoneExist` on it would then match twice and be refused).
fn batches(due: Vec<Entry>) -> Vec<Vec<Entry>> {
    // The server as its normal form names it (a journal may hold older
    // spellings of the same one).
    let server = |e: &Entry| {
        Destination::parse(&e.destination).map_or_else(|_| e.destination.clone(), |d| d.name())
    };
    let mut batches: Vec<Vec<Entry>> = Vec::new();
    for entry in due {
        let clashes = |batch: &Vec<Entry>| {
            entry.payload == Payload::FhirResult
                && batch
                    .iter()
                    .any(|e| e.payload == Payload::FhirResult && server(e) == server(&entry))
        };
        match batches
            .iter_mut()
            .find(|b| b.len() < CONCURRENT_SENDS && !clashes(b))
        {
            Some(batch) => batch.push(entry),
            None => batches.push(vec![entry]),
        }
    }
    batches
}

pub struct Forwarder {
    pub outbox: Arc<Mutex<Outbox>>,
    /// The state directory (entries name files relative to it).
    pub root: PathBuf,
    pub calling_ae: String,
    pub policy: RetryPolicy,
    pub limits: SendLimits,
    pub clock: Arc<dyn Clock>,
    /// The algorithm Device of the FHIR resources.
    pub device: SrDevice,
    /// The trust anchors of HTTPS destinations (the board's
    /// `forward_trust_pem`), when any destination is https.
    pub web_tls: Option<Arc<rustls::ClientConfig>>,
    pub observer: OutboxObserver,
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send until `stop`; an attempt in progress finishes first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let due = self.outbox().due(self.clock.unix_ms());
            // A few destinations' round trips at a time: a PACS answers
            // each association in tens of milliseconds, so one at a time
            // would let results queue behind each other.
            for batch in batches(due) {
                if *stop.borrow() {
                    return;
                }
                futures_join(batch.iter().map(|entry| self.attempt(entry))).await;
            }
            let now = self.clock.unix_ms();
            // Never less than a moment: a journal that cannot be written
            // must not make the sender spin.
            let wait = self
                .outbox()
                .next_due()
                .map_or(TICK, |t| {
                    Duration::from_millis(t.saturating_sub(now)).min(TICK)
                })
                .max(MIN_WAIT);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn attempt(&self, entry: &Entry) {
        let outcome = self.send(entry).await;
        let over_http =
            entry.destination.starts_with("dicomweb:") || entry.payload == Payload::FhirResult;
        let detail = match &outcome {
            Ok(s) if over_http => format!("HTTP {s}"),
            Ok(s) => format!("status {s:#06x}"),
            Err(e) => e.clone(),
        };
        let recorded = self
            .outbox()
            .record(entry.id, outcome, &self.policy, self.clock.unix_ms());
        match recorded {
            Ok(change) => (self.observer)(OutboxEvent {
                entry: entry.id,
                destination: entry.destination.clone(),
                sop_instance_uid: entry.sop_instance_uid.clone(),
                change,
                detail,
            }),
            Err(e) => eprintln!(
                "{}",
                serde_json::json!({ "event": "outbox_journal_fault", "code": e.code(), "message": e.to_string() })
            ),
        }
    }

    /// One send of the entry: Ok(status) when the destination stored it,
    /// Err otherwise (a refusal is an error too).
    async fn send(&self, entry: &Entry) -> Result<u16, String> {
        let destination = Destination::parse(&entry.destination)?;
        let path = self.root.join(&entry.file);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        match (&destination, entry.payload) {
            (Destination::Dicom(peer), Payload::Dicom) => self.c_store(peer, entry, &bytes).await,
            (Destination::DicomWeb(server), Payload::Dicom) => {
                web_send::stow(self.route(server), &entry.sop_instance_uid, bytes).await
            }
            (Destination::Fhir(server), Payload::FhirResult) => {
                self.fhir(server, &path, &bytes).await
            }
            (d, p) => Err(format!(
                "a {p:?} entry cannot go to {} (fix: `outbox drop {}`)",
                d.name(),
                entry.id
            )),
        }
    }

    async fn c_store(
        &self,
        peer: &scu::Destination,
        entry: &Entry,
        bytes: &[u8],
    ) -> Result<u16, String> {
        let status = scu::store(
            peer,
            &self.calling_ae,
            &entry.sop_class_uid,
            &entry.sop_instance_uid,
            bytes,
            self.limits,
        )
        .await?;
        if scu::stored(status) {
            Ok(status)
        } else {
            Err(format!("{} answered status {status:#06x}", peer.name()))
        }
    }

    /// The result version in `bytes` (its JSON) as one FHIR transaction.
    async fn fhir(
        &self,
        server: &HttpEndpoint,
        path: &std::path::Path,
        bytes: &[u8],
    ) -> Result<u16, String> {
        let result: StudyResult = serde_json::from_slice(bytes)
            .map_err(|e| format!("parsing {}: {e}", path.display()))?;
        // The version it replaces, beside it: its labels this one dropped.
        let previous: Option<StudyResult> = (result.version > 1)
            .then(|| path.with_file_name(format!("v{}.json", result.version - 1)))
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        let bundle = cxr_report::fhir::transaction_bundle(&result, previous.as_ref(), &self.device);
        web_send::fhir_transaction(self.route(server), &bundle).await
    }

    fn route<'a>(&'a self, endpoint: &'a HttpEndpoint) -> web_send::Route<'a> {
        web_send::Route {
            endpoint,
            tls: self.web_tls.as_ref(),
            limits: self.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_store::outbox::EntryState;

    fn entry(id: u64, destination: &str, payload: Payload) -> Entry {
        Entry {
            id,
            study_key: "k".into(),
            version: 1,
            file: "f".into(),
            sop_class_uid: String::new(),
            sop_instance_uid: format!("1.{id}"),
            destination: destination.into(),
            payload,
            created_unix_ms: 0,
            state: EntryState::Pending,
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            finished_unix_ms: None,
        }
    }

    #[test]
    fn fhir_transactions_to_one_server_never_go_together() {
        let fhir = "fhir:http://f:80/fhir";
        let due = vec![
            entry(1, fhir, Payload::FhirResult),
            entry(2, fhir, Payload::FhirResult),
            entry(3, "PACS@p:104", Payload::Dicom),
            entry(4, "PACS@p:104", Payload::Dicom),
            entry(5, "fhir:http://g:80/fhir", Payload::FhirResult),
            // The same server spelt otherwise.
            entry(6, "fhir:http://f/fhir/", Payload::FhirResult),
            entry(7, "PACS@p:104", Payload::Dicom),
        ];
        let batches = batches(due);
        let ids: Vec<Vec<u64>> = batches
            .iter()
            .map(|b| b.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 3, 4, 5], vec![2, 7], vec![6]]);
        for b in &batches {
            let to_f = b
                .iter()
                .filter(|e| e.destination.starts_with("fhir:http://f"))
                .count();
            assert!(to_f <= 1 && b.len() <= CONCURRENT_SENDS);
        }
    }
}
