//! Reservoir sampling, Algorithm L.

use crate::sample::Rng;

/// A uniform random sample of up to `k` items from a stream of unknown
/// length: after `n` offers, every offered item is in the sample with
/// probability `k / n`.
///
/// Algorithm L (Li, 1994): instead of drawing for every item, the
/// reservoir draws how many items to skip, so an offer is a counter
/// increment most of the time and the expected number of random draws
/// is O(k log(n / k)). The generator is seeded, so a replay keeps the same
/// items.
///
/// Each kept item stands for [`Reservoir::weight`] items. For "example
/// events" per window, keep one reservoir per window and [`take`] it when
/// the window closes.
///
/// [`take`]: Reservoir::take
///
/// ```
/// use edgestream::sample::Reservoir;
///
/// let mut examples = Reservoir::new(3, 7);
/// for i in 0..1_000 {
///     examples.offer(i);
/// }
/// assert_eq!(examples.items().len(), 3);
/// assert_eq!(examples.seen(), 1_000);
/// assert!((examples.weight() - 1_000.0 / 3.0).abs() < 1e-9);
/// ```
#[derive(Clone, Debug)]
pub struct Reservoir<T> {
    k: usize,
    items: Vec<T>,
    seen: u64,
    /// Algorithm L's running `W`.
    w: f64,
    /// The 1-based index of the next item to take in.
    next: u64,
    rng: Rng,
}

impl<T> Reservoir<T> {
    /// An empty reservoir of `k` items (0 keeps nothing but still counts),
    /// with a seeded generator.
    pub fn new(k: usize, seed: u64) -> Self {
        Reservoir { k, items: Vec::with_capacity(k.min(1024)), seen: 0, w: 1.0, next: 0, rng: Rng::new(seed) }
    }

    /// Offers an item; returns whether it went into the sample (it may be
    /// replaced later).
    pub fn offer(&mut self, item: T) -> bool {
        self.seen = self.seen.saturating_add(1);
        if self.items.len() < self.k {
            self.items.push(item);
            if self.items.len() == self.k {
                self.w = (self.rng.next_open_f64().ln() / self.k as f64).exp();
                self.next = self.skip_from(self.seen);
            }
            return true;
        }
        if self.k == 0 || self.seen != self.next {
            return false;
        }
        let slot = self.rng.below(self.k);
        if let Some(old) = self.items.get_mut(slot) {
            *old = item;
        }
        self.w *= (self.rng.next_open_f64().ln() / self.k as f64).exp();
        self.next = self.skip_from(self.seen);
        true
    }

    /// The index of the next item to take after item `from`.
    fn skip_from(&mut self, from: u64) -> u64 {
        let skip = (self.rng.next_open_f64().ln() / (1.0 - self.w).ln()).floor();
        // `W` can only underflow to 0 after astronomically many items: the
        // skip is then infinite. `as` saturates large finite skips.
        let skip = if skip.is_finite() { skip as u64 } else { u64::MAX };
        from.saturating_add(skip).saturating_add(1)
    }

    /// The sample, in no particular order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Items offered since the reservoir was created or taken.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// How many offered items each kept item stands for (`seen / len`, 0
    /// when empty).
    pub fn weight(&self) -> f64 {
        if self.items.is_empty() { 0.0 } else { self.seen as f64 / self.items.len() as f64 }
    }

    /// Takes the sample and starts over (the generator continues, so
    /// consecutive windows get independent samples).
    pub fn take(&mut self) -> Vec<T> {
        self.seen = 0;
        self.w = 1.0;
        self.next = 0;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.k.min(1024)))
    }
}
