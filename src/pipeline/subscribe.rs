//! Subscriptions: who receives which frames, with bounded memory per
//! subscriber (see [`Subscription`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::access::AuditAction;
use super::{Pipeline, RawBatch, TenantDelta};
use crate::alert::AlertEvent;
use crate::auth::{AuthError, Mode};
use crate::delta::board::{EventsFrame, Frame, Outbox, ResultRow, ResultsFrame, TileBoard};
use crate::event::EventBatch;
use crate::time::{Span, Timestamp};

/// A subscriber's handle.
pub type SubscriberId = u64;

/// Limits on subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscribeConfig {
    /// Most subscribers per tenant (default 1,000).
    pub max_per_tenant: usize,
    /// Most subscribers in all (default 100,000).
    pub max_total: usize,
    /// Most frames queued per `aggregates`, `full` or `alerts` subscriber
    /// (default 256); beyond it the oldest is dropped (and counted).
    pub max_queued: usize,
    /// How long a subscriber's queue may stay full before it is evicted
    /// (default 30 s).
    pub max_lag: Span,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig { max_per_tenant: 1_000, max_total: 100_000, max_queued: 256, max_lag: Span::from_secs(30) }
    }
}

/// What a subscriber asks for.
///
/// Topics of a tenant:
///
/// | topic | modes | frames |
/// | --- | --- | --- |
/// | a board topic ([`WindowConfig::board`](super::WindowConfig::board), e.g. `metrics`) | `deltas` | a snapshot on join and on a gap, then deltas, conflated for a slow subscriber |
/// | the same topic, or a window operator's name | `aggregates` | window results of the operators behind it |
/// | `events`, or a stream's name | `full` | admitted raw events (with [`RawConfig::enabled`](super::RawConfig::enabled)) |
/// | `alerts` | any | alert state changes |
///
/// Filters (`label = value`) keep results whose group has the label, and
/// events whose dims have it. A subscriber whose queue stays full for
/// longer than [`SubscribeConfig::max_lag`] is evicted with a reason the
/// host passes on when it closes the socket; a `deltas` subscriber never
/// is: its outbox conflates to at most one pending change per tile.
///
/// Subscriptions belong to connections and are not part of
/// [`Pipeline::snapshot`]: after a restore, hosts subscribe their open
/// sockets again (each gets a snapshot on join).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The tenant whose data it reads.
    pub tenant: String,
    /// The topic (see the table above).
    pub topic: String,
    /// The mode.
    pub mode: Mode,
    /// `label = value` filters, all of which must hold.
    #[serde(default)]
    pub filters: Vec<(String, String)>,
    /// The encoding of its frames.
    #[serde(default)]
    pub format: WireFormat,
}

impl Subscription {
    /// A subscription to `topic` of `tenant` in `mode`, in Protobuf, without filters.
    pub fn new(tenant: impl Into<String>, topic: impl Into<String>, mode: Mode) -> Self {
        Subscription {
            tenant: tenant.into(),
            topic: topic.into(),
            mode,
            filters: Vec::new(),
            format: WireFormat::Protobuf,
        }
    }

    /// Adds a `label = value` filter.
    pub fn filter(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.filters.push((label.into(), value.into()));
        self
    }

    /// Frames as JSON.
    pub fn json(mut self) -> Self {
        self.format = WireFormat::Json;
        self
    }
}

/// How frames are encoded for a subscriber.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// The `Frame` Protobuf message (binary WebSocket messages).
    #[default]
    Protobuf,
    /// JSON (text messages, Server-Sent Events, debugging).
    Json,
}

impl WireFormat {
    /// `frame` in this encoding.
    pub fn encode(self, frame: &Frame) -> Bytes {
        match self {
            WireFormat::Protobuf => Bytes::from(frame.to_protobuf()),
            WireFormat::Json => Bytes::from(frame.to_json()),
        }
    }
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No such topic for this mode.
    #[error("no topic {topic:?} in mode {mode}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The mode's name.
        mode: &'static str,
    },
    /// The tenant, or the pipeline, has its maximum of subscribers.
    #[error("the tenant or the pipeline has its maximum of {max} subscribers")]
    TooMany {
        /// [`SubscribeConfig::max_per_tenant`] or [`SubscribeConfig::max_total`].
        max: usize,
    },
    /// The token was refused or does not grant the subscription.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The tenant is new and the pipeline holds its maximum of tenants
    /// (or the tenant name is empty).
    #[error("no room for another tenant")]
    TooManyTenants,
    /// No such subscriber (it was evicted or unsubscribed).
    #[error("no subscriber {0}")]
    Unknown(SubscriberId),
}

/// Why a subscriber was disconnected; the host closes its socket with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EvictReason {
    /// Its queue stayed full for longer than [`SubscribeConfig::max_lag`].
    SlowConsumer,
}

impl EvictReason {
    /// A short stable name (for a WebSocket close reason).
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::SlowConsumer => "slow_consumer",
        }
    }

    /// A WebSocket close code (4000–4999: application codes).
    pub fn close_code(self) -> u16 {
        match self {
            EvictReason::SlowConsumer => 4008,
        }
    }
}

/// A subscriber's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Frames handed to the host.
    pub frames: u64,
    /// Frames dropped because its queue was full.
    pub dropped: u64,
}

pub(super) struct Subscriber {
    request: Subscription,
    tenant: Arc<str>,
    topic: Arc<str>,
    kind: Kind,
    queue: VecDeque<Frame>,
    /// Since when its queue has been full.
    full_since: Option<Timestamp>,
    stats: SubscriberStats,
}

enum Kind {
    Deltas(Box<Outbox>),
    /// Results of these window operators.
    Aggregates(Vec<Arc<str>>),
    /// Events of every stream (`None`) or of one.
    Full(Option<Arc<str>>),
    Alerts,
}

/// The subscribers, by id, with an index by tenant for the caps.
#[derive(Default)]
pub(super) struct Subscribers {
    by_id: BTreeMap<SubscriberId, Subscriber>,
    per_tenant: BTreeMap<Arc<str>, usize>,
    next_id: SubscriberId,
    /// Subscribers with frames to take since the last `advance`.
    ready: Vec<SubscriberId>,
    evicted: Vec<(SubscriberId, EvictReason)>,
    /// Frames dropped (a full queue, or still queued when their subscriber
    /// left), and subscribers evicted, over the pipeline's life.
    pub(super) frames_dropped: u64,
    pub(super) evictions: u64,
}

impl Subscribers {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn of_tenant(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }
}

fn matches(filters: &[(String, String)], mut has: impl FnMut(&str, &str) -> bool) -> bool {
    filters.iter().all(|(k, v)| has(k, v))
}

impl Pipeline {
    /// Opens a subscription (the caller has checked who asks: see
    /// [`subscribe_with_token`](Pipeline::subscribe_with_token)). A
    /// `deltas` subscriber's first frame is a snapshot of the board: take
    /// it right away ([`take_frames`](Pipeline::take_frames)); later
    /// frames are announced in [`Outputs::ready`](super::Outputs::ready).
    pub fn subscribe(&mut self, request: Subscription) -> Result<SubscriberId, SubscribeError> {
        let unknown = || SubscribeError::UnknownTopic { topic: request.topic.clone(), mode: request.mode.as_str() };
        let kind = if request.topic == "alerts" {
            Kind::Alerts
        } else {
            match request.mode {
                Mode::Deltas => {
                    if !self.stages.iter().any(|s| s.board.as_deref() == Some(request.topic.as_str())) {
                        return Err(unknown());
                    }
                    Kind::Deltas(Box::new(Outbox::new()))
                }
                Mode::Aggregates => {
                    let topic = request.topic.as_str();
                    let names: Vec<Arc<str>> = self
                        .stages
                        .iter()
                        .filter(|s| *s.name == *topic || s.board.as_deref() == Some(topic))
                        .map(|s| Arc::clone(&s.name))
                        .collect();
                    if names.is_empty() {
                        return Err(unknown());
                    }
                    Kind::Aggregates(names)
                }
                Mode::Full => {
                    if !self.config.raw.enabled {
                        return Err(unknown());
                    }
                    let stream = (request.topic != "events").then(|| Arc::from(request.topic.as_str()));
                    Kind::Full(stream)
                }
            }
        };
        let max = self.config.subscribers.max_per_tenant;
        if self.subscribers.of_tenant(&request.tenant) >= max {
            return Err(SubscribeError::TooMany { max });
        }
        let max_total = self.config.subscribers.max_total;
        if self.subscribers.len() >= max_total {
            return Err(SubscribeError::TooMany { max: max_total });
        }
        // A subscriber's tenant counts toward the tenant cap, like one that ingests.
        let tenant = self.tenant_key(&request.tenant).map_err(|_| SubscribeError::TooManyTenants)?;
        let topic: Arc<str> = Arc::from(request.topic.as_str());
        let subs = &mut self.subscribers;
        let id = subs.next_id;
        subs.next_id = subs.next_id.saturating_add(1);
        *subs.per_tenant.entry(Arc::clone(&tenant)).or_insert(0) += 1;
        if let Kind::Deltas(_) = kind {
            // The board may not exist yet: an empty one gives the snapshot.
            let board_config = self.config.boards.clone();
            self.boards
                .entry((Arc::clone(&tenant), Arc::clone(&topic)))
                .or_insert_with(|| TileBoard::new(Arc::clone(&topic), board_config));
        }
        subs.by_id.insert(
            id,
            Subscriber {
                request,
                tenant,
                topic,
                kind,
                queue: VecDeque::new(),
                full_since: None,
                stats: SubscriberStats::default(),
            },
        );
        Ok(id)
    }

    /// [`subscribe`](Pipeline::subscribe) for the bearer of `token`, which
    /// must grant the topic and mode for the tenant asked. Refusals are
    /// audited.
    pub fn subscribe_with_token(
        &mut self,
        token: &str,
        request: Subscription,
        now: Timestamp,
    ) -> Result<SubscriberId, SubscribeError> {
        let claims = self.verify_token(token, now)?;
        self.authorize(&claims, &request.tenant, &request.topic, request.mode, now)?;
        self.subscribe(request)
    }

    /// Closes a subscription.
    pub fn unsubscribe(&mut self, id: SubscriberId) -> bool {
        let Some(sub) = self.subscribers.by_id.remove(&id) else { return false };
        self.subscribers.ready.retain(|&r| r != id);
        let left = sub.queue.len() as u64;
        self.subscribers.frames_dropped = self.subscribers.frames_dropped.saturating_add(left);
        if let Some(n) = self.subscribers.per_tenant.get_mut(&sub.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.subscribers.per_tenant.remove(&sub.tenant);
            }
        }
        true
    }

    /// The subscriber asks for a snapshot (its replica found a gap or a
    /// divergence); it comes with its next frames.
    pub fn resync(&mut self, id: SubscriberId) -> Result<(), SubscribeError> {
        let sub = self.subscribers.by_id.get_mut(&id).ok_or(SubscribeError::Unknown(id))?;
        if let Kind::Deltas(outbox) = &mut sub.kind {
            outbox.resync();
        }
        self.subscribers.ready.push(id);
        Ok(())
    }

    /// Appends the frames waiting for subscriber `id` to `out`, oldest
    /// first, and empties its queue.
    pub fn take_frames(&mut self, id: SubscriberId, out: &mut Vec<Frame>) -> Result<(), SubscribeError> {
        let sub = self.subscribers.by_id.get_mut(&id).ok_or(SubscribeError::Unknown(id))?;
        let before = out.len();
        if let Kind::Deltas(outbox) = &mut sub.kind
            && let Some(board) = self.boards.get(&(Arc::clone(&sub.tenant), Arc::clone(&sub.topic)))
            && let Some(frame) = outbox.take(board)
        {
            out.push(frame);
        }
        out.extend(sub.queue.drain(..));
        sub.full_since = None;
        sub.stats.frames = sub.stats.frames.saturating_add((out.len() - before) as u64);
        Ok(())
    }

    /// As [`take_frames`](Pipeline::take_frames), encoded in the
    /// subscriber's format.
    pub fn take_encoded(&mut self, id: SubscriberId, out: &mut Vec<Bytes>) -> Result<(), SubscribeError> {
        let format = self.subscribers.by_id.get(&id).ok_or(SubscribeError::Unknown(id))?.request.format;
        let mut frames = Vec::new();
        self.take_frames(id, &mut frames)?;
        out.extend(frames.iter().map(|f| format.encode(f)));
        Ok(())
    }

    /// What subscriber `id` asked for, and its counters.
    pub fn subscriber(&self, id: SubscriberId) -> Option<(&Subscription, &SubscriberStats)> {
        self.subscribers.by_id.get(&id).map(|s| (&s.request, &s.stats))
    }

    /// Fans the outputs of one `advance` out to the subscribers, and
    /// evicts those that stayed too slow.
    pub(super) fn fan_out(
        &mut self,
        now: Timestamp,
        results: &[super::NamedResult],
        deltas: &[TenantDelta],
        alerts: &[AlertEvent],
        raw: &[RawBatch],
    ) {
        if self.subscribers.by_id.is_empty() {
            return;
        }
        let max_queued = self.config.subscribers.max_queued.max(1);
        let max_lag = self.config.subscribers.max_lag;
        let mut ready = std::mem::take(&mut self.subscribers.ready);
        let mut evict = Vec::new();
        for (&id, sub) in &mut self.subscribers.by_id {
            let mut frames: Vec<Frame> = Vec::new();
            match &mut sub.kind {
                Kind::Deltas(outbox) => {
                    let mine = deltas.iter().filter(|d| d.tenant == sub.tenant && d.delta.topic == sub.topic);
                    for d in mine {
                        outbox.push(&d.delta);
                        ready.push(id);
                    }
                }
                Kind::Aggregates(windows) => {
                    let rows: Vec<ResultRow> = results
                        .iter()
                        .filter(|r| r.result.group.tenant == sub.tenant && windows.contains(&r.window))
                        .filter(|r| matches(&sub.request.filters, |k, v| r.result.group.label(k) == Some(v)))
                        .map(|r| ResultRow::new(&r.window, &r.result))
                        .collect();
                    if !rows.is_empty() {
                        frames.push(Frame::Results(ResultsFrame { topic: Arc::clone(&sub.topic), results: rows }));
                    }
                }
                Kind::Full(stream) => {
                    for batch in raw.iter().filter(|b| b.tenant == sub.tenant) {
                        if let Some(frame) = events_frame(&sub.topic, stream.as_deref(), &sub.request.filters, batch) {
                            frames.push(frame);
                        }
                    }
                }
                Kind::Alerts => {
                    let mine = alerts.iter().filter(|a| a.tenant == sub.tenant);
                    let mine = mine.filter(|a| matches(&sub.request.filters, |k, v| a.label(k) == Some(v)));
                    frames.extend(mine.map(|a| Frame::Alert(Box::new(a.clone()))));
                }
            }
            if frames.is_empty() {
                continue;
            }
            ready.push(id);
            for frame in frames {
                if sub.queue.len() >= max_queued {
                    sub.queue.pop_front();
                    sub.stats.dropped = sub.stats.dropped.saturating_add(1);
                    self.subscribers.frames_dropped = self.subscribers.frames_dropped.saturating_add(1);
                    sub.full_since.get_or_insert(now);
                }
                sub.queue.push_back(frame);
            }
            if sub.full_since.is_some_and(|since| now.saturating_since(since) > max_lag) {
                evict.push(id);
            }
        }
        for id in evict {
            let tenant = self.subscribers.by_id.get(&id).map(|s| s.tenant.to_string());
            self.unsubscribe(id);
            self.subscribers.evicted.push((id, EvictReason::SlowConsumer));
            self.subscribers.evictions = self.subscribers.evictions.saturating_add(1);
            let reason = EvictReason::SlowConsumer.as_str().to_owned();
            self.audit(now, tenant.as_deref(), AuditAction::SubscriberEvicted { subscriber: id, reason });
        }
        ready.sort_unstable();
        ready.dedup();
        ready.retain(|id| self.subscribers.by_id.contains_key(id));
        self.subscribers.ready = ready;
    }

    /// Moves the ready and evicted lists, and the audit events of the
    /// evictions, into `out`.
    pub(super) fn hand_over(&mut self, out: &mut super::Outputs) {
        out.ready.append(&mut self.subscribers.ready);
        out.evicted.append(&mut self.subscribers.evicted);
        out.audit.extend(self.audit.drain(..));
    }
}

/// The events of `batch` a `full` subscriber wants, as one frame.
fn events_frame(
    topic: &Arc<str>,
    stream: Option<&str>,
    filters: &[(String, String)],
    batch: &RawBatch,
) -> Option<Frame> {
    let wanted = |e: &crate::event::EventRef<'_>| {
        stream.is_none_or(|s| e.stream() == s) && matches(filters, |k, v| e.dim(k) == Some(v))
    };
    if batch.events.iter().all(|e| wanted(&e)) {
        return Some(Frame::Events(Box::new(EventsFrame {
            topic: Arc::clone(topic),
            events: batch.events.clone(),
            weights: batch.weights.clone(),
        })));
    }
    let mut events = EventBatch::new();
    let mut weights = Vec::new();
    for (e, w) in batch.events.iter().zip(&batch.weights) {
        if wanted(&e) {
            events.push(&e.to_event());
            weights.push(*w);
        }
    }
    (!events.is_empty()).then(|| Frame::Events(Box::new(EventsFrame { topic: Arc::clone(topic), events, weights })))
}
