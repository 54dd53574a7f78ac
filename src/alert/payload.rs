//! Notification bodies for the host to send: Alertmanager-compatible
//! webhook JSON, Slack blocks, and plain-text email.
//!
//! No network here: each builder returns the bytes and where they go.

use std::collections::BTreeMap;
use std::fmt::Write;

use bytes::Bytes;
use serde_json::{Value, json};

use super::eval::AlertState;
use super::notify::{Channel, Notification, NotifiedAlert};

/// Where a [`Delivery`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// POST the body to this URL.
    Http {
        /// The URL.
        url: String,
    },
    /// Send the body as an email.
    Email {
        /// Sender.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Subject line.
        subject: String,
    },
}

/// A built notification: target, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// Where it goes.
    pub target: Target,
    /// MIME type of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

/// Builds the body `notification.target` asks for.
pub fn render(notification: &Notification) -> Delivery {
    match &notification.target {
        Channel::Webhook { url, max_alerts } => Delivery {
            channel: notification.channel.clone(),
            target: Target::Http { url: url.clone() },
            content_type: "application/json",
            body: webhook(notification, *max_alerts),
        },
        Channel::Slack { url, channel } => Delivery {
            channel: notification.channel.clone(),
            target: Target::Http { url: url.clone() },
            content_type: "application/json",
            body: slack(notification, channel.as_deref()),
        },
        Channel::Email { to, from } => Delivery {
            channel: notification.channel.clone(),
            target: Target::Email { from: from.clone(), to: to.clone(), subject: subject(notification) },
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(email_body(notification)),
        },
    }
}

fn status(n: &Notification) -> &'static str {
    if n.is_firing() { "firing" } else { "resolved" }
}

fn map(pairs: &[(String, String)]) -> BTreeMap<&str, &str> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The `(key, value)` pairs every alert has.
fn common(n: &Notification, of: impl Fn(&NotifiedAlert) -> &[(String, String)]) -> BTreeMap<String, String> {
    let mut alerts = n.alerts.iter();
    let Some(first) = alerts.next() else { return BTreeMap::new() };
    let mut common: BTreeMap<String, String> = of(first).iter().cloned().collect();
    for alert in alerts {
        let pairs = of(alert);
        common.retain(|k, v| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
    }
    common
}

/// The Alertmanager webhook body (version 4): `status`, `receiver`,
/// `groupKey`, `groupLabels`, `commonLabels`, `commonAnnotations`, and
/// per alert `status`, `labels`, `annotations`, `startsAt`, `endsAt`,
/// `fingerprint`. Times are RFC 3339 event times; a firing alert's
/// `endsAt` is `0001-01-01T00:00:00Z`. With `max_alerts > 0`, alerts past
/// it are left out and counted in `truncatedAlerts`.
pub fn webhook(n: &Notification, max_alerts: usize) -> Bytes {
    let keep = if max_alerts == 0 { n.alerts.len() } else { max_alerts.min(n.alerts.len()) };
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .take(keep)
        .map(|a| {
            json!({
                "status": if a.state == AlertState::Firing { "firing" } else { "resolved" },
                "labels": map(&a.labels),
                "annotations": map(&a.annotations),
                "startsAt": a.starts_at.to_rfc3339(),
                "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |t| t.to_rfc3339()),
                "generatorURL": "",
                "fingerprint": a.fingerprint.to_string(),
            })
        })
        .collect();
    let body = json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": n.alerts.len() - keep,
        "status": status(n),
        "receiver": n.channel,
        "groupLabels": map(&n.group_labels),
        "commonLabels": common(n, |a| &a.labels),
        "commonAnnotations": common(n, |a| &a.annotations),
        "externalURL": "",
        "alerts": alerts,
    });
    Bytes::from(body.to_string())
}

/// Slack allows 50 blocks per message; a header, a context line and a
/// "more" line leave room for this many alerts.
const SLACK_ALERTS: usize = 40;

/// A Slack message: a header with the status and rule, a section per
/// alert (severity, labels, value, summary), and a context line. Long
/// groups list the first 40 alerts and say how many more there are.
pub fn slack(n: &Notification, channel: Option<&str>) -> Bytes {
    let title = title(n);
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": clip(&title, 150)}})];
    for a in n.alerts.iter().take(SLACK_ALERTS) {
        let mut text = format!(
            "{} *{}* `{}`",
            if a.state == AlertState::Firing { ":red_circle:" } else { ":large_green_circle:" },
            escape_slack(&a.rule),
            a.severity.as_str()
        );
        let labels: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity" | "tenant"))
            .map(|(k, v)| format!("{}={}", escape_slack(k), escape_slack(v)))
            .collect();
        if !labels.is_empty() {
            let _ = write!(text, " · {}", labels.join(", "));
        }
        if let Some(v) = a.value {
            let _ = write!(text, " · value {v}");
        }
        for (k, v) in &a.annotations {
            let _ = write!(text, "\n_{}_: {}", escape_slack(k), escape_slack(v));
        }
        if !a.cells.is_empty() {
            let _ = write!(text, "\ncells: {}", a.cells.join(", "));
        }
        if let Some(by) = &a.acked_by {
            let _ = write!(text, "\nacknowledged by {}", escape_slack(by));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}));
    }
    if n.alerts.len() > SLACK_ALERTS {
        let more = format!("…and {} more", n.alerts.len() - SLACK_ALERTS);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": more}}));
    }
    let context = format!("tenant {} · {}", escape_slack(&n.tenant), n.at.to_rfc3339());
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    let mut body = json!({"text": escape_slack(&title), "blocks": blocks});
    if let (Some(channel), Some(obj)) = (channel, body.as_object_mut()) {
        obj.insert("channel".to_owned(), Value::from(channel));
    }
    Bytes::from(body.to_string())
}

/// `[FIRING:2] rule (label=value, …)`, as Alertmanager's default titles.
fn title(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| a.state == AlertState::Firing).count();
    let head = if firing > 0 { format!("[FIRING:{firing}]") } else { "[RESOLVED]".to_owned() };
    let rule = n.group_labels.iter().find(|(k, _)| k == "alertname").map(|(_, v)| v.as_str());
    let rule = rule.or_else(|| n.alerts.first().map(|a| &*a.rule)).unwrap_or("alerts");
    let labels: Vec<String> =
        n.group_labels.iter().filter(|(k, _)| k != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
    if labels.is_empty() { format!("{head} {rule}") } else { format!("{head} {rule} ({})", labels.join(", ")) }
}

/// The email subject: the same title, on one line.
pub fn subject(n: &Notification) -> String {
    title(n).replace(['\r', '\n'], " ")
}

/// A plain-text email body listing every alert.
pub fn email_body(n: &Notification) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", title(n));
    let _ = writeln!(out, "Tenant: {}\nSent: {}\n", n.tenant, n.at.to_rfc3339());
    for a in &n.alerts {
        let _ = writeln!(out, "- {} [{}] {}", a.rule, a.state.as_str(), a.severity.as_str());
        for (k, v) in &a.labels {
            let _ = writeln!(out, "    {k}: {v}");
        }
        if let Some(v) = a.value {
            let _ = writeln!(out, "    value: {v}");
        }
        for (k, v) in &a.annotations {
            let _ = writeln!(out, "    {k}: {v}");
        }
        let _ = writeln!(out, "    since: {}", a.starts_at.to_rfc3339());
        if let Some(end) = a.ends_at {
            let _ = writeln!(out, "    resolved: {}", end.to_rfc3339());
        }
        if !a.cells.is_empty() {
            let _ = writeln!(out, "    cells: {}", a.cells.join(", "));
        }
        if let Some(by) = &a.acked_by {
            let _ = writeln!(out, "    acknowledged by: {by}");
        }
        let _ = writeln!(out, "    fingerprint: {}", a.fingerprint);
    }
    out
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
