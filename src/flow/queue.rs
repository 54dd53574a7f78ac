//! Bounded queues with an explicit overflow policy: [`LocalQueue`] for a
//! single thread (the edge), [`SharedQueue`] for many producers and
//! consumers on native hosts.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::time::{Span, Timestamp};

/// What a queue does with an item that does not fit.
///
/// `K` is the conflation key; queues that do not conflate leave it `()`.
pub enum Overflow<T, K = ()> {
    /// Refuse the new item: the push returns [`Push::Full`] with a
    /// suggested retry-after, so a host can answer HTTP 429 or 503.
    Block,
    /// Drop the new item ([`Push::Dropped`]).
    DropNewest,
    /// Drop the oldest items until the new one fits ([`Push::Evicted`]).
    DropOldest,
    /// A new item replaces the queued item with the same key, in place
    /// ([`Push::Replaced`]), so a slow consumer holds at most one pending
    /// item per key. An item with a new key that does not fit, or a
    /// replacement that would overflow the byte capacity, is refused as
    /// under [`Overflow::Block`]: dropping another key's only pending item
    /// would lose it without a newer one to take its place.
    Conflate(fn(&T) -> K),
}

impl<T, K> Clone for Overflow<T, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, K> Copy for Overflow<T, K> {}

impl<T, K> fmt::Debug for Overflow<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overflow::Block => "Block",
            Overflow::DropNewest => "DropNewest",
            Overflow::DropOldest => "DropOldest",
            Overflow::Conflate(_) => "Conflate",
        })
    }
}

/// Capacity and policy of a queue.
///
/// ```
/// use edgestream::flow::{Overflow, QueueConfig};
///
/// // At most 1,000 bodies or 8 MiB, whichever comes first; refuse the rest.
/// let config = QueueConfig::new(1_000, Overflow::Block).with_max_bytes(8 << 20, |body: &Vec<u8>| body.len());
/// assert_eq!(config.max_items(), 1_000);
/// ```
pub struct QueueConfig<T, K = ()> {
    max_items: usize,
    max_bytes: u64,
    size_of: fn(&T) -> usize,
    overflow: Overflow<T, K>,
    retry_after: Span,
}

impl<T, K> Clone for QueueConfig<T, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, K> Copy for QueueConfig<T, K> {}

impl<T, K> fmt::Debug for QueueConfig<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("max_items", &self.max_items)
            .field("max_bytes", &self.max_bytes)
            .field("overflow", &self.overflow)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

fn no_bytes<T>(_: &T) -> usize {
    0
}

impl<T> QueueConfig<T> {
    /// At most `max_items` items (0 makes a queue that refuses everything),
    /// no byte limit, a fallback retry-after of one second, and an overflow
    /// policy that does not conflate (see [`QueueConfig::conflating`]).
    pub fn new(max_items: usize, overflow: Overflow<T>) -> Self {
        QueueConfig::with_policy(max_items, overflow)
    }
}

impl<T, K> QueueConfig<T, K> {
    /// At most `max_items` items, conflated by `key_of`
    /// ([`Overflow::Conflate`]).
    pub fn conflating(max_items: usize, key_of: fn(&T) -> K) -> Self {
        QueueConfig::with_policy(max_items, Overflow::Conflate(key_of))
    }

    /// At most `max_items` items under any policy.
    pub fn with_policy(max_items: usize, overflow: Overflow<T, K>) -> Self {
        QueueConfig { max_items, max_bytes: u64::MAX, size_of: no_bytes, overflow, retry_after: Span::from_secs(1) }
    }

    /// Also at most `max_bytes` bytes in total, each item weighing
    /// `size_of(item)`.
    pub fn with_max_bytes(mut self, max_bytes: u64, size_of: fn(&T) -> usize) -> Self {
        self.max_bytes = max_bytes;
        self.size_of = size_of;
        self
    }

    /// The retry-after suggested before the consumer's pace is known, and
    /// the longest ever suggested (a negative span counts as zero).
    pub fn with_retry_after(mut self, retry_after: Span) -> Self {
        self.retry_after = retry_after.max(Span::ZERO);
        self
    }

    /// The item capacity.
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The byte capacity (`u64::MAX` when unbounded).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The overflow policy.
    pub fn overflow(&self) -> Overflow<T, K> {
        self.overflow
    }

    fn size(&self, item: &T) -> u64 {
        (self.size_of)(item) as u64
    }

    /// Whether the item can never fit, whatever is dropped.
    fn too_big(&self, size: u64) -> bool {
        self.max_items == 0 || size > self.max_bytes
    }
}

/// The outcome of a push. Every item a queue gives up is handed back, so
/// the caller can count, log or reroute it.
#[must_use = "a push may hand back the new item or older ones"]
#[derive(Debug, PartialEq, Eq)]
pub enum Push<T> {
    /// The item was queued.
    Queued,
    /// The item took the place of this older item with the same key
    /// ([`Overflow::Conflate`]).
    Replaced(T),
    /// The item was queued after these oldest items were dropped to make
    /// room ([`Overflow::DropOldest`]).
    Evicted(SmallVec<[T; 1]>),
    /// The queue is full and the new item was dropped ([`Overflow::DropNewest`]).
    Dropped(T),
    /// The queue is full and the item was refused ([`Overflow::Block`], or
    /// under [`Overflow::Conflate`] a new key or a replacement too large for
    /// the bytes left). At the consumer's measured
    /// pace, room is expected after `retry_after`.
    Full {
        /// The refused item.
        item: T,
        /// Suggested wait before retrying (for an HTTP `Retry-After`).
        retry_after: Span,
    },
    /// The item is larger than the queue's byte capacity (or the queue
    /// holds no items at all) and can never be queued.
    TooBig(T),
}

impl<T> Push<T> {
    /// Whether the new item is in the queue.
    pub fn is_queued(&self) -> bool {
        matches!(self, Push::Queued | Push::Replaced(_) | Push::Evicted(_))
    }
}

/// Counters of a queue. Every item received is accounted for:
/// `received = delivered + replaced + evicted + dropped + rejected + too_big + queued`
/// (see [`QueueStats::is_balanced`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Items pushed.
    pub received: u64,
    /// Items popped.
    pub delivered: u64,
    /// Queued items superseded by a newer item with the same key.
    pub replaced: u64,
    /// Oldest items dropped to make room.
    pub evicted: u64,
    /// New items dropped because the queue was full.
    pub dropped: u64,
    /// New items refused because the queue was full.
    pub rejected: u64,
    /// New items that could never fit.
    pub too_big: u64,
    /// Items in the queue now.
    pub queued: u64,
    /// Bytes in the queue now.
    pub queued_bytes: u64,
}

impl QueueStats {
    /// Whether every item received is delivered, queued, or counted under
    /// one reason for leaving. Always true for a quiescent queue; a
    /// [`SharedQueue`] read during concurrent pushes and pops may be off by
    /// the operations in flight.
    pub fn is_balanced(&self) -> bool {
        let out = [self.delivered, self.replaced, self.evicted, self.dropped, self.rejected, self.too_big, self.queued];
        out.iter().try_fold(0u64, |sum, n| sum.checked_add(*n)) == Some(self.received)
    }
}

/// Pops are measured over windows of this length to estimate the
/// consumer's pace.
const METER_WINDOW: Span = Span::from_millis(100);
/// Largest [`SharedQueue`] kept on a preallocated lock-free ring.
const MAX_RING_ITEMS: usize = 65_536;
/// The shortest retry-after suggested.
const MIN_RETRY: Span = Span::from_millis(1);

/// Blends the pace measured over one window into the running estimate.
fn blend_rate(previous: f64, pops: u64, elapsed: Span) -> f64 {
    let measured = pops as f64 / (elapsed.as_nanos() as f64 / 1e9);
    if previous > 0.0 { 0.5 * previous + 0.5 * measured } else { measured }
}

/// How long `needed` more pops take at `rate` per second, between
/// [`MIN_RETRY`] and `fallback`. Without a measured rate, or when the
/// consumer has been silent for longer than `fallback`, the answer is
/// `fallback`.
fn suggest_retry(rate: f64, needed: u64, silent_for: Span, fallback: Span) -> Span {
    if rate <= 0.0 || silent_for > fallback {
        return fallback;
    }
    let nanos = (needed as f64 / rate * 1e9).ceil();
    // `as` saturates; the clamp keeps the suggestion in range.
    Span::from_nanos(nanos as i64).max(MIN_RETRY).min(fallback)
}

/// A refusal of `item`, with the time the consumer needs to make room for
/// it at its measured pace, given the queue's length and bytes.
fn full<T, K>(
    item: T,
    size: u64,
    (len, bytes): (u64, u64),
    config: &QueueConfig<T, K>,
    meter: &Meter,
    now: Timestamp,
) -> Push<T> {
    let by_items = (len + 1).saturating_sub(config.max_items as u64);
    let excess = bytes.saturating_add(size).saturating_sub(config.max_bytes);
    let by_bytes = if excess == 0 || len == 0 { 0 } else { excess.div_ceil((bytes / len).max(1)) };
    let needed = by_items.max(by_bytes).max(1);
    Push::Full { item, retry_after: meter.retry_after(now, needed, config.retry_after) }
}

struct Entry<T> {
    item: T,
    size: u64,
}

/// A single-threaded bounded queue (FIFO) with an overflow policy and a
/// capacity in items and bytes: the variant for the edge.
///
/// Operations are O(1) (plus a hash lookup when conflating); pushes and
/// pops take `now` only to measure the consumer's pace for
/// [`Push::Full`]'s retry-after.
///
/// ```
/// use edgestream::flow::{LocalQueue, Push, QueueConfig};
/// use edgestream::time::Timestamp;
///
/// // Dashboard updates: at most one pending update per tile.
/// let mut updates = LocalQueue::new(QueueConfig::conflating(100, |u: &(&str, f64)| u.0));
/// let now = Timestamp::from_secs(1_795_838_400).unwrap();
/// assert_eq!(updates.push(("cpu", 0.5), now), Push::Queued);
/// assert_eq!(updates.push(("mem", 0.7), now), Push::Queued);
/// assert_eq!(updates.push(("cpu", 0.9), now), Push::Replaced(("cpu", 0.5)));
/// assert_eq!(updates.pop(now), Some(("cpu", 0.9)));
/// assert_eq!(updates.stats().replaced, 1);
/// ```
pub struct LocalQueue<T, K = ()> {
    config: QueueConfig<T, K>,
    entries: VecDeque<Entry<T>>,
    /// Sequence number of the front entry; entry `i` has `front + i`.
    front: u64,
    /// Conflation key → sequence number of its queued entry.
    keys: HashMap<K, u64, foldhash::fast::RandomState>,
    bytes: u64,
    stats: QueueStats,
    meter: Meter,
}

impl<T, K> fmt::Debug for LocalQueue<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQueue")
            .field("config", &self.config)
            .field("len", &self.entries.len())
            .field("bytes", &self.bytes)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T, K: Hash + Eq> LocalQueue<T, K> {
    /// An empty queue.
    pub fn new(config: QueueConfig<T, K>) -> Self {
        LocalQueue {
            config,
            entries: VecDeque::new(),
            front: 0,
            keys: HashMap::default(),
            bytes: 0,
            stats: QueueStats::default(),
            meter: Meter::default(),
        }
    }

    /// Offers `item`; see [`Push`] for what may come back.
    pub fn push(&mut self, item: T, now: Timestamp) -> Push<T> {
        self.stats.received += 1;
        let size = self.config.size(&item);
        if self.config.too_big(size) {
            self.stats.too_big += 1;
            return Push::TooBig(item);
        }
        match self.config.overflow {
            Overflow::Block => self.push_or_refuse(item, size, now),
            Overflow::DropNewest => {
                if self.fits(size) {
                    self.enqueue(item, size);
                    Push::Queued
                } else {
                    self.stats.dropped += 1;
                    Push::Dropped(item)
                }
            }
            Overflow::DropOldest => {
                let mut evicted = SmallVec::new();
                while !self.fits(size) {
                    let Some(entry) = self.dequeue() else { break };
                    self.stats.evicted += 1;
                    evicted.push(entry.item);
                }
                self.enqueue(item, size);
                if evicted.is_empty() { Push::Queued } else { Push::Evicted(evicted) }
            }
            Overflow::Conflate(key_of) => {
                let key = key_of(&item);
                let Some(&seq) = self.keys.get(&key) else {
                    let pushed = self.push_or_refuse(item, size, now);
                    if pushed.is_queued() {
                        self.keys.insert(key, self.front + self.entries.len() as u64 - 1);
                    }
                    return pushed;
                };
                let bytes = self.bytes;
                let index = seq.checked_sub(self.front).and_then(|i| usize::try_from(i).ok());
                let Some(entry) = index.and_then(|i| self.entries.get_mut(i)) else {
                    // Unreachable: every key in the map names a queued entry.
                    return self.push_or_refuse(item, size, now);
                };
                let after = (bytes - entry.size).checked_add(size).filter(|&b| b <= self.config.max_bytes);
                let Some(after) = after else {
                    self.stats.rejected += 1;
                    let state = (self.entries.len() as u64, bytes);
                    return full(item, size, state, &self.config, &self.meter, now);
                };
                entry.size = size;
                let old = std::mem::replace(&mut entry.item, item);
                self.bytes = after;
                self.stats.replaced += 1;
                Push::Replaced(old)
            }
        }
    }

    /// Takes the oldest item.
    pub fn pop(&mut self, now: Timestamp) -> Option<T> {
        let entry = self.dequeue()?;
        self.stats.delivered += 1;
        self.meter.on_pop(now, self.stats.delivered);
        Some(entry.item)
    }

    /// The oldest item, left in place.
    pub fn peek(&self) -> Option<&T> {
        self.entries.front().map(|e| &e.item)
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued (by the configured `size_of`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How full the queue is, from 0 to 1: the larger of its item and byte
    /// fill ratios (a load signal for [`crate::flow::FidelityLadder`]).
    pub fn fill_ratio(&self) -> f64 {
        fill_ratio(self.entries.len() as u64, self.bytes, &self.config)
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig<T, K> {
        &self.config
    }

    /// Counters, including the current length and bytes.
    pub fn stats(&self) -> QueueStats {
        QueueStats { queued: self.entries.len() as u64, queued_bytes: self.bytes, ..self.stats.clone() }
    }

    fn fits(&self, size: u64) -> bool {
        self.entries.len() < self.config.max_items && self.bytes.saturating_add(size) <= self.config.max_bytes
    }

    fn push_or_refuse(&mut self, item: T, size: u64, now: Timestamp) -> Push<T> {
        if self.fits(size) {
            self.enqueue(item, size);
            return Push::Queued;
        }
        self.stats.rejected += 1;
        full(item, size, (self.entries.len() as u64, self.bytes), &self.config, &self.meter, now)
    }

    fn enqueue(&mut self, item: T, size: u64) {
        self.bytes += size;
        self.entries.push_back(Entry { item, size });
    }

    fn dequeue(&mut self) -> Option<Entry<T>> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.size;
        if let Overflow::Conflate(key_of) = self.config.overflow {
            self.keys.remove(&key_of(&entry.item));
        }
        self.front += 1;
        Some(entry)
    }
}

fn fill_ratio<T, K>(len: u64, bytes: u64, config: &QueueConfig<T, K>) -> f64 {
    let ratio = |n: u64, max: u64| if max == 0 { 1.0 } else { n as f64 / max as f64 };
    ratio(len, config.max_items as u64).max(ratio(bytes, config.max_bytes))
}

/// A bounded queue for many producers and consumers (native hosts), with
/// the same policies and counters as [`LocalQueue`].
///
/// `Block`, `DropNewest` and `DropOldest` are lock-free, on a `crossbeam`
/// [`ArrayQueue`] that allocates its `max_items` slots up front. The byte
/// capacity is reserved with an atomic counter before an item is queued,
/// so `Block` and `DropNewest` never exceed it; under contention a push
/// may then be refused while another push's reservation is in flight, and
/// `queued_bytes` includes such reservations. Under `DropOldest`,
/// concurrent pushes may evict more items than strictly needed (each is
/// handed back and counted), and when the queue is empty but reservations
/// are in flight the bytes may stay above the capacity until the next pop.
///
/// `Conflate` needs the key lookup and the replacement to be one step, so
/// it runs a [`LocalQueue`] under a mutex, as do queues of more than
/// 65,536 items (which then allocate as they fill).
///
/// ```
/// use edgestream::flow::{Overflow, Push, QueueConfig, SharedQueue};
/// use edgestream::time::Timestamp;
///
/// let queue = SharedQueue::new(QueueConfig::new(2, Overflow::DropOldest));
/// let now = Timestamp::from_secs(1_795_838_400).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| queue.push(1, now).is_queued());
///     s.spawn(|| queue.push(2, now).is_queued());
/// });
/// assert!(queue.push(3, now).is_queued());
/// assert_eq!(queue.len(), 2);
/// assert_eq!(queue.stats().evicted, 1);
/// ```
pub struct SharedQueue<T, K = ()> {
    inner: Shared<T, K>,
}

enum Shared<T, K> {
    Ring(Box<Ring<T, K>>),
    Locked(Box<Mutex<LocalQueue<T, K>>>),
}

impl<T, K> fmt::Debug for SharedQueue<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = match &self.inner {
            Shared::Ring(ring) => ring.config,
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).config,
        };
        f.debug_struct("SharedQueue").field("config", &config).finish_non_exhaustive()
    }
}

impl<T, K: Hash + Eq> SharedQueue<T, K> {
    /// An empty queue.
    pub fn new(config: QueueConfig<T, K>) -> Self {
        let inner = match config.overflow {
            Overflow::Conflate(_) => Shared::Locked(Box::new(Mutex::new(LocalQueue::new(config)))),
            _ if config.max_items > MAX_RING_ITEMS => Shared::Locked(Box::new(Mutex::new(LocalQueue::new(config)))),
            _ => Shared::Ring(Box::new(Ring {
                // `ArrayQueue` needs room for one item; a queue of zero
                // items refuses every push before reaching it.
                queue: ArrayQueue::new(config.max_items.max(1)),
                config,
                bytes: CachePadded::new(AtomicU64::new(0)),
                received: CachePadded::new(AtomicU64::new(0)),
                delivered: CachePadded::new(AtomicU64::new(0)),
                evicted: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                too_big: AtomicU64::new(0),
                meter: Meter::default(),
            })),
        };
        SharedQueue { inner }
    }

    /// Offers `item`; see [`Push`] for what may come back.
    pub fn push(&self, item: T, now: Timestamp) -> Push<T> {
        match &self.inner {
            Shared::Ring(ring) => ring.push(item, now),
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).push(item, now),
        }
    }

    /// Takes the oldest item.
    pub fn pop(&self, now: Timestamp) -> Option<T> {
        match &self.inner {
            Shared::Ring(ring) => ring.pop(now),
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).pop(now),
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        match &self.inner {
            Shared::Ring(ring) => ring.queue.len(),
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).len(),
        }
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How full the queue is, from 0 to 1 (see [`LocalQueue::fill_ratio`]).
    pub fn fill_ratio(&self) -> f64 {
        match &self.inner {
            Shared::Ring(ring) => fill_ratio(ring.queue.len() as u64, ring.bytes.load(Ordering::Relaxed), &ring.config),
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).fill_ratio(),
        }
    }

    /// Counters, including the current length and bytes.
    pub fn stats(&self) -> QueueStats {
        match &self.inner {
            Shared::Ring(ring) => ring.stats(),
            Shared::Locked(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).stats(),
        }
    }
}

/// The lock-free variant's state.
struct Ring<T, K> {
    queue: ArrayQueue<Entry<T>>,
    config: QueueConfig<T, K>,
    bytes: CachePadded<AtomicU64>,
    received: CachePadded<AtomicU64>,
    delivered: CachePadded<AtomicU64>,
    evicted: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    too_big: AtomicU64,
    meter: Meter,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl<T, K> Ring<T, K> {
    fn push(&self, item: T, now: Timestamp) -> Push<T> {
        bump(&self.received);
        let size = self.config.size(&item);
        if self.config.too_big(size) {
            bump(&self.too_big);
            return Push::TooBig(item);
        }
        let mut evicted = SmallVec::new();
        // Reserve the bytes first, so concurrent pushes cannot all pass.
        // Items of no size (the default without a byte capacity) skip the
        // counter.
        let over =
            size > 0 && self.bytes.fetch_add(size, Ordering::AcqRel).saturating_add(size) > self.config.max_bytes;
        if over {
            if matches!(self.config.overflow, Overflow::DropOldest) {
                while self.bytes.load(Ordering::Acquire) > self.config.max_bytes {
                    let Some(entry) = self.queue.pop() else { break };
                    self.release(entry.size);
                    bump(&self.evicted);
                    evicted.push(entry.item);
                }
            } else {
                self.release(size);
                return self.refuse(item, size, now);
            }
        }
        let entry = Entry { item, size };
        if matches!(self.config.overflow, Overflow::DropOldest) {
            if let Some(old) = self.queue.force_push(entry) {
                self.release(old.size);
                bump(&self.evicted);
                evicted.push(old.item);
            }
            return if evicted.is_empty() { Push::Queued } else { Push::Evicted(evicted) };
        }
        match self.queue.push(entry) {
            Ok(()) => Push::Queued,
            Err(entry) => {
                self.release(size);
                self.refuse(entry.item, size, now)
            }
        }
    }

    fn release(&self, size: u64) {
        if size > 0 {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        }
    }

    fn refuse(&self, item: T, size: u64, now: Timestamp) -> Push<T> {
        if matches!(self.config.overflow, Overflow::DropNewest) {
            bump(&self.dropped);
            return Push::Dropped(item);
        }
        bump(&self.rejected);
        let state = (self.queue.len() as u64, self.bytes.load(Ordering::Relaxed));
        full(item, size, state, &self.config, &self.meter, now)
    }

    fn pop(&self, now: Timestamp) -> Option<T> {
        let entry = self.queue.pop()?;
        self.release(entry.size);
        let delivered = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        self.meter.on_pop(now, delivered);
        Some(entry.item)
    }

    fn stats(&self) -> QueueStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueStats {
            received: load(&self.received),
            delivered: load(&self.delivered),
            replaced: 0,
            evicted: load(&self.evicted),
            dropped: load(&self.dropped),
            rejected: load(&self.rejected),
            too_big: load(&self.too_big),
            queued: self.queue.len() as u64,
            queued_bytes: load(&self.bytes),
        }
    }
}

/// The consumer's pace, for retry-after suggestions: pops are measured
/// over windows of [`METER_WINDOW`]. Atomic so that concurrent consumers
/// can share it (one window roll wins, the others only count); a pop costs
/// one relaxed load unless it ends a window.
#[derive(Debug)]
struct Meter {
    /// Window start in ns (`i64::MIN` before the first pop).
    start: AtomicI64,
    /// `delivered` at the window start.
    mark: AtomicU64,
    /// Pops per second as `f64` bits.
    rate: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Meter { start: AtomicI64::new(i64::MIN), mark: AtomicU64::new(0), rate: AtomicU64::new(0) }
    }
}

impl Meter {
    fn on_pop(&self, now: Timestamp, delivered: u64) {
        let start = self.start.load(Ordering::Relaxed);
        if start == i64::MIN {
            if self.start.compare_exchange(start, now.as_nanos(), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.mark.store(delivered, Ordering::Release);
            }
            return;
        }
        let elapsed = now.saturating_since(Timestamp::from_nanos(start));
        if elapsed < METER_WINDOW
            || self.start.compare_exchange(start, now.as_nanos(), Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let pops = delivered.saturating_sub(self.mark.swap(delivered, Ordering::AcqRel));
        let rate = blend_rate(f64::from_bits(self.rate.load(Ordering::Acquire)), pops, elapsed);
        self.rate.store(rate.to_bits(), Ordering::Release);
    }

    fn retry_after(&self, now: Timestamp, needed: u64, fallback: Span) -> Span {
        let start = self.start.load(Ordering::Relaxed);
        let silent = if start == i64::MIN { Span::MAX } else { now.saturating_since(Timestamp::from_nanos(start)) };
        suggest_retry(f64::from_bits(self.rate.load(Ordering::Acquire)), needed, silent, fallback)
    }
}
