//! The Alertmanager webhook payload (`version: "4"`), as receivers written for
//! Alertmanager parse it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use swarmscope_processors::analytics::alerts::Alert;

use super::groups::Notification;

/// What Alertmanager writes as `endsAt` for an alert that has not ended.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The entries every alert shares.
fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Notification `n` (a group's state) to `receiver`. `external_url` is where
/// swarmscope's API is reached; each alert's `generatorURL` points at it. `status` is
/// `firing` while any alert of the group fires.
pub fn payload(receiver: &str, external_url: &str, n: &Notification, max_alerts: usize) -> Value {
    let alerts: &[Alert] = &n.alerts;
    let firing = alerts.iter().any(|a| a.status == "firing");
    let kept = if max_alerts > 0 {
        &alerts[..alerts.len().min(max_alerts)]
    } else {
        alerts
    };
    let labels: Vec<&BTreeMap<String, String>> = alerts.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&BTreeMap<String, String>> =
        alerts.iter().map(|a| &a.annotations).collect();
    let base = external_url.trim_end_matches('/');
    let items: Vec<Value> = kept
        .iter()
        .map(|a| {
            json!({
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": a.ends_at.map_or_else(|| NOT_ENDED.to_owned(), rfc3339),
                "generatorURL": format!("{base}/api/v1/alerts?fingerprint={}", a.fingerprint),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.key,
        "truncatedAlerts": alerts.len() - kept.len(),
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": n.labels,
        "commonLabels": common(&labels),
        "commonAnnotations": common(&annotations),
        "externalURL": base,
        "alerts": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(service: &str, status: &str) -> Alert {
        Alert {
            fingerprint: format!("fp-{service}"),
            status: status.into(),
            labels: [("alertname", "ErrorRateAnomaly"), ("service", service)]
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: 1_000_000_000,
            ends_at: (status == "resolved").then_some(2_000_000_000),
            value: Some(0.5),
            baseline: Some(0.0),
            detector: "ewma_mad".into(),
        }
    }

    fn group(alerts: Vec<Alert>) -> Notification {
        Notification {
            key: "{}:{alertname=\"ErrorRateAnomaly\"}".into(),
            labels: [("alertname".to_owned(), "ErrorRateAnomaly".to_owned())].into(),
            alerts,
        }
    }

    #[test]
    fn payload_has_alertmanagers_fields() {
        let p = payload(
            "ops",
            "http://host:8080/",
            &group(vec![alert("api", "firing"), alert("db", "resolved")]),
            0,
        );
        assert_eq!(p["groupKey"], "{}:{alertname=\"ErrorRateAnomaly\"}");
        assert_eq!(p["groupLabels"], json!({"alertname": "ErrorRateAnomaly"}));
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "ops");
        assert_eq!(p["commonLabels"], json!({"alertname": "ErrorRateAnomaly"}));
        assert_eq!(p["truncatedAlerts"], 0);
        assert_eq!(p["alerts"][0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(p["alerts"][0]["endsAt"], NOT_ENDED);
        assert_eq!(p["alerts"][1]["endsAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(
            p["alerts"][0]["generatorURL"],
            "http://host:8080/api/v1/alerts?fingerprint=fp-api"
        );
        let truncated = payload(
            "ops",
            "http://h",
            &group(vec![alert("api", "resolved"), alert("db", "resolved")]),
            1,
        );
        assert_eq!(truncated["truncatedAlerts"], 1);
        assert_eq!(truncated["status"], "resolved");
        assert_eq!(truncated["alerts"].as_array().map(Vec::len), Some(1));
    }
}
