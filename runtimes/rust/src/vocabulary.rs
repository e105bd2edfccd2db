//! Step 6-7's look-up: which vocabulary column each n-gram of a unit is, without building strings.
//!
//! An open-addressing hash table holds every vocabulary n-gram and every proper prefix of one
//! (prefixes without a column). The n-grams starting at one position are looked up in order of
//! length with an incremental hash, and the walk stops at the first one that is not even a
//! prefix: no longer n-gram from there can be in the vocabulary.

use crate::textspec::Analyzer;

const PREFIX_ONLY: u32 = u32::MAX;
/// FxHash's multiplier (rustc's hasher): one rotate, xor and multiply per character.
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    start: u32,
    /// 0 marks an empty slot (no n-gram is empty).
    len: u32,
    col: u32,
}

/// Vocabulary n-gram (as code points) -> feature column.
#[derive(Clone)]
pub struct GramIndex {
    slots: Vec<Slot>,
    arena: Vec<char>,
    shift: u32,
    mask: usize,
}

impl std::fmt::Debug for GramIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GramIndex({} slots)", self.slots.len())
    }
}

#[inline(always)]
fn step(hash: u64, c: char) -> u64 {
    (hash.rotate_left(5) ^ c as u64).wrapping_mul(SEED)
}

impl GramIndex {
    /// Index `vocabulary` (column = position). Entries longer than `max_n` code points can
    /// never be produced by the analyzer and are left out.
    pub fn new(vocabulary: &[String], max_n: usize) -> Self {
        let grams: Vec<Vec<char>> = vocabulary.iter().map(|g| g.chars().collect()).collect();
        let entries: usize = grams.iter().map(|g| g.len().min(max_n)).sum();
        let bits = (2 * entries.max(8)).next_power_of_two().trailing_zeros(); // load <= 1/2
        let mut index = GramIndex {
            slots: vec![Slot::default(); 1 << bits],
            arena: Vec::new(),
            shift: 64 - bits,
            mask: (1 << bits) - 1,
        };
        for (col, gram) in grams.iter().enumerate() {
            if gram.is_empty() || gram.len() > max_n {
                continue;
            }
            let mut hash = 0;
            for n in 1..=gram.len() {
                hash = step(hash, gram[n - 1]);
                let col = if n == gram.len() { col as u32 } else { PREFIX_ONLY };
                index.insert(hash, &gram[..n], col);
            }
        }
        index
    }

    fn insert(&mut self, hash: u64, gram: &[char], col: u32) {
        let mut i = (hash >> self.shift) as usize;
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                let start = self.arena.len() as u32;
                self.arena.extend_from_slice(gram);
                self.slots[i] = Slot { hash, start, len: gram.len() as u32, col };
                return;
            }
            if self.matches(&slot, hash, gram) {
                if col != PREFIX_ONLY {
                    self.slots[i].col = col; // a prefix of another n-gram is an n-gram too
                }
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline(always)]
    fn matches(&self, slot: &Slot, hash: u64, gram: &[char]) -> bool {
        slot.hash == hash
            && slot.len as usize == gram.len()
            && self.arena[slot.start as usize..slot.start as usize + gram.len()] == *gram
    }

    #[inline(always)]
    fn find(&self, hash: u64, gram: &[char]) -> Option<u32> {
        let mut i = (hash >> self.shift) as usize;
        loop {
            let slot = &self.slots[i];
            if slot.len == 0 {
                return None;
            }
            if self.matches(slot, hash, gram) {
                return Some(slot.col);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The column of `gram`, if it is in the vocabulary.
    pub fn column(&self, gram: &str) -> Option<usize> {
        let chars: Vec<char> = gram.chars().collect();
        let hash = chars.iter().fold(0, |h, &c| step(h, c));
        self.find(hash, &chars).filter(|&c| c != PREFIX_ONLY).map(|c| c as usize)
    }

    /// Append to `hits` the column of every n-gram of `unit` (orders `min_n..=max_n`, the
    /// one-character n-gram `" "` excepted) that is in the vocabulary, once per occurrence.
    #[inline]
    pub fn hits(&self, unit: &[char], analyzer: &Analyzer, hits: &mut Vec<u32>) {
        let (min_n, max_n) = (analyzer.min_n, analyzer.max_n);
        for i in 0..unit.len() {
            let mut hash = 0;
            for n in 1..=max_n.min(unit.len() - i) {
                let c = unit[i + n - 1];
                hash = step(hash, c);
                match self.find(hash, &unit[i..i + n]) {
                    None => break,
                    Some(col) => {
                        if n >= min_n && col != PREFIX_ONLY && !(n == 1 && c == ' ') {
                            hits.push(col);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_grams_and_not_prefixes() {
        let vocab: Vec<String> = ["吗", " 吗", "吗 ", "abc", "b", "长长长长"].map(String::from).to_vec();
        let index = GramIndex::new(&vocab, 3);
        assert_eq!(index.column("吗"), Some(0));
        assert_eq!(index.column("abc"), Some(3));
        assert_eq!(index.column("ab"), None); // a prefix only
        assert_eq!(index.column("长长长长"), None); // longer than max_n
        let analyzer = Analyzer { min_n: 1, max_n: 3, word_boundary_padding: true, word_max_n: 0, head_chars: 0 };
        let mut hits = Vec::new();
        let unit: Vec<char> = " 吗 ".chars().collect();
        index.hits(&unit, &analyzer, &mut hits);
        hits.sort_unstable();
        assert_eq!(hits, [0, 1, 2]);
        hits.clear();
        let unit: Vec<char> = " abcb ".chars().collect();
        index.hits(&unit, &analyzer, &mut hits);
        assert_eq!(hits, [3, 4, 4]);
    }

    #[test]
    fn the_space_unigram_never_counts() {
        let vocab: Vec<String> = [" ", "  "].map(String::from).to_vec();
        let index = GramIndex::new(&vocab, 3);
        let analyzer = Analyzer { min_n: 1, max_n: 2, word_boundary_padding: true, word_max_n: 0, head_chars: 0 };
        let mut hits = Vec::new();
        index.hits(&[' ', ' '], &analyzer, &mut hits);
        assert_eq!(hits, [1]);
    }
}
