//! Sampling: the stable hash's fixed values, statistical tests with fixed
//! seeds (hash sampling rate, reservoir uniformity, adaptive convergence
//! and unbiased weighted counts on a Zipf-like key distribution), and
//! properties.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::collections::HashMap;

use edgestream::event::{Event, EventBatch};
use edgestream::sample::{
    AdaptiveConfig, AdaptiveSampler, HashKey, HashSampler, Reservoir, SampleError, Sampled, stable_hash,
};
use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, WindowSpec, Windows};
use proptest::prelude::*;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_838_400_000 + ms).unwrap()
}

/// A small deterministic generator for the tests' own randomness.
struct TestRng(u64);

impl TestRng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Keys 0..n with probability ∝ 1 / (rank + 1)^s, by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Zipf {
            cdf: weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect(),
        }
    }

    fn draw(&self, rng: &mut TestRng) -> u32 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u32
    }
}

#[test]
fn the_stable_hash_does_not_change() {
    // These values are part of the sampling contract: every replica, every
    // platform (wasm32 included) and every version must compute them.
    // (Computed independently from the documented algorithm.)
    let cases: [(u64, &[u8], u64); 8] = [
        (0, b"", 0xf490_368a_ba8b_feac),
        (0, b"a", 0x80fa_b60d_a747_dbb5),
        (0, b"evt-1", 0xa3b7_a19a_2f56_f560),
        (0, b"12345678", 0x18b8_e245_22d4_c150),
        (0, b"123456789", 0x792a_6b5e_1ac6_8634),
        (42, b"evt-1", 0x981a_7325_0bed_5aa2),
        (0, b"evt-0003-00000123", 0xec1c_ea21_0cb4_84aa),
        (7, "device-é-1234567".as_bytes(), 0x3322_9d47_5dd5_d129),
    ];
    for (seed, bytes, want) in cases {
        assert_eq!(stable_hash(seed, bytes), want, "{seed} {:?}: {:#x}", bytes, stable_hash(seed, bytes));
    }
}

#[test]
fn hash_sampling_keeps_its_rate_of_a_million_ids() {
    for rate in [0.01, 0.1, 0.5] {
        let mut s = HashSampler::new(rate, HashKey::Id).unwrap();
        let mut weight = 0.0;
        for i in 0..1_000_000 {
            weight += s.sample(format!("evt-{i}").as_bytes()).weight();
        }
        let kept = s.stats().kept as f64 / 1e6;
        // Binomial standard deviation at p = 0.5 is 0.0005: allow 0.002.
        assert!((kept - rate).abs() < 0.002, "rate {rate}: kept {kept}");
        // The weighted count's relative standard deviation is sqrt((1 - p) / (n p)).
        let sd = ((1.0 - rate) / (1e6 * rate)).sqrt();
        assert!((weight - 1e6).abs() / 1e6 < 4.0 * sd, "rate {rate}: weighted {weight}");
        assert_eq!(s.stats().seen, 1_000_000);
        assert_eq!(s.stats().kept + s.stats().dropped, 1_000_000);
    }
}

#[test]
fn same_seed_nests_and_other_seeds_are_independent() {
    let ids: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let at = |rate, seed| {
        let s = HashSampler::new(rate, HashKey::Id).unwrap().with_seed(seed);
        ids.iter().map(|id| s.keeps(id.as_bytes())).collect::<Vec<bool>>()
    };
    let (small, large, other) = (at(0.1, 0), at(0.2, 0), at(0.1, 1));
    assert!(small.iter().zip(&large).all(|(s, l)| !s || *l), "kept at 0.1 implies kept at 0.2");
    let both = small.iter().zip(&other).filter(|(a, b)| **a && **b).count() as f64 / ids.len() as f64;
    assert!((both - 0.01).abs() < 0.002, "independent seeds overlap by p²: {both}");
}

#[test]
fn hash_sampling_of_events_uses_the_chosen_key_or_the_content() {
    let ts = t(0);
    let mut batch = EventBatch::new();
    for i in 0..2_000 {
        batch
            .push(&Event::new("acme", "clicks", ts).with_dim("user", format!("u{}", i % 10)).with_field("n", i as f64));
    }
    // By user: the ten users are each kept or dropped whole.
    let mut by_user = HashSampler::new(0.5, HashKey::Dim("user".into())).unwrap();
    let mut weights = Vec::new();
    by_user.weigh_batch(&batch, &mut weights);
    let mut per_user: HashMap<&str, Vec<f64>> = HashMap::new();
    for (e, w) in batch.iter().zip(&weights) {
        per_user.entry(e.dim("user").unwrap()).or_default().push(*w);
    }
    assert!(per_user.values().all(|ws| ws.iter().all(|w| *w == ws[0])));
    // No ids: decided on content, and a duplicate event gets the same decision.
    let mut by_id = HashSampler::new(0.5, HashKey::Id).unwrap();
    let first: Vec<bool> = batch.iter().map(|e| by_id.sample_event(&e).is_kept()).collect();
    let again: Vec<bool> = batch.iter().map(|e| by_id.sample_event(&e).is_kept()).collect();
    assert_eq!(first, again);
    let kept = first.iter().filter(|k| **k).count();
    assert!((800..1_200).contains(&kept), "{kept}");
}

#[test]
fn sample_rates_are_checked() {
    for bad in [-0.1, 1.1, f64::NAN] {
        assert!(matches!(HashSampler::new(bad, HashKey::Id), Err(SampleError::Rate(_))));
    }
    let none = HashSampler::new(0.0, HashKey::Id).unwrap();
    let all = HashSampler::new(1.0, HashKey::Id).unwrap();
    for i in 0..1_000 {
        let id = format!("{i}");
        assert!(!none.keeps(id.as_bytes()) && all.keeps(id.as_bytes()));
    }
    let bad = |config: AdaptiveConfig| AdaptiveSampler::<String>::new(config).map(|_| ()).unwrap_err();
    assert!(matches!(bad(AdaptiveConfig { target_rate: 0.0, ..AdaptiveConfig::default() }), SampleError::Target(_)));
    assert!(matches!(bad(AdaptiveConfig { interval: Span::ZERO, ..AdaptiveConfig::default() }), SampleError::Interval));
    assert!(matches!(bad(AdaptiveConfig { smoothing: 0.0, ..AdaptiveConfig::default() }), SampleError::Smoothing(_)));
}

#[test]
fn reservoirs_are_uniform() {
    // 20,000 reservoirs of 5 out of 50: each item is in with probability 0.1.
    let (n, k, trials) = (50u32, 5, 20_000);
    let mut hits = vec![0u32; n as usize];
    for seed in 0..trials {
        let mut r = Reservoir::new(k, seed);
        for i in 0..n {
            r.offer(i);
        }
        for &i in r.items() {
            hits[i as usize] += 1;
        }
    }
    // Standard deviation of each count: sqrt(20,000 × 0.1 × 0.9) ≈ 42.
    for (i, &h) in hits.iter().enumerate() {
        assert!((h as f64 - 2_000.0).abs() < 210.0, "item {i}: {h}");
    }
    let chi2: f64 = hits.iter().map(|&h| (h as f64 - 2_000.0).powi(2) / 2_000.0).sum();
    assert!(chi2 < 90.0, "chi² with 49 degrees of freedom: {chi2}");
}

#[test]
fn a_reservoir_samples_long_streams_uniformly_too() {
    // Late items must get in as often as early ones (the skips are right).
    let (n, k) = (100_000u64, 10);
    let mut late = 0;
    let trials = 400;
    for seed in 0..trials {
        let mut r = Reservoir::new(k, 1_000 + seed);
        for i in 0..n {
            r.offer(i);
        }
        late += r.items().iter().filter(|&&i| i >= n / 2).count();
    }
    let share = late as f64 / (trials * k as u64) as f64;
    assert!((share - 0.5).abs() < 0.04, "second half's share: {share}");
}

#[test]
fn reservoir_edges() {
    let mut none = Reservoir::new(0, 1);
    assert!(!none.offer(1));
    assert_eq!((none.items().len(), none.seen(), none.weight()), (0, 1, 0.0));
    let mut few = Reservoir::new(10, 1);
    for i in 0..3 {
        assert!(few.offer(i));
    }
    assert_eq!(few.items(), [0, 1, 2]);
    assert_eq!(few.weight(), 1.0);
    assert_eq!(few.take(), vec![0, 1, 2]);
    assert_eq!(few.seen(), 0);
}

/// 60 s of a Zipf-like stream (s = 1.2) over 1,000 keys at 20,000
/// events/s, sampled towards 2,000 events/s: the water level settles near
/// 2.3 events per key per second, so about 400 keys are under it.
struct AdaptiveRun {
    sampler: AdaptiveSampler<u32>,
    truth: HashMap<u32, u64>,
    estimate: HashMap<u32, f64>,
    /// Horvitz-Thompson variance estimate of each key's weighted count:
    /// Σ (1 - p) / p² = Σ (w² - w) over kept events.
    variance: HashMap<u32, f64>,
    /// Events seen and kept per key after the first five seconds.
    seen_steady: HashMap<u32, u64>,
    kept_steady: HashMap<u32, u64>,
    kept_per_second: Vec<u64>,
}

fn adaptive_run(max_keys: usize) -> AdaptiveRun {
    let config =
        AdaptiveConfig { target_rate: 2_000.0, interval: Span::from_secs(1), smoothing: 0.5, max_keys, seed: 7 };
    let mut sampler = AdaptiveSampler::new(config).unwrap();
    let zipf = Zipf::new(1_000, 1.2);
    let mut rng = TestRng(0x5EED);
    let (mut truth, mut estimate, mut variance) = (HashMap::new(), HashMap::new(), HashMap::new());
    let (mut seen_steady, mut kept_steady) = (HashMap::new(), HashMap::new());
    let mut kept_per_second = Vec::new();
    for second in 0..60 {
        let mut kept = 0;
        for i in 0..20_000 {
            let key = zipf.draw(&mut rng);
            let now = t(second * 1_000 + i / 20);
            *truth.entry(key).or_insert(0) += 1;
            let steady = second >= 5;
            if steady {
                *seen_steady.entry(key).or_insert(0) += 1;
            }
            if let Sampled::Keep { weight } = sampler.sample(&key, now) {
                kept += 1;
                *estimate.entry(key).or_insert(0.0) += weight;
                *variance.entry(key).or_insert(0.0) += weight * weight - weight;
                if steady {
                    *kept_steady.entry(key).or_insert(0) += 1;
                }
            }
        }
        kept_per_second.push(kept);
    }
    AdaptiveRun { sampler, truth, estimate, variance, seen_steady, kept_steady, kept_per_second }
}

#[test]
fn the_adaptive_sampler_converges_to_its_target_and_its_weights_are_unbiased() {
    let run = adaptive_run(10_000);
    // Converged: every second after the first five is within 10 % of 2,000.
    for (second, &kept) in run.kept_per_second.iter().enumerate().skip(5) {
        assert!((1_800..=2_200).contains(&kept), "second {second}: kept {kept}");
    }
    // 2,000 kept events/s out of 20,000, most of them spent on keeping rare
    // keys whole: the frequent keys carry weights in the hundreds, so the
    // weighted total has a standard error of a few percent. It must be
    // within 4 standard errors (estimated from the sample itself) and 10 %.
    let total: u64 = run.truth.values().sum();
    let estimated: f64 = run.estimate.values().sum();
    let sd: f64 = run.variance.values().sum::<f64>().sqrt();
    let error = (estimated - total as f64).abs();
    assert!(error < 4.0 * sd && error < 0.1 * total as f64, "total {total}, estimated {estimated} ± {sd}");
    // The ten most frequent keys, sampled hardest, are each within 4
    // standard errors.
    let mut by_volume: Vec<(u32, u64)> = run.truth.iter().map(|(k, v)| (*k, *v)).collect();
    by_volume.sort_by_key(|(k, v)| (std::cmp::Reverse(*v), *k));
    for &(key, count) in &by_volume[..10] {
        let est = run.estimate.get(&key).copied().unwrap_or(0.0);
        let sd = run.variance.get(&key).copied().unwrap_or(0.0).sqrt();
        assert!((est - count as f64).abs() < 4.0 * sd, "key {key}: {count} vs {est} ± {sd}");
    }
    // Once converged, rare keys are kept and frequent keys sampled hard:
    // the 100 rarest keys (about one event a second each) keep nine events
    // in ten, the most frequent key (about 4,600 a second) fewer than one
    // in a thousand.
    let kept_share = |keys: &[(u32, u64)]| {
        let share = |m: &HashMap<u32, u64>| keys.iter().map(|(k, _)| m.get(k).copied().unwrap_or(0)).sum::<u64>();
        share(&run.kept_steady) as f64 / share(&run.seen_steady) as f64
    };
    let rare = kept_share(&by_volume[by_volume.len() - 100..]);
    let top = kept_share(&by_volume[..1]);
    assert!(rare > 0.9 && top < 0.001, "rarest 100 keep {rare}, the top key {top}");
    let stats = run.sampler.stats();
    assert_eq!(stats.decisions.seen, total);
    assert_eq!(stats.decisions.kept + stats.decisions.dropped, total);
    assert_eq!(stats.overflow_seen, 0);
    assert_eq!(stats.intervals, 59);
}

#[test]
fn keys_beyond_the_cap_are_still_sampled_and_counted() {
    let run = adaptive_run(50);
    let stats = run.sampler.stats();
    let total: u64 = run.truth.values().sum();
    assert_eq!(run.sampler.tracked_keys(), 50);
    assert!(stats.overflow_seen > 100_000, "{stats:?}");
    assert!(stats.overflow_kept > 0 && stats.overflow_kept < stats.overflow_seen);
    assert_eq!(stats.decisions.seen, total, "overflow keys are in the totals");
    let estimated: f64 = run.estimate.values().sum();
    let sd: f64 = run.variance.values().sum::<f64>().sqrt();
    assert!((estimated - total as f64).abs() < 4.0 * sd, "total {total}, estimated {estimated} ± {sd}");
    let late: u64 = run.kept_per_second[5..].iter().sum::<u64>() / 55;
    assert!((1_800..=2_200).contains(&late), "{late} per second");
}

#[test]
fn quiet_keys_are_forgotten_and_counted() {
    let config = AdaptiveConfig { interval: Span::from_secs(1), smoothing: 0.5, ..AdaptiveConfig::default() };
    let mut s = AdaptiveSampler::new(config).unwrap();
    s.sample("once", t(0));
    s.sample("busy", t(500));
    for second in 1..20 {
        s.sample("busy", t(second * 1_000));
    }
    assert_eq!(s.tracked_keys(), 1);
    assert_eq!(s.stats().keys_expired, 1);
    // A long silence closes many intervals at once.
    s.sample("busy", t(3_600_000));
    assert_eq!(s.stats().intervals, 3_600);
}

#[test]
fn sampled_weights_keep_window_counts_and_sums_unbiased() {
    let spec = WindowSpec::new(Span::from_secs(60)).field(FieldSpec::new("v")).idle_timeout(Some(Span::from_secs(1)));
    let mut windows = Windows::new(spec).unwrap();
    let mut batch = EventBatch::new();
    let mut rng = TestRng(99);
    let mut true_sum = 0.0;
    for i in 0..50_000 {
        let v = (rng.unit() * 100.0).round();
        true_sum += v;
        batch.push(&Event::new("acme", "m", t(i)).with_id(format!("e{i}")).with_field("v", v));
    }
    let mut sampler = HashSampler::new(0.05, HashKey::Id).unwrap();
    let mut weights = Vec::new();
    sampler.weigh_batch(&batch, &mut weights);
    // The batch helper decides and counts as deciding one event at a time.
    let mut one_by_one = HashSampler::new(0.05, HashKey::Id).unwrap();
    let each: Vec<f64> = batch.iter().map(|e| one_by_one.sample_event(&e).weight()).collect();
    assert_eq!(each, weights);
    assert_eq!(one_by_one.stats(), sampler.stats());
    let removed = batch.retain_sampled(&mut weights).unwrap();
    assert_eq!(removed as u64, sampler.stats().dropped);
    assert_eq!((sampler.stats().seen, sampler.stats().kept), (50_000, batch.len() as u64));
    let mut late = Vec::new();
    windows.push_weighted(&batch, &weights, t(0), &mut late).unwrap();
    windows.advance(t(10_000_000));
    let result = windows.poll_result().unwrap();
    assert_eq!(result.events, batch.len() as u64);
    // Horvitz-Thompson standard errors of the weighted count and sum.
    let (mut var_count, mut var_sum) = (0.0, 0.0);
    for (e, w) in batch.iter().zip(&weights) {
        let v = e.field("v").unwrap();
        var_count += w * w - w;
        var_sum += (w * w - w) * v * v;
    }
    assert!((result.count - 50_000.0).abs() < 4.0 * var_count.sqrt(), "count {}", result.count);
    let sum = result.field("v").unwrap().scalar.sum().unwrap();
    assert!((sum - true_sum).abs() < 4.0 * var_sum.sqrt(), "sum {sum} vs {true_sum} ± {}", var_sum.sqrt());
    assert_eq!(batch.retain_sampled(&mut vec![1.0]), None, "weights must match the batch");
}

proptest! {
    #[test]
    fn hash_decisions_are_pure_and_monotone_in_the_rate(
        id in prop::collection::vec(any::<u8>(), 0..40), seed in any::<u64>(), a in 0.0f64..=1.0, b in 0.0f64..=1.0,
    ) {
        let (lo, hi) = (a.min(b), a.max(b));
        let low = HashSampler::new(lo, HashKey::Id).unwrap().with_seed(seed);
        let high = HashSampler::new(hi, HashKey::Id).unwrap().with_seed(seed);
        prop_assert_eq!(low.keeps(&id), low.keeps(&id));
        prop_assert!(!low.keeps(&id) || high.keeps(&id));
    }

    #[test]
    fn a_reservoir_holds_min_k_n_distinct_offered_items(k in 0usize..20, n in 0u32..200, seed in any::<u64>()) {
        let mut r = Reservoir::new(k, seed);
        for i in 0..n {
            r.offer(i);
        }
        let mut items = r.items().to_vec();
        prop_assert_eq!(items.len(), k.min(n as usize));
        items.sort_unstable();
        items.dedup();
        prop_assert_eq!(items.len(), k.min(n as usize));
        prop_assert!(items.iter().all(|&i| i < n));
        prop_assert_eq!(r.seen(), u64::from(n));
    }

    #[test]
    fn adaptive_weights_are_at_least_one_and_every_event_is_counted(
        keys in prop::collection::vec(0u8..20, 1..500), target in 1.0f64..100.0, max_keys in 1usize..30,
    ) {
        let config = AdaptiveConfig { target_rate: target, interval: Span::from_secs(1), max_keys, ..AdaptiveConfig::default() };
        let mut s = AdaptiveSampler::new(config).unwrap();
        for (i, key) in keys.iter().enumerate() {
            let decision = s.sample(key, t(i as i64 * 37));
            if let Sampled::Keep { weight } = decision {
                prop_assert!(weight >= 1.0 && weight.is_finite());
            }
        }
        let stats = s.stats();
        prop_assert_eq!(stats.decisions.seen, keys.len() as u64);
        prop_assert_eq!(stats.decisions.kept + stats.decisions.dropped, stats.decisions.seen);
        prop_assert!(s.tracked_keys() <= max_keys);
    }
}

/// The same values `tests/wasm/sampling/check.mjs` checks in a wasm32 build
/// of `tests/wasm/sampling`: both platforms must agree.
#[test]
fn the_wasm_contract_values_hold_natively() {
    let digest =
        (0..100_000u32).fold(0u64, |acc, i| acc.rotate_left(5) ^ stable_hash(42, format!("evt-{i}").as_bytes()));
    let sampler = HashSampler::new(0.1, HashKey::Id).unwrap();
    let kept = (0..1_000_000u32).filter(|i| sampler.keeps(format!("evt-{i}").as_bytes())).count();
    assert_eq!((digest, kept), (14_531_974_944_059_878_806, 99_739));
}

#[test]
fn a_flood_after_a_lull_is_throttled_within_the_interval() {
    let config = AdaptiveConfig { target_rate: 10.0, interval: Span::from_secs(1), ..AdaptiveConfig::default() };
    let mut s = AdaptiveSampler::new(config).unwrap();
    s.sample("a", t(0));
    for _ in 0..10_000 {
        s.sample("b", t(1_001));
    }
    // The level is capped at the budget (10): about 10 × (1 + ln 1,000) ≈ 80 kept.
    assert_eq!(s.level(), 10.0);
    assert!(s.stats().decisions.kept < 150, "{:?}", s.stats());
}

#[test]
fn content_hashes_ignore_the_order_of_dims_and_fields() {
    let mut s = HashSampler::new(0.5, HashKey::Id).unwrap();
    let mut differ = 0;
    for i in 0..1_000 {
        let base = Event::new("acme", "m", t(i));
        let a = base.clone().with_dim("x", "1").with_dim("y", "2").with_field("u", 1.0).with_field("v", 2.0);
        let b = base.with_dim("y", "2").with_dim("x", "1").with_field("v", 2.0).with_field("u", 1.0);
        let mut batch = EventBatch::new();
        batch.push(&a);
        batch.push(&b);
        let decisions: Vec<bool> = batch.iter().map(|e| s.sample_event(&e).is_kept()).collect();
        differ += usize::from(decisions[0] != decisions[1]);
    }
    assert_eq!(differ, 0);
}
