//! The text spec v1 (docs/preprocessor-spec.md, sections 2-3): normalisation and n-grams.
//!
//! [`Normalizer::normalize_reference`] is the spec read literally: NFKC of the whole text,
//! full lowercasing of the whole text (Final_Sigma included), then one code point at a time
//! the whitespace list and the removed categories, collapse, truncate.
//!
//! [`Normalizer::normalize_into`] gives the same result faster: steps 1-4 applied to each code
//! point alone through a lazily filled table ([`CharTable`]), valid because NFKC of a text is
//! the concatenation of its code points' NFKC forms when no code point's decomposition starts
//! with something a composition could attach to the previous character (combining marks,
//! Hangul vowel and trailing jamo), and lowercasing depends on context only for U+03A3 Σ. A
//! text holding any other code point takes the reference path. Tests check the claim against
//! the whole Unicode database of `unicode-normalization` and by differential fuzzing.

use std::sync::{Arc, Mutex, OnceLock};

use unicode_normalization::char::{canonical_combining_class, decompose_compatible, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

use crate::proto::foundry_v1 as pb;
use crate::unicode::CategorySet;

/// Text spec versions this runtime implements.
pub const SUPPORTED_SPEC_VERSIONS: [u32; 1] = [1];

const SPACE: char = ' ';
/// The first code point of every word n-gram (step 6b). Step 3 removes it from every text, so
/// a word n-gram never equals a character n-gram.
pub const WORD_MARK: char = '\u{1}';
/// The first code point of every head n-gram (step 6c). Like [`WORD_MARK`], step 3 removes
/// it from every text, so a head n-gram never equals a character or a word n-gram.
pub const HEAD_MARK: char = '\u{2}';
/// The code points that end a text's first clause (step 6c), as they are after step 1's NFKC
/// (which maps the full-width `，！？；～` and `…` onto the ASCII ones).
pub const CLAUSE_MARKS: [char; 9] = [' ', ',', '.', '!', '?', ';', '~', '\u{3002}', '\u{3001}'];
const CAPITAL_SIGMA: char = '\u{3A3}';

/// The input held a code point the normaliser cannot take: an unpaired surrogate while the
/// settings do not remove `Cs`, or a value above U+10FFFF. Only the Python extension can pass
/// such input (UTF-8 cannot carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCodePoint(pub u32);

impl std::fmt::Display for InvalidCodePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the text holds U+{:04X}, which is not a Unicode scalar value this model's normaliser removes", self.0)
    }
}

/// Settings of steps 1-5, as recorded in `foundry.v1.Normalizer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizerSettings {
    pub nfkc: bool,
    pub lowercase: bool,
    /// Two-letter general categories removed in step 3, sorted.
    pub removed_categories: Vec<String>,
    /// Code points mapped to U+0020 in step 4, sorted, without duplicates.
    pub whitespace: Vec<u32>,
    pub max_chars: usize,
}

/// Settings of steps 6, 6b and 6c, as recorded in `foundry.v1.Analyzer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Analyzer {
    pub min_n: usize,
    pub max_n: usize,
    pub word_boundary_padding: bool,
    /// Word n-grams of orders `1..=word_max_n` (step 6b); 0: none.
    pub word_max_n: usize,
    /// Head n-grams of the first `head_chars` code points of the first clause (step 6c); 0:
    /// none.
    pub head_chars: usize,
}

/// Whether `c` ends a clause (step 6c, [`CLAUSE_MARKS`]).
#[inline]
fn is_clause_mark(c: char) -> bool {
    CLAUSE_MARKS.contains(&c)
}

impl NormalizerSettings {
    /// Validate the `normalizer` message of a `.bin`.
    ///
    /// # Errors
    /// A message (without the file name) for a missing message, another spec version, an
    /// unknown category, a whitespace entry that is not a code point, or `max_chars < 1`.
    pub fn from_proto(msg: Option<&pb::Normalizer>) -> Result<Self, String> {
        let msg = msg.ok_or("field 'normalizer' is missing")?;
        if !SUPPORTED_SPEC_VERSIONS.contains(&msg.spec_version) {
            return Err(format!(
                "normalizer.spec_version = {} is not supported (this runtime implements text spec {})",
                msg.spec_version,
                SUPPORTED_SPEC_VERSIONS.map(|v| v.to_string()).join(", ")
            ));
        }
        CategorySet::new(&msg.removed_categories)?;
        if let Some(bad) = msg.whitespace.iter().find(|&&cp| cp > 0x10FFFF) {
            return Err(format!("normalizer.whitespace contains {bad}, not a code point"));
        }
        if msg.max_chars < 1 {
            return Err(format!("normalizer.max_chars must be >= 1, got {}", msg.max_chars));
        }
        let mut removed_categories = msg.removed_categories.clone();
        removed_categories.sort();
        removed_categories.dedup();
        let mut whitespace = msg.whitespace.clone();
        whitespace.sort_unstable();
        whitespace.dedup();
        Ok(NormalizerSettings {
            nfkc: msg.nfkc,
            lowercase: msg.lowercase,
            removed_categories,
            whitespace,
            max_chars: msg.max_chars as usize,
        })
    }

    /// The v1 defaults: NFKC, lowercase, `Cc Cf Cs` removed, the 25 whitespace code points.
    pub fn v1(max_chars: usize) -> Self {
        let mut whitespace: Vec<u32> = (0x09..=0x0D).chain([0x20, 0x85, 0xA0, 0x1680]).collect();
        whitespace.extend(0x2000..=0x200A);
        whitespace.extend([0x2028, 0x2029, 0x202F, 0x205F, 0x3000]);
        NormalizerSettings {
            nfkc: true,
            lowercase: true,
            removed_categories: vec!["Cc".into(), "Cf".into(), "Cs".into()],
            whitespace,
            max_chars,
        }
    }
}

impl Analyzer {
    /// Validate the `analyzer` message of a `.bin`.
    ///
    /// # Errors
    /// A missing message, or not `1 <= min_n <= max_n`.
    pub fn from_proto(msg: Option<&pb::Analyzer>) -> Result<Self, String> {
        let msg = msg.ok_or("field 'analyzer' is missing")?;
        if !(1 <= msg.min_n && msg.min_n <= msg.max_n) {
            return Err(format!(
                "analyzer needs 1 <= min_n <= max_n, got min_n={}, max_n={}",
                msg.min_n, msg.max_n
            ));
        }
        Ok(Analyzer {
            min_n: msg.min_n as usize,
            max_n: msg.max_n as usize,
            word_boundary_padding: msg.word_boundary_padding,
            word_max_n: msg.word_max_n as usize,
            head_chars: msg.head_chars as usize,
        })
    }

    /// Call `f` with every word n-gram of a normalised text (step 6b), in the spec's order
    /// (per order `n`, per position), built in `buf`: [`WORD_MARK`] and `n` consecutive
    /// non-empty space-separated words joined by one space.
    #[inline]
    pub fn for_each_word_gram(&self, normalized: &[char], buf: &mut String, mut f: impl FnMut(&str)) {
        if self.word_max_n == 0 || normalized.is_empty() {
            return;
        }
        let words: Vec<&[char]> = normalized.split(|&c| c == SPACE).filter(|w| !w.is_empty()).collect();
        for n in 1..=self.word_max_n.min(words.len()) {
            for run in words.windows(n) {
                buf.clear();
                buf.push(WORD_MARK);
                for (k, word) in run.iter().enumerate() {
                    if k > 0 {
                        buf.push(SPACE);
                    }
                    buf.extend(word.iter());
                }
                f(buf);
            }
        }
    }

    /// The head of a normalised text (step 6c): after the leading clause marks, the code
    /// points up to the next clause mark or the end, at most `head_chars` of them; empty when
    /// `head_chars` is 0 or the text holds clause marks only.
    #[inline]
    pub fn head<'t>(&self, normalized: &'t [char]) -> &'t [char] {
        if self.head_chars == 0 {
            return &[];
        }
        let start = normalized.iter().position(|&c| !is_clause_mark(c)).unwrap_or(normalized.len());
        let rest = &normalized[start..];
        let len = rest.iter().take(self.head_chars).position(|&c| is_clause_mark(c));
        &rest[..len.unwrap_or(rest.len().min(self.head_chars))]
    }

    /// Call `f` with every head n-gram of a normalised text (step 6c), in the spec's order
    /// (per order `n`, per position in the unit `" " + head`, the one-code-point `" "`
    /// excepted), built in `buf`: [`HEAD_MARK`] and the n-gram. The unit is never built: its
    /// position 0 is the space, position `i >= 1` is `head[i - 1]`.
    #[inline]
    pub fn for_each_head_gram(&self, normalized: &[char], buf: &mut String, mut f: impl FnMut(&str)) {
        let head = self.head(normalized);
        if head.is_empty() {
            return;
        }
        let len = head.len() + 1; // the unit's length
        for n in self.min_n..=self.max_n.min(len) {
            for i in 0..=len - n {
                if n == 1 && i == 0 {
                    continue; // the unit's " "
                }
                buf.clear();
                buf.push(HEAD_MARK);
                if i == 0 {
                    buf.push(SPACE);
                    buf.extend(&head[..n - 1]);
                } else {
                    buf.extend(&head[i - 1..i - 1 + n]);
                }
                f(buf);
            }
        }
    }

    /// Call `f` with every unit of a normalised text (section 3): each word padded with one
    /// space on both sides, or the whole text. `buf` is scratch space.
    #[inline]
    pub fn for_each_unit(&self, normalized: &[char], buf: &mut Vec<char>, mut f: impl FnMut(&[char])) {
        if normalized.is_empty() {
            return;
        }
        if !self.word_boundary_padding {
            f(normalized);
            return;
        }
        buf.clear();
        buf.push(SPACE);
        buf.extend_from_slice(normalized);
        buf.push(SPACE);
        // Units run from one space to the next, both included (adjacent units share a space).
        let mut start = 0;
        for (i, &c) in buf.iter().enumerate().skip(1) {
            if c == SPACE {
                f(&buf[start..=i]);
                start = i;
            }
        }
    }

    /// The terms of a normalised text, in the order of the spec's reference: the character
    /// n-grams (per unit, per order `n`, per position), then the word n-grams (step 6b), then
    /// the head n-grams (step 6c). The runtime itself never builds the character n-gram
    /// strings.
    pub fn ngrams(&self, normalized: &str) -> Vec<String> {
        let chars: Vec<char> = normalized.chars().collect();
        let mut grams = Vec::new();
        let mut buf = Vec::new();
        self.for_each_unit(&chars, &mut buf, |unit| {
            for n in self.min_n..=self.max_n.min(unit.len()) {
                for gram in unit.windows(n) {
                    if gram != [SPACE] {
                        grams.push(gram.iter().collect());
                    }
                }
            }
        });
        let mut word = String::new();
        self.for_each_word_gram(&chars, &mut word, |g| grams.push(g.to_owned()));
        self.for_each_head_gram(&chars, &mut word, |g| grams.push(g.to_owned()));
        grams
    }
}

/// Steps 1-4 of one code point taken alone.
#[derive(Debug, Clone)]
enum Mapped {
    /// Its result may depend on its neighbours: the text takes the reference path.
    Unsafe,
    /// Up to three code points (most often one, or none when removed).
    Short { len: u8, chars: [char; 3] },
    Long(Box<[char]>),
}

impl Mapped {
    fn from_chars(chars: &[char]) -> Mapped {
        if chars.len() <= 3 {
            let mut short = [SPACE; 3];
            short[..chars.len()].copy_from_slice(chars);
            Mapped::Short { len: chars.len() as u8, chars: short }
        } else {
            Mapped::Long(chars.into())
        }
    }
}

const BLOCK_BITS: u32 = 8;
const BLOCKS: usize = 0x110000 >> BLOCK_BITS;

/// Steps 1-4 per code point for one set of settings, filled one block of 256 code points at a
/// time on first use (a block costs ~30 µs once); shared by every model with the same settings.
struct CharTable {
    settings: NormalizerSettings,
    removed: CategorySet,
    blocks: Box<[OnceLock<Box<[Mapped]>>]>,
}

impl CharTable {
    fn shared(settings: &NormalizerSettings) -> Arc<CharTable> {
        static TABLES: Mutex<Vec<Arc<CharTable>>> = Mutex::new(Vec::new());
        let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = tables.iter().find(|t| &t.settings == settings) {
            return Arc::clone(table);
        }
        let table = Arc::new(CharTable {
            settings: settings.clone(),
            removed: CategorySet::new(&settings.removed_categories).expect("validated settings"),
            blocks: (0..BLOCKS).map(|_| OnceLock::new()).collect(),
        });
        tables.push(Arc::clone(&table));
        table
    }

    #[inline]
    fn get(&self, cp: u32) -> &Mapped {
        match self.blocks.get((cp >> BLOCK_BITS) as usize) {
            Some(block) => {
                let block = block.get_or_init(|| self.block((cp >> BLOCK_BITS) as usize));
                &block[(cp & ((1 << BLOCK_BITS) - 1)) as usize]
            }
            None => &Mapped::Unsafe,
        }
    }

    fn block(&self, index: usize) -> Box<[Mapped]> {
        let first = (index as u32) << BLOCK_BITS;
        (first..first + (1 << BLOCK_BITS)).map(|cp| self.entry(cp)).collect()
    }

    fn is_whitespace(&self, cp: u32) -> bool {
        self.settings.whitespace.binary_search(&cp).is_ok()
    }

    /// Steps 3-4 of one code point: `Some(' ')`, `None` (removed), or itself.
    fn clean(&self, c: char) -> Option<char> {
        if self.is_whitespace(c as u32) {
            Some(SPACE)
        } else if self.removed.contains(c as u32) {
            None
        } else {
            Some(c)
        }
    }

    fn entry(&self, cp: u32) -> Mapped {
        let Some(c) = char::from_u32(cp) else {
            // An unpaired surrogate: inert in steps 1-2, then whitespace or removed (Cs).
            return if self.is_whitespace(cp) {
                Mapped::from_chars(&[SPACE])
            } else if self.removed.removes_surrogates() {
                Mapped::from_chars(&[])
            } else {
                Mapped::Unsafe
            };
        };
        let mut text = String::new();
        if self.settings.nfkc {
            if !starts_stable(c) {
                return Mapped::Unsafe;
            }
            text.extend(std::iter::once(c).nfkc());
        } else {
            text.push(c);
        }
        if self.settings.lowercase {
            if text.contains(CAPITAL_SIGMA) {
                return Mapped::Unsafe; // Final_Sigma depends on the neighbours
            }
            text = text.to_lowercase();
        }
        let cleaned: Vec<char> = text.chars().filter_map(|c| self.clean(c)).collect();
        Mapped::from_chars(&cleaned)
    }
}

/// Whether `c`'s compatibility decomposition starts with a character that no canonical
/// composition takes as its second part: then NFKC cannot join `c` with what precedes it, and
/// canonical reordering never moves a mark across it.
pub fn starts_stable(c: char) -> bool {
    let mut first = None;
    decompose_compatible(c, |d| {
        first.get_or_insert(d);
    });
    let first = first.unwrap_or(c);
    canonical_combining_class(first) == 0 && !is_combining_mark(first) && !is_hangul_vowel_or_trailing(first)
}

/// Hangul conjoining vowel (V) and trailing consonant (T) jamo: the second parts of the
/// algorithmic Hangul compositions L+V and LV+T.
fn is_hangul_vowel_or_trailing(c: char) -> bool {
    matches!(c as u32, 0x1161..=0x1175 | 0x11A8..=0x11C2)
}

/// Steps 1-5 for one set of settings.
#[derive(Clone)]
pub struct Normalizer {
    table: Arc<CharTable>,
    max_chars: usize,
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalizer").field("settings", &self.table.settings).finish()
    }
}

impl Normalizer {
    pub fn new(settings: &NormalizerSettings) -> Self {
        Normalizer { table: CharTable::shared(settings), max_chars: settings.max_chars }
    }

    pub fn settings(&self) -> &NormalizerSettings {
        &self.table.settings
    }

    /// The normalised text (steps 1-5).
    pub fn normalize(&self, text: &str) -> String {
        let mut out = Vec::new();
        self.normalize_into(text.chars().map(|c| c as u32), &mut out)
            .expect("a str holds scalar values only");
        out.into_iter().collect()
    }

    /// Steps 1-5 of the code points `cps` into `out` (cleared first), by the per-code-point
    /// table, or by [`Normalizer::normalize_reference`]'s path when a code point needs context.
    ///
    /// # Errors
    /// [`InvalidCodePoint`] for a surrogate the settings do not remove or a value > U+10FFFF.
    #[inline]
    pub fn normalize_into<I>(&self, cps: I, out: &mut Vec<char>) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32> + Clone,
    {
        out.clear();
        for cp in cps.clone() {
            match self.table.get(cp) {
                Mapped::Short { len, chars } => {
                    for &c in &chars[..*len as usize] {
                        push_collapsed(out, c);
                    }
                }
                Mapped::Long(chars) => chars.iter().for_each(|&c| push_collapsed(out, c)),
                Mapped::Unsafe => return self.reference_into(cps, out),
            }
        }
        self.finish(out);
        Ok(())
    }

    /// Steps 1-5 exactly as the spec states them, on the whole text: the reference that the
    /// fast path is tested against.
    pub fn normalize_reference(&self, text: &str) -> String {
        let mut out = Vec::new();
        self.reference_into(text.chars().map(|c| c as u32), &mut out)
            .expect("a str holds scalar values only");
        out.into_iter().collect()
    }

    fn reference_into<I>(&self, cps: I, out: &mut Vec<char>) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32>,
    {
        // Unpaired surrogates (Python extension only) are starters that never compose, are
        // neither cased nor case-ignorable: steps 1-2 of the text equal steps 1-2 of the
        // pieces between them, and the surrogates pass through to step 3.
        out.clear();
        let mut piece = String::new();
        for cp in cps {
            match char::from_u32(cp) {
                Some(c) => piece.push(c),
                None => {
                    self.reference_piece(&piece, out);
                    piece.clear();
                    match self.table.entry(cp) {
                        Mapped::Short { len, chars } => {
                            chars[..len as usize].iter().for_each(|&c| push_collapsed(out, c))
                        }
                        _ => return Err(InvalidCodePoint(cp)),
                    }
                }
            }
        }
        self.reference_piece(&piece, out);
        self.finish(out);
        Ok(())
    }

    fn reference_piece(&self, text: &str, out: &mut Vec<char>) {
        let settings = &self.table.settings;
        let mut text: String = if settings.nfkc { text.nfkc().collect() } else { text.to_owned() };
        if settings.lowercase {
            text = text.to_lowercase();
        }
        for c in text.chars().filter_map(|c| self.table.clean(c)) {
            push_collapsed(out, c);
        }
    }

    /// Step 4's strip of the end, then step 5.
    #[inline]
    fn finish(&self, out: &mut Vec<char>) {
        if out.last() == Some(&SPACE) {
            out.pop();
        }
        out.truncate(self.max_chars);
    }
}

/// Step 4's collapse, as the text is built: no leading space, no run of spaces.
#[inline(always)]
fn push_collapsed(out: &mut Vec<char>, c: char) {
    if c != SPACE || out.last().map_or(false, |&last| last != SPACE) {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Normalizer {
        Normalizer::new(&NormalizerSettings::v1(256))
    }

    #[test]
    fn worked_examples_of_the_spec() {
        let n = v1();
        for (input, want) in [
            ("今天天气怎么样？", "今天天气怎么样?"),
            ("ＡＢＣ１２３？！", "abc123?!"),
            ("\t打开\u{200b}客厅\u{3000}的灯\r\n", "打开客厅 的灯"),
            ("İSTANBUL", "i\u{307}stanbul"),
            ("ΣΑΣ Σ", "σας σ"),
            ("👨\u{200d}👩\u{200d}👧", "👨👩👧"),
            ("cafe\u{301}", "café"),
            ("", ""),
            (" \u{200b}\u{feff}\t", ""),
            ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),
            ("㍿①ﬁ", "株式会社1fi"),
        ] {
            assert_eq!(n.normalize(input), want, "{input:?}");
            assert_eq!(n.normalize_reference(input), want, "{input:?}");
        }
    }

    #[test]
    fn truncation_comes_after_the_collapse() {
        let n = Normalizer::new(&NormalizerSettings::v1(3));
        assert_eq!(n.normalize("ab cd"), "ab ");
        assert_eq!(n.normalize("  ab   cd"), "ab ");
        let long = format!("{} 吗", "字".repeat(255));
        assert_eq!(v1().normalize(&long), format!("{} ", "字".repeat(255)));
    }

    #[test]
    fn surrogates_are_removed_in_step_3() {
        let n = v1();
        let mut out = Vec::new();
        // "e", a lone surrogate, a combining acute: the surrogate blocks the composition.
        n.normalize_into([0x65, 0xD800, 0x301].into_iter(), &mut out).unwrap();
        assert_eq!(out, vec!['e', '\u{301}']);
        n.normalize_into([0x41, 0x3A3, 0xDC00].into_iter(), &mut out).unwrap();
        assert_eq!(out, vec!['a', 'ς']);
        let keep = Normalizer::new(&NormalizerSettings {
            removed_categories: vec!["Cc".into()],
            ..NormalizerSettings::v1(8)
        });
        assert_eq!(keep.normalize_into([0x41, 0xD800].into_iter(), &mut out), Err(InvalidCodePoint(0xD800)));
    }

    #[test]
    fn ngrams_follow_the_spec_examples() {
        let a = Analyzer { min_n: 1, max_n: 3, word_boundary_padding: true, word_max_n: 0, head_chars: 0 };
        assert_eq!(a.ngrams("吗"), ["吗", " 吗", "吗 ", " 吗 "]);
        assert_eq!(
            a.ngrams("ab c"),
            ["a", "b", " a", "ab", "b ", " ab", "ab ", "c", " c", "c ", " c "]
        );
        assert!(a.ngrams("ab ").contains(&"  ".to_string()));
        assert!(a.ngrams("").is_empty());
        let whole = Analyzer { min_n: 1, max_n: 2, word_boundary_padding: false, word_max_n: 0, head_chars: 0 };
        assert_eq!(whole.ngrams("a b"), ["a", "b", "a ", " b"]);
    }

    #[test]
    fn word_ngrams_follow_the_spec_examples() {
        let words = |text: &str| {
            let a = Analyzer { min_n: 1, max_n: 1, word_boundary_padding: true, word_max_n: 2, head_chars: 0 };
            let chars: Vec<char> = text.chars().collect();
            let (mut grams, mut buf) = (Vec::new(), String::new());
            a.for_each_word_gram(&chars, &mut buf, |g| grams.push(g.to_owned()));
            grams
        };
        assert_eq!(words("play some jazz"), ["\u{1}play", "\u{1}some", "\u{1}jazz", "\u{1}play some", "\u{1}some jazz"]);
        assert_eq!(words("打开 客厅的灯"), ["\u{1}打开", "\u{1}客厅的灯", "\u{1}打开 客厅的灯"]);
        assert_eq!(words("吗"), ["\u{1}吗"]);
        assert_eq!(words("ab "), ["\u{1}ab"]); // a truncated text's empty last piece is no word
        assert!(words("").is_empty());
        let a = Analyzer { min_n: 1, max_n: 1, word_boundary_padding: true, word_max_n: 1, head_chars: 0 };
        assert_eq!(a.ngrams("a b"), ["a", "b", "\u{1}a", "\u{1}b"]); // characters, then words
    }

    #[test]
    fn head_ngrams_follow_the_spec_examples() {
        let a = Analyzer { min_n: 1, max_n: 3, word_boundary_padding: true, word_max_n: 0, head_chars: 3 };
        let heads = |text: &str| {
            let chars: Vec<char> = text.chars().collect();
            let (mut grams, mut buf) = (Vec::new(), String::new());
            a.for_each_head_gram(&chars, &mut buf, |g| grams.push(g.to_owned()));
            grams
        };
        assert_eq!(heads("行吧,不过先备份"), ["\u{2}行", "\u{2}吧", "\u{2} 行", "\u{2}行吧", "\u{2} 行吧"]);
        assert_eq!(heads("...是...我算错了"), ["\u{2}是", "\u{2} 是"]);
        assert_eq!(
            heads("好的好的"),
            ["\u{2}好", "\u{2}的", "\u{2}好", "\u{2} 好", "\u{2}好的", "\u{2}的好", "\u{2} 好的", "\u{2}好的好"]
        );
        assert_eq!(heads("ok sure"), ["\u{2}o", "\u{2}k", "\u{2} o", "\u{2}ok", "\u{2} ok"]);
        assert!(heads("?!").is_empty());
        assert!(heads("").is_empty());
        assert!(heads(" 。、~;").is_empty());
        // Every clause mark ends the head; lengths are code points, not UTF-8 bytes.
        for mark in CLAUSE_MARKS {
            assert_eq!(heads(&format!("{mark}𝄞{mark}x")), ["\u{2}𝄞", "\u{2} 𝄞"], "{mark:?}");
        }
        // min_n above 1, and characters, then words, then heads.
        let b = Analyzer { min_n: 2, max_n: 2, word_boundary_padding: true, word_max_n: 1, head_chars: 16 };
        assert_eq!(b.ngrams("ab"), [" a", "ab", "b ", "\u{1}ab", "\u{2} a", "\u{2}ab"]);
        let none = Analyzer { head_chars: 0, ..a };
        assert!(none.ngrams("ok").iter().all(|g| !g.starts_with(HEAD_MARK)));
    }

    #[test]
    fn every_second_part_of_a_composition_is_unstable() {
        // The fast path's premise, over the whole database of unicode-normalization.
        use unicode_normalization::char::{compose, decompose_canonical};
        let mut seconds = 0;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let mut parts = Vec::new();
            decompose_canonical(c, |d| parts.push(d));
            if parts.len() >= 2 {
                // The last character of a full decomposition is the second part of the last
                // composition step; earlier steps are covered by their own composites.
                let (head, last) = (&parts[..parts.len() - 1], parts[parts.len() - 1]);
                let first: String = head.iter().collect::<String>().nfc().collect();
                if first.chars().count() == 1 && compose(first.chars().next().unwrap(), last) == Some(c) {
                    seconds += 1;
                    assert!(!starts_stable(last), "U+{:04X} composes as a second part", last as u32);
                }
            }
        }
        for lv in [0xAC00u32, 0xAC1C] {
            let t = char::from_u32(0x11A8).unwrap();
            assert!(compose(char::from_u32(lv).unwrap(), t).is_some());
            assert!(!starts_stable(t));
        }
        assert!(seconds > 900, "{seconds}");
    }

    #[test]
    fn fast_path_equals_reference_on_every_code_point_alone_and_in_pairs() {
        let n = v1();
        let samples: Vec<char> = (0..=0x10FFFFu32).step_by(7).filter_map(char::from_u32).collect();
        for &c in &samples {
            let text = c.to_string();
            assert_eq!(n.normalize(&text), n.normalize_reference(&text), "U+{:04X}", c as u32);
        }
        // Pairs with the composition-prone neighbours.
        let neighbours = ['a', 'A', 'e', '\u{301}', '\u{3099}', 'か', '\u{1161}', '\u{11A8}', '가', 'Σ', 'ı', ' ', '\u{200d}'];
        for &c in samples.iter().step_by(5) {
            for &m in &neighbours {
                for text in [format!("{c}{m}"), format!("{m}{c}")] {
                    assert_eq!(n.normalize(&text), n.normalize_reference(&text), "{text:?}");
                }
            }
        }
    }
}
