//! Alert groups, as Alertmanager's dispatcher keeps them: alerts with the same values
//! of the `group_by` labels form a group, and every notification carries the group's
//! whole current state: its firing alerts, and (with `send_resolved`) those resolved
//! since the last notification, once.
//!
//! When a group is notified:
//! - a new group, `group_wait` after its first alert (so alerts that start together
//!   go out together);
//! - a group that changed since its last notification (a new firing alert, or a
//!   resolved one with `send_resolved`), `group_interval` after that notification;
//! - a group still firing and unchanged, `repeat_interval` after it: a receiver that
//!   missed a page hears again;
//! - a notification that failed (any answer but 2xx, or none) is tried again after a
//!   backoff from 1 s up to `group_interval`, or after the receiver's `Retry-After` if
//!   that is later (at most `repeat_interval`), with the group's state at that time: a
//!   backlog is never replayed, the receiver hears the present.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use swarmscope_processors::analytics::alerts::Alert;

/// When groups are notified; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

#[derive(Debug)]
struct Group {
    labels: BTreeMap<String, String>,
    firing: BTreeMap<String, Alert>,
    resolved: BTreeMap<String, Alert>,
    created: Instant,
    /// The last notification delivered.
    sent: Option<Instant>,
    /// Whether the group changed since.
    changed: bool,
    /// Failed attempts in a row, and when the last was made.
    failures: u32,
    attempted: Option<Instant>,
    /// Not before this, as the receiver asked with `Retry-After`.
    not_before: Option<Instant>,
}

/// A group's notification: its key, its labels, its alerts (firing, then resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub alerts: Vec<Alert>,
}

/// The groups of one receiver.
#[derive(Debug)]
pub struct Groups {
    group_by: Vec<String>,
    send_resolved: bool,
    timing: Timing,
    by_key: HashMap<String, Group>,
}

/// Alertmanager's group key for the root route: `{}:{name="value", ...}`.
fn group_key(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

impl Groups {
    pub fn new(group_by: Vec<String>, send_resolved: bool, timing: Timing) -> Groups {
        Groups {
            group_by,
            send_resolved,
            timing,
            by_key: HashMap::new(),
        }
    }

    /// Takes an alert's transition (or a firing alert restored on start).
    pub fn apply(&mut self, alert: Alert, now: Instant) {
        let labels: BTreeMap<String, String> = self
            .group_by
            .iter()
            .filter_map(|l| Some((l.clone(), alert.labels.get(l)?.clone())))
            .collect();
        let key = group_key(&labels);
        let firing = alert.status == "firing";
        if !firing && !self.by_key.contains_key(&key) {
            return;
        }
        let group = self.by_key.entry(key).or_insert_with(|| Group {
            labels,
            firing: BTreeMap::new(),
            resolved: BTreeMap::new(),
            created: now,
            sent: None,
            changed: false,
            failures: 0,
            attempted: None,
            not_before: None,
        });
        let fp = alert.fingerprint.clone();
        if firing {
            group.resolved.remove(&fp);
            if group.firing.insert(fp, alert).is_none() {
                group.changed = true;
            }
        } else if group.firing.remove(&fp).is_some() && self.send_resolved {
            group.resolved.insert(fp, alert);
            group.changed = true;
        }
    }

    fn due_at(&self, g: &Group) -> Option<Instant> {
        let t = self.timing;
        if g.firing.is_empty() && g.resolved.is_empty() {
            return None;
        }
        if let Some(at) = g.attempted.filter(|_| g.failures > 0) {
            let backoff = Duration::from_secs(1)
                .saturating_mul(1 << g.failures.min(16).saturating_sub(1))
                .min(t.group_interval);
            return Some((at + backoff).max(g.not_before.unwrap_or(at)));
        }
        match g.sent {
            None => Some(g.created + t.group_wait),
            Some(sent) if g.changed => Some(sent + t.group_interval),
            Some(sent) if !g.firing.is_empty() => Some(sent + t.repeat_interval),
            Some(_) => None,
        }
    }

    /// The notifications due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Notification> {
        // A group whose alerts all resolved without a notification to give is done.
        self.by_key
            .retain(|_, g| !(g.firing.is_empty() && g.resolved.is_empty()));
        let mut out: Vec<Notification> = self
            .by_key
            .iter()
            .filter(|(_, g)| self.due_at(g).is_some_and(|at| at <= now))
            .map(|(key, g)| {
                let mut alerts: Vec<Alert> = g.firing.values().cloned().collect();
                alerts.sort_by(|a, b| {
                    (a.starts_at, &a.fingerprint).cmp(&(b.starts_at, &b.fingerprint))
                });
                alerts.extend(g.resolved.values().cloned());
                Notification {
                    key: key.clone(),
                    labels: g.labels.clone(),
                    alerts,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// `sent` was delivered at `now`: what it said resolved is told.
    pub fn delivered(&mut self, sent: &Notification, now: Instant) {
        let Some(g) = self.by_key.get_mut(&sent.key) else {
            return;
        };
        for a in sent.alerts.iter().filter(|a| a.status == "resolved") {
            g.resolved.remove(&a.fingerprint);
        }
        // A change after the snapshot was taken is still to be told.
        let told_firing = sent.alerts.iter().filter(|a| a.status == "firing");
        let unchanged = told_firing.clone().count() == g.firing.len()
            && told_firing
                .into_iter()
                .all(|a| g.firing.contains_key(&a.fingerprint));
        g.changed = !(unchanged && g.resolved.is_empty());
        g.sent = Some(now);
        g.failures = 0;
        g.attempted = None;
        g.not_before = None;
        if g.firing.is_empty() && g.resolved.is_empty() {
            self.by_key.remove(&sent.key);
        }
    }

    /// `sent` could not be delivered at `now`: tried again after a backoff, or after
    /// `retry_after` (the receiver's `Retry-After`) if that is later.
    pub fn failed(&mut self, sent: &Notification, now: Instant, retry_after: Option<Duration>) {
        let longest = self.timing.repeat_interval;
        if let Some(g) = self.by_key.get_mut(&sent.key) {
            g.failures = g.failures.saturating_add(1);
            g.attempted = Some(now);
            g.not_before = retry_after.map(|after| now + after.min(longest));
        }
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            group_wait: 30 * S,
            group_interval: 300 * S,
            repeat_interval: 4 * 3600 * S,
        }
    }

    fn alert(name: &str, service: &str, status: &str) -> Alert {
        let labels: BTreeMap<String, String> = [("alertname", name), ("service", service)]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Alert {
            fingerprint: swarmscope_processors::analytics::alerts::fingerprint(&labels),
            status: status.into(),
            labels,
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: None,
            value: None,
            baseline: None,
            detector: "threshold".into(),
        }
    }

    fn groups() -> Groups {
        Groups::new(vec!["service".into()], true, timing())
    }

    fn statuses(n: &Notification) -> Vec<(String, String)> {
        n.alerts
            .iter()
            .map(|a| (a.name().to_owned(), a.status.clone()))
            .collect()
    }

    #[test]
    fn a_group_waits_then_carries_all_its_alerts_and_stays_firing_while_one_fires() {
        let mut g = groups();
        let t0 = Instant::now();
        g.apply(alert("A", "api", "firing"), t0);
        g.apply(alert("B", "api", "firing"), t0 + S);
        assert!(g.due(t0 + 29 * S).is_empty(), "group_wait");
        let first = g.due(t0 + 30 * S);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key, "{}:{service=\"api\"}");
        assert_eq!(statuses(&first[0]).len(), 2);
        g.delivered(&first[0], t0 + 30 * S);
        // B resolves: told at the group interval, beside A still firing.
        g.apply(alert("B", "api", "resolved"), t0 + 40 * S);
        assert!(g.due(t0 + 329 * S).is_empty(), "group_interval");
        let second = g.due(t0 + 330 * S);
        assert_eq!(
            statuses(&second[0]),
            [
                ("A".into(), "firing".into()),
                ("B".into(), "resolved".into())
            ]
        );
        g.delivered(&second[0], t0 + 330 * S);
        // Unchanged and firing: repeated after the repeat interval, without B.
        assert!(g.due(t0 + 3600 * S).is_empty());
        let repeat = g.due(t0 + 330 * S + 4 * 3600 * S);
        assert_eq!(statuses(&repeat[0]), [("A".into(), "firing".into())]);
    }

    #[test]
    fn a_failed_notification_is_retried_with_the_present_state_only() {
        let mut g = groups();
        let t0 = Instant::now();
        g.apply(alert("A", "api", "firing"), t0);
        let n = g.due(t0 + 30 * S);
        g.failed(&n[0], t0 + 30 * S, None);
        // While the receiver is down, A resolves and C fires.
        g.apply(alert("A", "api", "resolved"), t0 + 35 * S);
        g.apply(alert("C", "api", "firing"), t0 + 36 * S);
        assert!(g.due(t0 + 30 * S + S / 2).is_empty(), "backoff");
        let retry = g.due(t0 + 31 * S);
        // A never reached the receiver as firing; it is told resolved once, with C.
        assert_eq!(
            statuses(&retry[0]),
            [
                ("C".into(), "firing".into()),
                ("A".into(), "resolved".into())
            ]
        );
        g.delivered(&retry[0], t0 + 31 * S);
        assert!(g.due(t0 + 3600 * S).is_empty());
    }

    #[test]
    fn a_receivers_retry_after_is_honoured_up_to_the_repeat_interval() {
        let mut g = groups();
        let t0 = Instant::now();
        g.apply(alert("A", "api", "firing"), t0);
        let n = g.due(t0 + 30 * S);
        g.failed(&n[0], t0 + 30 * S, Some(Duration::from_secs(20)));
        assert!(g.due(t0 + 49 * S).is_empty(), "Retry-After: 20");
        let n = g.due(t0 + 50 * S);
        assert_eq!(n.len(), 1);
        // A receiver asking for a day is tried again within the repeat interval.
        g.failed(&n[0], t0 + 50 * S, Some(Duration::from_secs(86_400)));
        assert_eq!(g.due(t0 + 50 * S + 4 * 3600 * S).len(), 1);
    }

    #[test]
    fn a_resolution_seeded_after_a_restart_is_told_once() {
        // What `WebhookSink::seed` does with an alert resolved before the stop.
        let mut g = groups();
        let t0 = Instant::now();
        g.apply(alert("A", "api", "firing"), t0);
        g.apply(alert("A", "api", "resolved"), t0);
        let told = g.due(t0 + 30 * S);
        assert_eq!(statuses(&told[0]), [("A".into(), "resolved".into())]);
        g.delivered(&told[0], t0 + 30 * S);
        assert!(g.is_empty());
    }

    #[test]
    fn groups_are_apart_and_a_resolved_group_is_done() {
        let mut g = groups();
        let t0 = Instant::now();
        g.apply(alert("A", "api", "firing"), t0);
        g.apply(alert("A", "db", "firing"), t0);
        let both = g.due(t0 + 30 * S);
        assert_eq!(both.len(), 2);
        for n in &both {
            g.delivered(n, t0 + 30 * S);
        }
        g.apply(alert("A", "db", "resolved"), t0 + 60 * S);
        let told = g.due(t0 + 330 * S);
        assert_eq!(told.len(), 1);
        assert_eq!(statuses(&told[0]), [("A".into(), "resolved".into())]);
        g.delivered(&told[0], t0 + 330 * S);
        assert_eq!(g.len(), 1);
        // Without send_resolved, a resolution is not told at all.
        let mut quiet = Groups::new(vec!["service".into()], false, timing());
        quiet.apply(alert("A", "api", "firing"), t0);
        let n = quiet.due(t0 + 30 * S);
        quiet.delivered(&n[0], t0 + 30 * S);
        quiet.apply(alert("A", "api", "resolved"), t0 + 40 * S);
        assert!(quiet.due(t0 + 5 * 3600 * S).is_empty());
        assert!(quiet.is_empty());
    }
}
