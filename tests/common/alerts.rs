//! Window results built by hand, for alert tests and benches.

use std::sync::Arc;

use edgestream::time::{Span, Timestamp};
use edgestream::window::agg::Scalar;
use edgestream::window::{FieldResult, GroupKey, WindowResult};
use smallvec::SmallVec;

/// A group of tenant `t`, stream `s` with the given labels.
pub(crate) fn group(labels: &[(&str, &str)]) -> Arc<GroupKey> {
    group_of("t", "s", labels)
}

pub(crate) fn group_of(tenant: &str, stream: &str, labels: &[(&str, &str)]) -> Arc<GroupKey> {
    Arc::new(GroupKey {
        tenant: Arc::from(tenant),
        stream: Arc::from(stream),
        labels: labels.iter().map(|(k, v)| (Arc::from(*k), Arc::from(*v))).collect(),
        overflow: false,
    })
}

/// The final result of window `[index·size, (index+1)·size)` with field
/// `x` holding the single value `value` (so every aggregate reads it).
pub(crate) fn result(group: &Arc<GroupKey>, size: Span, index: i64, value: f64) -> WindowResult {
    values(group, size, index, &[value])
}

/// Like [`result`] with several values of `x` in the window.
pub(crate) fn values(group: &Arc<GroupKey>, size: Span, index: i64, xs: &[f64]) -> WindowResult {
    let start = Timestamp::from_nanos(size.as_nanos() * index);
    let end = Timestamp::from_nanos(size.as_nanos() * (index + 1));
    let mut scalar = Scalar::new();
    for &x in xs {
        scalar.record(x, 1.0, start);
    }
    let mut fields = SmallVec::new();
    fields.push(FieldResult { field: Arc::from("x"), scalar, quantiles: Vec::new(), sketch: None });
    WindowResult {
        group: Arc::clone(group),
        start,
        end,
        revision: 0,
        is_final: true,
        events: xs.len() as u64,
        count: xs.len() as f64,
        fields,
    }
}

pub(crate) fn minutes(n: i64) -> Timestamp {
    Timestamp::from_secs(60 * n).unwrap()
}
