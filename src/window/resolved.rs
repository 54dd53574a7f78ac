//! Batches of events whose groups are already resolved.

use super::tumbling::{GroupHandle, PushError, WindowSpec, check_weight};
use crate::time::Timestamp;

/// Events of groups resolved by [`Windows::resolve`](super::Windows::resolve),
/// column by column, for
/// [`Windows::push_resolved_batch`](super::Windows::push_resolved_batch):
/// per event its group, its time, its weight and one value per field of
/// the operator's [`WindowSpec::fields`], in order.
///
/// A host that resolves each group once (an auction id, a device id it
/// already holds) and then only has numbers to aggregate fills one of
/// these per batch: the operator checks the batch's handles in one pass
/// (bringing the groups' entries into cache) and then records event after
/// event without a call each. The batch remembers how many of its events were
/// aggregated, so that a push stopped by a stale group goes on from it
/// (see [`Windows::push_resolved_batch`](super::Windows::push_resolved_batch)).
///
/// ```
/// use edgestream::time::{Span, Timestamp};
/// use edgestream::window::{FieldSpec, ResolvedBatch, WindowSpec, Windows};
///
/// let spec = WindowSpec::new(Span::from_secs(1)).group_by(["device"]).field(FieldSpec::new("celsius"));
/// let mut windows = Windows::new(spec)?;
/// let sensor = windows.resolve("acme", "metrics", &["sensor-1"]);
/// let at = |ms| Timestamp::UNIX_EPOCH.saturating_add(Span::from_millis(ms));
/// let mut batch = ResolvedBatch::for_spec(windows.spec());
/// batch.push(sensor, at(1_200), &[21.5]);
/// batch.push_weighted(sensor, at(1_700), &[22.5], 4.0)?;
/// windows.push_resolved_batch(&mut batch, Timestamp::UNIX_EPOCH, &mut Vec::new())?;
/// assert_eq!(windows.stats().on_time, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ResolvedBatch {
    /// Values per event (`values` holds `fields` per event, NaN for none).
    fields: usize,
    events: Vec<Resolved>,
    values: Vec<f64>,
    /// Events already aggregated, from the first.
    pushed: usize,
}

/// One event of a [`ResolvedBatch`], but its values.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resolved {
    pub(super) group: GroupHandle,
    pub(super) ts: Timestamp,
    pub(super) weight: f64,
}

impl ResolvedBatch {
    /// An empty batch of events with `fields` values each: the length of
    /// the operator's [`WindowSpec::fields`] (what
    /// [`ResolvedBatch::for_spec`] takes; values for fields the spec does
    /// not have are ignored, fields the batch lacks get no value). At most
    /// [`WindowSpec::MAX_FIELDS`] are kept, as no spec has more.
    pub fn new(fields: usize) -> Self {
        ResolvedBatch { fields: fields.min(WindowSpec::MAX_FIELDS), events: Vec::new(), values: Vec::new(), pushed: 0 }
    }

    /// An empty batch with one value per field of `spec`, in its order.
    pub fn for_spec(spec: &WindowSpec) -> Self {
        ResolvedBatch::new(spec.fields.len())
    }

    /// Values per event.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// As [`ResolvedBatch::new`], with room for `events` events.
    pub fn with_capacity(fields: usize, events: usize) -> Self {
        let mut batch = ResolvedBatch::new(fields);
        batch.events.reserve(events);
        batch.values.reserve(events.saturating_mul(batch.fields));
        batch
    }

    /// Adds an event of `group` at `ts` with weight 1. `values` holds one
    /// value per field (NaN for "no value"); a shorter slice leaves the
    /// rest without value, values past the batch's field count are ignored.
    #[inline]
    pub fn push(&mut self, group: GroupHandle, ts: Timestamp, values: &[f64]) {
        self.events.push(Resolved { group, ts, weight: 1.0 });
        for i in 0..self.fields {
            self.values.push(values.get(i).copied().unwrap_or(f64::NAN));
        }
    }

    /// As [`ResolvedBatch::push`], with a weight as in
    /// [`Windows::push_weighted`](super::Windows::push_weighted). Fails,
    /// adding nothing, unless the weight is finite and positive (the error
    /// names the index the event would have had).
    pub fn push_weighted(
        &mut self,
        group: GroupHandle,
        ts: Timestamp,
        values: &[f64],
        weight: f64,
    ) -> Result<(), PushError> {
        check_weight(self.len(), weight)?;
        self.push(group, ts, values);
        if let Some(e) = self.events.last_mut() {
            e.weight = weight;
        }
        Ok(())
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events already aggregated by
    /// [`Windows::push_resolved_batch`](super::Windows::push_resolved_batch),
    /// from the first: all of them after a push that succeeded, those
    /// before the stale one after [`PushError::StaleGroup`].
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// Removes every event, keeping the allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.values.clear();
        self.pushed = 0;
    }

    /// The group of event `index`.
    pub fn group(&self, index: usize) -> Option<GroupHandle> {
        self.events.get(index).map(|e| e.group)
    }

    /// Gives every event of group `old` the group `new` instead, and says
    /// how many it changed: after [`PushError::StaleGroup`], resolve the
    /// stale group again, replace it, and push the batch again. (It scans
    /// the whole batch: a host with many stale handles, after a restore
    /// say, does better to check them with
    /// [`Windows::is_current`](super::Windows::is_current) before filling
    /// the batch.)
    pub fn replace_group(&mut self, old: GroupHandle, new: GroupHandle) -> usize {
        let mut changed = 0;
        for e in self.events.iter_mut().filter(|e| e.group == old) {
            e.group = new;
            changed += 1;
        }
        changed
    }

    pub(super) fn set_pushed(&mut self, pushed: usize) {
        self.pushed = pushed.min(self.events.len());
    }

    pub(super) fn events(&self) -> &[Resolved] {
        &self.events
    }

    /// The values of events `range`, each event's fields in a row.
    #[inline]
    pub(super) fn values_of(&self, range: core::ops::Range<usize>) -> Option<&[f64]> {
        self.values.get(range.start.checked_mul(self.fields)?..range.end.checked_mul(self.fields)?)
    }

    /// The value of each field of event `index`.
    #[inline]
    pub(super) fn values(&self, index: usize) -> &[f64] {
        self.values_of(index..index.saturating_add(1)).unwrap_or_default()
    }
}
