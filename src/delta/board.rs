//! Dashboard state as a tile board: deltas with sequence numbers, a client
//! replica that detects gaps and divergence, conflation for slow
//! subscribers, and the wire frames.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::frames;
pub use super::frames::{EventsFrame, FieldRow, ResultRow, ResultsFrame};
use crate::alert::AlertEvent;
use crate::sample::stable_hash;
use crate::window::{FieldResult, WindowResult};

/// A tile's key, e.g. `metrics|region=eu|latency_ms`.
pub type TileKey = Arc<str>;

/// Field names most tiles use, shared without allocating.
const KNOWN: [&str; 14] =
    ["count", "last", "max", "mean", "min", "p50", "p90", "p95", "p99", "p99.9", "start_ms", "sum", "value", "rate"];

/// Indexes in [`KNOWN`] of the fields a window result's tile has.
#[derive(Clone, Copy)]
enum Known {
    Count = 0,
    Last = 1,
    Max = 2,
    Mean = 3,
    Min = 4,
    StartMs = 10,
    Sum = 11,
}

/// A field name: one of [`KNOWN`], or any other.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Name {
    Known(u8),
    Other(Arc<str>),
}

impl Name {
    fn new(name: &str) -> Name {
        let known = match name {
            "count" => 0,
            "last" => 1,
            "max" => 2,
            "mean" => 3,
            "min" => 4,
            "p50" => 5,
            "p90" => 6,
            "p95" => 7,
            "p99" => 8,
            "p99.9" => 9,
            "start_ms" => 10,
            "sum" => 11,
            "value" => 12,
            "rate" => 13,
            _ => return Name::Other(name.into()),
        };
        Name::Known(known)
    }

    fn as_str(&self) -> &str {
        match self {
            Name::Known(i) => KNOWN.get(usize::from(*i)).copied().unwrap_or(""),
            Name::Other(s) => s,
        }
    }
}

/// A tile's value: a small record of named, finite numbers, kept sorted by
/// name (a KPI is one number; a window result is its count, mean, p99…).
///
/// ```
/// use edgestream::delta::board::TileValue;
///
/// let v = TileValue::new().with("p99", 41.0).with("count", 1_200.0);
/// assert_eq!(v.get("count"), Some(1_200.0));
/// assert_eq!(v.fields().next(), Some(("count", 1_200.0)));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileValue {
    /// Inline up to 8: a window result's tile (count, sum, min, max, mean,
    /// last, start and one quantile) needs no allocation.
    fields: SmallVec<[(Name, f64); 8]>,
}

impl TileValue {
    /// A value with no fields.
    pub fn new() -> Self {
        TileValue::default()
    }

    /// A single number, named `value`.
    pub fn number(value: f64) -> Self {
        TileValue::new().with("value", value)
    }

    /// Sets field `name` (replacing an earlier value of the same name).
    #[inline]
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.set_field(name, value);
        self
    }

    /// [`TileValue::with`] in place.
    fn set_field(&mut self, name: &str, value: f64) {
        // Fields given in name order (the usual case) append.
        if self.fields.last().is_none_or(|(last, _)| last.as_str() < name) {
            self.fields.push((Name::new(name), value));
            return;
        }
        match self.fields.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                if let Some(slot) = self.fields.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.fields.insert(i, (Name::new(name), value)),
        }
    }

    /// Appends known field `name`, which the caller knows sorts after
    /// every field already set.
    fn push_known(&mut self, name: Known, value: f64) {
        let name = Name::Known(name as u8);
        debug_assert!(self.fields.last().is_none_or(|(last, _)| last.as_str() < name.as_str()));
        self.fields.push((name, value));
    }

    /// Field `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        let i = self.fields.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()?;
        self.fields.get(i).map(|(_, v)| *v)
    }

    /// The fields, by name.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, f64)> + '_ {
        self.fields.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// The first non-finite field, if any.
    #[inline]
    fn non_finite(&self) -> Option<&str> {
        self.fields.iter().find(|(_, v)| !v.is_finite()).map(|(n, _)| n.as_str())
    }

    /// Whether `other` has the same fields with values within `epsilon`.
    #[inline]
    fn close_to(&self, other: &TileValue, epsilon: &Epsilon) -> bool {
        self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|((a, x), (b, y))| a == b && epsilon.same(*x, *y))
    }

    /// Bytes this value takes on the wire, about.
    fn wire_size(&self) -> usize {
        self.fields.iter().map(|(n, _)| n.as_str().len() + 12).sum()
    }

    fn hash(&self, key: &str) -> u64 {
        let mut h = stable_hash(0, key.as_bytes());
        for (name, value) in &self.fields {
            h = stable_hash(stable_hash(h, name.as_str().as_bytes()), &value.to_bits().to_le_bytes());
        }
        h
    }
}

/// The board checksum: the wrapping sum over tiles of `TileValue::hash`,
/// kept up to date tile by tile by the board and by replicas alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Checksum(u64);

impl Checksum {
    /// Counts a tile whose [`TileValue::hash`] is `hash`.
    fn add(&mut self, hash: u64) {
        self.0 = self.0.wrapping_add(hash);
    }

    /// Stops counting a tile whose [`TileValue::hash`] is `hash`.
    fn remove(&mut self, hash: u64) {
        self.0 = self.0.wrapping_sub(hash);
    }
}

/// When a new value counts as unchanged: `|a - b| <= max(absolute,
/// relative × max(|a|, |b|))`. The default, zero, publishes every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Epsilon {
    /// Absolute tolerance.
    pub absolute: f64,
    /// Tolerance relative to the larger magnitude.
    pub relative: f64,
}

impl Epsilon {
    fn same(&self, a: f64, b: f64) -> bool {
        let tolerant = self.absolute > 0.0 || self.relative > 0.0;
        a.to_bits() == b.to_bits()
            || tolerant && (a - b).abs() <= self.absolute.max(self.relative * a.abs().max(b.abs()))
    }
}

/// A tile on a [`TileBoard`], with its share of the board checksum (so
/// that replacing it does not hash the old value again).
#[derive(Clone, Debug)]
struct Published {
    value: TileValue,
    hash: u64,
}

/// Configuration of a [`TileBoard`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardConfig {
    /// Changes within this are not published (default: none).
    pub epsilon: Epsilon,
    /// Every Nth delta carries the board checksum (default 16; 0: never).
    pub checksum_every: u32,
    /// Most tiles on the board (default 100,000); more are refused.
    pub max_tiles: usize,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig { epsilon: Epsilon::default(), checksum_every: 16, max_tiles: 100_000 }
    }
}

/// A change a [`TileBoard`] refuses.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// A tile value field is NaN or infinite.
    #[error("tile {key}: field {field} is not a finite number")]
    NonFinite {
        /// The tile.
        key: TileKey,
        /// The field.
        field: String,
    },
    /// The board is full.
    #[error("the board holds its maximum of {max} tiles")]
    Full {
        /// The cap.
        max: usize,
    },
    /// A snapshot's tiles do not add up to its checksum.
    #[error("the snapshot's tiles do not match its checksum")]
    Checksum,
}

/// Counters of a [`TileBoard`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BoardStats {
    /// Deltas produced.
    pub deltas: u64,
    /// Tiles upserted in them.
    pub upserts: u64,
    /// Tiles removed in them.
    pub removals: u64,
    /// Staged values equal (within epsilon) to the published ones, not sent.
    pub unchanged: u64,
    /// Staged values refused (non-finite, or the board full).
    pub refused: u64,
}

/// The board of one topic: the latest published value of each tile.
///
/// Stage changes with [`TileBoard::set`] and [`TileBoard::remove`], then
/// [`TileBoard::commit`] them into one [`Delta`] with only the tiles that
/// changed (a value within the configured epsilon of the published one
/// changes nothing, and the published value stays, so replicas and board
/// agree bit for bit).
///
/// ```
/// use edgestream::delta::board::{BoardConfig, Replica, TileBoard, TileValue};
///
/// let mut board = TileBoard::new("metrics", BoardConfig::default());
/// let mut replica = Replica::new();
/// replica.apply_snapshot(&board.snapshot())?;
///
/// board.set("eu/latency", TileValue::number(41.0))?;
/// board.set("us/latency", TileValue::number(57.0))?;
/// let delta = board.commit().unwrap();
/// assert_eq!((delta.base_seq, delta.seq, delta.upserts.len()), (0, 1, 2));
/// replica.apply_delta(&delta)?;
///
/// board.set("eu/latency", TileValue::number(41.0))?; // unchanged
/// assert!(board.commit().is_none());
/// assert_eq!(replica.get("us/latency"), board.get("us/latency"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct TileBoard {
    topic: Arc<str>,
    config: BoardConfig,
    seq: u64,
    tiles: HashMap<TileKey, Published, foldhash::fast::RandomState>,
    /// Real changes only: a staged value differs from the published one.
    staged: HashMap<TileKey, Option<TileValue>, foldhash::fast::RandomState>,
    /// Staged values for keys not on the board.
    staged_new: usize,
    checksum: Checksum,
    wire_size: usize,
    stats: BoardStats,
    /// Where [`TileBoard::set_result`] builds keys (scratch: what it holds
    /// between calls means nothing).
    key_buf: String,
}

impl TileBoard {
    /// An empty board at sequence 0.
    pub fn new(topic: impl Into<Arc<str>>, config: BoardConfig) -> Self {
        TileBoard {
            topic: topic.into(),
            config,
            seq: 0,
            tiles: HashMap::default(),
            staged: HashMap::default(),
            staged_new: 0,
            checksum: Checksum::default(),
            wire_size: 0,
            stats: BoardStats::default(),
            key_buf: String::new(),
        }
    }

    /// A board that continues from `snapshot` (taken with
    /// [`TileBoard::snapshot`], possibly read back from a
    /// [`Frame::Snapshot`]): same tiles, same sequence, so replicas of the
    /// old board keep applying the new board's deltas. The tiles must be
    /// finite, fit `config.max_tiles` and match the snapshot's checksum.
    pub fn restore(snapshot: Snapshot, config: BoardConfig, stats: BoardStats) -> Result<Self, BoardError> {
        if snapshot.tiles.len() > config.max_tiles {
            return Err(BoardError::Full { max: config.max_tiles });
        }
        let mut board = TileBoard::new(snapshot.topic, config);
        for (key, value) in snapshot.tiles {
            if let Some(field) = value.non_finite() {
                return Err(BoardError::NonFinite { key, field: field.into() });
            }
            let hash = board.remember(&key, &value);
            if let Some(old) = board.tiles.insert(key.clone(), Published { value, hash }) {
                board.forget(&key, &old);
            }
        }
        if board.checksum.0 != snapshot.checksum {
            return Err(BoardError::Checksum);
        }
        board.seq = snapshot.seq;
        board.stats = stats;
        Ok(board)
    }

    /// Stages `value` for tile `key`. A value within the epsilon of the
    /// published one changes nothing (counted in [`BoardStats::unchanged`]).
    pub fn set(&mut self, key: impl Into<TileKey> + AsRef<str>, value: TileValue) -> Result<(), BoardError> {
        if let Some(field) = value.non_finite() {
            self.stats.refused += 1;
            return Err(BoardError::NonFinite { key: key.into(), field: field.into() });
        }
        match self.tiles.get_key_value(key.as_ref()) {
            Some((_, published)) if published.value.close_to(&value, &self.config.epsilon) => {
                self.stats.unchanged += 1;
                self.staged.remove(key.as_ref());
            }
            Some((published_key, _)) => match self.staged.get_mut(key.as_ref()) {
                Some(slot) => *slot = Some(value),
                None => {
                    self.staged.insert(Arc::clone(published_key), Some(value));
                }
            },
            None => {
                if let Some(slot) = self.staged.get_mut(key.as_ref()) {
                    *slot = Some(value);
                } else if self.tiles.len() + self.staged_new >= self.config.max_tiles {
                    self.stats.refused += 1;
                    return Err(BoardError::Full { max: self.config.max_tiles });
                } else {
                    self.staged_new += 1;
                    self.staged.insert(key.into(), Some(value));
                }
            }
        }
        Ok(())
    }

    /// Stages the removal of tile `key`.
    pub fn remove(&mut self, key: &str) {
        if let Some((key, _)) = self.tiles.get_key_value(key) {
            self.staged.insert(key.clone(), None);
        } else if self.staged.remove(key).is_some() {
            self.staged_new -= 1;
        }
    }

    /// Stages one tile per field of a window result (see [`tiles_of`]).
    pub fn set_result(&mut self, result: &WindowResult) -> Result<(), BoardError> {
        // The keys are built in a buffer the board keeps: a tile already
        // on the board or staged reuses its key, so a steady board
        // allocates no key here.
        let mut key = std::mem::take(&mut self.key_buf);
        key.clear();
        group_key_into(&mut key, result);
        let group = key.len();
        let mut outcome = Ok(());
        for f in &result.fields {
            key.truncate(group);
            field_key_into(&mut key, f);
            outcome = self.set(key.as_str(), tile_value(result, f));
            if outcome.is_err() {
                break;
            }
        }
        self.key_buf = key;
        outcome
    }

    /// Publishes the staged changes: the delta from the current sequence to
    /// the next, or `None` when nothing changed.
    pub fn commit(&mut self) -> Option<Delta> {
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        self.staged_new = 0;
        // Drained, so the map keeps its table for the next round (sized by
        // the largest round so far, which `max_tiles` bounds).
        let mut staged = std::mem::take(&mut self.staged);
        for (key, change) in staged.drain() {
            match change {
                Some(value) => {
                    let hash = self.remember(&key, &value);
                    if let Some(old) = self.tiles.insert(key.clone(), Published { value: value.clone(), hash }) {
                        self.forget(&key, &old);
                    }
                    upserts.push((key, value));
                }
                None => {
                    if let Some(old) = self.tiles.remove(&key) {
                        self.forget(&key, &old);
                        removals.push(key);
                    }
                }
            }
        }
        self.staged = staged;
        if upserts.is_empty() && removals.is_empty() {
            return None;
        }
        upserts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        removals.sort_unstable();
        let base_seq = self.seq;
        self.seq += 1;
        self.stats.deltas += 1;
        self.stats.upserts += upserts.len() as u64;
        self.stats.removals += removals.len() as u64;
        let every = u64::from(self.config.checksum_every);
        let checksum = (every > 0 && self.seq.is_multiple_of(every)).then_some(self.checksum.0);
        Some(Delta { topic: self.topic.clone(), seq: self.seq, base_seq, upserts, removals, checksum })
    }

    /// Counts tile `key` at `value` in the checksum and size; its hash.
    fn remember(&mut self, key: &str, value: &TileValue) -> u64 {
        let hash = value.hash(key);
        self.checksum.add(hash);
        self.wire_size += key.len() + value.wire_size();
        hash
    }

    fn forget(&mut self, key: &str, old: &Published) {
        self.checksum.remove(old.hash);
        self.wire_size = self.wire_size.saturating_sub(key.len() + old.value.wire_size());
    }

    /// The whole published board, tiles in key order.
    pub fn snapshot(&self) -> Snapshot {
        let mut tiles: Vec<_> = self.tiles.iter().map(|(k, p)| (k.clone(), p.value.clone())).collect();
        tiles.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Snapshot { topic: self.topic.clone(), seq: self.seq, tiles, checksum: self.checksum.0 }
    }

    /// The published value of tile `key`.
    pub fn get(&self, key: &str) -> Option<&TileValue> {
        self.tiles.get(key).map(|p| &p.value)
    }

    /// The sequence number of the last delta (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Published tiles.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// Whether no tile is published.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The board checksum: the wrapping sum over tiles of a [`stable_hash`]
    /// chain over the key, then each field's name and value bits, so it is
    /// the same on every platform and independent of order.
    pub fn checksum(&self) -> u64 {
        self.checksum.0
    }

    /// Counters.
    pub fn stats(&self) -> &BoardStats {
        &self.stats
    }

    /// Bytes a snapshot takes on the wire, about.
    fn snapshot_size(&self) -> usize {
        self.wire_size + self.topic.len() + 16
    }
}

/// One tile per field of a window result: key `stream|label=value,…|field`
/// (the tenant is the board's business; `\`, `|`, `,` and `=` in names
/// and values are escaped with a backslash), value `count`, `sum`, `min`,
/// `max`, `mean`, `last`, one `pNN` per quantile (`p99`, `p99.9`), and the
/// window's `start_ms`. Absent aggregates (no value yet) are left out.
pub fn tiles_of(result: &WindowResult) -> impl Iterator<Item = (TileKey, TileValue)> + '_ {
    let mut group = String::new();
    group_key_into(&mut group, result);
    result.fields.iter().map(move |f| {
        let mut key = String::with_capacity(group.len() + 1 + f.field.len());
        key.push_str(&group);
        field_key_into(&mut key, f);
        (key.into(), tile_value(result, f))
    })
}

/// Appends the part of the tile keys of `result` its fields share:
/// `stream|label=value,…`.
fn group_key_into(out: &mut String, result: &WindowResult) {
    // Sized for the common case of nothing to escape.
    let labels: usize = result.group.labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    out.reserve(result.group.stream.len() + 1 + labels);
    escape_into(out, &result.group.stream);
    out.push('|');
    for (i, (k, v)) in result.group.labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(out, k);
        out.push('=');
        escape_into(out, v);
    }
}

/// Appends the rest of field `f`'s tile key: `|field`.
fn field_key_into(out: &mut String, f: &FieldResult) {
    out.push('|');
    escape_into(out, &f.field);
}

/// The tile value of field `f` of `result` (see [`tiles_of`]).
fn tile_value(result: &WindowResult, f: &FieldResult) -> TileValue {
    let s = &f.scalar;
    let mut value = TileValue::new();
    // In name order, so that each field appends: quantile names start
    // with `p`, after `min` and before `start_ms`.
    value.push_known(Known::Count, s.count());
    let scalars =
        [(Known::Last, s.last().map(|l| l.1)), (Known::Max, s.max()), (Known::Mean, s.mean()), (Known::Min, s.min())];
    for (name, v) in scalars {
        if let Some(v) = v {
            value.push_known(name, v);
        }
    }
    for &(q, v) in &f.quantiles {
        value.set_field(&quantile_name(q), v);
    }
    value.push_known(Known::StartMs, result.start.as_millis() as f64);
    if let Some(sum) = s.sum() {
        value.push_known(Known::Sum, sum);
    }
    value
}

/// The tile field of quantile `q`: `p` and the percent to 4 decimals (0.29
/// is `p29`, not `p28.999999999999996`), without formatting the usual ones.
fn quantile_name(q: f64) -> std::borrow::Cow<'static, str> {
    let percent = (q * 1e6).round() / 1e4;
    let known: [(f64, &str); 5] = [(50.0, "p50"), (90.0, "p90"), (95.0, "p95"), (99.0, "p99"), (99.9, "p99.9")];
    match known.iter().find(|(p, _)| p.to_bits() == percent.to_bits()) {
        Some((_, name)) => (*name).into(),
        None => format!("p{percent}").into(),
    }
}

/// Appends `s` with `\`, `|`, `,` and `=` escaped by a backslash, so tile
/// keys of different groups never collide.
fn escape_into(out: &mut String, s: &str) {
    // Folded without an early exit (no branch per byte): names are short,
    // and almost never hold one.
    if !s.bytes().fold(false, |found, b| found | matches!(b, b'\\' | b'|' | b',' | b'=')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The changes from `base_seq` to `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// The topic.
    pub topic: Arc<str>,
    /// The sequence number after the change.
    pub seq: u64,
    /// The sequence number the delta applies on top of.
    pub base_seq: u64,
    /// Tiles added or changed.
    pub upserts: Vec<(TileKey, TileValue)>,
    /// Tiles removed.
    pub removals: Vec<TileKey>,
    /// The board checksum at `seq`, in every Nth delta.
    pub checksum: Option<u64>,
}

/// The whole board at `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The topic.
    pub topic: Arc<str>,
    /// The sequence number.
    pub seq: u64,
    /// Every tile.
    pub tiles: Vec<(TileKey, TileValue)>,
    /// The board checksum.
    pub checksum: u64,
}

/// Why a [`Replica`] needs a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Resync {
    /// No snapshot applied yet.
    #[error("no snapshot yet")]
    NoBase,
    /// A delta does not apply on top of what the replica holds (one was
    /// lost).
    #[error("gap: the replica is at {have}, the delta applies on top of {base}")]
    Gap {
        /// The replica's sequence.
        have: u64,
        /// The delta's base.
        base: u64,
    },
    /// The checksum in a delta or snapshot does not match the replica's
    /// state: it diverged silently.
    #[error("checksum mismatch at {seq}")]
    Diverged {
        /// The sequence where it was found.
        seq: u64,
    },
    /// A frame of another topic.
    #[error("frame of topic {got}, replica of {want}")]
    Topic {
        /// The replica's topic.
        want: Arc<str>,
        /// The frame's.
        got: Arc<str>,
    },
}

/// What [`Replica::apply_delta`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The delta was applied.
    Applied,
    /// The delta was already applied (a duplicate or a late retry), and
    /// ignored.
    Duplicate,
    /// The replica already reported that it needs a snapshot; the delta is
    /// ignored until one arrives.
    AwaitingSnapshot,
    /// The frame is not about a board (an alert, results, events).
    NotABoard,
}

/// Counters of a [`Replica`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Snapshots applied.
    pub snapshots: u64,
    /// Deltas applied.
    pub deltas: u64,
    /// Deltas ignored as duplicates.
    pub duplicates: u64,
    /// Resyncs asked for.
    pub resyncs: u64,
    /// Deltas ignored while awaiting a snapshot.
    pub ignored: u64,
}

/// A client's copy of a board, kept from frames. Usable from Rust clients
/// and tests; JavaScript clients follow the same rules.
///
/// A delta applies only on top of the sequence it names; anything else is a
/// gap (or a duplicate, ignored). The replica reports the first problem as
/// a [`Resync`] and then ignores deltas ([`Applied::AwaitingSnapshot`])
/// until a snapshot arrives, so a client asks once. A checksum that does
/// not match means silent divergence, handled the same way.
///
/// Sequence numbers belong to one board: a board recreated from nothing
/// starts again at 0, so its subscribers must start with a snapshot (a new
/// [`Outbox`] sends one first).
#[derive(Clone, Debug, Default)]
pub struct Replica {
    topic: Option<Arc<str>>,
    /// `None` until a snapshot, and after a resync is needed.
    seq: Option<u64>,
    /// A resync was reported and no snapshot has come since.
    awaiting: bool,
    tiles: BTreeMap<TileKey, TileValue>,
    checksum: Checksum,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica with no state: it needs a snapshot first.
    pub fn new() -> Self {
        Replica::default()
    }

    /// Replaces the state with a snapshot.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Resync> {
        self.check_topic(&snapshot.topic)?;
        self.tiles = snapshot.tiles.iter().cloned().collect();
        self.checksum = Checksum::default();
        for (key, value) in &self.tiles {
            self.checksum.add(value.hash(key));
        }
        self.topic = Some(snapshot.topic.clone());
        self.stats.snapshots += 1;
        if self.checksum.0 != snapshot.checksum {
            return Err(self.resync(Resync::Diverged { seq: snapshot.seq }));
        }
        self.seq = Some(snapshot.seq);
        self.awaiting = false;
        Ok(())
    }

    /// Applies a delta on top of the current state.
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<Applied, Resync> {
        self.check_topic(&delta.topic)?;
        let Some(have) = self.seq else {
            if self.awaiting {
                // A snapshot is already asked for: do not ask again.
                self.stats.ignored += 1;
                return Ok(Applied::AwaitingSnapshot);
            }
            return Err(self.resync(Resync::NoBase));
        };
        if delta.seq <= have {
            self.stats.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        if delta.base_seq != have {
            return Err(self.resync(Resync::Gap { have, base: delta.base_seq }));
        }
        for key in &delta.removals {
            if let Some(old) = self.tiles.remove(key) {
                self.checksum.remove(old.hash(key));
            }
        }
        for (key, value) in &delta.upserts {
            if let Some(old) = self.tiles.insert(key.clone(), value.clone()) {
                self.checksum.remove(old.hash(key));
            }
            self.checksum.add(value.hash(key));
        }
        self.seq = Some(delta.seq);
        self.stats.deltas += 1;
        if delta.checksum.is_some_and(|c| c != self.checksum.0) {
            return Err(self.resync(Resync::Diverged { seq: delta.seq }));
        }
        Ok(Applied::Applied)
    }

    /// Applies a frame; frames that are not about a board (alerts,
    /// results, events) leave it as it is.
    pub fn apply(&mut self, frame: &Frame) -> Result<Applied, Resync> {
        match frame {
            Frame::Snapshot(s) => self.apply_snapshot(s).map(|()| Applied::Applied),
            Frame::Delta(d) => self.apply_delta(d),
            Frame::Alert(_) | Frame::Results(_) | Frame::Events(_) => Ok(Applied::NotABoard),
        }
    }

    fn check_topic(&self, topic: &Arc<str>) -> Result<(), Resync> {
        match &self.topic {
            Some(want) if want != topic => Err(Resync::Topic { want: want.clone(), got: topic.clone() }),
            _ => Ok(()),
        }
    }

    fn resync(&mut self, why: Resync) -> Resync {
        self.seq = None;
        self.awaiting = true;
        self.stats.resyncs += 1;
        why
    }

    /// Whether the replica waits for a snapshot.
    pub fn needs_snapshot(&self) -> bool {
        self.seq.is_none()
    }

    /// The sequence the replica is at.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Tile `key`.
    pub fn get(&self, key: &str) -> Option<&TileValue> {
        self.tiles.get(key)
    }

    /// Every tile, by key.
    pub fn tiles(&self) -> impl Iterator<Item = (&TileKey, &TileValue)> + '_ {
        self.tiles.iter()
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }
}

/// Counters of an [`Outbox`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Deltas pushed.
    pub pushed: u64,
    /// Deltas merged into a pending one instead of queued.
    pub merged: u64,
    /// Deltas ignored because the subscriber already has or awaits them.
    pub stale: u64,
    /// Frames taken.
    pub frames: u64,
    /// Snapshots sent (first frame, resyncs, or a merged delta larger than
    /// a snapshot).
    pub snapshots: u64,
}

/// One subscriber's pending frames, conflated: deltas it has not taken yet
/// merge into one (the latest value per tile wins, removals respected), so
/// its memory is bounded by the number of tiles, not of updates.
///
/// [`Outbox::take`] sends a snapshot instead of a delta when the merged
/// delta would be larger, when the subscriber needs one (first frame, or
/// after [`Outbox::resync`]), and when the pending changes do not reach
/// the board's sequence (a delta was not pushed). Deltas the subscriber
/// already has are ignored.
///
/// ```
/// use edgestream::delta::board::{BoardConfig, Frame, Outbox, Replica, TileBoard, TileValue};
///
/// let mut board = TileBoard::new("metrics", BoardConfig::default());
/// let mut slow = Outbox::new();
/// let mut replica = Replica::new();
/// replica.apply(&slow.take(&board).unwrap())?; // the first frame is a snapshot
/// for i in 0..100 {
///     board.set("cpu", TileValue::number(f64::from(i)))?;
///     board.set(format!("tile-{}", i % 10), TileValue::number(1.0))?;
///     slow.push(&board.commit().unwrap());
/// }
/// let frame = slow.take(&board).unwrap();
/// let Frame::Delta(merged) = &frame else { panic!("a delta") };
/// assert_eq!(merged.upserts.len(), 11); // one per tile, not 100 updates
/// replica.apply(&frame)?;
/// assert_eq!(replica.get("cpu"), board.get("cpu"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// The sequence the subscriber holds; `None`: it needs a snapshot.
    base: Option<u64>,
    pending: Option<Pending>,
    stats: OutboxStats,
}

#[derive(Clone, Debug)]
struct Pending {
    topic: Arc<str>,
    seq: u64,
    changes: HashMap<TileKey, Option<TileValue>, foldhash::fast::RandomState>,
    checksum: Option<u64>,
    size: usize,
}

impl Outbox {
    /// An outbox for a subscriber that has nothing yet.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Adds a delta the board produced.
    pub fn push(&mut self, delta: &Delta) {
        self.stats.pushed += 1;
        let Some(base) = self.base else {
            return; // a snapshot will be sent anyway
        };
        let latest = self.pending.as_ref().map_or(base, |p| p.seq);
        if delta.seq <= latest {
            // Already held or pending (taken in a snapshot, or pushed twice).
            self.stats.stale += 1;
            return;
        }
        if delta.base_seq != latest {
            // Not contiguous (the host skipped a delta): resync.
            self.resync();
            return;
        }
        let pending = match &mut self.pending {
            Some(p) => {
                self.stats.merged += 1;
                p
            }
            None => self.pending.insert(Pending {
                topic: delta.topic.clone(),
                seq: base,
                changes: HashMap::default(),
                checksum: None,
                size: 0,
            }),
        };
        let changes = delta.removals.iter().map(|k| (k, None)).chain(delta.upserts.iter().map(|(k, v)| (k, Some(v))));
        for (key, value) in changes {
            let entry = |v: Option<&TileValue>| key.len() + 2 + v.map_or(0, TileValue::wire_size);
            let old = pending.changes.insert(key.clone(), value.cloned());
            pending.size = pending.size.saturating_sub(old.map_or(0, |o| entry(o.as_ref()))) + entry(value);
        }
        pending.seq = delta.seq;
        pending.checksum = delta.checksum;
    }

    /// The subscriber asked for a snapshot (it detected a gap or
    /// divergence).
    pub fn resync(&mut self) {
        self.base = None;
        self.pending = None;
    }

    /// The next frame for the subscriber, if it is behind the board.
    pub fn take(&mut self, board: &TileBoard) -> Option<Frame> {
        let snapshot = match (self.base, &self.pending) {
            (None, _) => true,
            (Some(base), None) if base == board.seq() => return None,
            // Behind without pending changes: a delta was never pushed.
            (Some(_), None) => true,
            (Some(_), Some(p)) => p.size > board.snapshot_size() || p.seq != board.seq(),
        };
        self.stats.frames += 1;
        if snapshot {
            self.stats.snapshots += 1;
            self.pending = None;
            self.base = Some(board.seq());
            return Some(Frame::Snapshot(board.snapshot()));
        }
        let p = self.pending.take()?;
        let base_seq = self.base.replace(p.seq)?;
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for (key, change) in p.changes {
            match change {
                Some(value) => upserts.push((key, value)),
                None => removals.push(key),
            }
        }
        upserts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        removals.sort_unstable();
        Some(Frame::Delta(Delta { topic: p.topic, seq: p.seq, base_seq, upserts, removals, checksum: p.checksum }))
    }

    /// Tiles pending for the subscriber.
    pub fn pending_tiles(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.changes.len())
    }

    /// Counters.
    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }
}

/// The format version of frames written by this crate.
pub const FRAME_VERSION: u32 = 1;

/// A frame for a dashboard subscriber: as Protobuf (the `Frame` message of
/// `proto/edgestream.proto`) for the wire, as JSON for debugging.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// The whole board.
    Snapshot(Snapshot),
    /// The changes since a sequence.
    Delta(Delta),
    /// An alert state change.
    Alert(Box<AlertEvent>),
    /// Window results.
    Results(ResultsFrame),
    /// Raw events with their sample weights.
    Events(Box<EventsFrame>),
}

/// A frame that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not a valid Protobuf `Frame` message.
    #[error("not a Protobuf frame: {0}")]
    Protobuf(String),
    /// Not a valid JSON frame.
    #[error("not a JSON frame: {0}")]
    Json(String),
    /// A version this crate does not read.
    #[error("frame version {0}, this reader knows version 1")]
    Version(u32),
    /// A frame with no kind.
    #[error("the frame carries no kind")]
    NoKind,
    /// A tile field that is not a finite number.
    #[error("tile {key}: field {field} is not a finite number")]
    NonFinite {
        /// The tile.
        key: String,
        /// The field.
        field: String,
    },
    /// A key or field name given twice, or both upserted and removed.
    #[error("{what} {name} appears twice")]
    Duplicate {
        /// Key, field or removal.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A checksum in JSON that is not 16 hex digits.
    #[error("checksum must be 16 hex digits")]
    Checksum,
}

impl Frame {
    /// The Protobuf encoding.
    pub fn to_protobuf(&self) -> Vec<u8> {
        use prost::Message;
        let kind = match self {
            Frame::Snapshot(s) => crate::proto::frame::Kind::Snapshot(crate::proto::BoardSnapshot {
                topic: s.topic.to_string(),
                seq: s.seq,
                tiles: s.tiles.iter().map(proto_tile).collect(),
                checksum: s.checksum,
            }),
            Frame::Delta(d) => crate::proto::frame::Kind::Delta(crate::proto::BoardDelta {
                topic: d.topic.to_string(),
                seq: d.seq,
                base_seq: d.base_seq,
                upserts: d.upserts.iter().map(proto_tile).collect(),
                removals: d.removals.iter().map(|k| k.to_string()).collect(),
                checksum: d.checksum,
            }),
            Frame::Alert(a) => crate::proto::frame::Kind::Alert(frames::alert_to_proto(a)),
            Frame::Results(r) => crate::proto::frame::Kind::Results(frames::results_to_proto(r)),
            Frame::Events(e) => crate::proto::frame::Kind::Events(frames::events_to_proto(e)),
        };
        crate::proto::Frame { version: FRAME_VERSION, kind: Some(kind) }.encode_to_vec()
    }

    /// Reads a Protobuf frame, strictly: version 1, a kind, finite values,
    /// no key or field twice. Tiles and removals come back in key order (the
    /// order the board writes them).
    pub fn from_protobuf(bytes: &[u8]) -> Result<Frame, FrameError> {
        use prost::Message;
        let frame = crate::proto::Frame::decode(bytes).map_err(|e| FrameError::Protobuf(e.to_string()))?;
        if frame.version != FRAME_VERSION {
            return Err(FrameError::Version(frame.version));
        }
        match frame.kind.ok_or(FrameError::NoKind)? {
            crate::proto::frame::Kind::Snapshot(s) => Ok(Frame::Snapshot(Snapshot {
                topic: s.topic.into(),
                seq: s.seq,
                tiles: tiles(s.tiles.into_iter().map(|t| (t.key, t.fields.into_iter().map(|f| (f.name, f.value)))))?,
                checksum: s.checksum,
            })),
            crate::proto::frame::Kind::Delta(d) => {
                let upserts =
                    tiles(d.upserts.into_iter().map(|t| (t.key, t.fields.into_iter().map(|f| (f.name, f.value)))))?;
                Ok(Frame::Delta(Delta {
                    removals: removals(d.removals, &upserts)?,
                    topic: d.topic.into(),
                    seq: d.seq,
                    base_seq: d.base_seq,
                    upserts,
                    checksum: d.checksum,
                }))
            }
            crate::proto::frame::Kind::Alert(a) => Ok(Frame::Alert(Box::new(frames::alert_from_proto(a)?))),
            crate::proto::frame::Kind::Results(r) => Ok(Frame::Results(frames::results_from_proto(r)?)),
            crate::proto::frame::Kind::Events(e) => Ok(Frame::Events(Box::new(frames::events_from_proto(e)?))),
        }
    }

    /// The JSON form: `{"v":1,"kind":"delta","topic":…,"seq":…,
    /// "base_seq":…,"upserts":{"key":{"field":1.5}},"removals":[…],
    /// "checksum":"<16 hex digits>"}` (checksums are strings: JavaScript
    /// numbers lose 64-bit integers).
    pub fn to_json(&self) -> String {
        let frame = match self {
            Frame::Snapshot(s) => JsonFrame::Snapshot {
                v: FRAME_VERSION,
                topic: s.topic.to_string(),
                seq: s.seq,
                tiles: json_tiles(&s.tiles),
                checksum: format!("{:016x}", s.checksum),
            },
            Frame::Delta(d) => JsonFrame::Delta {
                v: FRAME_VERSION,
                topic: d.topic.to_string(),
                seq: d.seq,
                base_seq: d.base_seq,
                upserts: json_tiles(&d.upserts),
                removals: d.removals.iter().map(|k| k.to_string()).collect(),
                checksum: d.checksum.map(|c| format!("{c:016x}")),
            },
            Frame::Alert(a) => JsonFrame::Alert { v: FRAME_VERSION, alert: a.clone() },
            Frame::Results(r) => {
                JsonFrame::Results { v: FRAME_VERSION, topic: r.topic.to_string(), results: r.results.clone() }
            }
            Frame::Events(e) => return frames::events_to_json(FRAME_VERSION, e),
        };
        serde_json::to_string(&frame).unwrap_or_default()
    }

    /// Reads a JSON frame, with the same checks as [`Frame::from_protobuf`]
    /// (a tile key or field name given twice is refused), and no unknown
    /// keys.
    pub fn from_json(text: &str) -> Result<Frame, FrameError> {
        // Events frames carry their events as raw JSON for the event codec,
        // which an internally tagged enum cannot hold: they are read apart.
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let kind: Kind<'_> = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        if kind.kind == "events" {
            let events: frames::EventsJson = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
            check_version(events.v)?;
            return Ok(Frame::Events(Box::new(events.into_frame()?)));
        }
        let frame: JsonFrame = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        let hex = |c: &str| {
            let digits = c.len() == 16 && c.bytes().all(|b| b.is_ascii_hexdigit());
            digits.then(|| u64::from_str_radix(c, 16).ok()).flatten().ok_or(FrameError::Checksum)
        };
        match frame {
            JsonFrame::Snapshot { v, topic, seq, tiles: t, checksum } => {
                check_version(v)?;
                Ok(Frame::Snapshot(Snapshot {
                    topic: topic.into(),
                    seq,
                    tiles: tiles(t.0.into_iter().map(|(k, f)| (k, f.0.into_iter())))?,
                    checksum: hex(&checksum)?,
                }))
            }
            JsonFrame::Delta { v, topic, seq, base_seq, upserts, removals: r, checksum } => {
                check_version(v)?;
                let upserts = tiles(upserts.0.into_iter().map(|(k, f)| (k, f.0.into_iter())))?;
                Ok(Frame::Delta(Delta {
                    removals: removals(r, &upserts)?,
                    topic: topic.into(),
                    seq,
                    base_seq,
                    upserts,
                    checksum: checksum.as_deref().map(hex).transpose()?,
                }))
            }
            JsonFrame::Alert { v, alert } => {
                check_version(v)?;
                if alert.value.is_some_and(|x| !x.is_finite()) {
                    return Err(FrameError::NonFinite { key: alert.rule.to_string(), field: "value".into() });
                }
                Ok(Frame::Alert(alert))
            }
            JsonFrame::Results { v, topic, results } => {
                check_version(v)?;
                Ok(Frame::Results(frames::check_results(ResultsFrame { topic: topic.into(), results })?))
            }
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

fn check_version(v: u32) -> Result<(), FrameError> {
    if v == FRAME_VERSION { Ok(()) } else { Err(FrameError::Version(v)) }
}

fn proto_tile((key, value): &(TileKey, TileValue)) -> crate::proto::Tile {
    crate::proto::Tile {
        key: key.to_string(),
        fields: value.fields().map(|(name, value)| crate::proto::Field { name: name.to_string(), value }).collect(),
    }
}

/// Builds tiles from decoded ones, refusing non-finite values and
/// duplicate keys or field names, in key order.
fn tiles<F>(decoded: impl Iterator<Item = (String, F)>) -> Result<Vec<(TileKey, TileValue)>, FrameError>
where
    F: Iterator<Item = (String, f64)>,
{
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (key, fields) in decoded {
        let mut value = TileValue::new();
        for (name, v) in fields {
            if !v.is_finite() {
                return Err(FrameError::NonFinite { key, field: name });
            }
            if value.get(&name).is_some() {
                return Err(FrameError::Duplicate { what: "field", name });
            }
            value = value.with(&name, v);
        }
        if !seen.insert(key.clone()) {
            return Err(FrameError::Duplicate { what: "key", name: key });
        }
        out.push((TileKey::from(key), value));
    }
    // Canonical order, as the board writes them.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn removals(keys: Vec<String>, upserts: &[(TileKey, TileValue)]) -> Result<Vec<TileKey>, FrameError> {
    let mut seen: BTreeSet<&str> = upserts.iter().map(|(k, _)| k.as_ref()).collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in &keys {
        if !seen.insert(key) {
            return Err(FrameError::Duplicate { what: "removal", name: key.clone() });
        }
    }
    out.extend(keys.into_iter().map(TileKey::from));
    out.sort();
    Ok(out)
}

/// A JSON object read strictly: a key given twice is an error (serde's maps
/// keep the last one silently).
struct StrictMap<V>(BTreeMap<String, V>);

impl<V: Serialize> Serialize for StrictMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for StrictMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = StrictMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with distinct keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!("key {key:?} appears twice")));
                    }
                    out.insert(key, value);
                }
                Ok(StrictMap(out))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

impl<V> Default for StrictMap<V> {
    fn default() -> Self {
        StrictMap(BTreeMap::new())
    }
}

type JsonTiles = StrictMap<StrictMap<f64>>;

fn json_tiles(tiles: &[(TileKey, TileValue)]) -> JsonTiles {
    let fields = |v: &TileValue| StrictMap(v.fields().map(|(n, x)| (n.to_string(), x)).collect());
    StrictMap(tiles.iter().map(|(k, v)| (k.to_string(), fields(v))).collect())
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum JsonFrame {
    Snapshot {
        v: u32,
        topic: String,
        seq: u64,
        tiles: JsonTiles,
        checksum: String,
    },
    Delta {
        v: u32,
        topic: String,
        seq: u64,
        base_seq: u64,
        #[serde(default)]
        upserts: JsonTiles,
        #[serde(default)]
        removals: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
    Alert {
        v: u32,
        alert: Box<AlertEvent>,
    },
    Results {
        v: u32,
        topic: String,
        results: Vec<ResultRow>,
    },
}

#[cfg(test)]
mod tests {
    use super::{KNOWN, Known, Name, quantile_name};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quantile_names_are_the_formatted_percent(q in prop_oneof![
            Just(0.5), Just(0.9), Just(0.95), Just(0.99), Just(0.999), Just(0.29), 0.0..=1.0f64,
        ]) {
            prop_assert_eq!(quantile_name(q), format!("p{}", (q * 1e6).round() / 1e4));
        }
    }

    #[test]
    fn known_names_map_to_themselves() {
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(Name::new(name), Name::Known(i as u8));
            assert_eq!(Name::new(name).as_str(), *name);
        }
        assert_eq!(Name::new("p42").as_str(), "p42");
        let window_fields = [
            (Known::Count, "count"),
            (Known::Last, "last"),
            (Known::Max, "max"),
            (Known::Mean, "mean"),
            (Known::Min, "min"),
            (Known::StartMs, "start_ms"),
            (Known::Sum, "sum"),
        ];
        for (known, name) in window_fields {
            assert_eq!(Name::Known(known as u8).as_str(), name);
        }
    }
}
