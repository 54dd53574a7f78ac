//! From alert events to notifications, on the host's clock: grouping,
//! escalation, acknowledgements and silences.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::eval::{AlertEvent, AlertState, Fingerprint};
use super::rule::{Escalation, Rule, Severity};
use crate::time::{Span, Timestamp};

/// Where a channel's notifications go. The core only builds the bodies
/// ([`payload`](super::payload)); the host sends them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Channel {
    /// An HTTP endpoint taking the Alertmanager webhook JSON.
    Webhook {
        /// The URL to POST to.
        url: String,
        /// Most alerts per body (0: all); the rest are counted in
        /// `truncatedAlerts`, as Alertmanager does.
        #[serde(default)]
        max_alerts: usize,
    },
    /// A Slack incoming webhook taking a message of blocks.
    Slack {
        /// The incoming-webhook URL.
        url: String,
        /// The channel to post in, if not the webhook's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// An email in plain text.
    Email {
        /// Recipients.
        to: Vec<String>,
        /// Sender.
        from: String,
    },
}

/// How alerts are grouped into notifications, with Alertmanager's timers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    /// Alerts of a tenant and channel sharing these labels' values go in one
    /// notification (`alertname` by default: one per rule).
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: Span,
    /// How long after a notification a group waits before sending changes.
    pub group_interval: Span,
    /// How often a group still firing (and not acknowledged) is sent again.
    pub repeat_interval: Span,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            group_by: vec!["alertname".to_owned()],
            group_wait: Span::from_secs(30),
            group_interval: Span::from_mins(5),
            repeat_interval: Span::from_hours(4),
        }
    }
}

/// The [`Notifier`]'s configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Channels for rules that name none.
    pub default_channels: Vec<String>,
    /// Grouping and timers.
    pub route: Route,
    /// Most alerts tracked at once; further firing alerts are counted in
    /// [`NotifyStats::alerts_capped`] and not notified.
    pub max_alerts: usize,
    /// Most notification groups; likewise counted.
    pub max_groups: usize,
    /// Most silences; [`Notifier::silence`] refuses more.
    pub max_silences: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            channels: BTreeMap::new(),
            default_channels: Vec::new(),
            route: Route::default(),
            max_alerts: 100_000,
            max_groups: 10_000,
            max_silences: 1_000,
        }
    }
}

/// A label matcher of a silence: `name=value` or `name!=value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Matcher {
    /// The label.
    pub name: String,
    /// Whether the value must differ rather than equal.
    pub negate: bool,
    /// The value (a missing label reads as empty).
    pub value: String,
}

impl Matcher {
    /// `name=value`.
    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher { name: name.into(), negate: false, value: value.into() }
    }

    /// `name!=value`.
    pub fn ne(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher { name: name.into(), negate: true, value: value.into() }
    }

    /// Parses `name=value` or `name!=value`.
    pub fn parse(text: &str) -> Option<Matcher> {
        if let Some((name, value)) = text.split_once("!=") {
            return (!name.trim().is_empty()).then(|| Matcher::ne(name.trim(), value.trim()));
        }
        let (name, value) = text.split_once('=')?;
        (!name.trim().is_empty()).then(|| Matcher::eq(name.trim(), value.trim()))
    }

    fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = labels.iter().find(|(k, _)| *k == self.name).map_or("", |(_, v)| v.as_str());
        (value == self.value) != self.negate
    }
}

/// A silence: alerts matching every matcher are not notified between
/// `starts` and `ends` (host time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// All must match; the tenant matches as label `tenant`.
    pub matchers: Vec<Matcher>,
    /// Start (inclusive).
    pub starts: Timestamp,
    /// End (exclusive).
    pub ends: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    fn covers(&self, labels: &[(String, String)], now: Timestamp) -> bool {
        self.starts <= now && now < self.ends && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Why [`Notifier::silence`] or [`Notifier::ack`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// No alert with this fingerprint is firing.
    #[error("no firing alert has fingerprint {0}")]
    UnknownAlert(Fingerprint),
    /// The silence has no matcher, or ends before it starts.
    #[error("a silence needs at least one matcher and must end after it starts")]
    InvalidSilence,
    /// [`NotifierConfig::max_silences`] silences exist.
    #[error("too many silences")]
    TooManySilences,
}

/// An alert as a notification lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NotifiedAlert {
    /// The rule.
    pub rule: Arc<str>,
    /// `Firing` or `Resolved`.
    pub state: AlertState,
    /// The alert's labels, with `severity` (as escalated) and `tenant`.
    pub labels: Vec<(String, String)>,
    /// Rendered annotations.
    pub annotations: Vec<(String, String)>,
    /// The latest value.
    pub value: Option<f64>,
    /// When the condition started to hold (event time).
    pub starts_at: Timestamp,
    /// When it resolved (event time).
    pub ends_at: Option<Timestamp>,
    /// The instance's identity.
    pub fingerprint: Fingerprint,
    /// The severity now (escalation may have raised it).
    pub severity: Severity,
    /// Geo-cluster cells.
    pub cells: Vec<String>,
    /// Who acknowledged it, if someone did.
    pub acked_by: Option<String>,
}

/// One notification for one channel: a group's alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notification {
    /// The channel's name.
    pub channel: String,
    /// The channel's settings (target URL or addresses).
    pub target: Channel,
    /// The tenant.
    pub tenant: Arc<str>,
    /// Stable key of the group: channel, tenant, grouping labels.
    pub group_key: String,
    /// The grouping labels and their values.
    pub group_labels: Vec<(String, String)>,
    /// Firing alerts first, then resolved ones, each by fingerprint.
    pub alerts: Vec<NotifiedAlert>,
    /// Host time of the notification.
    pub at: Timestamp,
}

impl Notification {
    /// Whether any alert in it is firing.
    pub fn is_firing(&self) -> bool {
        self.alerts.iter().any(|a| a.state == AlertState::Firing)
    }
}

/// What the [`Notifier`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NotifyStats {
    /// Notifications produced.
    pub notifications: u64,
    /// Alerts left out of a notification because a silence covered them.
    pub silenced: u64,
    /// Escalation steps taken.
    pub escalations: u64,
    /// Acknowledgements.
    pub acks: u64,
    /// Firing alerts not tracked because of [`NotifierConfig::max_alerts`].
    pub alerts_capped: u64,
    /// Alerts not grouped because of [`NotifierConfig::max_groups`].
    pub groups_capped: u64,
    /// Events naming a channel that is not configured.
    pub unknown_channel: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tracked {
    event: AlertEvent,
    severity: Severity,
    channels: Vec<String>,
    /// Host time the notifier first saw it firing.
    firing_at: Timestamp,
    /// Escalation steps taken.
    step: usize,
    acked_by: Option<String>,
    resolved_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    channel: String,
    tenant: Arc<str>,
    labels: Vec<(String, String)>,
    alerts: Vec<Fingerprint>,
    created: Timestamp,
    last_flush: Option<Timestamp>,
    dirty_since: Option<Timestamp>,
    /// What the last notification said: (fingerprint, state, severity).
    sent: Vec<(Fingerprint, AlertState, Severity)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RuleInfo {
    channels: Vec<String>,
    escalate: Vec<Escalation>,
}

/// Turns alert events into notifications.
///
/// Feed it the [`Evaluator`](super::Evaluator)'s events with the host's
/// current time ([`push`](Notifier::push)), and call
/// [`advance`](Notifier::advance) at [`next_deadline`](Notifier::next_deadline):
///
/// - Firing and resolved alerts are **grouped** per (channel, tenant,
///   `group_by` label values). A new group waits `group_wait` for company,
///   then notifies; later changes wait until `group_interval` after the
///   previous notification; a group still firing is re-sent every
///   `repeat_interval`. A change is an alert firing, resolving, or changing
///   severity; one notification carries all of a group's changes.
/// - **Escalation**: each step of the rule fires when the alert has been
///   firing for `after` (host time since the notifier saw it fire) without
///   an acknowledgement: it raises the severity and adds channels.
/// - An **acknowledged** alert is not escalated further and not re-sent by
///   `repeat_interval`; its resolution is still notified.
/// - **Silences** keep matching alerts out of notifications while active
///   (counted); when one ends, alerts still firing are notified.
///
/// ```
/// use edgestream::alert::{Channel, Notifier, NotifierConfig, Route};
/// use edgestream::time::Span;
///
/// let mut config = NotifierConfig::default();
/// config.channels.insert("ops".into(), Channel::Webhook { url: "https://example.com/hook".into(), max_alerts: 0 });
/// config.default_channels = vec!["ops".into()];
/// config.route = Route { group_wait: Span::from_secs(10), ..Route::default() };
/// let notifier = Notifier::new(config, &[]);
/// assert_eq!(notifier.next_deadline(), None);
/// ```
#[derive(Debug)]
pub struct Notifier {
    config: NotifierConfig,
    rules: HashMap<String, RuleInfo>,
    alerts: HashMap<Fingerprint, Tracked>,
    groups: BTreeMap<String, Group>,
    silences: BTreeMap<u64, Silence>,
    next_silence: u64,
    /// No escalation step is due before this: `advance` skips the walk over
    /// every tracked alert until then. Exact after a walk, lowered by every
    /// change that brings a step nearer.
    escalations_from: Timestamp,
    stats: NotifyStats,
}

impl Notifier {
    /// A notifier for alerts of `rules` (their channels and escalation steps).
    pub fn new(config: NotifierConfig, rules: &[Rule]) -> Notifier {
        let rules = rules
            .iter()
            .map(|r| (r.name.clone(), RuleInfo { channels: r.channels.clone(), escalate: r.escalate.clone() }))
            .collect();
        Notifier {
            config,
            rules,
            alerts: HashMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            next_silence: 1,
            escalations_from: Timestamp::MIN,
            stats: NotifyStats::default(),
        }
    }

    /// What the notifier did so far.
    pub fn stats(&self) -> &NotifyStats {
        &self.stats
    }

    /// Takes in an alert event at host time `now`. Pending and inactive
    /// transitions are not notified.
    pub fn push(&mut self, event: &AlertEvent, now: Timestamp) {
        match event.state {
            AlertState::Firing => {
                if let Some(tracked) = self.alerts.get_mut(&event.fingerprint) {
                    // Firing again before its resolution was notified: a new
                    // episode, which groups that already dropped it must hear of.
                    tracked.event = event.clone();
                    tracked.resolved_at = None;
                    tracked.severity = event.severity;
                    tracked.firing_at = now;
                    tracked.step = 0;
                    tracked.acked_by = None;
                    self.escalation_may_be_due(event.fingerprint);
                    self.join_groups(event.fingerprint, now);
                    self.touch(event.fingerprint, now);
                    return;
                }
                if self.alerts.len() >= self.config.max_alerts {
                    add(&mut self.stats.alerts_capped, 1);
                    return;
                }
                let info = self.rules.get(&*event.rule).cloned().unwrap_or_default();
                let channels =
                    if info.channels.is_empty() { self.config.default_channels.clone() } else { info.channels };
                self.alerts.insert(
                    event.fingerprint,
                    Tracked {
                        event: event.clone(),
                        severity: event.severity,
                        channels,
                        firing_at: now,
                        step: 0,
                        acked_by: None,
                        resolved_at: None,
                    },
                );
                self.escalation_may_be_due(event.fingerprint);
                self.join_groups(event.fingerprint, now);
            }
            AlertState::Resolved => {
                if let Some(tracked) = self.alerts.get_mut(&event.fingerprint) {
                    tracked.event.value = event.value;
                    tracked.event.at = event.at;
                    tracked.event.state = AlertState::Resolved;
                    tracked.resolved_at = Some(event.at);
                    self.touch(event.fingerprint, now);
                }
            }
            AlertState::Pending | AlertState::Inactive => {}
        }
    }

    /// Acknowledges a firing alert: no further escalation or repeats.
    pub fn ack(&mut self, fingerprint: Fingerprint, by: &str) -> Result<(), NotifyError> {
        let tracked = self.alerts.get_mut(&fingerprint).filter(|t| t.resolved_at.is_none());
        let tracked = tracked.ok_or(NotifyError::UnknownAlert(fingerprint))?;
        tracked.acked_by = Some(by.to_owned());
        add(&mut self.stats.acks, 1);
        Ok(())
    }

    /// Withdraws an acknowledgement: escalation and repeats resume.
    pub fn unack(&mut self, fingerprint: Fingerprint) -> Result<(), NotifyError> {
        let tracked = self.alerts.get_mut(&fingerprint).ok_or(NotifyError::UnknownAlert(fingerprint))?;
        tracked.acked_by = None;
        self.escalation_may_be_due(fingerprint);
        Ok(())
    }

    /// Brings [`Notifier::escalations_from`] down to the next step of `fp`.
    fn escalation_may_be_due(&mut self, fp: Fingerprint) {
        if let Some(due) = self.alerts.get(&fp).and_then(|t| self.escalation_due(t)) {
            self.escalations_from = self.escalations_from.min(due);
        }
    }

    /// The alerts the notifier tracks (firing, or resolved and not yet
    /// notified), by fingerprint: what [`ack`](Notifier::ack) takes.
    pub fn alerts(&self) -> Vec<NotifiedAlert> {
        let mut list: Vec<NotifiedAlert> = self.alerts.values().map(|t| notified(t, full_labels(t))).collect();
        list.sort_by_key(|a| a.fingerprint);
        list
    }

    /// Deletes a silence (as if it had never been); false if there is none
    /// with this id.
    pub fn remove_silence(&mut self, id: u64) -> bool {
        let removed = self.silences.remove(&id).is_some();
        if removed {
            // What it held back goes out at each group's next flush.
            for group in self.groups.values_mut() {
                if let Some(last) = group.last_flush {
                    group.dirty_since.get_or_insert(last);
                }
            }
        }
        removed
    }

    /// Adds a silence; returns its id.
    pub fn silence(&mut self, silence: Silence) -> Result<u64, NotifyError> {
        if silence.matchers.is_empty() || silence.ends <= silence.starts {
            return Err(NotifyError::InvalidSilence);
        }
        if self.silences.len() >= self.config.max_silences {
            return Err(NotifyError::TooManySilences);
        }
        let id = self.next_silence;
        self.next_silence = self.next_silence.checked_add(1).ok_or(NotifyError::TooManySilences)?;
        self.silences.insert(id, silence);
        Ok(id)
    }

    /// Ends a silence early (at `now`); alerts it covered are notified at
    /// the next flush of their groups.
    pub fn expire_silence(&mut self, id: u64, now: Timestamp) -> bool {
        match self.silences.get_mut(&id) {
            Some(s) if s.ends > now => {
                s.ends = now;
                true
            }
            _ => false,
        }
    }

    /// The silences, by id.
    pub fn silences(&self) -> impl Iterator<Item = (u64, &Silence)> {
        self.silences.iter().map(|(id, s)| (*id, s))
    }

    /// When [`advance`](Notifier::advance) has work next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let route = &self.config.route;
        let groups = self.groups.values().filter_map(|g| g.next_flush(route, &self.alerts));
        let escalations = self.alerts.values().filter_map(|t| self.escalation_due(t));
        // When a silence ends, what it held back is sent.
        let silences = self.silences.values().map(|s| s.ends);
        groups.chain(escalations).chain(silences).min()
    }

    /// Takes escalation steps that are due and flushes the groups whose
    /// timers ran out, appending notifications to `out`.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Notification>) {
        // A silence that ended since a group's last flush makes it look again.
        let ended: Vec<Timestamp> = self.silences.values().map(|s| s.ends).filter(|&t| t <= now).collect();
        for group in self.groups.values_mut() {
            if group.last_flush.is_some_and(|last| ended.iter().any(|&t| last < t)) {
                group.dirty_since.get_or_insert(now);
            }
        }
        self.silences.retain(|_, s| s.ends > now);
        self.escalate(now);
        let route = self.config.route.clone();
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush(&route, &self.alerts).is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush(&key, now, out);
        }
        // Resolved alerts that every group has notified are done.
        let groups = &self.groups;
        self.alerts.retain(|fp, t| t.resolved_at.is_none() || groups.values().any(|g| g.alerts.contains(fp)));
    }

    fn escalation_due(&self, t: &Tracked) -> Option<Timestamp> {
        if t.acked_by.is_some() || t.resolved_at.is_some() {
            return None;
        }
        let step = self.rules.get(&*t.event.rule)?.escalate.get(t.step)?;
        Some(t.firing_at.saturating_add(step.after))
    }

    fn escalate(&mut self, now: Timestamp) {
        if now < self.escalations_from {
            return;
        }
        let mut changed = Vec::new();
        let mut next = Timestamp::MAX;
        for (fp, t) in &mut self.alerts {
            if t.acked_by.is_some() || t.resolved_at.is_some() {
                continue;
            }
            let Some(info) = self.rules.get(&*t.event.rule) else { continue };
            while let Some(step) = info.escalate.get(t.step) {
                let due = t.firing_at.saturating_add(step.after);
                if due > now {
                    next = next.min(due);
                    break;
                }
                t.step += 1;
                if let Some(severity) = step.severity {
                    t.severity = t.severity.max(severity);
                }
                for channel in &step.notify {
                    if !t.channels.contains(channel) {
                        t.channels.push(channel.clone());
                    }
                }
                add(&mut self.stats.escalations, 1);
                changed.push(*fp);
            }
        }
        self.escalations_from = next;
        changed.sort_unstable();
        changed.dedup();
        for fp in changed {
            self.join_groups(fp, now);
            self.touch(fp, now);
        }
    }

    /// Puts an alert into the group of each of its channels.
    fn join_groups(&mut self, fp: Fingerprint, now: Timestamp) {
        let Some(t) = self.alerts.get(&fp) else { return };
        let labels = full_labels(t);
        let group_labels: Vec<(String, String)> = self
            .config
            .route
            .group_by
            .iter()
            .map(|k| (k.clone(), labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone()).unwrap_or_default()))
            .collect();
        for channel in t.channels.clone() {
            if !self.config.channels.contains_key(&channel) {
                add(&mut self.stats.unknown_channel, 1);
                continue;
            }
            let key = group_key(&channel, &t.event.tenant, &group_labels);
            let at_cap = self.groups.len() >= self.config.max_groups;
            match self.groups.get_mut(&key) {
                Some(group) => {
                    if !group.alerts.contains(&fp) {
                        group.alerts.push(fp);
                        group.dirty_since.get_or_insert(now);
                    }
                }
                None if at_cap => add(&mut self.stats.groups_capped, 1),
                None => {
                    let group = Group {
                        channel,
                        tenant: Arc::clone(&t.event.tenant),
                        labels: group_labels.clone(),
                        alerts: vec![fp],
                        created: now,
                        last_flush: None,
                        dirty_since: Some(now),
                        sent: Vec::new(),
                    };
                    self.groups.insert(key, group);
                }
            }
        }
    }

    /// Marks the groups holding `fp` as changed.
    fn touch(&mut self, fp: Fingerprint, now: Timestamp) {
        for group in self.groups.values_mut() {
            if group.alerts.contains(&fp) {
                group.dirty_since.get_or_insert(now);
            }
        }
    }

    fn flush(&mut self, key: &str, now: Timestamp, out: &mut Vec<Notification>) {
        let Some(group) = self.groups.get_mut(key) else { return };
        let mut listed = Vec::new();
        for fp in &group.alerts {
            let Some(t) = self.alerts.get(fp) else { continue };
            let labels = full_labels(t);
            if self.silences.values().any(|s| s.covers(&labels, now)) {
                add(&mut self.stats.silenced, 1);
                continue;
            }
            // A resolution is news only to a group that was told it fired.
            if t.resolved_at.is_some() && !group.sent.iter().any(|(f, s, _)| f == fp && *s == AlertState::Firing) {
                continue;
            }
            listed.push(notified(t, labels));
        }
        listed.sort_by_key(|a| (a.state != AlertState::Firing, a.fingerprint));
        let summary: Vec<(Fingerprint, AlertState, Severity)> =
            listed.iter().map(|a| (a.fingerprint, a.state, a.severity)).collect();
        // News: an alert firing that the group was not told about, a
        // resolution, a new severity. Alerts dropping out (silenced) are not.
        let changed = summary.iter().any(|entry| !group.sent.contains(entry));
        let repeat_due = group.last_flush.is_some_and(|t| t.saturating_add(self.config.route.repeat_interval) <= now);
        let repeat = repeat_due && listed.iter().any(|a| a.state == AlertState::Firing && a.acked_by.is_none());
        if repeat_due && !repeat {
            // Nothing to repeat (all silenced or acknowledged): the timer moves on.
            group.last_flush = Some(now);
        }
        if changed || repeat {
            if let Some(target) = self.config.channels.get(&group.channel) {
                out.push(Notification {
                    channel: group.channel.clone(),
                    target: target.clone(),
                    tenant: Arc::clone(&group.tenant),
                    group_key: key.to_owned(),
                    group_labels: group.labels.clone(),
                    alerts: listed,
                    at: now,
                });
                add(&mut self.stats.notifications, 1);
            } else {
                // The channel left the configuration (after a restore).
                add(&mut self.stats.unknown_channel, 1);
            }
            group.last_flush = Some(now);
        }
        group.sent = summary.into_iter().filter(|(_, s, _)| *s == AlertState::Firing).collect();
        group.dirty_since = None;
        let alerts = &self.alerts;
        group.alerts.retain(|fp| alerts.get(fp).is_some_and(|t| t.resolved_at.is_none()));
        if group.alerts.is_empty() {
            self.groups.remove(key);
        }
    }
}

impl Group {
    fn next_flush(&self, route: &Route, alerts: &HashMap<Fingerprint, Tracked>) -> Option<Timestamp> {
        match (self.dirty_since, self.last_flush) {
            (Some(_), None) => Some(self.created.saturating_add(route.group_wait)),
            (Some(dirty), Some(last)) => Some(dirty.max(last.saturating_add(route.group_interval))),
            (None, Some(last)) => {
                let firing = self
                    .alerts
                    .iter()
                    .filter_map(|fp| alerts.get(fp))
                    .any(|t| t.resolved_at.is_none() && t.acked_by.is_none());
                firing.then(|| last.saturating_add(route.repeat_interval))
            }
            (None, None) => None,
        }
    }
}

/// Adds to a counter, saturating (counters may come from a snapshot).
fn add(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

fn group_key(channel: &str, tenant: &str, labels: &[(String, String)]) -> String {
    // Every part quoted (with escapes), so distinct groups get distinct keys.
    let mut key = format!("{channel:?}/{tenant:?}/{{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(&format!("{k:?}={v:?}"));
    }
    key.push('}');
    key
}

/// The alert's labels plus `severity` (current) and `tenant`, sorted.
fn full_labels(t: &Tracked) -> Vec<(String, String)> {
    let mut labels = t.event.labels.clone();
    for (k, v) in [("severity", t.severity.as_str()), ("tenant", &*t.event.tenant)] {
        if !labels.iter().any(|(l, _)| l == k) {
            labels.push((k.to_owned(), v.to_owned()));
        }
    }
    labels.sort();
    labels
}

fn notified(t: &Tracked, labels: Vec<(String, String)>) -> NotifiedAlert {
    NotifiedAlert {
        rule: Arc::clone(&t.event.rule),
        state: if t.resolved_at.is_some() { AlertState::Resolved } else { AlertState::Firing },
        labels,
        annotations: t.event.annotations.clone(),
        value: t.event.value,
        starts_at: t.event.since,
        ends_at: t.resolved_at,
        fingerprint: t.event.fingerprint,
        severity: t.severity,
        cells: t.event.cells.clone(),
        acked_by: t.acked_by.clone(),
    }
}

/// The snapshot format version written by [`Notifier::snapshot`].
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    alerts: Vec<(Fingerprint, Tracked)>,
    groups: Vec<(String, Group)>,
    silences: Vec<(u64, Silence)>,
    next_silence: u64,
    stats: NotifyStats,
}

impl Notifier {
    /// Appends the whole state (tracked alerts with their escalation steps
    /// and acks, groups with their timers, silences, counters) to `out`, for
    /// [`Notifier::restore`].
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        let mut alerts: Vec<(Fingerprint, Tracked)> = self.alerts.iter().map(|(k, v)| (*k, v.clone())).collect();
        alerts.sort_by_key(|(k, _)| *k);
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            alerts,
            groups: self.groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            silences: self.silences.iter().map(|(k, v)| (*k, v.clone())).collect(),
            next_silence: self.next_silence,
            stats: self.stats.clone(),
        };
        // Serializing plain data into a Vec cannot fail.
        if let Ok(bytes) = postcard::to_allocvec(&snap) {
            out.extend_from_slice(&bytes);
        }
    }

    /// A notifier that continues from a snapshot, with the given
    /// configuration and rules (which may have changed since).
    pub fn restore(config: NotifierConfig, rules: &[Rule], bytes: &[u8]) -> Result<Notifier, super::SnapshotError> {
        use super::SnapshotError;
        let version = postcard::take_from_bytes::<u32>(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?.0;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut n = Notifier::new(config, rules);
        n.alerts = snap.alerts.into_iter().collect();
        n.groups = snap.groups.into_iter().collect();
        n.silences = snap.silences.into_iter().collect();
        if n.groups.values().flat_map(|g| &g.alerts).any(|fp| !n.alerts.contains_key(fp)) {
            return Err(SnapshotError::Inconsistent("a group lists an alert that is not tracked"));
        }
        n.next_silence = snap.next_silence.max(n.silences.keys().max().map_or(1, |k| k.saturating_add(1)));
        n.stats = snap.stats;
        Ok(n)
    }
}
