//! `serve`'s settings: the board profile's `[serve]` section, with a
//! development board's command-line overrides.

use std::time::Duration;

use anyhow::Context;
use cxr_board::{BoardKind, BoardProfile, ServeSettings};
use cxr_delivery::destination::Destination;
use cxr_net::scp::{AllowRule, PeerFilter, ScpConfig};
use cxr_store::outbox::RetryPolicy;

use super::ServeArgs;

/// The board's `serve` settings with a development board's overrides; a
/// release board refuses them (it binds only to what its profile names).
pub(super) fn settings(args: &ServeArgs, board: &BoardProfile) -> anyhow::Result<ServeSettings> {
    let mut s = board.serve.clone();
    let overridden = args.listen.is_some()
        || args.http_listen.is_some()
        || args.ae_title.is_some()
        || !args.allow.is_empty()
        || !args.forward.is_empty()
        || args.forward_trust_pem.is_some()
        || args.stable_s.is_some()
        || args.retry_initial_s.is_some()
        || args.retry_max_s.is_some()
        || args.retain_hours.is_some()
        || args.retention_days.is_some();
    if overridden && board.kind == BoardKind::Release {
        anyhow::bail!(
            "SERVE_OVERRIDE_REFUSED: board `{}` is a release board: --listen, --http-listen, --ae-title, --allow, --forward, --forward-trust-pem, --stable-s, --retry-initial-s, --retry-max-s, --retain-hours and --retention-days are refused (fix: the board profile's [serve] section sets them)",
            board.id
        );
    }
    if let Some(l) = args.listen {
        s.dicom_listen = l.to_string();
    }
    if let Some(l) = args.http_listen {
        s.http_listen = Some(l.to_string());
    }
    if let Some(ae) = &args.ae_title {
        s.ae_title = ae.clone();
    }
    if !args.allow.is_empty() {
        s.allow = args
            .allow
            .iter()
            .map(|a| parse_allow(a))
            .collect::<anyhow::Result<_>>()?;
    }
    if !args.forward.is_empty() {
        s.forward = args.forward.clone();
    }
    if let Some(pem) = &args.forward_trust_pem {
        s.forward_trust_pem = Some(pem.clone());
    }
    if let Some(t) = args.retry_max_s {
        anyhow::ensure!(
            t.is_finite() && (1.0..=24.0 * 3600.0).contains(&t),
            "--retry-max-s {t}: use 1 to 86400 seconds"
        );
        s.retry_max_s = t;
        s.retry_initial_s = s.retry_initial_s.min(t);
    }
    if let Some(t) = args.retry_initial_s {
        anyhow::ensure!(
            t.is_finite() && t > 0.0 && t <= s.retry_max_s,
            "--retry-initial-s {t}: use more than 0, at most the cap ({} s)",
            s.retry_max_s
        );
        s.retry_initial_s = t;
    }
    if let Some(h) = args.retain_hours {
        anyhow::ensure!(
            h.is_finite() && (0.0..=24.0 * 3650.0).contains(&h),
            "--retain-hours {h}: use 0 to 87600 hours"
        );
        s.retain_hours = h;
    }
    if let Some(d) = args.retention_days {
        anyhow::ensure!(
            d.is_finite() && d > 0.0 && d <= 3650.0,
            "--retention-days {d}: use more than 0, at most 3650"
        );
        s.retention_days = d;
    }
    if let Some(t) = args.stable_s {
        anyhow::ensure!(
            t.is_finite() && (0.0..=3600.0).contains(&t),
            "--stable-s {t}: use 0 to 3600 seconds"
        );
        s.stable_s = t;
    }
    Ok(s)
}

fn parse_allow(text: &str) -> anyhow::Result<cxr_board::AllowedPeer> {
    let (ae, from) = text
        .rsplit_once('@')
        .with_context(|| format!("--allow {text:?}: write AE@ADDRESS or @ADDRESS"))?;
    Ok(cxr_board::AllowedPeer {
        calling_ae: (!ae.is_empty()).then(|| ae.to_owned()),
        from: from.to_owned(),
    })
}

pub(super) fn scp_config(s: &ServeSettings) -> anyhow::Result<ScpConfig> {
    let allow = s
        .allow
        .iter()
        .map(|p| {
            let from = match p.from.as_str() {
                "any" => PeerFilter::Any,
                "loopback" => PeerFilter::Loopback,
                ip => PeerFilter::Address(
                    ip.parse()
                        .with_context(|| format!("allow from {ip:?}: not an IP address"))?,
                ),
            };
            Ok(AllowRule {
                calling_ae: p.calling_ae.clone(),
                from,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ScpConfig {
        ae_title: s.ae_title.clone(),
        allow,
        max_pdu: s.max_pdu,
        acse_timeout: Duration::from_secs(s.acse_timeout_s),
        dimse_timeout: Duration::from_secs(s.dimse_timeout_s),
        idle_timeout: Duration::from_secs(s.idle_timeout_s),
        max_associations: s.max_associations,
        max_per_calling_ae: s.max_per_calling_ae,
        ..ScpConfig::development()
    })
}

/// The configured destinations, each checked.
pub(super) fn destinations(s: &ServeSettings) -> anyhow::Result<Vec<String>> {
    s.forward
        .iter()
        .map(|d| {
            Destination::parse(d)
                .map(|d| d.name())
                .map_err(|e| anyhow::anyhow!("SERVE_BAD_DESTINATION: {e}"))
        })
        .collect()
}

/// The trust anchors of https destinations: `None` when none is https;
/// an https destination without a readable trust file stops the start.
pub(super) fn web_tls(
    s: &ServeSettings,
    state_dir: &std::path::Path,
) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
    let any_https = s
        .forward
        .iter()
        .any(|d| Destination::parse(d).is_ok_and(|d| d.needs_tls()));
    if !any_https {
        return Ok(None);
    }
    let Some(pem) = &s.forward_trust_pem else {
        anyhow::bail!("SERVE_BAD_DESTINATION: an https destination needs the CA certificates it chains to (fix: forward_trust_pem in the board's [serve] section)");
    };
    let path = state_dir.join(pem);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "SERVE_BAD_TRUST: reading forward_trust_pem {}",
            path.display()
        )
    })?;
    cxr_delivery::web_send::client_config(&bytes)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("SERVE_BAD_TRUST: forward_trust_pem {}: {e}", path.display()))
}

pub(super) fn retry_policy(s: &ServeSettings) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs_f64(s.retry_initial_s),
        max: Duration::from_secs_f64(s.retry_max_s),
        retention: Duration::from_secs_f64(s.retention_days * 86_400.0),
    }
}

/// What this start applies: the board profile with the overrides, and the
/// digest of the destinations' trust anchors (a new file at the same path
/// is a change).
fn applied(board: &BoardProfile, serve: &ServeSettings) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let trust = serve.forward_trust_pem.as_ref().map(|p| {
        std::fs::read(board.state_dir.join(p)).map_or_else(
            |e| format!("unreadable: {e}"),
            |b| cxr_bundle::hex::encode(&Sha256::digest(&b)),
        )
    });
    serde_json::json!({
        "board": { "id": board.id, "kind": board.kind, "trust_dir": board.trust_dir, "accept_roles": board.accept_roles },
        "engine": board.engine,
        "audit": board.audit,
        "gate": board.gate,
        "serve": serve,
        "forward_trust_sha256": trust,
    })
}

/// The settings' names (`section.name`) whose values differ, whether set,
/// changed or gone.
fn changed_settings(before: Option<&serde_json::Value>, now: &serde_json::Value) -> Vec<String> {
    type Name = (String, Option<String>);
    let null = serde_json::Value::Null;
    let names = |v: &serde_json::Value| -> Vec<Name> {
        let mut out = Vec::new();
        for (section, values) in v.as_object().into_iter().flatten() {
            match values.as_object() {
                Some(fields) => {
                    out.extend(fields.keys().map(|n| (section.clone(), Some(n.clone()))))
                }
                None => out.push((section.clone(), None)),
            }
        }
        out
    };
    let value = |v: Option<&serde_json::Value>, (section, name): &Name| {
        let s = v.map_or(&null, |v| &v[section]);
        match name {
            Some(n) => s.get(n).unwrap_or(&null).clone(),
            None => s.clone(),
        }
    };
    let mut all = names(now);
    for old in before.map(names).unwrap_or_default() {
        if !all.contains(&old) {
            all.push(old);
        }
    }
    let mut changed: Vec<String> = all
        .iter()
        .filter(|k| before.is_none() || value(before, k) != value(Some(now), k))
        .map(|(s, n)| n.as_ref().map_or(s.clone(), |n| format!("{s}.{n}")))
        .collect();
    changed.sort();
    changed
}

/// Audit the settings this start applies (a `ConfigApplied` record with
/// what changed since the previous start), then keep them in the state
/// directory for the next comparison. Unaudited, the service does not start.
pub(super) fn audit_applied(
    state_dir: &std::path::Path,
    board: &BoardProfile,
    serve: &ServeSettings,
    log: &mut cxr_audit::AuditLog,
) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let path = state_dir.join("serve-settings.json");
    let now = applied(board, serve);
    let before: Option<serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let bytes = serde_json::to_vec_pretty(&now)?;
    let event = cxr_audit::Event::ConfigApplied {
        board: board.id.clone(),
        settings_sha256: Sha256::digest(&bytes).into(),
        changed: changed_settings(before.as_ref(), &now),
    };
    log.append(crate::device::now_unix_ms(), event)
        .context("SERVE_CONFIG_UNAUDITED: the audit log cannot record the settings, so the service does not start")?;
    cxr_fsio::write_atomically(&path, &bytes, 0o666)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_settings_name_each_field_that_differs() {
        let before =
            json!({ "board": { "id": "dev" }, "serve": { "forward": [], "stable_s": 20.0 } });
        let now = json!({ "board": { "id": "dev" }, "serve": { "forward": ["fhir:http://x:80/f"], "stable_s": 20.0, "new": true } });
        assert_eq!(
            changed_settings(Some(&before), &now),
            ["serve.forward", "serve.new"]
        );
        assert_eq!(
            changed_settings(Some(&now), &before),
            ["serve.forward", "serve.new"],
            "a setting gone is a change too"
        );
        assert!(changed_settings(Some(&now), &now).is_empty());
        assert_eq!(
            changed_settings(None, &now).len(),
            4,
            "everything, the first time"
        );
        let trust = |d: &str| json!({ "serve": {}, "forward_trust_sha256": d });
        assert_eq!(
            changed_settings(Some(&trust("aa")), &trust("bb")),
            ["forward_trust_sha256"]
        );
    }
}
