//! The tumbling-window operator: event-time windows per group, closed by a
//! watermark, with allowed lateness and bounded group cardinality.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::agg::{QuantileConfig, Quantiles, Scalar};
use crate::event::{EventBatch, Sym, Symbols};
use crate::geo::Geohash;
use crate::time::{Span, TimeError, Timestamp, Tumbling};

/// A group resolved by [`Windows::resolve`], valid until the group is
/// freed (when its last window expires).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupHandle {
    id: GroupId,
    generation: u32,
}

/// The group of a [`GroupHandle`] was freed; resolve it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the group was freed since it was resolved; resolve it again")]
pub struct StaleGroup;

/// Where [`Windows::push_resolved`] put an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// Into an open window.
    OnTime,
    /// Into a closed window within the allowed lateness (a correction follows).
    Late,
    /// Nowhere: too late, or no window in range (counted in the stats).
    Dropped,
}

/// The group label value used for every group-by key of a tenant's
/// overflow group (see [`WindowSpec::max_groups_per_tenant`]).
pub const OVERFLOW: &str = "__overflow__";

/// When [`Windows`] emits a window's result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EmitMode {
    /// Once, when the window closes (and again for each correction).
    #[default]
    OnClose,
    /// Also while open: a partial result (`is_final: false`) at most once
    /// per [`Windows::advance`] for each window that changed, then the final
    /// one when it closes.
    OnUpdate,
}

/// One aggregated field: the scalar aggregates always, quantiles if asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The field to read from each event.
    pub field: String,
    /// Quantiles to report, each in 0.0..=1.0 (e.g. `[0.5, 0.9, 0.99]`);
    /// empty for none, which saves the histogram.
    #[serde(default)]
    pub quantiles: Vec<f64>,
}

impl FieldSpec {
    /// Count, sum, min, max, mean and last of `field`.
    pub fn new(field: impl Into<String>) -> Self {
        FieldSpec { field: field.into(), quantiles: Vec::new() }
    }

    /// Also reports these quantiles.
    pub fn with_quantiles(mut self, quantiles: impl IntoIterator<Item = f64>) -> Self {
        self.quantiles = quantiles.into_iter().collect();
        self
    }
}

/// What to aggregate and when windows close.
///
/// ```
/// use edgestream::time::Span;
/// use edgestream::window::{FieldSpec, WindowSpec};
///
/// let spec: WindowSpec = serde_json::from_str(r#"{
///     "size": "1m",
///     "group_by": ["region"],
///     "fields": [{"field": "latency_ms", "quantiles": [0.5, 0.99]}],
///     "out_of_orderness": "5s",
///     "allowed_lateness": "1m"
/// }"#)?;
/// assert_eq!(spec.size, Span::from_mins(1));
/// assert_eq!(spec.fields, [FieldSpec::new("latency_ms").with_quantiles([0.5, 0.99])]);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WindowSpec {
    /// Window size (at least 1 ms).
    pub size: Span,
    /// Shift of the window boundaries from the epoch.
    pub offset: Span,
    /// Dim keys that define a group (besides tenant and stream); an event
    /// without one of them has the empty string for it.
    pub group_by: Vec<String>,
    /// Also group by the geohash cell of the event's geo point, with this
    /// many characters (1 to 12), for heatmaps. The cell is the last group
    /// label, under the key `geohash`; events without a point have `""`.
    pub geo_cell: Option<u8>,
    /// The fields to aggregate.
    pub fields: Vec<FieldSpec>,
    /// How far behind the latest event time others may arrive and still be
    /// on time: the watermark is the latest event time minus this.
    pub out_of_orderness: Span,
    /// How long after its close a window still accepts late events, each
    /// batch of which re-emits the window as a correction.
    pub allowed_lateness: Span,
    /// After this long without events (by the `now` the host passes), the
    /// watermark follows processing time (`now - idle_timeout`), so windows
    /// close on a quiet stream. `None` waits for events forever.
    pub idle_timeout: Option<Span>,
    /// Most live groups per tenant; events of further groups (of any
    /// stream) are aggregated into the tenant's one overflow group, whose
    /// stream and labels are all [`OVERFLOW`]. A group is freed when its
    /// last window expires, so quiet groups make room for new ones.
    pub max_groups_per_tenant: usize,
    /// Precision of the quantile sketches.
    pub quantile_config: QuantileConfig,
    /// When results are emitted.
    pub emit: EmitMode,
}

impl WindowSpec {
    /// Default for [`WindowSpec::max_groups_per_tenant`].
    pub const DEFAULT_MAX_GROUPS_PER_TENANT: usize = 10_000;

    /// Windows of `size` with the other defaults: no grouping beyond tenant
    /// and stream, no fields (add them with [`WindowSpec::field`]), 2 s of
    /// out-of-orderness, no lateness, a 10 s idle timeout, 10,000 groups per
    /// tenant.
    pub fn new(size: Span) -> Self {
        WindowSpec { size, ..WindowSpec::default() }
    }

    /// Groups by these dim keys.
    pub fn group_by(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.group_by = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Also groups by the geohash cell of this precision (1 to 12).
    pub fn geo_cell(mut self, precision: u8) -> Self {
        self.geo_cell = Some(precision);
        self
    }

    /// Aggregates this field.
    pub fn field(mut self, field: FieldSpec) -> Self {
        self.fields.push(field);
        self
    }

    /// Sets the out-of-orderness bound.
    pub fn out_of_orderness(mut self, span: Span) -> Self {
        self.out_of_orderness = span;
        self
    }

    /// Sets the allowed lateness.
    pub fn allowed_lateness(mut self, span: Span) -> Self {
        self.allowed_lateness = span;
        self
    }

    /// Sets (or, with `None`, disables) the idle timeout.
    pub fn idle_timeout(mut self, span: Option<Span>) -> Self {
        self.idle_timeout = span;
        self
    }

    /// Sets when results are emitted.
    pub fn emit(mut self, mode: EmitMode) -> Self {
        self.emit = mode;
        self
    }

    /// Sets the per-tenant group cap.
    pub fn max_groups_per_tenant(mut self, n: usize) -> Self {
        self.max_groups_per_tenant = n;
        self
    }
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            size: Span::from_secs(1),
            offset: Span::ZERO,
            group_by: Vec::new(),
            geo_cell: None,
            fields: Vec::new(),
            out_of_orderness: Span::from_secs(2),
            allowed_lateness: Span::ZERO,
            idle_timeout: Some(Span::from_secs(10)),
            max_groups_per_tenant: Self::DEFAULT_MAX_GROUPS_PER_TENANT,
            quantile_config: QuantileConfig::default(),
            emit: EmitMode::OnClose,
        }
    }
}

/// Why a [`WindowSpec`] cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The window size is below 1 ms or the offset is out of range.
    #[error("invalid window size or offset: {0}")]
    Window(#[from] TimeError),
    /// The size is below the 1 ms minimum.
    #[error("window size {0} is below 1ms")]
    TooSmall(Span),
    /// A span that must not be negative is.
    #[error("`{0}` must not be negative")]
    Negative(&'static str),
    /// A quantile outside 0.0..=1.0.
    #[error("quantile {0} is outside 0.0..=1.0")]
    Quantile(f64),
    /// `geo_cell` is outside 1..=12.
    #[error("`geo_cell` must be a geohash precision from 1 to 12, not {0}")]
    GeoCell(u8),
    /// `max_groups_per_tenant` is zero; at least the overflow group needs room.
    #[error("`max_groups_per_tenant` must be at least 1")]
    NoGroups,
}

/// The aggregates of one field in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldResult {
    /// The field's name.
    pub field: Arc<str>,
    /// Count, sum, min, max, mean and last; mergeable, for rollups.
    pub scalar: Scalar,
    /// The requested quantiles as `(q, value)`; empty when none were asked
    /// or the field had no value.
    pub quantiles: Vec<(f64, f64)>,
    /// The quantile sketch itself, mergeable, when quantiles were asked.
    pub sketch: Option<Quantiles>,
}

/// The result of one window for one group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowResult {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The stream.
    pub stream: Arc<str>,
    /// The group-by labels `(key, value)`, in the spec's order.
    pub group: Arc<[(Arc<str>, Arc<str>)]>,
    /// Window start (inclusive).
    pub start: Timestamp,
    /// Window end (exclusive).
    pub end: Timestamp,
    /// 0 for the first emission of this window, +1 for each later one
    /// (partials, the final result, corrections): the latest revision
    /// replaces the earlier ones.
    pub revision: u32,
    /// Whether the window was closed when this was emitted: false only for
    /// the partial results of [`EmitMode::OnUpdate`].
    pub is_final: bool,
    /// Events in the window (of any field), unweighted.
    pub events: u64,
    /// Weighted event count.
    pub count: f64,
    /// One entry per [`WindowSpec::fields`], in order.
    pub fields: Vec<FieldResult>,
}

/// Counters of what the operator did with the events it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WindowStats {
    /// Events aggregated into an open window.
    pub on_time: u64,
    /// Late events aggregated into a closed window within the allowed
    /// lateness (each such window is re-emitted as a correction).
    pub late_accepted: u64,
    /// Events too late even for the allowed lateness: not aggregated,
    /// returned to the caller in `push`'s late buffer.
    pub late_dropped: u64,
    /// Events whose event time has no window in range (near the ends of the
    /// `Timestamp` range): not aggregated, returned like late ones.
    pub out_of_range: u64,
    /// Events aggregated into an overflow group because their tenant was at
    /// its group cap.
    pub overflowed: u64,
    /// Window results emitted, corrections included.
    pub results: u64,
    /// Corrections emitted.
    pub corrections: u64,
}

type GroupId = u32;

/// A group: its identity and its labels for results.
struct Group {
    tenant: Arc<str>,
    stream: Arc<str>,
    labels: Arc<[(Arc<str>, Arc<str>)]>,
    /// Counts toward its tenant's cap (false for overflow groups).
    counted: bool,
    /// Its key in `Windows::group_ids` (global symbols).
    key: SmallVec<[u32; 6]>,
    /// False once freed (its id waits in `Windows::free_groups`).
    live: bool,
    /// Bumped each time the id is reused, so stale handles are refused.
    generation: u32,
}

/// A group's live windows: (window index, slot in the [`Slab`]). Usually one
/// or two, so a scan beats a map; kept apart from [`Group`] so that the hot
/// path touches one small entry per event.
type GroupWindows = SmallVec<[(i64, u32); 2]>;

/// A group id with its most recently used window slot.
#[derive(Clone, Copy)]
struct HotGroup {
    id: GroupId,
    window: i64,
    slot: u32,
}

/// What a window holds besides its field aggregates.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct Header {
    /// The (group, window) owning this slot, to validate cached slots. Not
    /// in snapshots: a window's snapshot entry already names both.
    #[serde(skip)]
    group: GroupId,
    #[serde(skip)]
    window: i64,
    events: u64,
    count: f64,
    /// Emissions so far.
    emitted: u32,
    /// Changed since its last emission.
    dirty: bool,
    /// Emitted as final at least once (later final emissions are corrections).
    closed_once: bool,
}

/// Window states in flat arrays addressed by slot: a header per slot and
/// `width` scalars per slot (and as many sketches when a field asks for
/// quantiles), so the scalar path stays dense in memory.
struct Slab {
    width: usize,
    headers: Vec<Header>,
    scalars: Vec<Scalar>,
    /// Empty when no field asks for quantiles.
    sketches: Vec<Option<Quantiles>>,
    free: Vec<u32>,
}

impl Slab {
    fn new(width: usize) -> Self {
        Slab { width, headers: Vec::new(), scalars: Vec::new(), sketches: Vec::new(), free: Vec::new() }
    }

    fn alloc(&mut self, spec: &WindowSpec) -> u32 {
        let quantiles = spec.fields.iter().any(|f| !f.quantiles.is_empty());
        let sketch = |f: &FieldSpec| (!f.quantiles.is_empty()).then(|| Quantiles::new(spec.quantile_config));
        match self.free.pop() {
            Some(slot) => {
                let base = slot as usize * self.width;
                if let Some(h) = self.headers.get_mut(slot as usize) {
                    *h = Header::default();
                }
                for (i, f) in spec.fields.iter().enumerate() {
                    if let Some(s) = self.scalars.get_mut(base + i) {
                        *s = Scalar::new();
                    }
                    if let Some(q) = self.sketches.get_mut(base + i) {
                        *q = sketch(f);
                    }
                }
                slot
            }
            None => {
                self.headers.push(Header::default());
                self.scalars.extend(spec.fields.iter().map(|_| Scalar::new()));
                if quantiles {
                    self.sketches.extend(spec.fields.iter().map(sketch));
                }
                (self.headers.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, slot: u32) {
        if let Some(h) = self.headers.get_mut(slot as usize) {
            h.group = u32::MAX;
        }
        let base = slot as usize * self.width;
        // Drop the histograms now rather than on reuse.
        for q in self.sketches.iter_mut().skip(base).take(self.width) {
            *q = None;
        }
        self.free.push(slot);
    }

    fn live(&self) -> usize {
        self.headers.len() - self.free.len()
    }
}

/// The groups that hold state in one window index.
#[derive(Default)]
struct Bucket {
    groups: Vec<GroupId>,
    closed: bool,
}

/// Event-time tumbling windows over batches of events, keyed by tenant,
/// stream and the group-by dims, closed by a watermark.
///
/// Calling order: [`Windows::push`] each validated batch with the host's
/// `now`, then [`Windows::advance`] with the same or a later `now`, then
/// drain [`Windows::poll_result`]. Call `advance` again at
/// [`Windows::next_deadline`] so that quiet streams close their windows;
/// early, late or repeated calls are harmless. The operator reads no clock.
///
/// The watermark only moves in `advance`, so the outcome for an event does
/// not depend on its position in a batch: any order of the same events
/// whose disorder stays within [`WindowSpec::out_of_orderness`] gives the
/// same results.
///
/// There is one watermark per operator. Senders whose clocks run ahead
/// (validation allows up to [`Limits::max_future_skew`]) move it for every
/// group, so give each tenant (or each shard of senders that share a
/// clock) its own operator, as a Durable Object room per tenant and stream
/// does.
///
/// [`Limits::max_future_skew`]: crate::event::Limits::max_future_skew
///
/// ```
/// use edgestream::event::{Event, EventBatch};
/// use edgestream::time::{Span, Timestamp};
/// use edgestream::window::{FieldSpec, WindowSpec, Windows};
///
/// let spec = WindowSpec::new(Span::from_secs(10)).group_by(["region"]).field(FieldSpec::new("temp_c"));
/// let mut windows = Windows::new(spec)?;
/// let t = |s: i64| Timestamp::from_secs(1_795_838_400 + s).unwrap();
/// let mut batch = EventBatch::new();
/// for (s, region, temp) in [(1, "eu", 20.0), (3, "eu", 22.0), (4, "us", 30.0), (15, "eu", 21.0)] {
///     batch.push(&Event::new("acme", "metrics", t(s)).with_dim("region", region).with_field("temp_c", temp));
/// }
/// let mut late = Vec::new();
/// windows.push(&batch, t(15), &mut late);
/// windows.advance(t(15)); // watermark 15 s - 2 s: the first window [0, 10) closes
/// let mut results = Vec::new();
/// while let Some(r) = windows.poll_result() {
///     results.push((r.group[0].1.to_string(), r.fields[0].scalar.mean()));
/// }
/// results.sort_by(|a, b| a.0.cmp(&b.0));
/// assert_eq!(results, [("eu".to_string(), Some(21.0)), ("us".to_string(), Some(30.0))]);
/// # Ok::<(), edgestream::window::SpecError>(())
/// ```
pub struct Windows {
    spec: WindowSpec,
    tumbling: Tumbling,
    /// Global strings of live groups.
    strings: Symbols,
    /// Batch symbol index → global symbol (or UNSEEN), for the batch being pushed.
    translate: Vec<u32>,
    /// Group key (global symbols) → the group and, as a cache, the slot of
    /// the window its last event went to: most events of a group land in
    /// the same window as its previous one, and the map entry is already in
    /// cache after the lookup.
    group_ids: HashMap<SmallVec<[u32; 6]>, HotGroup, foldhash::fast::RandomState>,
    groups: Vec<Group>,
    /// Ids of freed groups, reused by new ones.
    free_groups: Vec<GroupId>,
    /// Symbols referenced by live groups' keys (with repeats), to decide
    /// when the string table is worth rebuilding.
    live_key_symbols: usize,
    groups_per_tenant: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// Per group, its live windows (parallel to `groups`).
    group_windows: Vec<GroupWindows>,
    slab: Slab,
    buckets: BTreeMap<i64, Bucket>,
    /// Windows closed and changed since, awaiting a correction.
    dirty: Vec<(GroupId, i64)>,
    ready: std::collections::VecDeque<WindowResult>,
    max_event_ts: Option<Timestamp>,
    last_arrival: Option<Timestamp>,
    watermark: Timestamp,
    field_names: Vec<Arc<str>>,
    stats: WindowStats,
}

impl core::fmt::Debug for Windows {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Windows")
            .field("spec", &self.spec)
            .field("watermark", &self.watermark)
            .field("groups", &self.groups.len())
            .field("live_windows", &self.live_windows())
            .field("stats", &self.stats)
            .finish()
    }
}

const UNSEEN: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;

impl Windows {
    /// An operator for `spec`.
    pub fn new(spec: WindowSpec) -> Result<Self, SpecError> {
        let tumbling = Tumbling::with_offset(spec.size, spec.offset)?;
        if spec.size < Span::from_millis(1) {
            return Err(SpecError::TooSmall(spec.size));
        }
        for (name, span) in [("out_of_orderness", spec.out_of_orderness), ("allowed_lateness", spec.allowed_lateness)] {
            if span < Span::ZERO {
                return Err(SpecError::Negative(name));
            }
        }
        if spec.idle_timeout.is_some_and(|s| s < Span::ZERO) {
            return Err(SpecError::Negative("idle_timeout"));
        }
        if let Some(&q) = spec.fields.iter().flat_map(|f| &f.quantiles).find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(SpecError::Quantile(q));
        }
        if spec.max_groups_per_tenant == 0 {
            return Err(SpecError::NoGroups);
        }
        if let Some(p) = spec.geo_cell.filter(|p| !(1..=crate::geo::MAX_PRECISION).contains(p)) {
            return Err(SpecError::GeoCell(p));
        }
        let field_names = spec.fields.iter().map(|f| Arc::from(f.field.as_str())).collect();
        let width = spec.fields.len();
        Ok(Windows {
            spec,
            tumbling,
            strings: Symbols::new(),
            translate: Vec::new(),
            group_ids: HashMap::default(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            live_key_symbols: 0,
            groups_per_tenant: HashMap::default(),
            group_windows: Vec::new(),
            slab: Slab::new(width),
            buckets: BTreeMap::new(),
            dirty: Vec::new(),
            ready: std::collections::VecDeque::new(),
            max_event_ts: None,
            last_arrival: None,
            watermark: Timestamp::MIN,
            field_names,
            stats: WindowStats::default(),
        })
    }

    /// The spec in force.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// The current watermark: windows ending at or before it are closed.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// What happened to the events pushed so far.
    pub fn stats(&self) -> &WindowStats {
        &self.stats
    }

    /// Live groups, overflow groups included.
    pub fn groups(&self) -> usize {
        self.groups.len() - self.free_groups.len()
    }

    /// (group, window) states held: open windows, and closed ones still
    /// within the allowed lateness.
    pub fn live_windows(&self) -> usize {
        self.slab.live()
    }

    /// Aggregates every event of `batch` (validate it first) into its
    /// window. `now` is the host's current time, used only for the idle
    /// timeout. The indexes of events too late to aggregate (or with no
    /// window in range) are appended to `late`, so that the host can
    /// archive them; they are also counted in [`Windows::stats`].
    pub fn push(&mut self, batch: &EventBatch, now: Timestamp, late: &mut Vec<usize>) {
        if batch.is_empty() {
            return;
        }
        self.last_arrival = Some(self.last_arrival.map_or(now, |t| t.max(now)));
        self.translate.clear();
        self.translate.resize(batch.symbols().len(), UNSEEN);
        // The batch symbols of the group-by keys and fields (None: no event
        // of this batch has it).
        let symbols = batch.symbols();
        let key_syms: SmallVec<[Option<Sym>; 4]> = self.spec.group_by.iter().map(|k| symbols.get(k)).collect();
        let field_syms: SmallVec<[Option<Sym>; 4]> = self.spec.fields.iter().map(|f| symbols.get(&f.field)).collect();
        let mut key: SmallVec<[u32; 6]> = SmallVec::new();
        let mut values: SmallVec<[Option<Sym>; 4]> = SmallVec::new();
        for (index, event) in batch.iter().enumerate() {
            let ts = event.ts();
            let Some((window, closed)) = self.place(ts) else {
                late.push(index);
                continue;
            };
            // The group key: tenant, stream and each group-by value, as
            // global symbols (ABSENT when the string is not global yet).
            values.clear();
            values.extend(
                key_syms.iter().map(|k| k.and_then(|k| event.dim_syms().iter().find(|d| d.0 == k).map(|d| d.1))),
            );
            key.clear();
            key.push(self.global(symbols, event.tenant_sym()));
            key.push(self.global(symbols, event.stream_sym()));
            for v in &values {
                let g = match v {
                    Some(v) => self.global(symbols, *v),
                    None => self.global_str(""),
                };
                key.push(g);
            }
            let cell = self.spec.geo_cell.and_then(|p| event.geo().and_then(|g| Geohash::encode(g.lat, g.lon, p)));
            if self.spec.geo_cell.is_some() {
                key.push(self.global_str(cell.as_ref().map_or("", Geohash::as_str)));
            }
            let hot = match self.group_ids.get(&key) {
                Some(&hot) => hot,
                None => {
                    let cell_text = self.spec.geo_cell.map(|_| cell.as_ref().map_or("", Geohash::as_str));
                    let id = self.new_group(symbols, event.tenant(), event.stream(), &values, cell_text);
                    HotGroup { id, window: i64::MIN, slot: u32::MAX }
                }
            };
            let group = hot.id;
            // The cached slot is valid only if it still belongs to this
            // (group, window): slots are reused after windows expire.
            let cached = hot.window == window
                && self.slab.headers.get(hot.slot as usize).is_some_and(|h| h.group == group && h.window == window);
            let slot = if cached {
                hot.slot
            } else {
                let slot = match self.group_slot(group, window) {
                    Some(slot) => slot,
                    None => self.new_state(group, window),
                };
                if let Some(entry) = self.group_ids.get_mut(&key) {
                    *entry = HotGroup { id: group, window, slot };
                }
                slot
            };
            let fields = event.field_syms();
            self.record(group, window, slot, closed, ts, 1.0, |i| {
                let sym = field_syms.get(i).copied().flatten()?;
                fields.iter().find(|f| f.0 == sym).map(|f| f.1)
            });
        }
    }

    /// The window of `ts` and whether it is closed, or `None` (counted) when
    /// the event is too late even for the allowed lateness or has no window.
    #[inline]
    fn place(&mut self, ts: Timestamp) -> Option<(i64, bool)> {
        // One division for the index; start and end follow from it.
        let window = self.tumbling.index(ts);
        let bounds = self.tumbling.start_of_index(window).and_then(|s| s.checked_add(self.spec.size).map(|e| (s, e)));
        let Some((_, end)) = bounds else {
            self.stats.out_of_range = self.stats.out_of_range.saturating_add(1);
            return None;
        };
        let closed = end <= self.watermark;
        if closed && end.saturating_add(self.spec.allowed_lateness) <= self.watermark {
            self.stats.late_dropped = self.stats.late_dropped.saturating_add(1);
            return None;
        }
        Some((window, closed))
    }

    /// Records one event into the state in `slot`; `value(i)` is its value
    /// for field `i`, if any.
    #[allow(clippy::too_many_arguments, reason = "the hot path's pieces, kept as plain values")]
    #[inline]
    fn record(
        &mut self,
        group: GroupId,
        window: i64,
        slot: u32,
        closed: bool,
        ts: Timestamp,
        weight: f64,
        value: impl Fn(usize) -> Option<f64>,
    ) {
        let base = slot as usize * self.slab.width;
        for i in 0..self.slab.width {
            let Some(v) = value(i) else { continue };
            if let Some(scalar) = self.slab.scalars.get_mut(base + i) {
                scalar.record(v, weight, ts);
            }
            if let Some(Some(q)) = self.slab.sketches.get_mut(base + i) {
                q.record(v, weight);
            }
        }
        let Some(header) = self.slab.headers.get_mut(slot as usize) else { return };
        header.events = header.events.saturating_add(1);
        header.count += weight;
        if closed {
            self.stats.late_accepted = self.stats.late_accepted.saturating_add(1);
        } else {
            self.stats.on_time = self.stats.on_time.saturating_add(1);
        }
        if (closed || self.spec.emit == EmitMode::OnUpdate) && !header.dirty {
            header.dirty = true;
            self.dirty.push((group, window));
        }
        self.max_event_ts = Some(self.max_event_ts.map_or(ts, |m| m.max(ts)));
    }

    /// The group of `tenant`, `stream` and `labels` (the group-by values in
    /// [`WindowSpec::group_by`] order, then the geohash cell if
    /// [`WindowSpec::geo_cell`] is set; missing ones count as `""`, extra
    /// ones are ignored), created if new, or the tenant's overflow group at
    /// its cap. For hosts that resolve groups once and push many values:
    /// see [`Windows::push_resolved`].
    pub fn resolve(&mut self, tenant: &str, stream: &str, labels: &[&str]) -> GroupHandle {
        let n = self.spec.group_by.len() + usize::from(self.spec.geo_cell.is_some());
        let texts: SmallVec<[&str; 4]> = (0..n).map(|i| labels.get(i).copied().unwrap_or("")).collect();
        let mut key: SmallVec<[u32; 6]> = SmallVec::new();
        for s in [tenant, stream].into_iter().chain(texts.iter().copied()) {
            key.push(self.global_str(s));
        }
        let id = match self.group_ids.get(&key) {
            Some(hot) => hot.id,
            None => self.create_group(tenant, stream, &texts),
        };
        GroupHandle { id, generation: self.groups.get(id as usize).map_or(0, |g| g.generation) }
    }

    /// Aggregates one event of a resolved group: `values` holds one value
    /// per [`WindowSpec::fields`] entry, in order (NaN for "no value"; a
    /// shorter slice leaves the rest without value). `now` is as in
    /// [`Windows::push`]. The event is counted in [`Windows::stats`] like a
    /// pushed one.
    ///
    /// Fails with [`StaleGroup`] when the group was freed since it was
    /// resolved (its last window expired): resolve it again.
    pub fn push_resolved(
        &mut self,
        group: GroupHandle,
        ts: Timestamp,
        values: &[f64],
        weight: f64,
        now: Timestamp,
    ) -> Result<Placement, StaleGroup> {
        if !self.groups.get(group.id as usize).is_some_and(|g| g.live && g.generation == group.generation) {
            return Err(StaleGroup);
        }
        self.last_arrival = Some(self.last_arrival.map_or(now, |t| t.max(now)));
        let Some((window, closed)) = self.place(ts) else { return Ok(Placement::Dropped) };
        let slot = match self.group_slot(group.id, window) {
            Some(slot) => slot,
            None => self.new_state(group.id, window),
        };
        self.record(group.id, window, slot, closed, ts, weight, |i| values.get(i).copied().filter(|v| !v.is_nan()));
        Ok(if closed { Placement::Late } else { Placement::OnTime })
    }

    /// The global symbol of batch symbol `sym`, or ABSENT.
    #[inline]
    fn global(&mut self, symbols: &Symbols, sym: Sym) -> u32 {
        match self.translate.get(sym.index()) {
            Some(&g) if g != UNSEEN => g,
            _ => {
                let g = self.global_str(symbols.resolve(sym).unwrap_or_default());
                // ABSENT is not cached: the string may become global when
                // its group is created, a moment later.
                if g != ABSENT
                    && let Some(slot) = self.translate.get_mut(sym.index())
                {
                    *slot = g;
                }
                g
            }
        }
    }

    fn global_str(&self, s: &str) -> u32 {
        self.strings.get(s).map_or(ABSENT, |g| g.index() as u32)
    }

    /// The state slot of `group` in `window`, if it has one.
    #[inline]
    fn group_slot(&self, group: GroupId, window: i64) -> Option<u32> {
        self.group_windows.get(group as usize)?.iter().find(|w| w.0 == window).map(|w| w.1)
    }

    /// A fresh state for `group` in `window`, registered with both.
    fn new_state(&mut self, group: GroupId, window: i64) -> u32 {
        let slot = self.slab.alloc(&self.spec);
        if let Some(h) = self.slab.headers.get_mut(slot as usize) {
            h.group = group;
            h.window = window;
        }
        if let Some(windows) = self.group_windows.get_mut(group as usize) {
            windows.push((window, slot));
        }
        // A late event may open state in a window that closed with no state
        // for any group: its bucket is born closed, so it is emitted once,
        // as a correction, not also as a closing window.
        let closed = self
            .tumbling
            .start_of_index(window)
            .is_some_and(|start| start.saturating_add(self.spec.size) <= self.watermark);
        self.buckets.entry(window).or_insert_with(|| Bucket { groups: Vec::new(), closed }).groups.push(group);
        slot
    }

    /// Creates the group for `values` (or returns the tenant's overflow
    /// group when the tenant is at its cap).
    fn new_group(
        &mut self,
        symbols: &Symbols,
        tenant: &str,
        stream: &str,
        values: &[Option<Sym>],
        cell: Option<&str>,
    ) -> GroupId {
        let texts: SmallVec<[&str; 4]> =
            values.iter().map(|v| v.and_then(|v| symbols.resolve(v)).unwrap_or("")).chain(cell).collect();
        self.create_group(tenant, stream, &texts)
    }

    /// A new group for these label texts, or the tenant's overflow group
    /// (counted) when the tenant is at its cap.
    fn create_group(&mut self, tenant: &str, stream: &str, texts: &[&str]) -> GroupId {
        let live = self.groups_per_tenant.get(tenant).copied().unwrap_or(0);
        if live < self.spec.max_groups_per_tenant {
            return self.insert_group(tenant, stream, texts, true);
        }
        self.stats.overflowed = self.stats.overflowed.saturating_add(1);
        // One overflow group per tenant, whatever the stream, so that new
        // streams cannot grow it either.
        let overflow: SmallVec<[&str; 4]> = texts.iter().map(|_| OVERFLOW).collect();
        self.insert_group(tenant, OVERFLOW, &overflow, false)
    }

    /// The group of these strings, created if new; `counted` groups count
    /// toward their tenant's cap (overflow groups do not).
    fn insert_group(&mut self, tenant: &str, stream: &str, texts: &[&str], counted: bool) -> GroupId {
        let mut key: SmallVec<[u32; 6]> = SmallVec::new();
        for s in [tenant, stream].into_iter().chain(texts.iter().copied()) {
            key.push(self.strings.intern(s).index() as u32);
        }
        if let Some(hot) = self.group_ids.get(&key) {
            return hot.id;
        }
        let tenant_arc: Arc<str> = Arc::from(tenant);
        let keys = self.spec.group_by.iter().map(String::as_str).chain(self.spec.geo_cell.map(|_| "geohash"));
        let labels: Arc<[(Arc<str>, Arc<str>)]> = keys.zip(texts).map(|(k, v)| (Arc::from(k), Arc::from(*v))).collect();
        self.live_key_symbols += key.len();
        let mut group = Group {
            tenant: tenant_arc.clone(),
            stream: Arc::from(stream),
            labels,
            counted,
            key: key.clone(),
            live: true,
            generation: 0,
        };
        let id = match self.free_groups.pop() {
            Some(id) => {
                if let Some(slot) = self.groups.get_mut(id as usize) {
                    group.generation = slot.generation.wrapping_add(1);
                    *slot = group;
                }
                id
            }
            None => {
                self.groups.push(group);
                self.group_windows.push(SmallVec::new());
                (self.groups.len() - 1) as GroupId
            }
        };
        if counted {
            *self.groups_per_tenant.entry(tenant_arc).or_insert(0) += 1;
        }
        self.group_ids.insert(key, HotGroup { id, window: i64::MIN, slot: u32::MAX });
        id
    }

    /// Moves the watermark (from the latest event time, or from `now` on an
    /// idle stream), emits the results of windows that closed and the
    /// corrections of late-updated ones, and frees windows past their
    /// allowed lateness.
    pub fn advance(&mut self, now: Timestamp) {
        let mut watermark = self.watermark;
        if let Some(max) = self.max_event_ts {
            watermark = watermark.max(max.saturating_sub(self.spec.out_of_orderness));
        }
        if let (Some(idle), Some(last)) = (self.spec.idle_timeout, self.last_arrival)
            && now.saturating_since(last) >= idle
        {
            watermark = watermark.max(now.saturating_sub(idle));
        }
        self.watermark = watermark;

        let mut expired = Vec::new();
        for (&window, bucket) in &mut self.buckets {
            let Some(start) = self.tumbling.start_of_index(window) else { continue };
            let end = start.saturating_add(self.spec.size);
            if end > watermark {
                break;
            }
            if !bucket.closed {
                bucket.closed = true;
                for &group in &bucket.groups {
                    Self::emit_into(
                        &mut self.slab,
                        &self.groups,
                        &self.group_windows,
                        &self.field_names,
                        &self.spec,
                        &mut self.ready,
                        &mut self.stats,
                        group,
                        window,
                        start,
                        true,
                        false,
                    );
                }
            }
            if end.saturating_add(self.spec.allowed_lateness) <= watermark {
                expired.push(window);
            }
        }
        // Then what changed since its last emission: corrections of closed
        // windows, and (in update mode) partial results of open ones.
        for (group, window) in core::mem::take(&mut self.dirty) {
            let closed = self.buckets.get(&window).is_some_and(|b| b.closed);
            self.emit(group, window, closed, true);
        }
        for window in expired {
            if let Some(bucket) = self.buckets.remove(&window) {
                for group in bucket.groups {
                    let Some(windows) = self.group_windows.get_mut(group as usize) else { continue };
                    if let Some(i) = windows.iter().position(|w| w.0 == window) {
                        let (_, slot) = windows.swap_remove(i);
                        self.slab.release(slot);
                    }
                    if windows.is_empty() {
                        self.free_group(group);
                    }
                }
            }
        }
        self.compact_strings();
    }

    /// Forgets a group whose last window expired: it no longer counts
    /// toward its tenant's cap, and its id is reused.
    fn free_group(&mut self, id: GroupId) {
        let Some(g) = self.groups.get_mut(id as usize).filter(|g| g.live) else { return };
        g.live = false;
        self.live_key_symbols = self.live_key_symbols.saturating_sub(g.key.len());
        self.group_ids.remove(&g.key);
        if g.counted
            && let Some(n) = self.groups_per_tenant.get_mut(&g.tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.groups_per_tenant.remove(&g.tenant);
            }
        }
        // Drop the strings now; the entry is reused by the next new group.
        g.labels = Arc::from(Vec::new());
        g.key = SmallVec::new();
        self.free_groups.push(id);
    }

    /// The interner only grows; when it holds far more strings than the
    /// live groups use, rebuild it from them (amortized over the frees).
    fn compact_strings(&mut self) {
        if self.strings.len() <= 1_024 || self.strings.len() <= 2 * self.live_key_symbols {
            return;
        }
        let mut strings = Symbols::new();
        let mut group_ids = HashMap::default();
        for g in self.groups.iter_mut().filter(|g| g.live) {
            let mut key: SmallVec<[u32; 6]> = SmallVec::new();
            for s in [&*g.tenant, &*g.stream].into_iter().chain(g.labels.iter().map(|(_, v)| &**v)) {
                key.push(strings.intern(s).index() as u32);
            }
            let hot = self.group_ids.get(&g.key).copied();
            g.key = key.clone();
            if let Some(hot) = hot {
                group_ids.insert(key, hot);
            }
        }
        self.strings = strings;
        self.group_ids = group_ids;
    }

    fn emit(&mut self, group: GroupId, window: i64, is_final: bool, only_if_dirty: bool) {
        let Some(start) = self.tumbling.start_of_index(window) else { return };
        Self::emit_into(
            &mut self.slab,
            &self.groups,
            &self.group_windows,
            &self.field_names,
            &self.spec,
            &mut self.ready,
            &mut self.stats,
            group,
            window,
            start,
            is_final,
            only_if_dirty,
        );
    }

    #[allow(clippy::too_many_arguments, reason = "split borrows of the operator's fields")]
    fn emit_into(
        slab: &mut Slab,
        groups: &[Group],
        group_windows: &[GroupWindows],
        field_names: &[Arc<str>],
        spec: &WindowSpec,
        ready: &mut std::collections::VecDeque<WindowResult>,
        stats: &mut WindowStats,
        group: GroupId,
        window: i64,
        start: Timestamp,
        is_final: bool,
        only_if_dirty: bool,
    ) {
        let Some(g) = groups.get(group as usize) else { return };
        let Some(&(_, slot)) = group_windows.get(group as usize).and_then(|w| w.iter().find(|w| w.0 == window)) else {
            return;
        };
        // A change is emitted once: a window that closed in this call (and
        // so was just emitted) or is listed twice is not emitted again.
        if only_if_dirty && slab.headers.get(slot as usize).is_none_or(|h| !h.dirty) {
            return;
        }
        let base = slot as usize * slab.width;
        let fields = field_names
            .iter()
            .zip(&spec.fields)
            .enumerate()
            .map(|(i, (name, fs))| {
                let sketch = slab.sketches.get(base + i).cloned().flatten();
                FieldResult {
                    field: name.clone(),
                    scalar: slab.scalars.get(base + i).copied().unwrap_or_default(),
                    quantiles: sketch
                        .as_ref()
                        .map(|q| fs.quantiles.iter().filter_map(|&p| q.quantile(p).map(|v| (p, v))).collect())
                        .unwrap_or_default(),
                    sketch,
                }
            })
            .collect();
        let Some(header) = slab.headers.get_mut(slot as usize) else { return };
        if is_final && header.emitted > 0 && header.closed_once {
            stats.corrections = stats.corrections.saturating_add(1);
        }
        header.closed_once |= is_final;
        stats.results = stats.results.saturating_add(1);
        ready.push_back(WindowResult {
            tenant: g.tenant.clone(),
            stream: g.stream.clone(),
            group: g.labels.clone(),
            start,
            end: start.saturating_add(spec.size),
            revision: header.emitted,
            is_final,
            events: header.events,
            count: header.count,
            fields,
        });
        header.emitted = header.emitted.saturating_add(1);
        header.dirty = false;
    }

    /// The next result, oldest first.
    pub fn poll_result(&mut self) -> Option<WindowResult> {
        self.ready.pop_front()
    }

    /// When `advance` should be called next even if no event arrives: the
    /// time at which the idle timeout would close the earliest open window
    /// or free the earliest closed one past its lateness. `None` when no
    /// window is held or there is no idle timeout.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let idle = self.spec.idle_timeout?;
        let last = self.last_arrival?;
        let end = |window: i64| self.tumbling.start_of_index(window).map(|s| s.saturating_add(self.spec.size));
        // The earliest open window to close, or closed window to free.
        let close = self.buckets.iter().find(|(_, b)| !b.closed).and_then(|(&w, _)| end(w));
        let free = self
            .buckets
            .iter()
            .find(|(_, b)| b.closed)
            .and_then(|(&w, _)| end(w))
            .map(|e| e.saturating_add(self.spec.allowed_lateness));
        let due = match (close, free) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(last.saturating_add(idle).max(due.saturating_add(idle)))
    }
}

// ---------------------------------------------------------------------------
// Snapshots

/// The snapshot format version written by [`Windows::snapshot`].
const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot (truncated, corrupted, or not one).
    #[error("not a window snapshot: {0}")]
    Malformed(String),
    /// A snapshot from a newer version of edgestream.
    #[error("snapshot version {0} is not supported (this build reads version 1)")]
    Version(u32),
    /// The snapshot's spec is not valid.
    #[error("the snapshot's spec is invalid: {0}")]
    Spec(#[from] SpecError),
    /// The snapshot's parts do not fit together (a window of an unknown
    /// group, a wrong number of fields).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(&'static str),
}

#[derive(Serialize, Deserialize)]
struct GroupSnap<'a> {
    /// Index in `Snapshot::names`.
    tenant: u32,
    /// Index in `Snapshot::names`.
    stream: u32,
    #[serde(borrow)]
    values: Vec<Cow<'a, str>>,
    counted: bool,
}

#[derive(Serialize, Deserialize)]
struct WindowSnap<'a> {
    group: u32,
    window: i64,
    header: Header,
    #[serde(borrow)]
    scalars: Cow<'a, [Scalar]>,
    sketches: Vec<Option<Quantiles>>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot<'a> {
    version: u32,
    spec: WindowSpec,
    watermark: Timestamp,
    max_event_ts: Option<Timestamp>,
    last_arrival: Option<Timestamp>,
    stats: WindowStats,
    /// Tenant and stream names, each once.
    #[serde(borrow)]
    names: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    groups: Vec<GroupSnap<'a>>,
    #[serde(borrow)]
    windows: Vec<WindowSnap<'a>>,
    closed: Vec<i64>,
    dirty: Vec<(u32, i64)>,
    ready: Vec<WindowResult>,
}

/// The index of `name` in the snapshot's name table, added if new.
fn name_index<'a>(
    name: &'a str,
    names: &mut Vec<Cow<'a, str>>,
    ids: &mut HashMap<&'a str, u32, foldhash::fast::RandomState>,
) -> u32 {
    *ids.entry(name).or_insert_with(|| {
        names.push(Cow::Borrowed(name));
        (names.len() - 1) as u32
    })
}

impl Windows {
    /// Appends the whole state (spec, watermark, groups, open and
    /// not-yet-expired windows, pending results, counters) to `out` in a
    /// compact, versioned binary form. [`Windows::restore`] continues from
    /// it exactly where this operator is: a Durable Object can snapshot
    /// after each `advance` and resume after eviction.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        // Live groups only, numbered densely; tenant and stream names once.
        let mut renumber = vec![u32::MAX; self.groups.len()];
        let mut groups = Vec::with_capacity(self.groups());
        let mut names: Vec<Cow<'_, str>> = Vec::new();
        let mut name_ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
        for (id, g) in self.groups.iter().enumerate().filter(|(_, g)| g.live) {
            if let Some(n) = renumber.get_mut(id) {
                *n = groups.len() as u32;
            }
            let tenant = name_index(&g.tenant, &mut names, &mut name_ids);
            let stream = name_index(&g.stream, &mut names, &mut name_ids);
            groups.push(GroupSnap {
                tenant,
                stream,
                values: g.labels.iter().map(|(_, v)| Cow::Borrowed(&**v)).collect(),
                counted: g.counted,
            });
        }
        let new_id = |g: GroupId| renumber.get(g as usize).copied().unwrap_or(u32::MAX);
        let width = self.slab.width;
        // In bucket order, so that a restored operator emits in the same order.
        let mut windows = Vec::with_capacity(self.live_windows());
        for (&window, bucket) in &self.buckets {
            for &group in &bucket.groups {
                let Some(slot) = self.group_slot(group, window) else { continue };
                let base = slot as usize * width;
                windows.push(WindowSnap {
                    group: new_id(group),
                    window,
                    header: self.slab.headers.get(slot as usize).copied().unwrap_or_default(),
                    scalars: Cow::Borrowed(self.slab.scalars.get(base..base + width).unwrap_or_default()),
                    sketches: self.slab.sketches.get(base..base + width).map(<[_]>::to_vec).unwrap_or_default(),
                });
            }
        }
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            spec: self.spec.clone(),
            watermark: self.watermark,
            max_event_ts: self.max_event_ts,
            last_arrival: self.last_arrival,
            stats: self.stats.clone(),
            names,
            groups,
            windows,
            closed: self.buckets.iter().filter(|(_, b)| b.closed).map(|(&w, _)| w).collect(),
            dirty: self.dirty.iter().map(|&(g, w)| (new_id(g), w)).collect(),
            ready: self.ready.iter().cloned().collect(),
        };
        // Serializing plain data into a Vec cannot fail.
        if let Ok(bytes) = postcard::to_allocvec(&snap) {
            out.extend_from_slice(&bytes);
        }
    }

    /// An operator that continues from a [`Windows::snapshot`], with the
    /// spec stored in it.
    pub fn restore(bytes: &[u8]) -> Result<Windows, SnapshotError> {
        let version = postcard::take_from_bytes::<u32>(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?.0;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let snap: Snapshot<'_> = postcard::from_bytes(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut w = Windows::new(snap.spec)?;
        let width = w.slab.width;
        for g in &snap.groups {
            if g.values.len() != w.spec.group_by.len() + usize::from(w.spec.geo_cell.is_some()) {
                return Err(SnapshotError::Inconsistent("a group has the wrong number of labels"));
            }
            let texts: SmallVec<[&str; 4]> = g.values.iter().map(|v| &**v).collect();
            let name =
                |i: u32| snap.names.get(i as usize).ok_or(SnapshotError::Inconsistent("a name index is out of range"));
            let (tenant, stream) = (name(g.tenant)?, name(g.stream)?);
            w.insert_group(tenant, stream, &texts, g.counted);
        }
        if w.groups.len() != snap.groups.len() {
            return Err(SnapshotError::Inconsistent("duplicate groups"));
        }
        for ws in snap.windows {
            if ws.scalars.len() != width || !(ws.sketches.is_empty() || ws.sketches.len() == width) {
                return Err(SnapshotError::Inconsistent("a window has the wrong number of fields"));
            }
            let wants_sketch = |i: usize| w.spec.fields.get(i).is_some_and(|f| !f.quantiles.is_empty());
            if (0..width).any(|i| wants_sketch(i) != ws.sketches.get(i).is_some_and(Option::is_some)) {
                return Err(SnapshotError::Inconsistent("a window's quantile sketches do not match the spec"));
            }
            if ws.group as usize >= w.groups.len() || w.group_slot(ws.group, ws.window).is_some() {
                return Err(SnapshotError::Inconsistent("a window of an unknown group, or twice"));
            }
            let slot = w.new_state(ws.group, ws.window);
            let base = slot as usize * width;
            if let Some(h) = w.slab.headers.get_mut(slot as usize) {
                *h = Header { group: ws.group, window: ws.window, ..ws.header };
            }
            for (dst, src) in w.slab.scalars.iter_mut().skip(base).zip(ws.scalars.iter()) {
                *dst = *src;
            }
            for (dst, src) in w.slab.sketches.iter_mut().skip(base).zip(ws.sketches) {
                *dst = src;
            }
        }
        for window in snap.closed {
            if let Some(b) = w.buckets.get_mut(&window) {
                b.closed = true;
            }
        }
        // Every dirty window must be listed once for its emission; listed
        // windows that are not dirty are skipped when emitting.
        w.dirty = snap.dirty;
        for (&window, bucket) in &w.buckets {
            for &group in &bucket.groups {
                let dirty =
                    w.group_slot(group, window).and_then(|s| w.slab.headers.get(s as usize)).is_some_and(|h| h.dirty);
                if dirty && !w.dirty.contains(&(group, window)) {
                    w.dirty.push((group, window));
                }
            }
        }
        w.ready = snap.ready.into();
        w.watermark = snap.watermark;
        w.max_event_ts = snap.max_event_ts;
        w.last_arrival = snap.last_arrival;
        w.stats = snap.stats;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_sizes() {
        // Per (group, window) with one scalar field: header + scalar + an
        // entry in the group's window list + one in the bucket.
        assert_eq!(core::mem::size_of::<Header>(), 40);
        assert_eq!(core::mem::size_of::<Scalar>(), 64);
        assert_eq!(core::mem::size_of::<(i64, u32)>(), 16);
        assert_eq!(core::mem::size_of::<GroupId>(), 4);
    }
}
