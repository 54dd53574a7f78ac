//! The tumbling-window operator: event-time windows per group, closed by a
//! watermark, with allowed lateness and bounded group cardinality.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::agg::{Aggregates, QuantileConfig, Quantiles, Scalar};
use super::resolved::{Resolved, ResolvedBatch};
use super::slab::{AnyLayout, Chain, Event, GroupId, Header, Layout, Slab, by_layout};
use crate::event::{EventBatch, EventRef, Sym, Symbols};
use crate::geo::Geohash;
use crate::time::{Span, TimeError, Timestamp, Tumbling};

/// A group resolved by [`Windows::resolve`], valid for its operator until
/// the group is freed (idle past [`WindowSpec::group_ttl`], or evicted at
/// the cap): see [`Windows::is_current`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupHandle {
    id: GroupId,
    generation: u32,
    /// The operator instance's epoch: each operator (a restored one
    /// included) has its own, so another operator's handles are refused.
    epoch: u32,
    /// Whether this is its tenant's overflow group (each event pushed to it
    /// counts as overflowed).
    overflow: bool,
}

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

/// One aggregated field: the scalar aggregates it keeps (all by default),
/// and quantiles if asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The field to read from each event.
    pub field: String,
    /// The scalar aggregates kept (default: all); the others read as `None`
    /// in results. Each costs state in every window: keeping count, sum,
    /// min and max of one field makes a window's whole state one 64-byte
    /// cache line, where all of them take 80 bytes.
    #[serde(default)]
    pub aggregates: Aggregates,
    /// Quantiles to report, each in 0.0..=1.0 (e.g. `[0.5, 0.9, 0.99]`);
    /// empty for none, which saves the histogram.
    #[serde(default)]
    pub quantiles: Vec<f64>,
}

impl FieldSpec {
    /// Count, sum, min, max, mean and last of `field`.
    pub fn new(field: impl Into<String>) -> Self {
        FieldSpec { field: field.into(), aggregates: Aggregates::ALL, quantiles: Vec::new() }
    }

    /// Keeps only these scalar aggregates (every set holds the count).
    ///
    /// ```
    /// use edgestream::window::agg::Aggregates;
    /// use edgestream::window::FieldSpec;
    ///
    /// let latency = FieldSpec::new("latency_ms").aggregates(Aggregates::SUM | Aggregates::MAX);
    /// let parsed: FieldSpec = serde_json::from_str(r#"{"field": "latency_ms", "aggregates": ["sum", "max"]}"#)?;
    /// assert_eq!(parsed, latency);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn aggregates(mut self, aggregates: Aggregates) -> Self {
        self.aggregates = aggregates;
        self
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
    /// The fields to aggregate (at most [`WindowSpec::MAX_FIELDS`]).
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
    /// Most live groups per tenant. A new group of a tenant at its cap
    /// first evicts the tenant's longest-idle group (one with no live
    /// window), so quiet groups make room for new ones; with none idle,
    /// its events (of any stream) are aggregated into the tenant's one
    /// overflow group, whose stream and labels are all [`OVERFLOW`].
    pub max_groups_per_tenant: usize,
    /// How long (in event time, by the watermark) a group with no live
    /// window is kept before it is freed. A group that reports again
    /// within it keeps its id, its [`GroupHandle`]s and its interned
    /// strings, so devices that report every few windows do not rebuild
    /// their group each time. Idle groups count toward the cap (and are
    /// evicted first), so memory stays bounded by the cap either way.
    pub group_ttl: Span,
    /// Precision of the quantile sketches.
    pub quantile_config: QuantileConfig,
    /// When results are emitted.
    pub emit: EmitMode,
}

impl WindowSpec {
    /// Default for [`WindowSpec::max_groups_per_tenant`].
    pub const DEFAULT_MAX_GROUPS_PER_TENANT: usize = 10_000;

    /// The most fields one spec aggregates (a window's state addresses its
    /// words with one byte; give more fields to a second operator).
    pub const MAX_FIELDS: usize = 30;

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

    /// Sets how long a group with no live window is kept.
    pub fn group_ttl(mut self, span: Span) -> Self {
        self.group_ttl = span;
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
            group_ttl: Span::from_mins(5),
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
    /// More fields than [`WindowSpec::MAX_FIELDS`].
    #[error("{0} fields; a window spec aggregates at most 30")]
    TooManyFields(usize),
}

/// The identity of a group: tenant, stream and group-by labels. Every
/// result of a group shares one `GroupKey` (an [`Arc`]), so emitting a
/// result costs one reference count, not a copy of its strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The stream ([`OVERFLOW`] for an overflow group).
    pub stream: Arc<str>,
    /// The group-by labels `(key, value)`, in [`WindowSpec::group_by`]
    /// order, then `("geohash", cell)` if [`WindowSpec::geo_cell`] is set.
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
    /// Whether this is the tenant's overflow group (see
    /// [`WindowSpec::max_groups_per_tenant`]): its stream and label values
    /// read [`OVERFLOW`], and it is told apart by this flag, not by those
    /// strings, so a real dim value `__overflow__` is an ordinary group.
    pub overflow: bool,
}

impl GroupKey {
    /// The value of label `key`, if the group has that label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }
}

/// The aggregates of one field in one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldResult {
    /// The field's name.
    pub field: Arc<str>,
    /// Count, sum, min, max, mean and last, those the field keeps
    /// ([`FieldSpec::aggregates`]); mergeable, for rollups.
    pub scalar: Scalar,
    /// The requested quantiles as `(q, value)`; empty when none were asked
    /// or the field had no value.
    pub quantiles: Vec<(f64, f64)>,
    /// The quantile sketch itself, mergeable, when quantiles were asked.
    /// Shared: it is large, and results are cloned for each subscriber and
    /// read by every alert rule that merges groups; a reader that changes
    /// it copies it first ([`Arc::make_mut`]).
    pub sketch: Option<Arc<Quantiles>>,
}

/// The result of one window for one group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowResult {
    /// Tenant, stream and labels of the group.
    pub group: Arc<GroupKey>,
    /// Window start (inclusive).
    pub start: Timestamp,
    /// Window end (exclusive).
    pub end: Timestamp,
    /// 0 for the first emission of this window, +1 for each later one
    /// (partials, the final result, corrections): the latest revision
    /// replaces the earlier ones. Saturates at 2^24 − 1 (16,777,215).
    pub revision: u32,
    /// Whether the window was closed when this was emitted: false only for
    /// the partial results of [`EmitMode::OnUpdate`].
    pub is_final: bool,
    /// Events in the window (of any field), unweighted. Saturates at
    /// 2^38 − 1 (about 2.7 × 10^11).
    pub events: u64,
    /// Weighted event count.
    pub count: f64,
    /// One entry per [`WindowSpec::fields`], in order (inline for up to
    /// two fields, so a result needs no allocation of its own).
    pub fields: SmallVec<[FieldResult; 2]>,
}

impl WindowResult {
    /// The aggregates of field `name`, if the spec aggregates it.
    pub fn field(&self, name: &str) -> Option<&FieldResult> {
        self.fields.iter().find(|f| &*f.field == name)
    }
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

/// Why an event could not be pushed. Nothing of the call was aggregated,
/// but by [`Windows::push_resolved_batch`], which aggregates the events
/// before a stale group's (see [`ResolvedBatch::pushed`]).
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The group of a [`GroupHandle`] was freed since it was resolved (its
    /// last window expired and it stayed idle past
    /// [`WindowSpec::group_ttl`], or it was evicted at the cap), or it is
    /// another operator's; resolve it again.
    #[error(
        "event {index}: its group handle is stale (the group was freed, or the handle is another operator's); resolve it again"
    )]
    StaleGroup {
        /// Index of the first such event in the batch (0 for
        /// `push_resolved`).
        index: usize,
    },
    /// A weight that is not finite and positive.
    #[error("event {index} has weight {weight}; weights must be finite and positive")]
    InvalidWeight {
        /// Index of the event in the batch (0 for `push_resolved`).
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// Not one weight per event of the batch.
    #[error("{weights} weights for {events} events")]
    WeightCount {
        /// Events in the batch.
        events: usize,
        /// Weights given.
        weights: usize,
    },
}

pub(super) fn check_weight(index: usize, weight: f64) -> Result<(), PushError> {
    if weight.is_finite() && weight > 0.0 { Ok(()) } else { Err(PushError::InvalidWeight { index, weight }) }
}

/// A live group's identity; the hot per-event data lives in [`Hot`].
struct Group {
    key: Arc<GroupKey>,
    /// Its key in `Windows::index` (global symbols).
    map_key: SmallVec<[u32; 6]>,
}

/// Per group id, everything the per-event path reads about a group, in one
/// cache line: its packed index key (what the index's shortcut checks, or
/// `NO_KEY`), its live windows, its generation (bumped when the id is
/// freed, so stale handles are refused), and the room for exact values its
/// last finished window's sketches needed, which its next states reserve at
/// once (a group's windows tend to hold alike numbers of events).
#[derive(Clone)]
#[repr(C, align(64))]
struct Hot {
    key: u128,
    windows: GroupWindows,
    generation: u32,
    exact_need: u16,
}

impl Hot {
    /// The entry of a group id with no group yet (or no more), at `generation`.
    fn vacant(generation: u32) -> Hot {
        Hot { key: NO_KEY, windows: SmallVec::new(), generation, exact_need: 0 }
    }

    /// The slot of the group's state in `window`, if it has one.
    #[inline]
    fn slot(&self, window: i64) -> Option<u32> {
        self.windows.iter().find(|w| w.0 == window).map(|w| w.1)
    }
}

const NIL: u32 = u32::MAX;

/// A node's place in an intrusive doubly linked list of group ids.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    const DETACHED: Link = Link { prev: NIL, next: NIL };
}

/// An intrusive list of group ids, oldest first, whose links live in a
/// slice indexed by id: push, remove and pop are O(1) and allocate nothing.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

impl Default for List {
    fn default() -> Self {
        List { head: NIL, tail: NIL }
    }
}

impl List {
    fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    fn push_back(&mut self, id: u32, link: impl Fn(&mut Cold) -> &mut Link, cold: &mut [Cold]) {
        let tail = self.tail;
        if let Some(c) = cold.get_mut(id as usize) {
            *link(c) = Link { prev: tail, next: NIL };
        }
        match cold.get_mut(tail as usize) {
            Some(t) => link(t).next = id,
            None => self.head = id,
        }
        self.tail = id;
    }

    fn remove(&mut self, id: u32, link: impl Fn(&mut Cold) -> &mut Link, cold: &mut [Cold]) {
        let Some(Link { prev, next }) = cold.get_mut(id as usize).map(|c| core::mem::replace(link(c), Link::DETACHED))
        else {
            return;
        };
        match cold.get_mut(prev as usize) {
            Some(p) => link(p).next = next,
            None => self.head = next,
        }
        match cold.get_mut(next as usize) {
            Some(n) => link(n).prev = prev,
            None => self.tail = prev,
        }
    }
}

/// Per group id, what only group creation, expiry and eviction read.
#[derive(Clone, Copy)]
struct Cold {
    /// The watermark when the group last had no live window, or `None`
    /// while it has one.
    idle_since: Option<Timestamp>,
    /// Place in the operator's idle list (all tenants).
    idle: Link,
    /// Place in its tenant's idle list (not for overflow groups, which are
    /// never evicted for the cap).
    tenant_idle: Link,
    /// Its tenant's index in `Windows::tenants`, or `NO_TENANT` for an
    /// overflow group (which counts toward no cap).
    tenant: u32,
}

impl Cold {
    const ACTIVE: Cold =
        Cold { idle_since: None, idle: Link::DETACHED, tenant_idle: Link::DETACHED, tenant: NO_TENANT };
}

const NO_TENANT: u32 = u32::MAX;

/// A tenant's live groups (overflow group excepted) and its idle ones.
struct Tenant {
    name: Arc<str>,
    groups: usize,
    idle: List,
}

/// The tenants with live groups, addressed by index from each group's
/// [`Cold`] entry (the per-event path never hashes a tenant name), and
/// found by name when a group is created.
#[derive(Default)]
struct Tenants {
    slots: Vec<Option<Tenant>>,
    by_name: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    free: Vec<u32>,
}

impl Tenants {
    fn find(&self, name: &str) -> Option<&Tenant> {
        self.by_name.get(name).and_then(|&i| self.get(i))
    }

    fn get(&self, i: u32) -> Option<&Tenant> {
        self.slots.get(i as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut Tenant> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// The index of tenant `name`, added with no groups if new.
    fn entry(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&i) = self.by_name.get(&**name) {
            return i;
        }
        let tenant = Tenant { name: Arc::clone(name), groups: 0, idle: List::default() };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i as usize) {
                    *slot = Some(tenant);
                }
                i
            }
            None => {
                self.slots.push(Some(tenant));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_name.insert(Arc::clone(name), i);
        i
    }

    /// Forgets tenant `i` (it has no groups left).
    fn remove(&mut self, i: u32) {
        if let Some(t) = self.slots.get_mut(i as usize).and_then(Option::take) {
            self.by_name.remove(&t.name);
            self.free.push(i);
        }
    }
}

/// A group's live windows: (window index, slot in the [`Slab`]). Usually one
/// or two, so a scan beats a map.
type GroupWindows = SmallVec<[(i64, u32); 2]>;

/// The slots that hold state in one window index, linked through their
/// headers.
struct Bucket {
    states: Chain,
    closed: bool,
}

/// What the events of a batch being pushed share: the batch, its weights
/// and the batch symbols of the group-by keys and fields (None: no event
/// of the batch has it).
struct BatchKeys<'a> {
    batch: &'a EventBatch,
    weights: Option<&'a [f64]>,
    key_syms: &'a [Option<Sym>],
    field_syms: &'a [Option<Sym>],
}

/// Entries of [`Windows::seen_dims`]: a direct-mapped table, as a batch has
/// few distinct dims (a few hundred devices) and a miss only costs the
/// full lookup.
const SEEN_DIMS: usize = 256;

/// A group `push` found for the events of some dims (see
/// [`EventRef::dims_id`]), tenant and stream.
#[derive(Clone, Copy)]
struct SeenDims {
    dims: (usize, usize),
    /// The [`Sym::index`] of the tenant and of the stream.
    names: (usize, usize),
    group: GroupId,
}

impl SeenDims {
    /// An entry no event matches (dims never end before they start).
    const NONE: SeenDims = SeenDims { dims: (usize::MAX, 0), names: (0, 0), group: 0 };
}

/// A resolved event waiting to be recorded: the event, its values, its
/// window, whether that is closed, and its state's slot.
type PendingRow<'b> = (&'b Resolved, &'b [f64], i64, bool, u32);

/// The bounds of the window the last placed event fell in, so that runs of
/// events in one window skip the division.
#[derive(Clone, Copy)]
struct Current {
    index: i64,
    start: i64,
    end: i64,
}

/// Group keys (global symbols) → group id. Keys of up to four symbols
/// (tenant, stream and two labels) are packed into a `u128`, which hashes
/// and compares in a few instructions; longer ones use a small vector.
enum GroupIndex {
    Packed(Packed),
    Wide(HashMap<SmallVec<[u32; 6]>, GroupId, foldhash::fast::RandomState>),
}

/// The index of packed keys, with a shortcut in front of the map: the
/// last symbol of a key (its most specific label, a device id say) names
/// the group that last had it, which is checked against that group's whole
/// key ([`Hot::key`]). Most lookups end there, without hashing; the map
/// answers the rest (a value shared by several tenants or streams, a new
/// group).
#[derive(Default)]
struct Packed {
    map: HashMap<u128, GroupId, foldhash::fast::RandomState>,
    /// Per global symbol, the group last inserted with it as its last key
    /// symbol.
    by_last: Vec<GroupId>,
    /// Groups the map found lately, by a hash of their packed key: the
    /// shortcut for keys whose last symbol many groups share (a device
    /// type across regions and tenants), where `by_last` mostly misses.
    /// Direct-mapped and lossy; allocated on the first miss of `by_last`.
    recent: Vec<GroupId>,
}

/// Entries of [`Packed::recent`] (16 KB).
const RECENT_BITS: u32 = 12;

/// No packed key is all ones: symbols stay below `OVERFLOW_SYM`.
const NO_KEY: u128 = u128::MAX;

impl Packed {
    /// The group of packed key `packed`, whose last symbol is `last`:
    /// through the shortcuts inline, the map out of line.
    #[inline(always)]
    fn get(&mut self, packed: u128, last: u32, hot: &[Hot]) -> Option<GroupId> {
        let is_it = |id: GroupId| hot.get(id as usize).is_some_and(|h| h.key == packed);
        if let Some(&id) = self.by_last.get(last as usize)
            && is_it(id)
        {
            return Some(id);
        }
        self.find_recent(packed, is_it)
    }

    /// The group of `packed` through [`Packed::recent`], else the map
    /// (remembering what it finds). `is_it` checks a candidate's key.
    #[inline]
    fn find_recent(&mut self, packed: u128, is_it: impl Fn(GroupId) -> bool) -> Option<GroupId> {
        let mixed = ((packed as u64) ^ ((packed >> 64) as u64).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (mixed >> (64 - RECENT_BITS)) as usize;
        if let Some(&id) = self.recent.get(slot)
            && is_it(id)
        {
            return Some(id);
        }
        self.find(packed, slot)
    }

    /// The map's answer, remembered in `slot` of [`Packed::recent`]. Out of
    /// line, so that the common case saves no registers.
    #[inline(never)]
    fn find(&mut self, packed: u128, slot: usize) -> Option<GroupId> {
        let id = self.map.get(&packed).copied()?;
        if self.recent.is_empty() {
            self.recent = vec![GroupId::MAX; 1 << RECENT_BITS];
        }
        if let Some(entry) = self.recent.get_mut(slot) {
            *entry = id;
        }
        Some(id)
    }
}

impl GroupIndex {
    fn new(key_len: usize) -> Self {
        if key_len <= 4 { GroupIndex::Packed(Packed::default()) } else { GroupIndex::Wide(HashMap::default()) }
    }

    /// Keys have a fixed length per operator, so packing (missing places
    /// as 0) is unambiguous. Two 64-bit halves: no loop, no 128-bit shifts.
    #[inline]
    fn pack(key: &[u32]) -> u128 {
        let at = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
        let lo = at(0) | (at(1) << 32);
        let hi = at(2) | (at(3) << 32);
        (u128::from(hi) << 64) | u128::from(lo)
    }

    /// The group of `key`: through the shortcuts inline, the map out of
    /// line (so that the common case saves no registers).
    #[inline(always)]
    fn get(&mut self, key: &[u32], hot: &[Hot]) -> Option<GroupId> {
        match self {
            GroupIndex::Packed(p) => p.get(Self::pack(key), key.last().copied().unwrap_or(0), hot),
            GroupIndex::Wide(map) => map.get(key).copied(),
        }
    }

    /// Indexes group `id` under `key`, and writes into its [`Hot::key`]
    /// what [`GroupIndex::get`] checks.
    fn insert(&mut self, key: &[u32], id: GroupId, hot: &mut [Hot]) {
        let packed = match self {
            GroupIndex::Packed(_) => Self::pack(key),
            GroupIndex::Wide(_) => NO_KEY,
        };
        if let Some(h) = hot.get_mut(id as usize) {
            h.key = packed;
        }
        match self {
            GroupIndex::Packed(p) => {
                p.map.insert(packed, id);
                if let Some(&last) = key.last().filter(|&&s| s != OVERFLOW_SYM) {
                    if p.by_last.len() <= last as usize {
                        p.by_last.resize(last as usize + 1, GroupId::MAX);
                    }
                    if let Some(g) = p.by_last.get_mut(last as usize) {
                        *g = id;
                    }
                }
            }
            GroupIndex::Wide(map) => {
                map.insert(SmallVec::from_slice(key), id);
            }
        }
    }

    fn remove(&mut self, key: &[u32]) {
        match self {
            GroupIndex::Packed(p) => {
                p.map.remove(&Self::pack(key));
            }
            GroupIndex::Wide(map) => {
                map.remove(key);
            }
        }
    }

    fn clear(&mut self) {
        match self {
            GroupIndex::Packed(p) => {
                p.map.clear();
                p.by_last.clear();
                p.recent.clear();
            }
            GroupIndex::Wide(map) => map.clear(),
        }
    }
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
///     let mean = r.field("temp_c").and_then(|f| f.scalar.mean());
///     results.push((r.group.label("region").unwrap_or_default().to_string(), mean));
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
    /// One `Arc` per global string (by symbol), made when a group first
    /// needs it: groups share their tenant, stream and label values, so a
    /// key costs no allocation per string and readers of results (alert
    /// rules grouping by a label) compare them by pointer.
    shared: Vec<Option<Arc<str>>>,
    /// The global symbol of `""` (always interned).
    empty: u32,
    /// Batch symbol index → global symbol (or UNSEEN; ABSENT: not global
    /// when last looked up), for the batch being pushed.
    translate: Vec<u32>,
    /// The groups `push` found for the batch being pushed, by the events'
    /// [`EventRef::dims_id`]: events that share their dims (and tenant
    /// and stream) share their group, found once.
    seen_dims: Vec<SeenDims>,
    index: GroupIndex,
    /// Whether group keys are tenant, stream and at most two labels, which
    /// [`Windows::packed_group`] packs as it reads them.
    packs: bool,
    /// Per group id; `None` once freed (the id waits in `free_groups`).
    groups: Vec<Option<Group>>,
    /// Parallel to `groups`.
    hot: Vec<Hot>,
    free_groups: Vec<GroupId>,
    /// Symbols referenced by live groups' keys (with repeats), to decide
    /// when the string table is worth rebuilding.
    live_key_symbols: usize,
    /// Parallel to `groups`.
    cold: Vec<Cold>,
    /// Groups with no live window, longest idle first.
    idle: List,
    tenants: Tenants,
    slab: Slab,
    buckets: BTreeMap<i64, Bucket>,
    current: Current,
    /// (slot, window) of windows changed since their last emission that
    /// are closed (corrections) or, in update mode, open.
    dirty: Vec<(u32, i64)>,
    ready: VecDeque<WindowResult>,
    max_event_ts: Option<Timestamp>,
    last_arrival: Option<Timestamp>,
    watermark: Timestamp,
    field_names: Vec<Arc<str>>,
    /// Distinguishes this operator's handles from those of any other
    /// operator in the process, the one it was restored from included.
    epoch: u32,
    /// Label keys, in key order, shared by every group's labels.
    label_keys: Vec<Arc<str>>,
    stats: WindowStats,
}

impl core::fmt::Debug for Windows {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Windows")
            .field("spec", &self.spec)
            .field("watermark", &self.watermark)
            .field("groups", &self.groups())
            .field("live_windows", &self.live_windows())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Writes into `out` a group's index key: its tenant, stream and label
/// values as symbols of `strings` (interned if new), or for an overflow
/// group its tenant and `OVERFLOW_SYM` in every other place.
fn intern_key<'a>(
    strings: &mut Symbols,
    tenant: &str,
    stream: &'a str,
    values: impl Iterator<Item = &'a str>,
    labels: usize,
    overflow: bool,
    out: &mut SmallVec<[u32; 6]>,
) {
    out.clear();
    out.push(strings.intern(tenant).index() as u32);
    if overflow {
        out.extend((0..=labels).map(|_| OVERFLOW_SYM));
    } else {
        for s in core::iter::once(stream).chain(values) {
            out.push(strings.intern(s).index() as u32);
        }
    }
}

/// The `Arc` of global string `sym` in `shared` (see `Windows::shared`),
/// made by `make` the first time; the overflow marker is not shared.
fn share(shared: &mut Vec<Option<Arc<str>>>, sym: u32, make: impl FnOnce() -> Arc<str>) -> Arc<str> {
    if sym == OVERFLOW_SYM {
        return Arc::from(OVERFLOW);
    }
    let i = sym as usize;
    if shared.len() <= i {
        shared.resize(i + 1, None);
    }
    match shared.get_mut(i) {
        Some(slot) => Arc::clone(slot.get_or_insert_with(make)),
        None => make(),
    }
}

/// Source of operator epochs (see `Windows::epoch`); a plain counter, so
/// it also works on wasm32 without threads.
static NEXT_EPOCH: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

const UNSEEN: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;
/// Stands for every label (and the stream) in an overflow group's index
/// key; no interned string has this symbol.
const OVERFLOW_SYM: u32 = u32::MAX - 2;

impl Windows {
    /// An operator for `spec`.
    pub fn new(spec: WindowSpec) -> Result<Self, SpecError> {
        let tumbling = Tumbling::with_offset(spec.size, spec.offset)?;
        if spec.size < Span::from_millis(1) {
            return Err(SpecError::TooSmall(spec.size));
        }
        let spans = [
            ("out_of_orderness", spec.out_of_orderness),
            ("allowed_lateness", spec.allowed_lateness),
            ("group_ttl", spec.group_ttl),
        ];
        for (name, span) in spans {
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
        if spec.fields.len() > WindowSpec::MAX_FIELDS {
            return Err(SpecError::TooManyFields(spec.fields.len()));
        }
        if let Some(p) = spec.geo_cell.filter(|p| !(1..=crate::geo::MAX_PRECISION).contains(p)) {
            return Err(SpecError::GeoCell(p));
        }
        let field_names = spec.fields.iter().map(|f| Arc::from(f.field.as_str())).collect();
        let label_keys =
            spec.group_by.iter().map(String::as_str).chain(spec.geo_cell.map(|_| "geohash")).map(Arc::from).collect();
        let mut strings = Symbols::new();
        let empty = strings.intern("").index() as u32;
        Ok(Windows {
            tumbling,
            strings,
            shared: Vec::new(),
            empty,
            translate: Vec::new(),
            seen_dims: Vec::new(),
            index: GroupIndex::new(2 + spec.group_by.len() + usize::from(spec.geo_cell.is_some())),
            packs: spec.group_by.len() <= 2 && spec.geo_cell.is_none(),
            groups: Vec::new(),
            hot: Vec::new(),
            free_groups: Vec::new(),
            live_key_symbols: 0,
            cold: Vec::new(),
            idle: List::default(),
            tenants: Tenants::default(),
            slab: Slab::new(&spec.fields, spec.quantile_config),
            buckets: BTreeMap::new(),
            current: Current { index: 0, start: 1, end: 0 },
            dirty: Vec::new(),
            ready: VecDeque::new(),
            max_event_ts: None,
            last_arrival: None,
            watermark: Timestamp::MIN,
            field_names,
            epoch: NEXT_EPOCH.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            label_keys,
            stats: WindowStats::default(),
            spec,
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
    /// window, each with weight 1. `now` is the host's current time, used
    /// only for the idle timeout. The indexes of events too late to
    /// aggregate (or with no window in range) are appended to `late`, so
    /// that the host can archive them; they are also counted in
    /// [`Windows::stats`].
    pub fn push(&mut self, batch: &EventBatch, now: Timestamp, late: &mut Vec<usize>) {
        self.push_inner(batch, None, now, late);
    }

    /// As [`Windows::push`], with a weight per event (`weights[i]` for
    /// event `i`): an event kept by a sampler at rate 1/w stands for w
    /// events, so counts and sums scale by its weight while min, max, last
    /// and the event counts do not. Fails, aggregating nothing, unless
    /// there is one weight per event and each is finite and positive.
    pub fn push_weighted(
        &mut self,
        batch: &EventBatch,
        weights: &[f64],
        now: Timestamp,
        late: &mut Vec<usize>,
    ) -> Result<(), PushError> {
        if weights.len() != batch.len() {
            return Err(PushError::WeightCount { events: batch.len(), weights: weights.len() });
        }
        // One branch-free pass over all (the usual case: every weight is
        // good); the index of a bad one only when there is one.
        if weights.iter().map(|&w| usize::from((w > 0.0) & (w <= f64::MAX))).sum::<usize>() != weights.len() {
            for (index, &weight) in weights.iter().enumerate() {
                check_weight(index, weight)?;
            }
        }
        self.push_inner(batch, Some(weights), now, late);
        Ok(())
    }

    fn push_inner(&mut self, batch: &EventBatch, weights: Option<&[f64]>, now: Timestamp, late: &mut Vec<usize>) {
        if batch.is_empty() {
            return;
        }
        self.note_arrival(now);
        self.translate.clear();
        self.translate.resize(batch.symbols().len(), UNSEEN);
        // The batch symbols of the group-by keys and fields (None: no event
        // of this batch has it).
        let symbols = batch.symbols();
        let key_syms: SmallVec<[Option<Sym>; 4]> = self.spec.group_by.iter().map(|k| symbols.get(k)).collect();
        let field_syms: SmallVec<[Option<Sym>; 4]> = self.spec.fields.iter().map(|f| symbols.get(&f.field)).collect();
        // As slices: the per-event reads skip the inline-or-heap test.
        let (key_syms, field_syms) = (key_syms.as_slice(), field_syms.as_slice());
        self.translate_labels(batch, key_syms);
        // Only for events that share dims; a group by geohash cell depends
        // on more than the dims.
        let mut seen_dims = core::mem::take(&mut self.seen_dims);
        seen_dims.clear();
        if batch.shares_dims() && self.spec.geo_cell.is_none() {
            seen_dims.resize(SEEN_DIMS, SeenDims::NONE);
        }
        let keys = BatchKeys { batch, weights, key_syms, field_syms };
        // Event by event, in a loop made for the slab's layout.
        let seen = &mut seen_dims;
        by_layout!(self.slab.alone(), layout => self.push_events(layout, &keys, seen, late));
        self.seen_dims = seen_dims;
    }

    /// The events of a batch, each placed, given its group (the string
    /// work) and recorded into its group's state two events later, once
    /// their states are found too, while it is still in cache.
    fn push_events<L: Layout>(
        &mut self,
        layout: L,
        keys: &BatchKeys<'_>,
        seen_dims: &mut [SeenDims],
        late: &mut Vec<usize>,
    ) {
        let symbols = keys.batch.symbols();
        // A `Vec` rather than a `SmallVec`: pushes stay a compare and a store.
        let mut key: Vec<u32> = Vec::with_capacity(3 + keys.key_syms.len());
        let mut behind: Option<(usize, EventRef<'_>, i64, bool, u32)> = None;
        let mut two_behind = None;
        for (index, event) in keys.batch.iter().enumerate() {
            let ts = event.ts();
            let Some((window, closed)) = self.place(ts) else {
                late.push(index);
                continue;
            };
            let dims = event.dims_id();
            let seen = seen_dims.get_mut(dims.0 % SEEN_DIMS);
            let names = (event.tenant_sym().index(), event.stream_sym().index());
            let group = match seen {
                Some(seen) if (seen.dims, seen.names) == (dims, names) => seen.group,
                seen => {
                    let (id, existing) = self.group_of(&event, symbols, keys.key_syms, &mut key);
                    // An existing group, not the overflow group (counted
                    // per event), serves the next events with these dims.
                    if existing && let Some(seen) = seen {
                        *seen = SeenDims { dims, names, group: id };
                    }
                    id
                }
            };
            let slot = self.slot_for(group, window);
            // Two events behind: finding an event's state (the string
            // lookups, then a chain of dependent loads) overlaps with
            // recording the events before it, where recording each at
            // once made the next lookup wait (one behind gains half as
            // much here; for resolved groups, one is best). Finding a
            // state never frees another (the group cap evicts only groups
            // without states), so a pending event's slot stays its own.
            let oldest = two_behind.take();
            two_behind = behind.replace((index, event, window, closed, slot));
            if let Some(oldest) = oldest {
                self.record_event(layout, keys, oldest);
            }
        }
        if let Some(last) = two_behind {
            self.record_event(layout, keys, last);
        }
        if let Some(last) = behind {
            self.record_event(layout, keys, last);
        }
    }

    /// Records event `index` of the batch, placed in `window` (`closed` or
    /// not) with its state in `slot`.
    #[inline(always)]
    fn record_event<L: Layout>(
        &mut self,
        layout: L,
        keys: &BatchKeys<'_>,
        (index, event, window, closed, slot): (usize, EventRef<'_>, i64, bool, u32),
    ) {
        let fields = event.field_syms();
        let weight = keys.weights.map_or(1.0, |w| w.get(index).copied().unwrap_or(1.0));
        self.record(layout, slot, window, closed, event.ts(), weight, |i| {
            let sym = keys.field_syms.get(i).copied().flatten()?;
            fields.iter().find(|f| f.0 == sym).map(|f| f.1)
        });
    }

    /// The group of `event` (`symbols`: its batch's; `key_syms`: the batch
    /// symbols of the group-by keys; `key`: scratch), created if new, and
    /// whether it existed.
    #[inline(always)]
    fn group_of(
        &mut self,
        event: &EventRef<'_>,
        symbols: &Symbols,
        key_syms: &[Option<Sym>],
        key: &mut Vec<u32>,
    ) -> (GroupId, bool) {
        match self.packed_group(event, symbols, key_syms) {
            Some(id) => (id, true),
            None => self.find_group(event, symbols, key_syms, key),
        }
    }

    /// The existing group of `event` when the operator's group keys pack
    /// into a `u128` (at most two group-by keys, no geohash cell): its key
    /// is packed as it is read, with no key vector, and looked up through
    /// the index's shortcuts. `None`: another layout, or a group (or a
    /// string of its key) not known yet, which [`Windows::find_group`]
    /// finds or creates.
    #[inline(always)]
    fn packed_group(&mut self, event: &EventRef<'_>, symbols: &Symbols, key_syms: &[Option<Sym>]) -> Option<GroupId> {
        if !self.packs {
            return None;
        }
        let tenant = self.global(symbols, event.tenant_sym());
        let stream = self.global(symbols, event.stream_sym());
        let mut labels = [0u32; 2];
        for (k, g) in key_syms.iter().zip(&mut labels) {
            *g = match k.and_then(|k| event.dim_syms().iter().find(|d| d.0 == k)) {
                Some(&(_, v)) => self.global(symbols, v),
                None => self.empty,
            };
        }
        if tenant == ABSENT || stream == ABSENT || labels.contains(&ABSENT) {
            return None;
        }
        // The labels not in the key are 0, as `GroupIndex::pack` packs
        // missing places.
        let [l0, l1] = labels;
        let last = match key_syms.len() {
            0 => stream,
            1 => l0,
            _ => l1,
        };
        let key = [tenant, stream, l0, l1];
        let GroupIndex::Packed(p) = &mut self.index else { return None };
        p.get(GroupIndex::pack(&key), last, &self.hot)
    }

    /// [`Windows::group_of`] through the key vector `key`, for any layout,
    /// creating the group if new. Out of line: the per-event loops keep
    /// their registers for the common case.
    #[inline(never)]
    fn find_group(
        &mut self,
        event: &EventRef<'_>,
        symbols: &Symbols,
        key_syms: &[Option<Sym>],
        key: &mut Vec<u32>,
    ) -> (GroupId, bool) {
        // The batch symbol of the event's value for group-by key `i`.
        let label = |i: usize| {
            let k = key_syms.get(i).copied().flatten()?;
            event.dim_syms().iter().find(|d| d.0 == k).map(|d| d.1)
        };
        // The group key: tenant, stream and each group-by value, as global
        // symbols (ABSENT when the string is not global yet).
        key.clear();
        key.push(self.global(symbols, event.tenant_sym()));
        key.push(self.global(symbols, event.stream_sym()));
        for i in 0..key_syms.len() {
            let g = match label(i) {
                Some(v) => self.global(symbols, v),
                None => self.empty,
            };
            key.push(g);
        }
        let cell = self.spec.geo_cell.map(|p| event.geo().and_then(|g| Geohash::encode(g.lat, g.lon, p)));
        if let Some(cell) = &cell {
            key.push(self.global_str(cell.as_ref().map_or("", Geohash::as_str)));
        }
        if let Some(id) = self.index.get(key, &self.hot) {
            return (id, true);
        }
        let texts: SmallVec<[&str; 4]> = (0..key_syms.len())
            .map(|i| label(i).and_then(|v| symbols.resolve(v)).unwrap_or(""))
            .chain(cell.as_ref().map(|c| c.as_ref().map_or("", Geohash::as_str)))
            .collect();
        (self.create_group(event.tenant(), event.stream(), &texts, true), false)
    }

    /// The window of `ts` and whether it is closed, or `None` (counted) when
    /// the event is too late even for the allowed lateness or has no window.
    #[inline(always)]
    fn place(&mut self, ts: Timestamp) -> Option<(i64, bool)> {
        let t = ts.as_nanos();
        let Current { index: window, end, .. } =
            if self.current.start <= t && t < self.current.end { self.current } else { self.enter_window(ts)? };
        let watermark = self.watermark.as_nanos();
        let closed = end <= watermark;
        if closed && end.saturating_add(self.spec.allowed_lateness.as_nanos()) <= watermark {
            self.stats.late_dropped = self.stats.late_dropped.saturating_add(1);
            return None;
        }
        Some((window, closed))
    }

    /// Makes the window of `ts` the current one (see [`Windows::place`]),
    /// or counts `ts` as out of range if its window has no bounds.
    #[cold]
    fn enter_window(&mut self, ts: Timestamp) -> Option<Current> {
        // One division for the index; start and end follow from it.
        let window = self.tumbling.index(ts);
        let bounds = self.tumbling.start_of_index(window).and_then(|s| s.checked_add(self.spec.size).map(|e| (s, e)));
        let Some((start, end)) = bounds else {
            self.stats.out_of_range = self.stats.out_of_range.saturating_add(1);
            return None;
        };
        self.current = Current { index: window, start: start.as_nanos(), end: end.as_nanos() };
        Some(self.current)
    }

    /// The slot of `group`'s state in `window`, created if new.
    #[inline]
    fn slot_for(&mut self, group: GroupId, window: i64) -> u32 {
        match self.group_slot(group, window) {
            Some(slot) => slot,
            None => self.new_state(group, window),
        }
    }

    /// Records one event into the state in `slot` (of `window`) through
    /// `layout`'s recording code; `value(i)` is its value for field `i`,
    /// if any.
    #[inline(always)]
    #[allow(clippy::too_many_arguments, reason = "the per-event fields, passed in registers")]
    fn record<L: Layout>(
        &mut self,
        layout: L,
        slot: u32,
        window: i64,
        closed: bool,
        ts: Timestamp,
        weight: f64,
        value: impl Fn(usize) -> Option<f64>,
    ) {
        let mark = closed || self.spec.emit == EmitMode::OnUpdate;
        if self.slab.record_as(layout, slot, Event { weight, ts, mark }, value) {
            self.dirty.push((slot, window));
        }
        if closed {
            self.stats.late_accepted = self.stats.late_accepted.saturating_add(1);
        } else {
            self.stats.on_time = self.stats.on_time.saturating_add(1);
        }
        if self.max_event_ts.is_none_or(|m| ts > m) {
            self.max_event_ts = Some(ts);
        }
    }

    /// The group of `tenant`, `stream` and `labels` (the group-by values in
    /// [`WindowSpec::group_by`] order, then the geohash cell if
    /// [`WindowSpec::geo_cell`] is set; missing ones count as `""`, extra
    /// ones are ignored), created if new, or the tenant's overflow group at
    /// its cap. For hosts that resolve groups once and push many values:
    /// see [`Windows::push_resolved`].
    pub fn resolve(&mut self, tenant: &str, stream: &str, labels: &[&str]) -> GroupHandle {
        let n = self.label_keys.len();
        let texts: SmallVec<[&str; 4]> = (0..n).map(|i| labels.get(i).copied().unwrap_or("")).collect();
        let mut key: SmallVec<[u32; 6]> = SmallVec::new();
        for s in [tenant, stream].into_iter().chain(texts.iter().copied()) {
            key.push(self.global_str(s));
        }
        let id = match self.index.get(&key, &self.hot) {
            Some(id) => id,
            None => self.create_group(tenant, stream, &texts, false),
        };
        GroupHandle {
            id,
            generation: self.hot.get(id as usize).map_or(0, |h| h.generation),
            epoch: self.epoch,
            overflow: self.groups.get(id as usize).and_then(Option::as_ref).is_some_and(|g| g.key.overflow),
        }
    }

    /// Aggregates one event of a resolved group: `values` holds one value
    /// per [`WindowSpec::fields`] entry, in order (NaN for "no value"; a
    /// shorter slice leaves the rest without value), and `weight` is as in
    /// [`Windows::push_weighted`] (1.0 for an unsampled event). `now` is as
    /// in [`Windows::push`]. The event is counted in [`Windows::stats`] like
    /// a pushed one.
    ///
    /// Fails with [`PushError::StaleGroup`] when the group was freed since
    /// it was resolved (idle past [`WindowSpec::group_ttl`], or evicted at
    /// the cap), or was resolved by another operator or before a
    /// [`Windows::restore`]: resolve it again.
    pub fn push_resolved(
        &mut self,
        group: GroupHandle,
        ts: Timestamp,
        values: &[f64],
        weight: f64,
        now: Timestamp,
    ) -> Result<Placement, PushError> {
        if !self.holds(group) {
            return Err(PushError::StaleGroup { index: 0 });
        }
        check_weight(0, weight)?;
        if group.overflow {
            self.stats.overflowed = self.stats.overflowed.saturating_add(1);
        }
        self.note_arrival(now);
        let Some((window, closed)) = self.place(ts) else { return Ok(Placement::Dropped) };
        let slot = self.slot_for(group.id, window);
        self.record(AnyLayout, slot, window, closed, ts, weight, |i| values.get(i).copied().filter(|v| !v.is_nan()));
        Ok(if closed { Placement::Late } else { Placement::OnTime })
    }

    /// Aggregates the events of `batch` not pushed yet (see
    /// [`ResolvedBatch`]) as [`Windows::push_resolved`] would one at a
    /// time, with the handles checked in one pass first and no call per
    /// event. The indexes (in the
    /// whole batch) of events too late to aggregate are appended to
    /// `late`, as in [`Windows::push`].
    ///
    /// Fails with [`PushError::StaleGroup`] at the first event whose group
    /// is stale (see [`Windows::is_current`]): the events before it are
    /// aggregated and the batch remembers that ([`ResolvedBatch::pushed`]),
    /// the rest are not. Resolve that event's group again, put it in the
    /// batch with [`ResolvedBatch::replace_group`], and push the batch
    /// again: it goes on from that event. Each retry aggregates at least
    /// that event, so the loop ends, even when resolving at a tenant's
    /// group cap evicts another group of the batch.
    ///
    /// ```
    /// use edgestream::time::{Span, Timestamp};
    /// use edgestream::window::{PushError, ResolvedBatch, WindowSpec, Windows};
    ///
    /// let mut windows = Windows::new(WindowSpec::new(Span::from_secs(1)).group_by(["device"]))?;
    /// let handle = windows.resolve("acme", "metrics", &["d1"]);
    /// let mut batch = ResolvedBatch::for_spec(windows.spec());
    /// batch.push(handle, Timestamp::UNIX_EPOCH, &[]);
    /// let mut late = Vec::new();
    /// while let Err(e) = windows.push_resolved_batch(&mut batch, Timestamp::UNIX_EPOCH, &mut late) {
    ///     let PushError::StaleGroup { index } = e else { return Err(e.into()) };
    ///     let stale = batch.group(index).ok_or("no such event")?;
    ///     // The host knows which group the handle stood for.
    ///     let fresh = windows.resolve("acme", "metrics", &["d1"]);
    ///     batch.replace_group(stale, fresh);
    /// }
    /// assert_eq!((batch.pushed(), windows.stats().on_time), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_resolved_batch(
        &mut self,
        batch: &mut ResolvedBatch,
        now: Timestamp,
        late: &mut Vec<usize>,
    ) -> Result<(), PushError> {
        let start = batch.pushed();
        let pending = batch.events().get(start..).unwrap_or_default();
        // Every handle before any event (this also brings each group's
        // entry into cache for the pass below).
        let stale = pending.iter().position(|e| !self.holds(e.group));
        let end = start + stale.unwrap_or(pending.len());
        if end > start {
            self.note_arrival(now);
        }
        // Then event by event, in a loop made for the slab's layout.
        let range = start..end;
        by_layout!(self.slab.alone(), layout => self.push_resolved_events(layout, batch, range, late));
        batch.set_pushed(end);
        match stale {
            Some(_) => Err(PushError::StaleGroup { index: end }),
            None => Ok(()),
        }
    }

    /// Aggregates events `range` of `batch` (all of current groups).
    fn push_resolved_events<L: Layout>(
        &mut self,
        layout: L,
        batch: &ResolvedBatch,
        range: core::ops::Range<usize>,
        late: &mut Vec<usize>,
    ) {
        let first = range.start;
        let events = batch.events().get(range.clone()).unwrap_or_default();
        match batch.values_of(range) {
            // One value per event (the usual batch): the values pair off
            // with the events, with no index arithmetic per event.
            Some(values) if batch.fields() == 1 && values.len() == events.len() => {
                let rows = events.iter().zip(values.iter().map(core::slice::from_ref));
                self.push_rows(layout, first, rows, late);
            }
            _ => {
                let rows = events.iter().enumerate().map(|(i, e)| (e, batch.values(first + i)));
                self.push_rows(layout, first, rows, late);
            }
        }
    }

    /// Aggregates `rows` (each an event of a current group and its values,
    /// the first being event `first` of its batch), each recorded right
    /// after the next one's state is found.
    #[inline(always)]
    fn push_rows<'b, L: Layout>(
        &mut self,
        layout: L,
        first: usize,
        rows: impl Iterator<Item = (&'b Resolved, &'b [f64])>,
        late: &mut Vec<usize>,
    ) {
        // One event behind, as in `push_events` (two behind: slower here).
        let mut behind: Option<PendingRow<'b>> = None;
        for (i, (e, values)) in rows.enumerate() {
            if e.group.overflow {
                self.stats.overflowed = self.stats.overflowed.saturating_add(1);
            }
            let Some((window, closed)) = self.place(e.ts) else {
                late.push(first + i);
                continue;
            };
            let slot = self.slot_for(e.group.id, window);
            if let Some(previous) = behind.replace((e, values, window, closed, slot)) {
                self.record_row(layout, previous);
            }
        }
        if let Some(last) = behind {
            self.record_row(layout, last);
        }
    }

    /// Records a pending row: an event and its values, placed in a window
    /// (closed or not), with its state in a slot.
    #[inline(always)]
    fn record_row<L: Layout>(&mut self, layout: L, (e, values, window, closed, slot): PendingRow<'_>) {
        self.record(layout, slot, window, closed, e.ts, e.weight, |f| values.get(f).copied().filter(|v| !v.is_nan()));
    }

    /// Whether events can be pushed to `group`: false once the group was
    /// freed (idle past [`WindowSpec::group_ttl`], or evicted at the cap),
    /// and for another operator's handles (a restored operator's
    /// included). Hosts that hold many handles can check them all after a
    /// [`Windows::restore`] or an [`Windows::advance`] and resolve the
    /// stale ones before pushing.
    pub fn is_current(&self, group: GroupHandle) -> bool {
        self.holds(group)
    }

    /// The host's clock at an arrival, for the idle timeout.
    fn note_arrival(&mut self, now: Timestamp) {
        self.last_arrival = Some(self.last_arrival.map_or(now, |t| t.max(now)));
    }

    /// Whether `group` is a live group of this operator, as resolved.
    fn holds(&self, group: GroupHandle) -> bool {
        group.epoch == self.epoch && self.hot.get(group.id as usize).is_some_and(|h| h.generation == group.generation)
    }

    /// Looks up the global symbols of the batch's group-by values before
    /// the event loop, in one loop over its dims: the lookups are
    /// independent, so their cache misses overlap (a batch of a thousand
    /// events may name a thousand devices), where the event loop would wait
    /// on each in turn. A value not global yet is marked ABSENT, which
    /// [`Windows::global`] looks up again (its group may be created in
    /// between). Skipped for a batch of few distinct strings (fewer than a
    /// quarter of its events): the event loop meets those a few times each,
    /// and this loop would cost more than the misses it overlaps.
    fn translate_labels(&mut self, batch: &EventBatch, key_syms: &[Option<Sym>]) {
        let symbols = batch.symbols();
        if key_syms.iter().all(Option::is_none) || symbols.len().saturating_mul(4) < batch.len() {
            return;
        }
        for &(key, value) in batch.dims_arena() {
            if !key_syms.contains(&Some(key)) || self.translate.get(value.index()) != Some(&UNSEEN) {
                continue;
            }
            let g = self.global_str(symbols.str(value));
            if let Some(slot) = self.translate.get_mut(value.index()) {
                *slot = g;
            }
        }
    }

    /// The global symbol of batch symbol `sym`, or ABSENT.
    #[inline]
    fn global(&mut self, symbols: &Symbols, sym: Sym) -> u32 {
        match self.translate.get(sym.index()) {
            Some(&g) if g != UNSEEN && g != ABSENT => g,
            _ => {
                let g = self.global_str(symbols.resolve(sym).unwrap_or_default());
                // ABSENT (found here, or by `translate_labels`) is looked
                // up again next time, never trusted: the string may become
                // global when its group is created, a moment later.
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
        self.hot.get(group as usize)?.slot(window)
    }

    /// A fresh state for `group` in `window`, registered with both.
    fn new_state(&mut self, group: GroupId, window: i64) -> u32 {
        let (exact_need, was_idle) =
            self.hot.get(group as usize).map_or((0, false), |h| (usize::from(h.exact_need), h.windows.is_empty()));
        let slot = self.slab.alloc(group, exact_need);
        if was_idle {
            self.set_idle(group, None);
        }
        if let Some(h) = self.hot.get_mut(group as usize) {
            h.windows.push((window, slot));
        }
        // A late event may open state in a window that closed with no state
        // for any group: its bucket is born closed, so it is emitted once,
        // as a correction, not also as a closing window.
        let closed = self
            .tumbling
            .start_of_index(window)
            .is_some_and(|start| start.saturating_add(self.spec.size) <= self.watermark);
        let bucket = self.buckets.entry(window).or_insert_with(|| Bucket { states: Chain::default(), closed });
        self.slab.link(&mut bucket.states, slot);
        slot
    }

    /// Frees the state in `slot` (of `window`), and its group when that
    /// was the group's last window.
    fn release_state(&mut self, slot: u32, window: i64) {
        let group = self.slab.group(slot);
        self.slab.release(slot);
        let Some(windows) = self.hot.get_mut(group as usize).map(|h| &mut h.windows) else { return };
        if let Some(i) = windows.iter().position(|w| w.0 == window) {
            windows.swap_remove(i);
        }
        if windows.is_empty() {
            self.set_idle(group, Some(self.watermark));
        }
    }

    /// Moves `group` into the idle lists (idle since `since`) or, with
    /// `None`, out of them.
    fn set_idle(&mut self, group: GroupId, since: Option<Timestamp>) {
        let Some(cold) = self.cold.get_mut(group as usize) else { return };
        if cold.idle_since.is_some() == since.is_some() {
            return;
        }
        let tenant = self.tenants.get_mut(cold.tenant);
        if since.is_some() {
            cold.idle_since = since;
            self.idle.push_back(group, |c| &mut c.idle, &mut self.cold);
            if let Some(t) = tenant {
                t.idle.push_back(group, |c| &mut c.tenant_idle, &mut self.cold);
            }
        } else {
            cold.idle_since = None;
            self.idle.remove(group, |c| &mut c.idle, &mut self.cold);
            if let Some(t) = tenant {
                t.idle.remove(group, |c| &mut c.tenant_idle, &mut self.cold);
            }
        }
    }

    /// A new group for these label texts, or the tenant's overflow group
    /// when the tenant is at its cap (counted as an overflowed event if
    /// `for_event`).
    fn create_group(&mut self, tenant: &str, stream: &str, texts: &[&str], for_event: bool) -> GroupId {
        let (live, idle) = self.tenants.find(tenant).map_or((0, None), |t| (t.groups, t.idle.front()));
        if live >= self.spec.max_groups_per_tenant
            && let Some(evicted) = idle
        {
            self.free_group(evicted);
        }
        if live < self.spec.max_groups_per_tenant || idle.is_some() {
            return self.insert_group(tenant, stream, texts, false);
        }
        if for_event {
            self.stats.overflowed = self.stats.overflowed.saturating_add(1);
        }
        // One overflow group per tenant, whatever the stream, so that new
        // streams cannot grow it either.
        self.insert_group(tenant, OVERFLOW, &[], true)
    }

    /// The group of these strings, created if new. Overflow groups (whose
    /// `stream` and `texts` are ignored) do not count toward their tenant's
    /// cap.
    fn insert_group(&mut self, tenant: &str, stream: &str, texts: &[&str], overflow: bool) -> GroupId {
        let mut map_key: SmallVec<[u32; 6]> = SmallVec::new();
        let values = texts.iter().copied();
        intern_key(&mut self.strings, tenant, stream, values, self.label_keys.len(), overflow, &mut map_key);
        if let Some(id) = self.index.get(&map_key, &self.hot) {
            return id;
        }
        // `map_key` holds the symbols of the tenant, the stream and each value.
        let sym = |i: usize| map_key.get(i).copied().unwrap_or(OVERFLOW_SYM);
        let tenant = self.shared_str(sym(0), tenant);
        let stream = self.shared_str(sym(1), stream);
        let mut labels = Vec::with_capacity(self.label_keys.len());
        for i in 0..self.label_keys.len() {
            let value = self.shared_str(sym(i + 2), texts.get(i).copied().unwrap_or(""));
            labels.extend(self.label_keys.get(i).map(|k| (k.clone(), value)));
        }
        let labels = labels.into_boxed_slice();
        let key = GroupKey { tenant: tenant.clone(), stream, labels, overflow };
        self.live_key_symbols += map_key.len();
        let id = match self.free_groups.pop() {
            Some(id) => id,
            None => {
                self.groups.push(None);
                self.hot.push(Hot::vacant(0));
                self.cold.push(Cold::ACTIVE);
                (self.groups.len() - 1) as GroupId
            }
        };
        self.index.insert(&map_key, id, &mut self.hot);
        if let Some(slot) = self.groups.get_mut(id as usize) {
            *slot = Some(Group { key: Arc::new(key), map_key });
        }
        let t = if overflow { NO_TENANT } else { self.tenants.entry(&tenant) };
        if let Some(entry) = self.tenants.get_mut(t) {
            entry.groups += 1;
        }
        if let Some(cold) = self.cold.get_mut(id as usize) {
            cold.tenant = t;
        }
        // Idle until its first window (a resolved group may never get one).
        self.set_idle(id, Some(self.watermark));
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

        let mut closing: SmallVec<[i64; 4]> = SmallVec::new();
        let mut expired: SmallVec<[i64; 4]> = SmallVec::new();
        for (&window, bucket) in &mut self.buckets {
            let Some(start) = self.tumbling.start_of_index(window) else { continue };
            let end = start.saturating_add(self.spec.size);
            if end > watermark {
                break;
            }
            if !bucket.closed {
                bucket.closed = true;
                closing.push(window);
            }
            if end.saturating_add(self.spec.allowed_lateness) <= watermark {
                expired.push(window);
            }
        }
        // A window's slots, read off its chain once: the loops over them
        // then load each slot independently, so their cache misses
        // overlap, where following the links would wait on each in turn.
        // Dropped with this call: between calls a state costs its slot.
        let mut slots: Vec<u32> = Vec::new();
        // A window expiring in this call gives its sketches to its last
        // result instead of cloning them.
        for &window in &closing {
            let Some(states) = self.buckets.get(&window).map(|b| b.states) else { continue };
            let expiring = expired.contains(&window);
            slots.clear();
            slots.extend(self.slab.chain(&states));
            self.warm(&slots);
            // One allocation for the whole window, not a doubling chain
            // that copies the queue each time.
            self.ready.reserve(slots.len());
            for &slot in &slots {
                self.emit(slot, window, true, expiring);
            }
        }
        // Then what changed since its last emission: corrections of closed
        // windows, and (in update mode) partial results of open ones. A
        // window that closed in this call was just emitted and is clean.
        for (slot, window) in core::mem::take(&mut self.dirty) {
            if self.slab.is_dirty(slot) {
                let closed = self.buckets.get(&window).is_some_and(|b| b.closed);
                self.emit(slot, window, closed, expired.contains(&window));
            }
        }
        for window in expired {
            if let Some(bucket) = self.buckets.remove(&window) {
                slots.clear();
                slots.extend(self.slab.chain(&bucket.states));
                for &slot in &slots {
                    self.release_state(slot, window);
                }
            }
        }
        self.free_idle_groups();
        self.compact_strings();
    }

    /// Frees the groups idle for longer than the group TTL.
    fn free_idle_groups(&mut self) {
        while let Some(id) = self.idle.front() {
            let since = self.cold.get(id as usize).and_then(|c| c.idle_since);
            if since.is_some_and(|s| s.saturating_add(self.spec.group_ttl) > self.watermark) {
                break;
            }
            self.free_group(id);
            // Freeing unlinks the group; never spin if that invariant broke.
            if self.idle.front() == Some(id) {
                break;
            }
        }
    }

    /// Forgets a group (idle past its TTL, or evicted for the cap): it no
    /// longer counts toward its tenant's cap, its handles go stale, and its
    /// id is reused.
    fn free_group(&mut self, id: GroupId) {
        self.set_idle(id, None);
        let Some(g) = self.groups.get_mut(id as usize).and_then(Option::take) else { return };
        if let Some(h) = self.hot.get_mut(id as usize) {
            *h = Hot::vacant(h.generation.wrapping_add(1));
        }
        self.live_key_symbols = self.live_key_symbols.saturating_sub(g.map_key.len());
        self.index.remove(&g.map_key);
        let tenant = self.cold.get_mut(id as usize).map_or(NO_TENANT, |c| core::mem::replace(&mut c.tenant, NO_TENANT));
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.groups = t.groups.saturating_sub(1);
            if t.groups == 0 {
                self.tenants.remove(tenant);
            }
        }
        self.free_groups.push(id);
    }

    /// The shared `Arc` of global string `sym` (whose text is `text`).
    fn shared_str(&mut self, sym: u32, text: &str) -> Arc<str> {
        share(&mut self.shared, sym, || Arc::from(text))
    }

    /// The interner only grows; when it holds far more strings than the
    /// live groups use, rebuild it from them (amortized over the frees).
    fn compact_strings(&mut self) {
        if self.strings.len() <= 1_024 || self.strings.len() <= 2 * self.live_key_symbols {
            return;
        }
        let mut strings = Symbols::new();
        let mut shared = Vec::new();
        self.empty = strings.intern("").index() as u32;
        self.index.clear();
        for (id, g) in self.groups.iter_mut().enumerate() {
            let Some(g) = g else { continue };
            let k = &g.key;
            let values = k.labels.iter().map(|(_, v)| &**v);
            intern_key(&mut strings, &k.tenant, &k.stream, values, k.labels.len(), k.overflow, &mut g.map_key);
            self.index.insert(&g.map_key, id as GroupId, &mut self.hot);
            // The live groups' strings stay shared under their new symbols.
            let arcs = [&k.tenant, &k.stream].into_iter().chain(k.labels.iter().map(|(_, v)| v));
            for (&sym, arc) in g.map_key.iter().zip(arcs) {
                share(&mut shared, sym, || Arc::clone(arc));
            }
        }
        self.strings = strings;
        self.shared = shared;
    }

    /// Reads what emitting `slots` will touch first (each state's group
    /// entry and the reference count of its key): the loads are independent,
    /// so their cache misses overlap, where the emitting loop would wait on
    /// each in turn.
    fn warm(&self, slots: &[u32]) {
        let counts = slots
            .iter()
            .filter_map(|&slot| self.groups.get(self.slab.group(slot) as usize)?.as_ref())
            .map(|g| Arc::strong_count(&g.key))
            .fold(0usize, usize::wrapping_add);
        core::hint::black_box(counts);
    }

    /// Queues the result of the state in `slot` (of `window`). `take`: the
    /// state is freed right after, so its sketches move into the result.
    fn emit(&mut self, slot: u32, window: i64, is_final: bool, take: bool) {
        let Some(start) = self.tumbling.start_of_index(window) else { return };
        let mut header = self.slab.header(slot);
        let Some(Some(group)) = self.groups.get(header.group as usize) else { return };
        // Queued first and its fields filled in place: a result is a few
        // hundred bytes, and building its fields apart cost a copy more.
        self.ready.push_back(WindowResult {
            group: group.key.clone(),
            start,
            end: start.saturating_add(self.spec.size),
            revision: header.emitted,
            is_final,
            events: header.events,
            count: header.count,
            fields: SmallVec::new(),
        });
        let Some(fields) = self.ready.back_mut().map(|r| &mut r.fields) else { return };
        let mut exact_need = 0;
        for (i, (name, fs)) in self.field_names.iter().zip(&self.spec.fields).enumerate() {
            let sketch = match self.slab.sketch_mut(slot, i) {
                Some(q) if take => q.take().map(|q| {
                    exact_need = exact_need.max(q.exact_need());
                    Arc::from(q)
                }),
                Some(q) => q.as_deref().cloned().map(Arc::new),
                None => None,
            };
            let quantiles = match &sketch {
                Some(q) => fs.quantiles.iter().filter_map(|&p| q.quantile(p).map(|v| (p, v))).collect(),
                None => Vec::new(),
            };
            fields.push(FieldResult { field: name.clone(), scalar: self.slab.scalar(slot, i), quantiles, sketch });
        }
        if take && let Some(h) = self.hot.get_mut(header.group as usize) {
            h.exact_need = u16::try_from(exact_need).unwrap_or(u16::MAX);
        }
        if is_final && header.emitted > 0 && header.closed_once {
            self.stats.corrections = self.stats.corrections.saturating_add(1);
        }
        header.closed_once |= is_final;
        self.stats.results = self.stats.results.saturating_add(1);
        header.emitted = header.emitted.saturating_add(1);
        header.dirty = false;
        self.slab.set_header(slot, &header);
    }

    /// Closes every open window at once, as at the end of a stream or a
    /// graceful shutdown: the watermark moves to the end of the latest
    /// window held, every window emits its final result, and (as after any
    /// `advance`) later events older than the watermark are late. `now`
    /// is the host's clock, as in [`Windows::advance`].
    pub fn close_all(&mut self, now: Timestamp) {
        let last_end = self
            .buckets
            .keys()
            .next_back()
            .and_then(|&w| self.tumbling.start_of_index(w))
            .map(|start| start.saturating_add(self.spec.size));
        if let Some(end) = last_end {
            self.watermark = self.watermark.max(end);
        }
        self.advance(now);
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
const SNAPSHOT_VERSION: u32 = 3;

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot (truncated, corrupted, or not one).
    #[error("not a window snapshot: {0}")]
    Malformed(String),
    /// A snapshot from a newer version of edgestream.
    #[error("snapshot version {0} is not supported (this build reads version 3)")]
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
    overflow: bool,
    /// Since when it has had no live window.
    idle_since: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct WindowSnap {
    group: u32,
    window: i64,
    header: Header,
    scalars: SmallVec<[Scalar; 2]>,
    sketches: Vec<Option<Box<Quantiles>>>,
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
    windows: Vec<WindowSnap>,
    closed: Vec<i64>,
    dirty: Vec<(u32, i64)>,
    /// Idle groups, longest idle first (the eviction order).
    idle: Vec<u32>,
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
        for (id, g) in self.groups.iter().enumerate() {
            let Some(g) = g else { continue };
            if let Some(n) = renumber.get_mut(id) {
                *n = groups.len() as u32;
            }
            let k = &*g.key;
            let tenant = name_index(&k.tenant, &mut names, &mut name_ids);
            let stream = name_index(&k.stream, &mut names, &mut name_ids);
            groups.push(GroupSnap {
                tenant,
                stream,
                values: k.labels.iter().map(|(_, v)| Cow::Borrowed(&**v)).collect(),
                overflow: k.overflow,
                idle_since: self.cold.get(id).and_then(|c| c.idle_since),
            });
        }
        let mut idle = Vec::new();
        let mut next = self.idle.head;
        while let Some(c) = self.cold.get(next as usize).filter(|_| idle.len() < self.groups.len()) {
            idle.push(renumber.get(next as usize).copied().unwrap_or(u32::MAX));
            next = c.idle.next;
        }
        let new_id = |slot: u32| renumber.get(self.slab.group(slot) as usize).copied().unwrap_or(u32::MAX);
        // In bucket order, so that a restored operator emits in the same order.
        let mut windows = Vec::with_capacity(self.live_windows());
        for (&window, bucket) in &self.buckets {
            for slot in self.slab.chain(&bucket.states) {
                windows.push(WindowSnap {
                    group: new_id(slot),
                    window,
                    header: self.slab.header(slot),
                    scalars: (0..self.slab.width()).map(|i| self.slab.scalar(slot, i)).collect(),
                    sketches: self.slab.sketches(slot).to_vec(),
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
            dirty: self.dirty.iter().map(|&(slot, w)| (new_id(slot), w)).collect(),
            idle,
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
        let width = w.slab.width();
        for g in &snap.groups {
            if g.values.len() != w.spec.group_by.len() + usize::from(w.spec.geo_cell.is_some()) {
                return Err(SnapshotError::Inconsistent("a group has the wrong number of labels"));
            }
            let texts: SmallVec<[&str; 4]> = g.values.iter().map(|v| &**v).collect();
            let name =
                |i: u32| snap.names.get(i as usize).ok_or(SnapshotError::Inconsistent("a name index is out of range"));
            let (tenant, stream) = (name(g.tenant)?, name(g.stream)?);
            w.insert_group(tenant, stream, &texts, g.overflow);
        }
        if w.groups.len() != snap.groups.len() {
            return Err(SnapshotError::Inconsistent("duplicate groups"));
        }
        for ws in snap.windows {
            if ws.scalars.len() != width || !(ws.sketches.is_empty() || ws.sketches.len() == width) {
                return Err(SnapshotError::Inconsistent("a window has the wrong number of fields"));
            }
            if ws.scalars.iter().zip(&w.spec.fields).any(|(s, f)| s.kept() != f.aggregates) {
                return Err(SnapshotError::Inconsistent("a window's aggregates do not match the spec"));
            }
            let wants_sketch = |i: usize| w.spec.fields.get(i).is_some_and(|f| !f.quantiles.is_empty());
            if (0..width).any(|i| wants_sketch(i) != ws.sketches.get(i).is_some_and(Option::is_some)) {
                return Err(SnapshotError::Inconsistent("a window's quantile sketches do not match the spec"));
            }
            if ws.group as usize >= w.groups.len() || w.group_slot(ws.group, ws.window).is_some() {
                return Err(SnapshotError::Inconsistent("a window of an unknown group, or twice"));
            }
            let slot = w.new_state(ws.group, ws.window);
            w.slab.set_header(slot, &Header { group: ws.group, ..ws.header });
            for (i, scalar) in ws.scalars.iter().enumerate() {
                w.slab.set_scalar(slot, i, scalar);
            }
            for (i, sketch) in ws.sketches.into_iter().enumerate() {
                if let Some(dst) = w.slab.sketch_mut(slot, i) {
                    *dst = sketch;
                }
            }
        }
        // The idle lists, in the snapshot's order and with its times.
        for id in 0..w.groups.len() as GroupId {
            w.set_idle(id, None);
        }
        for &id in &snap.idle {
            let since = snap.groups.get(id as usize).and_then(|g| g.idle_since);
            if since.is_none() || w.hot.get(id as usize).is_none_or(|h| !h.windows.is_empty()) {
                return Err(SnapshotError::Inconsistent("an idle group holds windows, or has no idle time"));
            }
            w.set_idle(id, since);
        }
        if w.hot.iter().zip(&w.cold).any(|(h, c)| h.windows.is_empty() != c.idle_since.is_some()) {
            return Err(SnapshotError::Inconsistent("a group without windows is not idle"));
        }
        for window in snap.closed {
            if let Some(b) = w.buckets.get_mut(&window) {
                b.closed = true;
            }
        }
        // Every dirty window must be listed once for its emission; listed
        // windows that are not dirty are skipped when emitting.
        let mut listed = vec![false; w.slab.capacity()];
        for (group, window) in snap.dirty {
            let slot = w.group_slot(group, window).ok_or(SnapshotError::Inconsistent("a dirty window is not held"))?;
            match listed.get_mut(slot as usize) {
                Some(seen @ false) => *seen = true,
                _ => return Err(SnapshotError::Inconsistent("a dirty window is listed twice")),
            }
            w.dirty.push((slot, window));
        }
        for (&window, bucket) in &w.buckets {
            for slot in w.slab.chain(&bucket.states) {
                if w.slab.is_dirty(slot) && !listed.get(slot as usize).copied().unwrap_or(true) {
                    w.dirty.push((slot, window));
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
    fn groups_share_their_key_strings() {
        let spec = WindowSpec::new(Span::from_secs(1)).group_by(["region", "host"]);
        let mut w = Windows::new(spec).unwrap();
        let key = |w: &Windows, id: GroupId| Arc::clone(&w.groups[id as usize].as_ref().unwrap().key);
        let ids: Vec<GroupId> =
            (0..2_000).map(|h| w.insert_group("t", "s", &["eu", &format!("h{h}")], false)).collect();
        let (first, last) = (key(&w, ids[0]), key(&w, ids[1_999]));
        assert!(Arc::ptr_eq(&first.tenant, &last.tenant));
        assert!(Arc::ptr_eq(&first.stream, &last.stream));
        assert!(Arc::ptr_eq(&first.labels[0].1, &last.labels[0].1));
        assert_eq!((&*first.labels[1].1, &*last.labels[1].1), ("h0", "h1999"));
        // Free all but the first; the interner is rebuilt from the live
        // group, whose strings stay the ones later groups share.
        ids[1..].iter().for_each(|&id| w.free_group(id));
        let before = w.strings.len();
        w.compact_strings();
        assert!(w.strings.len() < before);
        let id = w.insert_group("t", "s", &["eu", "h5"], false);
        let again = key(&w, id);
        assert!(Arc::ptr_eq(&first.labels[0].1, &again.labels[0].1));
        assert!(Arc::ptr_eq(&first.tenant, &again.tenant));
        let id = w.insert_group("t", OVERFLOW, &[], true);
        let overflow = key(&w, id);
        assert!(overflow.overflow && overflow.labels.iter().all(|(_, v)| &**v == OVERFLOW));
    }

    #[test]
    fn groups_sharing_their_last_label_stay_apart() {
        // The index's shortcut (last key symbol → group) must never answer
        // for a group that only shares that symbol, nor for a freed one.
        let spec = WindowSpec::new(Span::from_secs(1)).group_by(["device"]).field(FieldSpec::new("v"));
        let mut w = Windows::new(spec).unwrap();
        let mut batch = EventBatch::new();
        let t0 = Timestamp::from_secs(1_000).unwrap();
        for (tenant, stream, device, v) in
            [("a", "s", "d1", 1.0), ("b", "s", "d1", 2.0), ("a", "x", "d1", 4.0), ("a", "s", "d1", 8.0)]
        {
            batch.push(&crate::event::Event::new(tenant, stream, t0).with_dim("device", device).with_field("v", v));
        }
        w.push(&batch, t0, &mut Vec::new());
        assert_eq!(w.groups(), 3);
        w.close_all(t0);
        let mut sums: Vec<(String, String, f64)> = Vec::new();
        while let Some(r) = w.poll_result() {
            let sum = r.field("v").map_or(0.0, |f| f.scalar.sum().unwrap_or(0.0));
            sums.push((r.group.tenant.to_string(), r.group.stream.to_string(), sum));
        }
        sums.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let expected = [("a", "s", 9.0), ("a", "x", 4.0), ("b", "s", 2.0)];
        let expected: Vec<_> = expected.iter().map(|&(t, s, v)| (t.to_string(), s.to_string(), v)).collect();
        assert_eq!(sums, expected);
        let a = w.resolve("a", "s", &["d1"]);
        let b = w.resolve("b", "s", &["d1"]);
        assert_ne!(a.id, b.id);
        // Free a's (idle) group; a new group reusing its id must not be
        // found by a's key.
        w.free_group(a.id);
        let c = w.resolve("c", "s", &["d2"]);
        assert_eq!(c.id, a.id);
        let key = |w: &Windows, t: &str, d: &str| [w.global_str(t), w.global_str("s"), w.global_str(d)];
        assert_eq!(w.index.get(&key(&w, "a", "d1"), &w.hot), None);
        assert_eq!(w.index.get(&key(&w, "b", "d1"), &w.hot), Some(b.id));
        assert_eq!(w.index.get(&key(&w, "c", "d2"), &w.hot), Some(c.id));
    }

    #[test]
    fn a_groups_next_state_reserves_what_its_last_window_needed() {
        let spec = WindowSpec::new(Span::from_secs(1))
            .field(FieldSpec::new("v").with_quantiles([0.5]))
            .out_of_orderness(Span::ZERO);
        let mut w = Windows::new(spec).unwrap();
        let g = w.resolve("t", "s", &[]);
        let room = |w: &mut Windows, window: i64| {
            let slot = w.group_slot(g.id, window).unwrap();
            w.slab.sketch_mut(slot, 0).unwrap().as_ref().unwrap().exact_capacity()
        };
        // Events per window, and the room the window's sketch has from its
        // first event: inline (8) with nothing known, then as much as the
        // last window needed in the steps a list grows by (50 values: 128;
        // 3: inline).
        for (window, (n, expected)) in [(50, 8), (3, 128), (20, 8)].into_iter().enumerate() {
            let window = 10 + window as i64;
            let at = |i: i64| Timestamp::from_millis(window * 1_000 + i).unwrap();
            for i in 0..n {
                w.push_resolved(g, at(i), &[i as f64], 1.0, at(i)).unwrap();
                if i == 0 {
                    assert_eq!(room(&mut w, window), expected, "window {window}");
                }
            }
            w.close_all(at(1_000));
            let r = w.poll_result().unwrap();
            assert_eq!(r.fields[0].sketch.as_ref().unwrap().len(), n as u64);
        }
    }

    #[test]
    fn state_sizes() {
        // Per (group, window) with one scalar field: its slot (see the
        // slab's tests: 64 bytes for count, sum, min and max, 80 for all
        // aggregates; it also links the window's chain) + an entry in the
        // group's window list, inline for a group's first two windows.
        assert_eq!(core::mem::size_of::<(i64, u32)>(), 16);
        assert_eq!(core::mem::size_of::<GroupId>(), 4);
        // Per group, what the per-event path reads fits one cache line.
        assert_eq!(core::mem::size_of::<Hot>(), 64);
    }
}
