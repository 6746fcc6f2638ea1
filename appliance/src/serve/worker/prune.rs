//! Results kept for the retention, then pruned; journals compacted. A
//! device left alone for years must not fill its disk with results nor
//! read ever-growing journals at every start.

use super::{study_key, Worker};

/// Compaction runs at start, after a prune (at most once per retention or
/// hour), and at least this often.
const COMPACT_EVERY_MS: u64 = 24 * 3600 * 1000;

impl Worker {
    /// Prune what is due, then compact the journals if due.
    pub(super) fn prune_if_due(&mut self) -> Result<(), String> {
        if self.prune()? > 0 {
            self.pruned_since_compaction = true;
        }
        let now = self.clock.monotonic_ms();
        let since = |every: u64| {
            self.compacted_ms
                .is_none_or(|t| now >= t.saturating_add(every))
        };
        // After a prune, soon (so a pruned study's patient attributes leave
        // the journals), but not more often than the retention or an hour.
        let after_prune = (self.delivery.result_retention.as_millis() as u64).min(3_600_000);
        let due = (self.pruned_since_compaction && since(after_prune)) || since(COMPACT_EVERY_MS);
        if due {
            self.compact()?;
        }
        Ok(())
    }

    /// Forget every study whose inputs are retired and whose last
    /// publication and last delivery are older than the result retention:
    /// its versions, SRs, pictures, Secondary Captures and instance results
    /// are deleted. The spool keeps each instance's record (a tombstone
    /// after compaction), so a resend is still recognised as a duplicate.
    fn prune(&mut self) -> Result<usize, String> {
        let due = self.due_for_pruning()?;
        for uid in &due {
            let Some(p) = self.published.get(uid) else {
                continue;
            };
            self.store
                .remove_study(uid, &p.instances)
                .map_err(|e| e.to_string())?;
            self.published.remove(uid);
            self.intake.board().forget_study(uid);
        }
        if !due.is_empty() {
            crate::serve::console::say(
                "results_pruned",
                serde_json::json!({
                    "studies": due.len(),
                    "retention_s": self.delivery.result_retention.as_secs(),
                }),
            );
        }
        Ok(due.len())
    }

    /// Studies whose published inputs are all retired, that hold no other
    /// live input (a late instance waiting to be published keeps its study),
    /// whose every result was delivered (or dropped), and whose last
    /// publication and delivery are older than the retention.
    fn due_for_pruning(&self) -> Result<Vec<String>, String> {
        let keep_ms = self.delivery.result_retention.as_millis() as u64;
        let now = self.clock.unix_ms();
        let settled = self.outbox().settled_studies();
        let publications = self
            .store
            .publications()
            .latest()
            .map_err(|e| e.to_string())?;
        let live: std::collections::HashSet<String> = {
            let spool = self.intake.spool();
            spool
                .records()
                .iter()
                .filter(|r| !spool.is_retired(r.id))
                .map(|r| r.study_instance_uid.clone())
                .collect()
        };
        Ok(self
            .published
            .iter()
            .filter(|(uid, p)| p.retired && !live.contains(*uid))
            .filter(|(uid, p)| {
                let published = publications
                    .get(*uid)
                    .map_or(p.completed_unix_ms, |x| x.published_unix_ms);
                // No entry: no destination (nothing to wait for); an entry
                // pending or dead-lettered: not settled, never due.
                let delivered = match settled.get(&study_key(uid)) {
                    None => Some(0),
                    Some(finished) => *finished,
                };
                delivered.is_some_and(|d| now >= published.max(d).saturating_add(keep_ms))
            })
            .map(|(uid, _)| uid.clone())
            .collect())
    }

    /// Compact the spool journal (the records of pruned instances become
    /// tombstones), the outbox journal (settled entries of pruned studies
    /// go) and the publication log (pruned studies go).
    pub(crate) fn compact(&mut self) -> Result<(), String> {
        let store = &self.store;
        let spool = self
            .intake
            .spool()
            .compact(|id, study| !store.has_instance(id) && !store.has_study_key(&study_key(study)))
            .map_err(|e| e.to_string())?;
        let outbox = self
            .outbox()
            .compact(|e| !store.has_study_key(&e.study_key))
            .map_err(|e| e.to_string())?;
        let publications = store
            .publications()
            .compact(|uid| !store.has_study_key(&study_key(uid)))
            .map_err(|e| e.to_string())?;
        self.compacted_ms = Some(self.clock.monotonic_ms());
        self.pruned_since_compaction = false;
        crate::serve::console::say(
            "journals_compacted",
            serde_json::json!({
                "spool_journal_bytes": [spool.0, spool.1],
                "outbox_journal_bytes": [outbox.0, outbox.1],
                "publication_log_bytes": [publications.0, publications.1],
            }),
        );
        Ok(())
    }
}
