//! Window states in one flat array of 64-bit words, a slot per (group,
//! window): a three-word header, then each field's aggregates, only those
//! its [`FieldSpec::aggregates`] keep. Words live in 64-byte aligned blocks,
//! and slots of up to eight words are padded to four or eight, so such a
//! slot (the header and a field's count, sum, min and max, say) lies in one
//! cache line and recording an event touches that one line.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::agg::{Aggregates, QuantileConfig, Quantiles, Scalar, add_compensated, later};
use super::tumbling::FieldSpec;
use crate::time::Timestamp;

/// The id of a group in [`super::Windows`].
pub(super) type GroupId = u32;

/// What a window holds besides its field aggregates, as snapshots store it.
/// In the slab it packs into [`HEADER`] words.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
pub(super) struct Header {
    /// The group owning this slot. Not in snapshots: a window's snapshot
    /// entry already names it.
    #[serde(skip)]
    pub(super) group: GroupId,
    /// Emissions so far.
    pub(super) emitted: u32,
    pub(super) events: u64,
    pub(super) count: f64,
    /// Changed since its last emission.
    pub(super) dirty: bool,
    /// Emitted as final at least once (later final emissions are corrections).
    pub(super) closed_once: bool,
}

/// Words of a slot's header: the group and the link to the next slot of
/// its window; the events, emissions and flags; the weighted count.
const HEADER: usize = 3;
const META: u8 = 0;
const TALLY: u8 = 1;
const COUNT: u8 = 2;
/// In the meta word: the group in the low 32 bits, the next slot of the
/// window's [`Chain`] in the high 32.
const NEXT_SHIFT: u32 = 32;
const GROUP_MASK: u64 = (1 << NEXT_SHIFT) - 1;
/// In the tally word: the events in the low 38 bits, the emissions in the
/// next 24 (both saturating), then the two flags.
const EVENTS_MAX: u64 = (1 << 38) - 1;
const EMITTED_SHIFT: u32 = 38;
/// The most emissions a slot counts: revisions stop there.
const EMITTED_MAX: u32 = (1 << 24) - 1;
const DIRTY: u64 = 1 << 62;
const CLOSED_ONCE: u64 = 1 << 63;

/// Where one field's aggregates sit in a slot, as word offsets from its
/// start (`NONE` when not kept; no lane is at offset 0, the header's): the
/// count always; the sum and its compensation (two words) for a sum or a
/// mean; min; max; the last value and its time (two words).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Lanes {
    kept: Aggregates,
    count: u8,
    sum: u8,
    min: u8,
    max: u8,
    last: u8,
}

const NONE: u8 = 0;

/// Which of sum, min and max a field alone in its slot keeps (see
/// [`Lanes::alone`]).
pub(super) type Alone = (bool, bool, bool);

impl Lanes {
    /// The lanes of a field alone in a slot, keeping `kept` with (`sum`,
    /// `min`, `max`) and no last value, as [`Slab::new`] lays them out:
    /// the offsets follow from the three flags. Called with constant flags,
    /// recording through them compiles to loads and stores at fixed
    /// offsets, without the tests for lanes not kept.
    #[inline(always)]
    const fn alone(kept: Aggregates, (sum, min, max): Alone) -> Lanes {
        let count = HEADER as u8;
        let after_sum = count + 1 + if sum { 2 } else { 0 };
        let after_min = after_sum + if min { 1 } else { 0 };
        Lanes {
            kept,
            count,
            sum: if sum { count + 1 } else { NONE },
            min: if min { after_sum } else { NONE },
            max: if max { after_min } else { NONE },
            last: NONE,
        }
    }

    /// Records `value` of weight `weight` at `ts` into the words `w`.
    #[inline(always)]
    fn record(&self, w: &mut impl Words, value: f64, weight: f64, ts: Timestamp) {
        w.add(self.count, weight);
        if self.sum != NONE {
            let (mut sum, mut err) = (w.float(self.sum), w.float(self.sum + 1));
            sum = add_compensated(sum, &mut err, value * weight);
            w.set(self.sum, sum.to_bits());
            w.set(self.sum + 1, err.to_bits());
        }
        if self.min != NONE {
            w.set(self.min, w.float(self.min).min(value).to_bits());
        }
        if self.max != NONE {
            w.set(self.max, w.float(self.max).max(value).to_bits());
        }
        if self.last != NONE {
            let held = (Timestamp::from_nanos(w.get(self.last + 1) as i64), w.float(self.last));
            let (ts, v) = later(held, (ts, value));
            w.set(self.last, v.to_bits());
            w.set(self.last + 1, ts.as_nanos() as u64);
        }
    }
}

/// A slot's words, by offset from its first.
trait Words {
    fn get(&self, at: u8) -> u64;
    fn set(&mut self, at: u8, v: u64);

    #[inline(always)]
    fn float(&self, at: u8) -> f64 {
        f64::from_bits(self.get(at))
    }

    #[inline(always)]
    fn add(&mut self, at: u8, x: f64) {
        self.set(at, (self.float(at) + x).to_bits());
    }
}

/// A slot inside one block, from word `from` of it: every slot of four or
/// eight words (see [`Slab::new`]), where masking the index proves it in
/// bounds.
struct InBlock<'a> {
    block: &'a mut [u64; 8],
    from: usize,
}

impl Words for InBlock<'_> {
    #[inline(always)]
    fn get(&self, at: u8) -> u64 {
        self.block.get((self.from + usize::from(at)) & 7).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn set(&mut self, at: u8, v: u64) {
        if let Some(w) = self.block.get_mut((self.from + usize::from(at)) & 7) {
            *w = v;
        }
    }
}

/// A slot anywhere: its first word is word `from` of `blocks`.
struct Spanning<'a> {
    blocks: &'a mut [Block],
    from: usize,
}

impl Words for Spanning<'_> {
    #[inline(always)]
    fn get(&self, at: u8) -> u64 {
        word_at(self.blocks, self.from + usize::from(at))
    }

    #[inline(always)]
    fn set(&mut self, at: u8, v: u64) {
        let w = self.from + usize::from(at);
        if let Some(x) = self.blocks.get_mut(w >> 3).and_then(|b| b.0.get_mut(w & 7)) {
            *x = v;
        }
    }
}

/// Word `w` of `blocks` (0 past the end).
#[inline(always)]
fn word_at(blocks: &[Block], w: usize) -> u64 {
    blocks.get(w >> 3).and_then(|b| b.0.get(w & 7)).copied().unwrap_or(0)
}

/// One event being recorded: its weight, its time (for the last value),
/// and whether to mark its state dirty (see [`Slab::record`]).
#[derive(Clone, Copy)]
pub(super) struct Event {
    pub(super) weight: f64,
    pub(super) ts: Timestamp,
    pub(super) mark: bool,
}

impl Event {
    /// Records the event into the slot `w` (and its values into the slot's
    /// `sketches`, empty or one per field); true when it marked the slot.
    #[inline(always)]
    fn record(
        self,
        w: &mut impl Words,
        lanes: &[Lanes],
        sketches: &mut [Option<Box<Quantiles>>],
        value: impl Fn(usize) -> Option<f64>,
    ) -> bool {
        // Two loops, so that operators without quantiles skip what
        // recording into a sketch costs even before it looks at a value.
        if sketches.is_empty() {
            for (i, l) in lanes.iter().enumerate() {
                if let Some(v) = value(i) {
                    l.record(w, v, self.weight, self.ts);
                }
            }
        } else {
            for (i, l) in lanes.iter().enumerate() {
                if let Some(v) = value(i) {
                    l.record(w, v, self.weight, self.ts);
                    if let Some(Some(q)) = sketches.get_mut(i) {
                        q.record(v, self.weight);
                    }
                }
            }
        }
        // One word counts the event and carries the dirty flag.
        let tally = w.get(TALLY);
        let counted = tally + u64::from(tally & EVENTS_MAX != EVENTS_MAX);
        w.set(TALLY, if self.mark { counted | DIRTY } else { counted });
        w.add(COUNT, self.weight);
        self.mark && tally & DIRTY == 0
    }
}

/// How a loop over events records into a [`Slab`], chosen once per batch
/// (see [`Slab::record_as`]): [`AnyLayout`] through [`Slab::record`],
/// [`Fixed`] at the fixed offsets of [`Slab::record_fixed`] (only for the
/// slab's own [`Slab::alone`]).
pub(super) trait Layout: Copy {
    /// The [`Slab::alone`] this layout records for; `None`: any slab.
    const FIXED: Option<Alone>;
}

/// Evaluates `$body` with `$layout` bound to the [`Layout`] for `$alone`
/// (a slab's [`Slab::alone`]): a [`Fixed`] with its flags as constants,
/// or [`AnyLayout`] for `None`. Each arm is its own copy of `$body`, so a
/// loop in it is compiled for that layout.
macro_rules! by_layout {
    ($alone:expr, $layout:ident => $body:expr) => {
        // A count alone takes four words, so `Slab::new` never chooses the
        // fixed layout for it; its arm completes the match.
        by_layout!(@arms $alone, $layout, $body;
            (true, true, true) (true, true, false) (true, false, true) (true, false, false)
            (false, true, true) (false, true, false) (false, false, true) (false, false, false))
    };
    (@arms $alone:expr, $layout:ident, $body:expr; $(($sum:literal, $min:literal, $max:literal))*) => {
        match $alone {
            $(Some(($sum, $min, $max)) => {
                let $layout = $crate::window::slab::Fixed::<$sum, $min, $max>;
                $body
            })*
            None => {
                let $layout = $crate::window::slab::AnyLayout;
                $body
            }
        }
    };
}
pub(super) use by_layout;

/// Any slab, through [`Slab::record`].
#[derive(Clone, Copy)]
pub(super) struct AnyLayout;

impl Layout for AnyLayout {
    const FIXED: Option<Alone> = None;
}

/// A slab whose [`Slab::alone`] is `(SUM, MIN, MAX)`.
#[derive(Clone, Copy)]
pub(super) struct Fixed<const SUM: bool, const MIN: bool, const MAX: bool>;

impl<const SUM: bool, const MIN: bool, const MAX: bool> Layout for Fixed<SUM, MIN, MAX> {
    const FIXED: Option<Alone> = Some((SUM, MIN, MAX));
}

/// A list of slots linked through their headers: the states of one window,
/// in the order they opened, with no memory of its own per state.
#[derive(Clone, Copy, Default)]
pub(super) struct Chain {
    head: u32,
    tail: u32,
    len: u32,
}

/// A 64-byte aligned run of eight words.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([u64; 8]);

/// The window states of an operator, addressed by slot.
pub(super) struct Slab {
    /// Words per slot.
    stride: usize,
    lanes: SmallVec<[Lanes; 2]>,
    /// The words of a fresh slot (without its group).
    blank: SmallVec<[u64; 16]>,
    blocks: Vec<Block>,
    /// Slots handed out so far (live or free).
    slots: usize,
    free: Vec<u32>,
    /// Per field, the sketch config if it asks for quantiles.
    sketch_configs: SmallVec<[Option<QuantileConfig>; 2]>,
    /// `width` per slot; empty when no field asks for quantiles. Boxed so
    /// that a final result can take a sketch without copying it.
    sketches: Vec<Option<Box<Quantiles>>>,
    /// For one field without a last value in slots of one block each (a
    /// count, sum, min and max, say): which of sum, min and max it keeps,
    /// so that [`Slab::record`] writes it at fixed offsets.
    alone: Option<Alone>,
}

impl Slab {
    pub(super) fn new(fields: &[FieldSpec], quantile_config: QuantileConfig) -> Self {
        let mut stride = HEADER;
        let mut take = |n: usize| {
            stride += n;
            // At most 3 + 7 × `WindowSpec::MAX_FIELDS` = 213 words (checked
            // by `Windows::new`), so every offset fits a byte.
            u8::try_from(stride - n).unwrap_or(NONE)
        };
        let lanes: SmallVec<[Lanes; 2]> = fields
            .iter()
            .map(|f| {
                let kept = f.aggregates;
                let mut lane = |keep: bool, n: usize| if keep { take(n) } else { NONE };
                Lanes {
                    kept,
                    count: lane(true, 1),
                    sum: lane(kept.sums(), 2),
                    min: lane(kept.contains(Aggregates::MIN), 1),
                    max: lane(kept.contains(Aggregates::MAX), 1),
                    last: lane(kept.contains(Aggregates::LAST), 2),
                }
            })
            .collect();
        // A slot of up to eight words takes four or eight, so that no slot
        // crosses a block (a cache line); longer ones pack densely.
        let stride = match stride {
            ..=4 => 4,
            5..=8 => 8,
            longer => longer,
        };
        let mut blank: SmallVec<[u64; 16]> = SmallVec::from_elem(0, stride);
        let mut put = |at: u8, plus: usize, v: u64| {
            if at != NONE
                && let Some(w) = blank.get_mut(usize::from(at) + plus)
            {
                *w = v;
            }
        };
        for l in &lanes {
            put(l.min, 0, f64::INFINITY.to_bits());
            put(l.max, 0, f64::NEG_INFINITY.to_bits());
            put(l.last, 0, f64::NEG_INFINITY.to_bits());
            put(l.last, 1, Timestamp::MIN.as_nanos() as u64);
        }
        let sketch_configs = fields.iter().map(|f| (!f.quantiles.is_empty()).then_some(quantile_config)).collect();
        // Only when the layout above is the one `Lanes::alone` names.
        let alone = match lanes.as_slice() {
            [l] if stride == 8 => {
                let flags = (l.sum != NONE, l.min != NONE, l.max != NONE);
                (*l == Lanes::alone(l.kept, flags)).then_some(flags)
            }
            _ => None,
        };
        Slab {
            stride,
            lanes,
            blank,
            blocks: Vec::new(),
            slots: 0,
            free: Vec::new(),
            sketch_configs,
            sketches: Vec::new(),
            alone,
        }
    }

    /// Fields per slot.
    pub(super) fn width(&self) -> usize {
        self.lanes.len()
    }

    /// Bytes of state per slot, sketches aside.
    #[cfg(test)]
    pub(super) fn slot_bytes(&self) -> usize {
        self.stride * 8
    }

    pub(super) fn has_sketches(&self) -> bool {
        self.sketch_configs.iter().any(Option::is_some)
    }

    /// Live slots.
    pub(super) fn live(&self) -> usize {
        self.slots - self.free.len()
    }

    /// Slots ever handed out: every slot is below this.
    pub(super) fn capacity(&self) -> usize {
        self.slots
    }

    #[inline]
    fn word(&self, slot: u32, at: u8) -> u64 {
        word_at(&self.blocks, slot as usize * self.stride + usize::from(at))
    }

    fn set(&mut self, slot: u32, at: u8, v: u64) {
        Spanning { blocks: &mut self.blocks, from: slot as usize * self.stride }.set(at, v);
    }

    fn float(&self, slot: u32, at: u8) -> f64 {
        f64::from_bits(self.word(slot, at))
    }

    /// A fresh state for `group`, its sketches with room for `exact`
    /// exact values each (see [`Quantiles::reserve_exact_values`]).
    pub(super) fn alloc(&mut self, group: GroupId, exact: usize) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots += 1;
                self.blocks.resize((self.slots * self.stride).div_ceil(8), Block::default());
                if self.has_sketches() {
                    self.sketches.resize(self.slots * self.width(), None);
                }
                (self.slots - 1) as u32
            }
        };
        let from = slot as usize * self.stride;
        let mut words = Spanning { blocks: &mut self.blocks, from };
        match words.blocks.get_mut(from >> 3).and_then(|b| b.0.get_mut(from & 7..(from & 7) + self.stride)) {
            // Within one block (slots of four or eight words): a copy.
            Some(dst) => dst.iter_mut().zip(&self.blank).for_each(|(d, &v)| *d = v),
            None => (0..=u8::MAX).zip(&self.blank).for_each(|(at, &v)| words.set(at, v)),
        }
        words.set(META, u64::from(group));
        let base = slot as usize * self.width();
        if let Some(sketches) = self.sketches.get_mut(base..base + self.sketch_configs.len()) {
            for (q, config) in sketches.iter_mut().zip(&self.sketch_configs) {
                *q = config.map(|c| {
                    let mut sketch = Box::new(Quantiles::new(c));
                    sketch.reserve_exact_values(exact);
                    sketch
                });
            }
        }
        slot
    }

    pub(super) fn release(&mut self, slot: u32) {
        let base = slot as usize * self.width();
        // Drop the histograms now rather than on reuse.
        if let Some(sketches) = self.sketches.get_mut(base..base + self.sketch_configs.len()) {
            sketches.fill(None);
        }
        self.free.push(slot);
    }

    /// The group owning `slot`.
    #[inline]
    pub(super) fn group(&self, slot: u32) -> GroupId {
        self.word(slot, META) as GroupId
    }

    pub(super) fn is_dirty(&self, slot: u32) -> bool {
        self.word(slot, TALLY) & DIRTY != 0
    }

    /// Appends `slot` to `chain`.
    pub(super) fn link(&mut self, chain: &mut Chain, slot: u32) {
        if chain.len == 0 {
            chain.head = slot;
        } else {
            let tail = chain.tail;
            let meta = self.word(tail, META);
            self.set(tail, META, meta & GROUP_MASK | u64::from(slot) << NEXT_SHIFT);
        }
        chain.tail = slot;
        chain.len = chain.len.saturating_add(1);
    }

    /// The slot after `slot` in its chain (meaningless for a chain's last).
    #[inline]
    fn next(&self, slot: u32) -> u32 {
        (self.word(slot, META) >> NEXT_SHIFT) as u32
    }

    /// The slots of `chain`, in the order they were linked.
    pub(super) fn chain(&self, chain: &Chain) -> impl Iterator<Item = u32> + '_ {
        let mut at = chain.head;
        (0..chain.len).map(move |_| {
            let slot = at;
            at = self.next(slot);
            slot
        })
    }

    /// Counts `event` in `slot`'s window and records its values
    /// (`value(i)` for field `i`, if it has one), in the sketches too; true
    /// when the event asks to mark the state dirty (changed since its last
    /// emission) and it was clean.
    #[inline]
    pub(super) fn record(&mut self, slot: u32, event: Event, value: impl Fn(usize) -> Option<f64>) -> bool {
        if let Some(flags) = self.alone {
            return self.record_alone(flags, slot, event, value);
        }
        let from = slot as usize * self.stride;
        let width = self.lanes.len();
        // The slot's sketches (none when no field asks for quantiles).
        let sketches = self.sketches.get_mut(slot as usize * width..(slot as usize + 1) * width).unwrap_or_default();
        if (from & 7) + self.stride <= 8 {
            match self.blocks.get_mut(from >> 3) {
                Some(b) => event.record(&mut InBlock { block: &mut b.0, from: from & 7 }, &self.lanes, sketches, value),
                None => false,
            }
        } else {
            event.record(&mut Spanning { blocks: &mut self.blocks, from }, &self.lanes, sketches, value)
        }
    }

    /// [`Slab::record`] for a field alone in slots of one block, which
    /// keeps `flags` (see [`Slab::alone`]): each case passes its flags as
    /// constants. Out of line, so that its eight cases do not swell the
    /// loops that call `record`.
    #[inline(never)]
    fn record_alone(&mut self, flags: Alone, slot: u32, event: Event, value: impl Fn(usize) -> Option<f64>) -> bool {
        by_layout!(Some(flags), layout => self.record_as(layout, slot, event, value))
    }

    /// [`Slab::record`] as `layout` does it: with a [`Fixed`] layout (the
    /// slab's own), inline at offsets fixed when this is compiled.
    #[inline(always)]
    pub(super) fn record_as<L: Layout>(
        &mut self,
        _layout: L,
        slot: u32,
        event: Event,
        value: impl Fn(usize) -> Option<f64>,
    ) -> bool {
        match L::FIXED {
            Some(flags) => self.record_fixed(flags, slot, event, value),
            None => self.record(slot, event, value),
        }
    }

    /// [`Slab::record`] for a field alone in slots of one block that keeps
    /// sum, min and max as `flags` say: only for the flags of
    /// [`Slab::alone`], and given as constants so that the offsets fold.
    #[inline(always)]
    fn record_fixed(&mut self, flags: Alone, slot: u32, event: Event, value: impl Fn(usize) -> Option<f64>) -> bool {
        // A slot of eight words is block `slot`, and its one sketch (if
        // the field asks for quantiles) is sketch `slot`.
        let slot = slot as usize;
        let Some(b) = self.blocks.get_mut(slot) else { return false };
        let kept = self.lanes.first().map_or(Aggregates::COUNT, |l| l.kept);
        let sketches = self.sketches.get_mut(slot..slot + 1).unwrap_or_default();
        let w = &mut InBlock { block: &mut b.0, from: 0 };
        event.record(w, &[Lanes::alone(kept, flags)], sketches, value)
    }

    /// Which of sum, min and max a field alone in one-block slots keeps,
    /// if that is this slab's layout (see [`Slab::record_fixed`]).
    pub(super) fn alone(&self) -> Option<Alone> {
        self.alone
    }

    /// The header of `slot`.
    pub(super) fn header(&self, slot: u32) -> Header {
        let tally = self.word(slot, TALLY);
        Header {
            group: self.group(slot),
            emitted: (tally >> EMITTED_SHIFT) as u32 & EMITTED_MAX,
            events: tally & EVENTS_MAX,
            count: self.float(slot, COUNT),
            dirty: tally & DIRTY != 0,
            closed_once: tally & CLOSED_ONCE != 0,
        }
    }

    /// Overwrites the header of `slot`, keeping its place in its chain.
    /// Events and emissions beyond what the slot counts saturate.
    pub(super) fn set_header(&mut self, slot: u32, h: &Header) {
        let link = self.word(slot, META) & !GROUP_MASK;
        self.set(slot, META, link | u64::from(h.group));
        let emitted = u64::from(h.emitted.min(EMITTED_MAX)) << EMITTED_SHIFT;
        let flags = if h.dirty { DIRTY } else { 0 } | if h.closed_once { CLOSED_ONCE } else { 0 };
        self.set(slot, TALLY, h.events.min(EVENTS_MAX) | emitted | flags);
        self.set(slot, COUNT, h.count.to_bits());
    }

    /// The scalar aggregates of field `field` in `slot`.
    pub(super) fn scalar(&self, slot: u32, field: usize) -> Scalar {
        let Some(&l) = self.lanes.get(field) else { return Scalar::new() };
        let f = |at: u8, empty: f64| if at == NONE { empty } else { self.float(slot, at) };
        let sum = (f(l.sum, 0.0), if l.sum == NONE { 0.0 } else { self.float(slot, l.sum + 1) });
        let last_ts =
            if l.last == NONE { Timestamp::MIN } else { Timestamp::from_nanos(self.word(slot, l.last + 1) as i64) };
        let last = (last_ts, f(l.last, f64::NEG_INFINITY));
        let (min, max) = (f(l.min, f64::INFINITY), f(l.max, f64::NEG_INFINITY));
        Scalar::from_parts(l.kept, self.float(slot, l.count), sum, min, max, last)
    }

    /// Overwrites field `field` of `slot` with `s` (restoring a snapshot).
    pub(super) fn set_scalar(&mut self, slot: u32, field: usize, s: &Scalar) {
        let Some(&l) = self.lanes.get(field) else { return };
        let (count, (sum, err), min, max, (last_ts, last)) = s.parts();
        self.set(slot, l.count, count.to_bits());
        let mut put = |at: u8, plus: u8, v: u64| {
            if at != NONE {
                self.set(slot, at + plus, v);
            }
        };
        put(l.sum, 0, sum.to_bits());
        put(l.sum, 1, err.to_bits());
        put(l.min, 0, min.to_bits());
        put(l.max, 0, max.to_bits());
        put(l.last, 0, last.to_bits());
        put(l.last, 1, last_ts.as_nanos() as u64);
    }

    /// The sketch of field `field` in `slot`, if it has one.
    pub(super) fn sketch_mut(&mut self, slot: u32, field: usize) -> Option<&mut Option<Box<Quantiles>>> {
        self.sketches.get_mut(slot as usize * self.lanes.len() + field)
    }

    /// The sketches of `slot`, one per field (empty when none asks for
    /// quantiles).
    pub(super) fn sketches(&self, slot: u32) -> &[Option<Box<Quantiles>>] {
        let base = slot as usize * self.lanes.len();
        self.sketches.get(base..base + self.lanes.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(s).unwrap()
    }

    /// What a scalar answers.
    type Answers = (Aggregates, f64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<(Timestamp, f64)>);

    fn answers(s: &Scalar) -> Answers {
        (s.kept(), s.count(), s.sum(), s.min(), s.max(), s.mean(), s.last())
    }

    #[test]
    fn a_slot_answers_as_a_scalar_fed_the_same_values() {
        let sets = [
            Aggregates::ALL,
            Aggregates::SUM | Aggregates::MIN | Aggregates::MAX,
            Aggregates::SUM | Aggregates::MIN,
            Aggregates::SUM | Aggregates::MAX | Aggregates::MEAN,
            Aggregates::MEAN,
            Aggregates::MIN | Aggregates::MAX,
            Aggregates::MIN,
            Aggregates::MAX,
            Aggregates::LAST,
            Aggregates::COUNT,
        ];
        // With a second field (slots that cross blocks) and alone (slots
        // of four or eight words, one block each).
        for (set, alone) in sets.into_iter().flat_map(|set| [(set, false), (set, true)]) {
            let fields = [FieldSpec::new("a").aggregates(set), FieldSpec::new("b")];
            let fields = if alone { &fields[..1] } else { &fields[..] };
            let mut slab = Slab::new(fields, QuantileConfig::default());
            // A field alone without a last value, in slots of eight words,
            // is recorded at fixed offsets: every such set takes that path.
            let fixed = alone && !set.contains(Aggregates::LAST) && set != Aggregates::COUNT;
            assert_eq!(slab.alone.is_some(), fixed, "{set:?}");
            let (mut a, mut b) = (Scalar::keeping(set), Scalar::new());
            let slots = [slab.alloc(7, 0), slab.alloc(8, 0), slab.alloc(9, 0)];
            for (i, (v, w)) in [(1.5, 1.0), (-4.0, 2.0), (1e16, 1.0), (1.0, 3.0), (-1e16, 1.0)].into_iter().enumerate()
            {
                // Field b has no value in every third event.
                let b_value = (i % 3 != 2).then_some(-v);
                let ts = t(i as i64 % 3);
                assert!(!slab.record(slots[1], Event { weight: w, ts, mark: false }, |f| if f == 0 {
                    Some(v)
                } else {
                    b_value
                }));
                a.record(v, w, ts);
                if let Some(bv) = b_value {
                    b.record(bv, w, ts);
                }
            }
            let h = slab.header(slots[1]);
            assert_eq!((h.events, h.count, h.dirty), (5, 8.0, false));
            assert_eq!(answers(&slab.scalar(slots[1], 0)), answers(&a), "{set:?}");
            if !alone {
                assert_eq!(answers(&slab.scalar(slots[1], 1)), answers(&b), "{set:?}");
            }
            let last = fields.len() - 1;
            assert!(
                slab.scalar(slots[0], 0).is_empty() && slab.scalar(slots[2], last).is_empty(),
                "neighbours untouched"
            );
            assert_eq!((slab.group(slots[0]), slab.group(slots[1]), slab.group(slots[2])), (7, 8, 9));
            // And through the snapshot form.
            let again = slab.alloc(10, 0);
            slab.set_scalar(again, 0, &a);
            assert_eq!(answers(&slab.scalar(again, 0)), answers(&a));
        }
    }

    #[test]
    fn count_sum_min_max_of_one_field_is_one_cache_line() {
        let bytes = |keep: Aggregates| {
            Slab::new(&[FieldSpec::new("v").aggregates(keep)], QuantileConfig::default()).slot_bytes()
        };
        assert_eq!(bytes(Aggregates::SUM | Aggregates::MIN | Aggregates::MAX), 64);
        assert_eq!(bytes(Aggregates::MAX), 64, "padded to a whole line");
        assert_eq!(bytes(Aggregates::COUNT), 32, "two slots per line");
        assert_eq!(bytes(Aggregates::ALL), 80);
        assert_eq!(core::mem::align_of::<Block>(), 64);
    }

    #[test]
    fn a_field_alone_records_into_its_own_sketch() {
        // Sum and max with a p99 (a window feeding rules), alone in one
        // block: the fixed-offset path; every aggregate: the general one.
        for (set, fixed) in [(Aggregates::SUM | Aggregates::MAX | Aggregates::MEAN, true), (Aggregates::ALL, false)] {
            let fields = [FieldSpec::new("a").aggregates(set).with_quantiles([0.5, 0.99])];
            let mut slab = Slab::new(&fields, QuantileConfig::default());
            assert_eq!(slab.alone.is_some(), fixed, "{set:?}");
            let slots = [slab.alloc(1, 0), slab.alloc(2, 0), slab.alloc(3, 0)];
            let (mut scalar, mut sketch) = (Scalar::keeping(set), Quantiles::new(QuantileConfig::default()));
            for i in 0..150 {
                let v = ((i * 37) % 101) as f64 - 20.0;
                assert!(!slab.record(slots[1], Event { weight: 1.0, ts: t(i % 7), mark: false }, |_| Some(v)));
                scalar.record(v, 1.0, t(i % 7));
                sketch.record(v, 1.0);
            }
            assert_eq!(answers(&slab.scalar(slots[1], 0)), answers(&scalar), "{set:?}");
            let mut held = |slot| slab.sketch_mut(slot, 0).and_then(|q| q.as_deref().cloned()).unwrap();
            let ours = held(slots[1]);
            assert_eq!(
                (ours.len(), ours.quantile(0.5), ours.quantile(0.99)),
                (150, sketch.quantile(0.5), sketch.quantile(0.99))
            );
            // The neighbours' sketches saw nothing.
            assert_eq!((held(slots[0]).len(), held(slots[2]).len()), (0, 0));
        }
    }

    #[test]
    fn headers_pack_and_a_freed_slot_comes_back_blank() {
        let mut slab = Slab::new(&[FieldSpec::new("v")], QuantileConfig::default());
        let slot = slab.alloc(3, 0);
        let h = Header { group: 3, emitted: 12, events: EVENTS_MAX - 1, count: 2.5, dirty: true, closed_once: true };
        slab.set_header(slot, &h);
        let back = slab.header(slot);
        assert_eq!((back.group, back.emitted, back.events, back.count), (3, 12, EVENTS_MAX - 1, 2.5));
        assert!(back.dirty && back.closed_once && slab.is_dirty(slot));
        assert!(!slab.record(slot, Event { weight: 1.0, ts: t(1), mark: true }, |_| Some(4.0)), "already dirty");
        assert!(!slab.record(slot, Event { weight: 1.0, ts: t(1), mark: false }, |_| Some(4.0)));
        let full = slab.header(slot);
        assert_eq!((full.events, full.emitted, full.count), (EVENTS_MAX, 12, 4.5), "events saturate");
        assert!(full.dirty && full.closed_once, "without touching the flags");
        slab.set_header(slot, &Header { emitted: u32::MAX, events: u64::MAX, ..h });
        assert_eq!((slab.header(slot).emitted, slab.header(slot).events), (EMITTED_MAX, EVENTS_MAX));
        slab.release(slot);
        assert_eq!(slab.alloc(5, 0), slot, "reused");
        let fresh = slab.header(slot);
        assert_eq!((fresh.group, fresh.emitted, fresh.events, fresh.dirty), (5, 0, 0, false));
        assert!(slab.scalar(slot, 0).is_empty());
        assert_eq!(slab.live(), 1);
    }

    #[test]
    fn a_chain_lists_its_slots_in_order_through_header_changes() {
        let mut slab = Slab::new(&[FieldSpec::new("v")], QuantileConfig::default());
        let (mut a, mut b) = (Chain::default(), Chain::default());
        assert_eq!(slab.chain(&a).count(), 0);
        let slots: Vec<u32> = (0..6).map(|g| slab.alloc(g, 0)).collect();
        // Interleaved, as the states of two windows open.
        for (i, &slot) in slots.iter().enumerate() {
            slab.link(if i % 3 == 0 { &mut a } else { &mut b }, slot);
        }
        for &slot in &slots {
            let h = Header { emitted: 2, dirty: true, ..slab.header(slot) };
            slab.set_header(slot, &h);
            slab.record(slot, Event { weight: 1.0, ts: t(0), mark: true }, |_| Some(1.0));
        }
        assert_eq!(slab.chain(&a).collect::<Vec<_>>(), [slots[0], slots[3]]);
        assert_eq!(slab.chain(&b).collect::<Vec<_>>(), [slots[1], slots[2], slots[4], slots[5]]);
        assert!(slots.iter().enumerate().all(|(g, &s)| slab.group(s) == g as GroupId), "groups kept");
        // Freed and reused, a slot starts a new chain.
        for slot in slab.chain(&a).collect::<Vec<_>>() {
            slab.release(slot);
        }
        let mut c = Chain::default();
        let reused = slab.alloc(9, 0);
        slab.link(&mut c, reused);
        assert_eq!(slab.chain(&c).collect::<Vec<_>>(), [reused]);
        assert_eq!(slab.group(reused), 9);
    }
}
