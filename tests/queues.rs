//! Bounded queues: each overflow policy at capacity 0, 1 and in bytes, the
//! retry-after, and properties over random pushes and pops (capacity
//! never exceeded, every item accounted for, conflation leaves the latest
//! item per key), for the single-threaded and the shared queue, plus a
//! multi-threaded run of the shared one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use edgestream::flow::{LocalQueue, Overflow, Push, QueueConfig, QueueStats, SharedQueue};
use edgestream::time::{Span, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_838_400_000 + ms).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    key: u8,
    id: u32,
    size: u16,
}

fn size_of(item: &Item) -> usize {
    usize::from(item.size)
}

fn key_of(item: &Item) -> u8 {
    item.key
}

fn item(id: u32, size: u16) -> Item {
    Item { key: 0, id, size }
}

fn policies() -> [Overflow<Item, u8>; 4] {
    [Overflow::Block, Overflow::DropNewest, Overflow::DropOldest, Overflow::Conflate(key_of)]
}

#[test]
fn capacity_zero_refuses_everything_under_every_policy() {
    for overflow in policies() {
        let mut q = LocalQueue::new(QueueConfig::with_policy(0, overflow));
        assert_eq!(q.push(item(1, 0), t(0)), Push::TooBig(item(1, 0)), "{overflow:?}");
        let shared = SharedQueue::new(QueueConfig::with_policy(0, overflow));
        assert_eq!(shared.push(item(1, 0), t(0)), Push::TooBig(item(1, 0)), "{overflow:?}");
        assert!(q.is_empty() && shared.is_empty());
        assert_eq!(q.stats().too_big, 1);
        assert_eq!(shared.stats().too_big, 1);
    }
}

#[test]
fn capacity_one_under_each_policy() {
    let (a, b) = (item(1, 0), item(2, 0));
    let mut block = LocalQueue::new(QueueConfig::new(1, Overflow::Block));
    assert_eq!(block.push(a, t(0)), Push::Queued);
    assert!(matches!(block.push(b, t(0)), Push::Full { item, .. } if item == b));

    let mut newest = LocalQueue::new(QueueConfig::new(1, Overflow::DropNewest));
    assert_eq!(newest.push(a, t(0)), Push::Queued);
    assert_eq!(newest.push(b, t(0)), Push::Dropped(b));
    assert_eq!(newest.pop(t(0)), Some(a));

    let mut oldest = LocalQueue::new(QueueConfig::new(1, Overflow::DropOldest));
    assert_eq!(oldest.push(a, t(0)), Push::Queued);
    assert_eq!(oldest.push(b, t(0)), Push::Evicted([a].into()));
    assert_eq!(oldest.pop(t(0)), Some(b));

    let mut conflate = LocalQueue::new(QueueConfig::conflating(1, key_of));
    assert_eq!(conflate.push(a, t(0)), Push::Queued);
    assert_eq!(conflate.push(b, t(0)), Push::Replaced(a), "same key: replaced even when full");
    let other_key = Item { key: 9, ..a };
    assert!(matches!(conflate.push(other_key, t(0)), Push::Full { .. }), "a new key does not fit");
    assert_eq!(conflate.pop(t(0)), Some(b));
    assert_eq!(conflate.push(other_key, t(0)), Push::Queued, "the key left with its item");

    for stats in [block.stats(), newest.stats(), oldest.stats(), conflate.stats()] {
        assert!(stats.is_balanced(), "{stats:?}");
    }
}

#[test]
fn byte_capacity_evicts_as_many_oldest_items_as_needed() {
    let config = QueueConfig::new(100, Overflow::DropOldest).with_max_bytes(100, size_of);
    let mut q = LocalQueue::new(config);
    for id in 0..4 {
        assert_eq!(q.push(item(id, 25), t(0)), Push::Queued);
    }
    assert_eq!(q.fill_ratio(), 1.0);
    assert_eq!(q.push(item(9, 60), t(0)), Push::Evicted([item(0, 25), item(1, 25), item(2, 25)].into_iter().collect()));
    assert_eq!((q.len(), q.bytes()), (2, 85));
    assert_eq!(q.push(item(10, 101), t(0)), Push::TooBig(item(10, 101)), "larger than the whole queue");
    assert_eq!(q.stats().evicted, 3);

    // The same through the lock-free queue.
    let shared = SharedQueue::new(config);
    for id in 0..4 {
        assert_eq!(shared.push(item(id, 25), t(0)), Push::Queued);
    }
    assert!(matches!(shared.push(item(9, 60), t(0)), Push::Evicted(v) if v.len() == 3));
    assert_eq!(shared.stats().queued_bytes, 85);
}

#[test]
fn conflation_keeps_its_place_and_respects_the_byte_capacity() {
    let config = QueueConfig::conflating(10, key_of).with_max_bytes(30, size_of);
    let mut q = LocalQueue::new(config);
    let (a1, b1) = (Item { key: 1, id: 1, size: 10 }, Item { key: 2, id: 2, size: 10 });
    assert!(q.push(a1, t(0)).is_queued() && q.push(b1, t(0)).is_queued());
    // A replacement that would overflow the bytes is refused; the older item stays.
    let a_big = Item { key: 1, id: 3, size: 25 };
    assert!(matches!(q.push(a_big, t(0)), Push::Full { .. }));
    let a2 = Item { key: 1, id: 4, size: 20 };
    assert_eq!(q.push(a2, t(0)), Push::Replaced(a1));
    assert_eq!(q.bytes(), 30);
    assert_eq!(q.pop(t(0)), Some(a2), "the replacement keeps the replaced item's place");
    assert_eq!(q.pop(t(0)), Some(b1));
    assert!(q.stats().is_balanced());
}

#[test]
fn retry_after_follows_the_consumers_pace() {
    let mut q = LocalQueue::new(QueueConfig::new(10, Overflow::Block).with_retry_after(Span::from_secs(2)));
    for id in 0..10 {
        assert!(q.push(item(id, 0), t(0)).is_queued());
    }
    let retry = |q: &mut LocalQueue<Item>, at| match q.push(item(99, 0), t(at)) {
        Push::Full { retry_after, .. } => retry_after,
        other => panic!("expected Full, got {other:?}"),
    };
    assert_eq!(retry(&mut q, 0), Span::from_secs(2), "pace unknown: the configured fallback");
    // The consumer takes one item every 10 ms; the producer refills.
    for step in 1..=50 {
        q.pop(t(step * 10)).unwrap();
        assert!(q.push(item(100 + step as u32, 0), t(step * 10)).is_queued());
    }
    let wait = retry(&mut q, 500);
    assert!(wait >= Span::from_millis(5) && wait <= Span::from_millis(20), "one pop at 100/s: {wait}");
    assert_eq!(retry(&mut q, 5_000), Span::from_secs(2), "the consumer went silent: back to the fallback");
}

#[test]
fn a_shared_queue_under_many_producers_and_consumers_loses_nothing() {
    for overflow in policies() {
        let queue = SharedQueue::new(QueueConfig::with_policy(64, overflow).with_max_bytes(64 * 8, size_of));
        let done = AtomicBool::new(false);
        let (produced, consumed) = std::thread::scope(|s| {
            let producers: Vec<_> = (0..4u32)
                .map(|p| {
                    let queue = &queue;
                    s.spawn(move || {
                        let mut handed_back = Vec::new();
                        for i in 0..20_000u32 {
                            let it = Item { key: (i % 7) as u8, id: p * 1_000_000 + i, size: (i % 16) as u16 };
                            match queue.push(it, t(i64::from(i))) {
                                Push::Queued => {}
                                Push::Replaced(old) | Push::Dropped(old) | Push::TooBig(old) => handed_back.push(old),
                                Push::Full { item, .. } => handed_back.push(item),
                                Push::Evicted(olds) => handed_back.extend(olds),
                            }
                        }
                        handed_back
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let (queue, done) = (&queue, &done);
                    s.spawn(move || {
                        let mut got = Vec::new();
                        loop {
                            match queue.pop(t(0)) {
                                Some(it) => got.push(it),
                                None if done.load(Ordering::Acquire) => break got,
                                None => std::thread::yield_now(),
                            }
                        }
                    })
                })
                .collect();
            let handed: Vec<Item> = producers.into_iter().flat_map(|h| h.join().unwrap()).collect();
            done.store(true, Ordering::Release);
            let got: Vec<Item> = consumers.into_iter().flat_map(|h| h.join().unwrap()).collect();
            (handed, got)
        });
        let stats = queue.stats();
        assert!(stats.is_balanced(), "{overflow:?}: {stats:?}");
        assert_eq!(stats.received, 80_000);
        assert_eq!(stats.queued, 0);
        // Every id comes out exactly once: delivered or handed back.
        let mut ids: Vec<u32> = produced.iter().chain(&consumed).map(|i| i.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 80_000, "{overflow:?}");
        assert_eq!(consumed.len() as u64, stats.delivered);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push { key: u8, size: u16 },
    Pop,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0u8..5, 0u16..40).prop_map(|(key, size)| Op::Push { key, size }),
        1 => Just(Op::Pop),
    ];
    prop::collection::vec(op, 0..200)
}

fn policy() -> impl Strategy<Value = Overflow<Item, u8>> {
    prop_oneof![
        Just(Overflow::Block),
        Just(Overflow::DropNewest),
        Just(Overflow::DropOldest),
        Just(Overflow::Conflate(key_of as fn(&Item) -> u8)),
    ]
}

/// A queue under test: the single-threaded one or the shared one, driven
/// from one thread.
trait Queue {
    fn push(&mut self, item: Item, now: Timestamp) -> Push<Item>;
    fn pop(&mut self, now: Timestamp) -> Option<Item>;
    fn stats(&self) -> QueueStats;
}

impl Queue for LocalQueue<Item, u8> {
    fn push(&mut self, item: Item, now: Timestamp) -> Push<Item> {
        LocalQueue::push(self, item, now)
    }
    fn pop(&mut self, now: Timestamp) -> Option<Item> {
        LocalQueue::pop(self, now)
    }
    fn stats(&self) -> QueueStats {
        LocalQueue::stats(self)
    }
}

impl Queue for SharedQueue<Item, u8> {
    fn push(&mut self, item: Item, now: Timestamp) -> Push<Item> {
        SharedQueue::push(self, item, now)
    }
    fn pop(&mut self, now: Timestamp) -> Option<Item> {
        SharedQueue::pop(self, now)
    }
    fn stats(&self) -> QueueStats {
        SharedQueue::stats(self)
    }
}

/// Runs `ops` and checks, after every step: the capacity holds, the
/// counters balance, and every item is delivered, handed back or queued,
/// exactly once. Under `Conflate`, the queue holds at most one item per key,
/// the latest one accepted; otherwise items leave in the order they came.
fn check(
    q: &mut impl Queue,
    ops: &[Op],
    max_items: usize,
    max_bytes: u64,
    conflate: bool,
) -> Result<(), TestCaseError> {
    let mut out: Vec<u32> = Vec::new();
    let mut pending: HashMap<u8, u32> = HashMap::new();
    let mut last_popped = None;
    let all = ops.iter().filter(|op| matches!(op, Op::Push { .. })).count() as u32;
    let mut id = 0;
    let mut drain = |item: Item, out: &mut Vec<u32>, pending: &mut HashMap<u8, u32>| -> Result<(), TestCaseError> {
        if conflate {
            prop_assert_eq!(pending.remove(&item.key), Some(item.id), "only the latest item of a key is delivered");
        } else {
            prop_assert!(last_popped < Some(item.id), "FIFO order");
            last_popped = Some(item.id);
        }
        out.push(item.id);
        Ok(())
    };
    for op in ops {
        match *op {
            Op::Push { key, size } => {
                let it = Item { key, id, size };
                id += 1;
                match q.push(it, t(0)) {
                    Push::Queued => {
                        pending.insert(key, it.id);
                    }
                    Push::Replaced(old) => {
                        prop_assert_eq!(pending.insert(key, it.id), Some(old.id));
                        out.push(old.id);
                    }
                    Push::Evicted(olds) => {
                        pending.insert(key, it.id);
                        out.extend(olds.iter().map(|o| o.id));
                    }
                    Push::Dropped(i) | Push::TooBig(i) | Push::Full { item: i, .. } => out.push(i.id),
                }
            }
            Op::Pop => {
                if let Some(item) = q.pop(t(0)) {
                    drain(item, &mut out, &mut pending)?;
                }
            }
        }
        let stats = q.stats();
        prop_assert!(stats.is_balanced(), "{:?}", stats);
        prop_assert!(stats.queued as usize <= max_items && stats.queued_bytes <= max_bytes, "{:?}", stats);
    }
    while let Some(item) = q.pop(t(0)) {
        drain(item, &mut out, &mut pending)?;
    }
    if conflate {
        prop_assert!(pending.is_empty(), "every key's latest item was delivered");
    }
    out.sort_unstable();
    prop_assert_eq!(out, (0..all).collect::<Vec<_>>(), "each item exactly once");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn local_queues_hold_their_capacity_and_account_for_every_item(
        ops in ops(), overflow in policy(), max_items in 0usize..6, max_bytes in prop::option::of(0u64..120),
    ) {
        let mut config = QueueConfig::with_policy(max_items, overflow);
        if let Some(bytes) = max_bytes {
            config = config.with_max_bytes(bytes, size_of);
        }
        let conflate = matches!(overflow, Overflow::Conflate(_));
        check(&mut LocalQueue::new(config), &ops, max_items, config.max_bytes(), conflate)?;
    }

    #[test]
    fn shared_queues_do_the_same_from_one_thread(
        ops in ops(), overflow in policy(), max_items in 0usize..6, max_bytes in prop::option::of(0u64..120),
    ) {
        let mut config = QueueConfig::with_policy(max_items, overflow);
        if let Some(bytes) = max_bytes {
            config = config.with_max_bytes(bytes, size_of);
        }
        let conflate = matches!(overflow, Overflow::Conflate(_));
        check(&mut SharedQueue::new(config), &ops, max_items, config.max_bytes(), conflate)?;
    }
}

#[test]
fn distinct_keys_in_a_conflating_queue_stay_distinct() {
    let mut q = LocalQueue::new(QueueConfig::conflating(100, key_of));
    for id in 0..1_000u32 {
        let _ = q.push(Item { key: (id % 13) as u8, id, size: 0 }, t(0));
    }
    let keys: HashSet<u8> = std::iter::from_fn(|| q.pop(t(0))).map(|i| i.key).collect();
    assert_eq!(keys.len(), 13);
    assert_eq!(q.stats().replaced, 1_000 - 13);
}

#[test]
fn a_shared_queue_without_an_item_limit_allocates_as_it_fills() {
    // "No item limit, 1 KiB": must not preallocate usize::MAX slots.
    let q = SharedQueue::new(QueueConfig::new(usize::MAX, Overflow::Block).with_max_bytes(1_024, size_of));
    for id in 0..4 {
        assert_eq!(q.push(item(id, 256), t(0)), Push::Queued);
    }
    assert!(matches!(q.push(item(9, 1), t(0)), Push::Full { .. }));
    assert_eq!(q.stats().queued_bytes, 1_024);
}
