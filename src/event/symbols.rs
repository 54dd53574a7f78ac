//! String interning for event batches.

use core::fmt;
use core::hash::BuildHasher;
use core::ops::Range;

use hashbrown::HashTable;

use crate::text::short_eq;

/// A handle to a string interned in a [`Symbols`] table.
///
/// Symbols are small (`u32`) and compare by value; two equal strings interned
/// in the same table get the same `Sym`. A `Sym` only means something
/// together with the table that issued it: the [`EventBatch`] it came from.
///
/// [`EventBatch`]: crate::event::EventBatch
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sym(u32);

impl Sym {
    /// The position of this symbol in its table (0, 1, 2, … in order of
    /// first interning), usable as a dense index into side tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An append-only table of distinct strings, each stored once.
///
/// Decoders intern tenants, streams, dim keys, dim values and field names, so
/// a string repeated in every event of a batch costs one copy and one hash
/// lookup per occurrence, and no allocation. [`Symbols::clear`] keeps the
/// allocated capacity for the next batch.
///
/// A table holds at most `u32::MAX` strings; interning more is not possible
/// within the memory any decoder limit allows.
#[derive(Clone)]
pub struct Symbols {
    text: String,
    spans: Vec<Range<usize>>,
    /// Each symbol with its string's [`Words`], so that a probe decides a
    /// string of up to 16 bytes without reading `spans` or `text`: in a
    /// large table (a window operator's), two cache misses fewer.
    table: HashTable<Entry>,
    hasher: Hasher,
    /// Symbols found recently, by a cheap key of their bytes: a string that
    /// repeats (a dim key, a tenant) is found by comparing two words,
    /// without a hash, a table probe or a look at the text (up to 16 bytes;
    /// longer ones are also compared with the text). Emptied by `clear`.
    recent: Box<[Recent; RECENT]>,
}

/// Entries of [`Symbols::recent`]: enough for the distinct strings a batch
/// usually holds (a few hundred device names, say) to mostly stay cached.
const RECENT_BITS: u32 = 8;
const RECENT: usize = 1 << RECENT_BITS;

/// An entry of [`Symbols::recent`]: a string's length and its first and
/// last eight bytes ([`Words`]), and its symbol.
#[derive(Clone, Copy)]
struct Recent {
    words: Words,
    sym: u32,
}

const NO_RECENT: Recent = Recent { words: Words { head: 0, tail: 0, len: usize::MAX }, sym: u32::MAX };

/// An entry of [`Symbols::table`]: a symbol and its string's [`Words`].
#[derive(Clone, Copy)]
struct Entry {
    head: u64,
    tail: u64,
    /// Saturated at `u32::MAX`: such strings are told apart by their text.
    len: u32,
    sym: u32,
}

impl Entry {
    #[inline]
    fn new(words: Words, sym: u32) -> Entry {
        Entry { head: words.head, tail: words.tail, len: Entry::len(words), sym }
    }

    /// The length as stored, saturated.
    #[inline]
    fn len(words: Words) -> u32 {
        u32::try_from(words.len).unwrap_or(u32::MAX)
    }

    #[inline]
    fn has(&self, words: Words) -> bool {
        self.head == words.head && self.tail == words.tail && self.len == Entry::len(words)
    }
}

/// The bytes of symbol `sym` in a table's `text` and `spans` (empty for a
/// foreign symbol).
#[inline]
fn text_of<'a>(text: &'a str, spans: &[Range<usize>], sym: u32) -> &'a [u8] {
    spans.get(sym as usize).and_then(|r| text.as_bytes().get(r.clone())).unwrap_or_default()
}

/// A string's length and bytes packed into two words: its first eight bytes
/// and its last eight (little-endian, overlapping when it is shorter than
/// 16 bytes), or for a string under eight bytes all of it in `head`, zero
/// padded. Two strings of at most 16 bytes are equal exactly when their
/// `Words` are.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Words {
    head: u64,
    tail: u64,
    len: usize,
}

impl Words {
    #[inline]
    fn of(bytes: &[u8]) -> Words {
        let len = bytes.len();
        // Two overlapping reads give every byte; OR-ing them at their
        // offsets is exact because overlapping bytes are the same.
        let (head, tail) = if let (Some(h), Some(t)) = (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
            (u64::from_le_bytes(*h), u64::from_le_bytes(*t))
        } else if let (Some(h), Some(t)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
            let (h, t) = (u64::from(u32::from_le_bytes(*h)), u64::from(u32::from_le_bytes(*t)));
            (h | t << (8 * (len - 4)), 0)
        } else if let (Some(h), Some(t)) = (bytes.first_chunk::<2>(), bytes.last_chunk::<2>()) {
            let (h, t) = (u64::from(u16::from_le_bytes(*h)), u64::from(u16::from_le_bytes(*t)));
            (h | t << (8 * (len - 2)), 0)
        } else {
            (bytes.first().map_or(0, |&b| u64::from(b)), 0)
        };
        Words { head, tail, len }
    }

    /// The slot in [`Symbols::recent`].
    #[inline]
    fn slot(&self) -> usize {
        let mixed = (self.head ^ self.tail.rotate_left(29) ^ self.len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - RECENT_BITS)) as usize
    }
}

/// The table's hash: for a string of up to 16 bytes, one folded multiply
/// of its [`Words`] (which a lookup computes anyway) with two secret keys;
/// longer strings go through `foldhash`. Keyed per table (as `foldhash`
/// is), so that colliding names cannot be computed ahead of time.
#[derive(Clone)]
struct Hasher {
    long: foldhash::fast::RandomState,
    keys: [u64; 2],
}

impl Hasher {
    fn new() -> Hasher {
        let long = foldhash::fast::RandomState::default();
        let keys = [long.hash_one(0x243f_6a88_85a3_08d3_u64), long.hash_one(0x1319_8a2e_0370_7344_u64)];
        Hasher { long, keys }
    }

    /// The hash of `bytes`, whose words are `words`.
    #[inline]
    fn hash(&self, words: Words, bytes: &[u8]) -> u64 {
        if words.len > 16 {
            return self.long.hash_one(bytes);
        }
        let [k0, k1] = self.keys;
        let product = u128::from(words.head ^ k0) * u128::from(words.tail ^ k1 ^ words.len as u64);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            text: String::new(),
            spans: Vec::new(),
            table: HashTable::new(),
            hasher: Hasher::new(),
            recent: Box::new([NO_RECENT; RECENT]),
        }
    }
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(_, s)| s)).finish()
    }
}

impl Symbols {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The symbol for `s`, adding `s` to the table if it is new.
    #[inline]
    pub fn intern(&mut self, s: &str) -> Sym {
        let words = Words::of(s.as_bytes());
        if let Some(sym) = self.recent_hit(words, s.as_bytes()) {
            return sym;
        }
        let hash = self.hasher.hash(words, s.as_bytes());
        let sym = match self.find(hash, words, s.as_bytes()) {
            Some(sym) => sym,
            None => self.insert(hash, words, s),
        };
        self.remember(words, sym);
        sym
    }

    /// The symbol for the UTF-8 text `bytes`. Bytes already in the table
    /// are known to be valid UTF-8, so only new strings are validated: the
    /// check runs once per distinct string, not once per occurrence.
    #[inline]
    pub(crate) fn intern_utf8(&mut self, bytes: &[u8]) -> Result<Sym, core::str::Utf8Error> {
        let words = Words::of(bytes);
        if let Some(sym) = self.recent_hit(words, bytes) {
            return Ok(sym);
        }
        let hash = self.hasher.hash(words, bytes);
        let sym = match self.find(hash, words, bytes) {
            Some(sym) => sym,
            None => self.insert(hash, words, core::str::from_utf8(bytes)?),
        };
        self.remember(words, sym);
        Ok(sym)
    }

    /// The recent symbol whose text is `bytes` (of `words`), if cached.
    #[inline]
    fn recent_hit(&self, words: Words, bytes: &[u8]) -> Option<Sym> {
        let recent = self.recent.get(words.slot())?;
        if recent.words != words {
            return None;
        }
        if words.len > 16 && text_of(&self.text, &self.spans, recent.sym) != bytes {
            return None;
        }
        Some(Sym(recent.sym))
    }

    #[inline]
    fn remember(&mut self, words: Words, sym: Sym) {
        if let Some(r) = self.recent.get_mut(words.slot()) {
            *r = Recent { words, sym: sym.0 };
        }
    }

    /// The symbol of `bytes` (whose words are `words`), if interned: up to
    /// 16 bytes the words decide, longer strings are also compared.
    #[inline]
    fn find(&self, hash: u64, words: Words, bytes: &[u8]) -> Option<Sym> {
        let Symbols { text, spans, table, .. } = self;
        let text_is = |sym: u32| short_eq(text_of(text, spans, sym), bytes);
        table.find(hash, |e| e.has(words) && (words.len <= 16 || text_is(e.sym))).map(|e| Sym(e.sym))
    }

    fn insert(&mut self, hash: u64, words: Words, s: &str) -> Sym {
        let Symbols { text, spans, table, hasher, .. } = self;
        let index = u32::try_from(spans.len()).unwrap_or(u32::MAX);
        let start = text.len();
        text.push_str(s);
        spans.push(start..text.len());
        table.insert_unique(hash, Entry::new(words, index), |e| {
            let bytes = text_of(text, spans, e.sym);
            hasher.hash(Words::of(bytes), bytes)
        });
        Sym(index)
    }

    /// The symbol for `s` if it has been interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        let words = Words::of(s.as_bytes());
        self.find(self.hasher.hash(words, s.as_bytes()), words, s.as_bytes())
    }

    /// The string behind `sym`, or `None` if `sym` was not issued by this
    /// table (or the table was cleared since).
    #[inline]
    pub fn resolve(&self, sym: Sym) -> Option<&str> {
        self.spans.get(sym.index()).and_then(|r| self.text.get(r.clone()))
    }

    /// The string behind a symbol this table issued; `""` for a foreign one.
    #[inline]
    pub(crate) fn str(&self, sym: Sym) -> &str {
        self.resolve(sym).unwrap_or_default()
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of string data held (not counting the index).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Every symbol with its string, in the order they were interned.
    pub fn iter(&self) -> impl Iterator<Item = (Sym, &str)> + '_ {
        self.spans.iter().enumerate().map(|(i, r)| (Sym(i as u32), self.text.get(r.clone()).unwrap_or_default()))
    }

    /// Removes every string, keeping the allocations for reuse.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.table.clear();
        self.recent.fill(NO_RECENT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_dense() {
        let mut s = Symbols::new();
        let a = s.intern("region");
        let b = s.intern("eu-west");
        assert_eq!(s.intern("region"), a);
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(s.resolve(b), Some("eu-west"));
        assert_eq!(s.get("eu-west"), Some(b));
        assert_eq!(s.get("nope"), None);
        assert_eq!(s.intern(""), Sym(2));
        assert_eq!(s.resolve(Sym(2)), Some(""));
        assert_eq!(s.len(), 3);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.resolve(a), None);
        assert_eq!(s.intern("eu-west"), Sym(0));
    }

    #[test]
    fn words_tell_short_strings_apart() {
        let strings: Vec<String> = (0..=20)
            .flat_map(|n| {
                let base: String = "abcdefghijklmnopqrstu".chars().take(n).collect();
                // The same length with one byte changed at each position.
                let variants: Vec<String> =
                    (0..n).map(|i| base.char_indices().map(|(j, c)| if i == j { 'Z' } else { c }).collect()).collect();
                core::iter::once(base).chain(variants)
            })
            .chain(["\0".to_owned(), "\0\0".to_owned(), "a\0".to_owned(), "\0a".to_owned()])
            .collect();
        for a in &strings {
            for b in &strings {
                let same = Words::of(a.as_bytes()) == Words::of(b.as_bytes());
                if a.len() <= 16 {
                    assert_eq!(same, a == b, "{a:?} {b:?}");
                } else if a == b {
                    assert!(same);
                }
            }
        }
        // Through the table: every one gets its own symbol, found again.
        let mut s = Symbols::new();
        let syms: Vec<Sym> = strings.iter().map(|t| s.intern(t)).collect();
        for (t, sym) in strings.iter().zip(&syms) {
            assert_eq!(s.intern(t), *sym);
            assert_eq!(s.resolve(*sym), Some(t.as_str()));
        }
    }

    #[test]
    fn many_strings_survive_growth() {
        // Short names hash by their words, long ones through foldhash: both
        // must be found again after the table has grown many times.
        let names: Vec<String> =
            (0..10_000).flat_map(|i| [format!("device-{i}"), format!("a-much-longer-device-name-{i}")]).collect();
        let mut s = Symbols::new();
        let syms: Vec<_> = names.iter().map(|n| s.intern(n)).collect();
        assert_eq!(s.len(), names.len());
        for (name, sym) in names.iter().zip(&syms) {
            assert_eq!(s.resolve(*sym), Some(name.as_str()));
            assert_eq!(s.get(name), Some(*sym));
            assert_eq!(s.intern(name), *sym);
        }
        assert_eq!(s.get("device-10000"), None);
        assert_eq!(s.get("a-much-longer-device-name-10000"), None);
    }
}
