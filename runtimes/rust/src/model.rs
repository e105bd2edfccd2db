//! [`MicroModel`]: load and validate an artifact pair, then answer.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::ArtifactError;
use crate::graph::{self, LinearGraph, Transform};
use crate::proto::foundry_v1 as pb;
use crate::textspec::{Analyzer, InvalidCodePoint, Normalizer, NormalizerSettings, HEAD_MARK, WORD_MARK};
use crate::vocabulary::GramIndex;
use crate::kernel;

/// `.bin` layouts this runtime reads (rule B3; 3: with the unfamiliarity gate, 4: and with
/// reflex rules, 5: the vocabulary front-coded and the idf as a table index, rules optional,
/// 6: and word n-grams, 7: and head n-grams).
pub const SUPPORTED_FORMAT_VERSIONS: [u32; 5] = [3, 4, 5, 6, 7];
/// The layout of a file without reflex rules before format 5 (rule B14).
pub const PLAIN_FORMAT_VERSION: u32 = 3;
/// The layout of a file with reflex rules before format 5 (rule B14).
pub const RULES_FORMAT_VERSION: u32 = 4;
/// The layout written now (rules B9, B10).
pub const COMPACT_FORMAT_VERSION: u32 = 5;
/// Format 5's layout plus word n-grams (text spec step 6b, `analyzer.word_max_n`).
pub const WORDS_FORMAT_VERSION: u32 = 6;
/// Format 6 plus head n-grams (text spec step 6c, `analyzer.head_chars`).
pub const HEAD_FORMAT_VERSION: u32 = 7;
/// The largest word n-gram order a runtime accepts.
pub const MAX_WORD_N: u32 = 3;
/// The longest head (step 6c) a runtime accepts, in code points.
pub const MAX_HEAD_CHARS: u32 = 16;

/// Whether a format front-codes its vocabulary and tables its idf (fields 17-21): 5 to 7.
fn compact_layout(format_version: u32) -> bool {
    (COMPACT_FORMAT_VERSION..=HEAD_FORMAT_VERSION).contains(&format_version)
}
/// Limits of rule B14: rules, words in all rules, code points per word and per rule name.
pub const MAX_RULES: usize = 256;
pub const MAX_RULE_WORDS: usize = 4096;
pub const MAX_WORD_CHARS: usize = 64;
pub const MAX_RULE_NAME_CHARS: usize = 64;
/// Rule F2's size limits.
pub const MAX_BIN_BYTES: u64 = 16 << 20;
pub const MAX_ONNX_BYTES: u64 = 256 << 20;
/// Limits of rules B5, B7, B8, B9.
pub const MAX_LABELS: usize = 1024;
pub const MAX_CHARS: u32 = 4096;
pub const MAX_N: u32 = 8;
pub const MAX_VOCABULARY: usize = 1 << 18;
/// Rule B1: the file ends with field 13 (`content_sha256`, bytes): tag 0x6A, length 32, digest.
const INTEGRITY_HEADER: [u8; 2] = [(13 << 3) | 2, 32];
const INTEGRITY_BYTES: usize = 34;
/// Rule P1: pauses before reading a mismatched pair again (an export may be switching them).
const PAIR_RETRY_DELAYS_MS: [u64; 4] = [10, 20, 40, 80];

/// An [`ArtifactError`] naming the file, what is wrong, and the spec rule.
fn rule(path: &Path, what: impl std::fmt::Display, rule: &str) -> ArtifactError {
    ArtifactError(format!("{}: {what} (spec rule {rule})", path.display()))
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index into [`MicroModel::labels`] of the top probability (the lowest index on ties).
    pub label: usize,
    /// One probability per label, in label order.
    pub probabilities: Vec<f64>,
    /// `probabilities[label] >= threshold` and `unfamiliar <= max_unfamiliar` (section 5):
    /// when false, the caller should fall back.
    pub confident: bool,
    /// `probabilities[label]`.
    pub score: f64,
    /// The share of the text's counted n-grams the vocabulary does not know (section 5).
    pub unfamiliar: f64,
    /// Index into [`MicroModel::rules`] of the reflex rule that answered, or `None` when the
    /// model did (a rule's answer: probability 1 for its label, 0 for the others, confident).
    pub rule: Option<usize>,
}

/// Whether reflex rule `r` answers a normalised text (section 5: every word list it has is
/// satisfied; plain substring, prefix, suffix and equality tests).
pub fn rule_matches(r: &pb::Rule, normalized: &str) -> bool {
    (r.equals.is_empty() || r.equals.iter().any(|w| w == normalized))
        && (r.starts_with.is_empty() || r.starts_with.iter().any(|w| normalized.starts_with(w.as_str())))
        && (r.ends_with.is_empty() || r.ends_with.iter().any(|w| normalized.ends_with(w.as_str())))
        && (r.contains.is_empty() || r.contains.iter().any(|w| normalized.contains(w.as_str())))
        && r.also_contains.iter().all(|w| normalized.contains(w.as_str()))
        && !r.unless_contains.iter().any(|w| normalized.contains(w.as_str()))
}

/// Rule B14: the reflex rules are well formed; format 3 has none, format 4 has some, formats
/// 5-7 any number.
fn check_rules(msg: &pb::Preprocessor, path: &Path) -> Result<(), ArtifactError> {
    let n = msg.rules.len();
    if (n > 0 && msg.format_version == PLAIN_FORMAT_VERSION) || (n == 0 && msg.format_version == RULES_FORMAT_VERSION) {
        return Err(rule(path, format!(
            "format_version {} with {n} rules: rules need format {RULES_FORMAT_VERSION} or {COMPACT_FORMAT_VERSION}-{HEAD_FORMAT_VERSION}, and format {RULES_FORMAT_VERSION} needs rules",
            msg.format_version
        ), "B14"));
    }
    if n > MAX_RULES {
        return Err(rule(path, format!("{n} rules; at most {MAX_RULES}"), "B14"));
    }
    let mut names = HashSet::new();
    let mut words = 0;
    for (i, r) in msg.rules.iter().enumerate() {
        let name_chars = r.name.chars().count();
        if !(1..=MAX_RULE_NAME_CHARS).contains(&name_chars) || !names.insert(r.name.as_str()) {
            let head: String = r.name.chars().take(70).collect();
            return Err(rule(path, format!(
                "rules[{i}].name {head:?} is empty, longer than {MAX_RULE_NAME_CHARS} code points or repeated"
            ), "B14"));
        }
        if r.label as usize >= msg.labels.len() {
            return Err(rule(path, format!("rules[{i}].label {} is not a label index (0..{})", r.label, msg.labels.len() - 1), "B14"));
        }
        if r.contains.is_empty() && r.starts_with.is_empty() && r.ends_with.is_empty() && r.equals.is_empty() {
            return Err(rule(path, format!("rules[{i}] has no contains, starts_with, ends_with or equals words"), "B14"));
        }
        let lists = [
            ("contains", &r.contains),
            ("starts_with", &r.starts_with),
            ("ends_with", &r.ends_with),
            ("equals", &r.equals),
            ("also_contains", &r.also_contains),
            ("unless_contains", &r.unless_contains),
        ];
        for (list, values) in lists {
            for word in values.iter() {
                let chars = word.chars().count();
                if !(1..=MAX_WORD_CHARS).contains(&chars) {
                    let head: String = word.chars().take(40).collect();
                    return Err(rule(path, format!(
                        "rules[{i}].{list}: the word {head:?} has {chars} code points; it needs 1 to {MAX_WORD_CHARS}"
                    ), "B14"));
                }
            }
            words += values.len();
        }
    }
    if words > MAX_RULE_WORDS {
        return Err(rule(path, format!("the rules hold {words} words; at most {MAX_RULE_WORDS}"), "B14"));
    }
    Ok(())
}

/// Reusable buffers of one thread's predictions (nothing in them outlives a call).
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    chars: Vec<char>,
    units: Vec<char>,
    /// The word (step 6b) or head (step 6c) n-gram being looked up.
    word: String,
    hits: Vec<u32>,
    counts: Vec<u32>,
    distinct: Vec<u32>,
    /// `(column, tf * idf)` of the distinct in-vocabulary n-grams, in first-seen order.
    terms: Vec<(u32, f64)>,
    sums: Vec<f64>,
    raw: Vec<f64>,
    /// Unfamiliarity of the last text given to [`MicroModel::proba_into`].
    pub unfamiliar: f64,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A loaded, validated micro-model. Create with [`MicroModel::load`].
#[derive(Debug, Clone)]
pub struct MicroModel {
    task: String,
    labels: Vec<String>,
    threshold: f64,
    /// Index of the out-of-scope label (`.bin` field `out_of_scope`): answered when unsure.
    out_of_scope: Option<usize>,
    preprocessor: pb::Preprocessor,
    normalizer: Normalizer,
    analyzer: Analyzer,
    index: GramIndex,
    /// The word n-grams of the vocabulary (step 6b, entries starting with [`WORD_MARK`]) and
    /// their columns; empty without word n-grams.
    words: HashMap<String, u32>,
    /// The head n-grams of the vocabulary (step 6c, entries starting with [`HEAD_MARK`]) and
    /// their columns; empty without head n-grams.
    heads: HashMap<String, u32>,
    /// With word-boundary padding, the padded unit (`" word "`) of every word the model knows
    /// (a word unigram of its vocabulary) and the columns of its character n-grams: a unit's
    /// n-grams depend on the unit alone, so a known word is one look-up instead of a walk.
    known: HashMap<Vec<char>, Box<[u32]>>,
    n_features: usize,
    idf: Vec<f64>,
    idf2: Vec<f64>,
    sublinear_tf: bool,
    l2: bool,
    /// Score rows kept in `weights`: 1 for a binary model exported as rows `(-w, w)`.
    rows: usize,
    /// `D x stride`: `W[k][j]` at `j * stride + k`, the graph's float32 values as they are
    /// (the idf is applied per text, in float64), zeros past `rows` (see [`kernel`]).
    weights: Vec<f32>,
    /// Row length of `weights`: `rows` rounded up to a multiple of 16 when more than 8.
    stride: usize,
    intercepts: Vec<f64>,
    transform: Transform,
    /// The unfamiliarity gate (section 5): n-grams of at least `min_order` code points count.
    min_order: usize,
    max_unfamiliar: f64,
    /// Per column: is its character n-gram long enough to count (`>= min_order` code points)?
    /// Word and head n-grams never count.
    counted: Vec<bool>,
    bin_path: PathBuf,
    onnx_path: PathBuf,
}

/// The bytes of an artifact file, after rules F1 (a regular file) and F2 (readable, size).
fn read_artifact(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>, ArtifactError> {
    let info = std::fs::metadata(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            rule(path, format!("{what} not found; forge it with `foundry forge <blueprint>` or pass the right --models-dir"), "F1")
        } else {
            rule(path, format!("cannot read the {what}: {err}"), "F2")
        }
    })?;
    if !info.is_file() {
        return Err(rule(path, format!("the {what} is not a regular file"), "F1"));
    }
    if info.len() > limit {
        return Err(rule(path, format!("the {what} has {} bytes, more than the limit of {limit}", info.len()), "F2"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        // Should the path become a FIFO between the stat and the open, do not wait for a writer.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(0o4000); // O_NONBLOCK
    }
    let mut data = Vec::new();
    use std::io::Read;
    options
        .open(path)
        .and_then(|file| file.take(limit + 1).read_to_end(&mut data))
        .map_err(|err| rule(path, format!("cannot read the {what}: {err}"), "F2"))?;
    if data.len() as u64 > limit {
        return Err(rule(path, format!("the {what} is larger than the limit of {limit} bytes"), "F2"));
    }
    Ok(data)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Rules B1-B14 on the bytes of a `.bin` (`path` names it in errors, `task` is the task asked for).
///
/// # Errors
/// The first rule of docs/preprocessor-spec.md, section 1, that the file breaks.
pub fn parse_preprocessor(data: &[u8], path: &Path, task: &str) -> Result<pb::Preprocessor, ArtifactError> {
    let n = data.len();
    if n < INTEGRITY_BYTES || data[n - INTEGRITY_BYTES..n - 32] != INTEGRITY_HEADER {
        return Err(rule(path, "not a preprocessor file of this format: it does not end with the integrity check (content_sha256); re-export the model", "B1"));
    }
    if Sha256::digest(&data[..n - INTEGRITY_BYTES])[..] != data[n - 32..] {
        return Err(rule(path, "the file is damaged: its content does not match its integrity check (content_sha256); re-export the model or restore a copy", "B1"));
    }
    let mut msg = pb::Preprocessor::decode(data).map_err(|err| {
        let reason = err.to_string();
        let reason = if reason.contains("buffer underflow") || reason.contains("length exceeded") {
            format!("it ends in the middle of a field ({reason})")
        } else {
            reason
        };
        rule(path, format!("not a valid preprocessor file (truncated or corrupt): {reason}"), "B2")
    })?;
    if !SUPPORTED_FORMAT_VERSIONS.contains(&msg.format_version) {
        return Err(rule(path, format!(
            "format_version {} is not supported by this runtime (supported: {}); re-export the model or upgrade the runtime",
            msg.format_version,
            SUPPORTED_FORMAT_VERSIONS.map(|v| v.to_string()).join(", ")
        ), "B3"));
    }
    if msg.task != task {
        return Err(rule(path, format!("belongs to task {:?}, not {:?}", msg.task, task), "B4"));
    }
    if !(2..=MAX_LABELS).contains(&msg.labels.len()) {
        return Err(rule(path, format!("needs 2 to {MAX_LABELS} labels, has {}", msg.labels.len()), "B5"));
    }
    if msg.labels.iter().any(String::is_empty) || msg.labels.iter().collect::<HashSet<_>>().len() != msg.labels.len() {
        return Err(rule(path, format!("labels {:?} hold an empty or a repeated name", &msg.labels[..msg.labels.len().min(20)]), "B5"));
    }
    if !msg.out_of_scope.is_empty() && !msg.labels.contains(&msg.out_of_scope) {
        let head: String = msg.out_of_scope.chars().take(40).collect();
        return Err(rule(path, format!("out_of_scope {head:?} is not one of the labels"), "B5"));
    }
    let norm = msg.normalizer.clone().unwrap_or_default();
    if norm.spec_version != 1 || !norm.nfkc {
        return Err(rule(path, format!(
            "normalizer.spec_version = {} (nfkc = {}) is not supported (this runtime implements text spec 1, with NFKC)",
            norm.spec_version, norm.nfkc
        ), "B6"));
    }
    let v1 = NormalizerSettings::v1(1);
    let categories: HashSet<&str> = norm.removed_categories.iter().map(String::as_str).collect();
    let whitespace: HashSet<u32> = norm.whitespace.iter().copied().collect();
    if categories != v1.removed_categories.iter().map(String::as_str).collect()
        || whitespace != v1.whitespace.iter().copied().collect()
    {
        return Err(rule(path, "normaliser settings (removed categories / whitespace list) differ from text spec 1", "B6"));
    }
    if !(1..=MAX_CHARS).contains(&norm.max_chars) {
        return Err(rule(path, format!("normalizer.max_chars = {} is outside 1..{MAX_CHARS}", norm.max_chars), "B7"));
    }
    let ana = msg.analyzer.clone().unwrap_or_default();
    if !(1 <= ana.min_n && ana.min_n <= ana.max_n && ana.max_n <= MAX_N) {
        return Err(rule(path, format!("analyzer needs 1 <= min_n <= max_n <= {MAX_N}, got min_n={}, max_n={}", ana.min_n, ana.max_n), "B8"));
    }
    let words_allowed = if msg.format_version >= WORDS_FORMAT_VERSION { MAX_WORD_N } else { 0 };
    if ana.word_max_n > words_allowed {
        return Err(rule(path, format!(
            "analyzer.word_max_n = {} is outside 0..{words_allowed} (word n-grams need format {WORDS_FORMAT_VERSION} or {HEAD_FORMAT_VERSION}, at most {MAX_WORD_N} words)",
            ana.word_max_n
        ), "B8"));
    }
    let head_allowed = if msg.format_version == HEAD_FORMAT_VERSION { MAX_HEAD_CHARS } else { 0 };
    if ana.head_chars > head_allowed {
        return Err(rule(path, format!(
            "analyzer.head_chars = {} is outside 0..{head_allowed} (head n-grams need format {HEAD_FORMAT_VERSION}, at most {MAX_HEAD_CHARS} code points)",
            ana.head_chars
        ), "B8"));
    }
    let terms = Terms {
        min_n: ana.min_n as usize,
        max_n: ana.max_n as usize,
        word_max_n: ana.word_max_n as usize,
        head_chars: ana.head_chars as usize,
        max_chars: norm.max_chars as usize,
    };
    let vocabulary = vocabulary_of(&msg, path, terms.entry_bytes())?;
    let d = vocabulary.len();
    if !(1..=MAX_VOCABULARY).contains(&d) {
        return Err(rule(path, format!("the vocabulary has {d} entries; it needs 1 to {MAX_VOCABULARY}"), "B9"));
    }
    if let Some(bad) = vocabulary.iter().find(|g| !terms.valid(g)) {
        let head: String = bad.chars().take(40).collect();
        let Terms { min_n, max_n, word_max_n, .. } = terms;
        let heads = if terms.head_chars > 0 { " nor a head n-gram of min_n..max_n code points" } else { "" };
        return Err(rule(path, format!(
            "vocabulary entry {head:?} is neither a character n-gram of min_n..max_n = {min_n}..{max_n} code points nor a word n-gram of 1..word_max_n = {word_max_n} words{heads}"
        ), "B9"));
    }
    if vocabulary.iter().collect::<HashSet<_>>().len() != d {
        return Err(rule(path, "the vocabulary has repeated entries; the file is corrupt", "B9"));
    }
    let weighting = msg.weighting.clone().unwrap_or_default();
    if !matches!(weighting.norm, 0 | 1) {
        return Err(rule(path, format!("weighting.norm = {} is neither NORM_NONE (0) nor NORM_L2 (1)", weighting.norm), "B10"));
    }
    let idf = if weighting.use_idf { idf_of(&msg, path, d)? } else { Vec::new() };
    if weighting.use_idf {
        if idf.len() != d {
            return Err(rule(path, format!("idf has {} values but the vocabulary has {d} entries; the file is corrupt", idf.len()), "B10"));
        }
        if !msg.idf_table.iter().chain(idf.iter()).all(|v| v.is_finite() && *v > 0.0) {
            return Err(rule(path, "idf holds a value that is not a finite number > 0", "B10"));
        }
    } else if !msg.idf.is_empty() || !msg.idf_table.is_empty() || !msg.idf_index.is_empty() {
        return Err(rule(path, format!(
            "use_idf is false but idf has {} values, idf_table {}, idf_index {}",
            msg.idf.len(), msg.idf_table.len(), msg.idf_index.len()
        ), "B10"));
    }
    if !(msg.threshold.is_finite() && (0.0..=1.0).contains(&msg.threshold)) {
        return Err(rule(path, format!("threshold {} is not a number in [0, 1]", msg.threshold), "B11"));
    }
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if msg.onnx_sha256.len() != 64 || !msg.onnx_sha256.chars().all(hex) {
        let head: String = msg.onnx_sha256.chars().take(70).collect();
        return Err(rule(path, format!("onnx_sha256 {head:?} is not 64 lowercase hex digits"), "B12"));
    }
    let gate = msg.familiarity.clone();
    let (min_order, max_unfamiliar) = gate.as_ref().map_or((0, f64::NAN), |g| (g.min_order, g.max_unfamiliar));
    if gate.is_none() || !(1..=ana.max_n).contains(&min_order) || !(max_unfamiliar.is_finite() && (0.0..=1.0).contains(&max_unfamiliar)) {
        return Err(rule(path, format!(
            "familiarity must be present with 1 <= min_order <= max_n and max_unfamiliar a number in [0, 1], got min_order={min_order}, max_unfamiliar={max_unfamiliar}"
        ), "B13"));
    }
    check_rules(&msg, path)?;
    if compact_layout(msg.format_version) {
        // Readers find the vocabulary and idf per column in fields 7 and 8, whatever the layout.
        msg.vocabulary = vocabulary;
        msg.idf = idf;
    }
    Ok(msg)
}

/// The settings that decide which vocabulary entries a file may hold (rule B9).
#[derive(Debug, Clone, Copy)]
struct Terms {
    min_n: usize,
    max_n: usize,
    word_max_n: usize,
    head_chars: usize,
    max_chars: usize,
}

impl Terms {
    /// The most UTF-8 bytes a vocabulary entry may have (rule B9): `4 * max_n`; with head
    /// n-grams the mark and `max_n` code points, `1 + 4 * max_n`; with word n-grams the mark
    /// and a whole normalised text, `1 + 4 * max_chars`, if larger.
    fn entry_bytes(&self) -> usize {
        let longest = if self.head_chars > 0 { 1 + 4 * self.max_n } else { 4 * self.max_n };
        if self.word_max_n > 0 { longest.max(1 + 4 * self.max_chars) } else { longest }
    }

    /// Rule B9 for one entry: a character n-gram of `min_n..=max_n` code points starting with
    /// neither mark; or (`word_max_n > 0`) the word mark and 1..=word_max_n non-empty words
    /// joined by single spaces, at most `max_chars` code points after the mark; or
    /// (`head_chars > 0`) the head mark and `min_n..=max_n` code points without either mark.
    fn valid(&self, term: &str) -> bool {
        let orders = self.min_n..=self.max_n;
        if let Some(gram) = term.strip_prefix(HEAD_MARK) {
            return self.head_chars > 0
                && orders.contains(&gram.chars().count())
                && !gram.contains([WORD_MARK, HEAD_MARK]);
        }
        match term.strip_prefix(WORD_MARK) {
            None => orders.contains(&term.chars().count()),
            Some(words) => {
                let n = words.split(' ').count();
                (1..=self.word_max_n).contains(&n)
                    && words.chars().count() <= self.max_chars
                    && words.split(' ').all(|w| !w.is_empty() && !w.contains(WORD_MARK))
            }
        }
    }
}

/// Rule B9's layout part: the vocabulary of field 7 (formats 3-4) or of fields 17-19 (formats
/// 5-7, front-coded: every entry at most `max_bytes` bytes ([`Terms::entry_bytes`]), valid UTF-8,
/// strictly ascending).
fn vocabulary_of(msg: &pb::Preprocessor, path: &Path, max_bytes: usize) -> Result<Vec<String>, ArtifactError> {
    let (prefix, suffix_len, blob) = (&msg.vocab_prefix, &msg.vocab_suffix_len, &msg.vocab_suffixes);
    if !compact_layout(msg.format_version) {
        if !prefix.is_empty() || !suffix_len.is_empty() || !blob.is_empty() {
            return Err(rule(path, format!(
                "format {} holds the front-coded vocabulary of format 5 (fields 17-19)", msg.format_version
            ), "B9"));
        }
        return Ok(msg.vocabulary.clone());
    }
    if !msg.vocabulary.is_empty() {
        return Err(rule(path, "format 5 holds field 7 (vocabulary); its vocabulary is front-coded in fields 17-19", "B9"));
    }
    let d = prefix.len();
    if !(1..=MAX_VOCABULARY).contains(&d) || suffix_len.len() != d {
        return Err(rule(path, format!(
            "vocab_prefix has {d} values and vocab_suffix_len {}; they need the same length, 1 to {MAX_VOCABULARY}",
            suffix_len.len()
        ), "B9"));
    }
    let mut grams = Vec::with_capacity(d);
    let mut at = 0usize;
    let mut prev: Vec<u8> = Vec::new();
    for i in 0..d {
        let (shared, rest) = (prefix[i] as usize, suffix_len[i] as usize);
        if shared > prev.len() || shared + rest > max_bytes || rest > blob.len() - at {
            return Err(rule(path, format!(
                "vocabulary entry {i}: prefix {shared} + suffix {rest} bytes do not fit (entry {} has {} bytes, at most {} bytes an entry, {} suffix bytes left)",
                i as i64 - 1, prev.len(), max_bytes, blob.len() - at
            ), "B9"));
        }
        let mut data = prev[..shared].to_vec();
        data.extend_from_slice(&blob[at..at + rest]);
        at += rest;
        if i > 0 && data <= prev {
            return Err(rule(path, format!(
                "vocabulary entry {i} does not come after entry {} in byte order; the file is corrupt", i - 1
            ), "B9"));
        }
        match std::str::from_utf8(&data) {
            Ok(gram) => grams.push(gram.to_owned()),
            Err(_) => return Err(rule(path, format!("vocabulary entry {i} is not valid UTF-8"), "B9")),
        }
        prev = data;
    }
    if at != blob.len() {
        return Err(rule(path, format!("vocab_suffixes has {} bytes more than vocab_suffix_len uses", blob.len() - at), "B9"));
    }
    Ok(grams)
}

/// Rule B10's layout part (with `use_idf`): the idf of field 8 (formats 3-4) or of fields
/// 20-21 (format 5: `idf_table[idf_index[i]]`, 1 to `d` table values).
fn idf_of(msg: &pb::Preprocessor, path: &Path, d: usize) -> Result<Vec<f64>, ArtifactError> {
    let (table, index) = (&msg.idf_table, &msg.idf_index);
    if !compact_layout(msg.format_version) {
        if !table.is_empty() || !index.is_empty() {
            return Err(rule(path, format!(
                "format {} holds the idf table of format 5 (fields 20-21)", msg.format_version
            ), "B10"));
        }
        return Ok(msg.idf.clone());
    }
    if !msg.idf.is_empty() || !(1..=d).contains(&table.len()) || index.len() != d {
        return Err(rule(path, format!(
            "format 5 needs idf empty, 1 to {d} idf_table values and one idf_index per vocabulary entry ({d}); got {}, {} and {}",
            msg.idf.len(), table.len(), index.len()
        ), "B10"));
    }
    if let Some(bad) = index.iter().position(|&j| j as usize >= table.len()) {
        return Err(rule(path, format!(
            "idf_index[{bad}] = {} is outside the idf_table (0..{})", index[bad], table.len() - 1
        ), "B10"));
    }
    Ok(index.iter().map(|&j| table[j as usize]).collect())
}

/// The entries of `vocabulary` that start with `mark` (word or head n-grams) and their columns.
fn marked_columns(vocabulary: &[String], mark: char) -> HashMap<String, u32> {
    vocabulary.iter().zip(0u32..).filter(|(g, _)| g.starts_with(mark)).map(|(g, col)| (g.clone(), col)).collect()
}

/// [`MicroModel::known`]: the padded unit of every word unigram of `vocabulary` and the columns
/// of its character n-grams (empty without word-boundary padding or word n-grams).
fn known_units(vocabulary: &[String], index: &GramIndex, analyzer: &Analyzer) -> HashMap<Vec<char>, Box<[u32]>> {
    if !analyzer.word_boundary_padding {
        return HashMap::new();
    }
    let mut hits = Vec::new();
    vocabulary
        .iter()
        .filter_map(|g| g.strip_prefix(WORD_MARK).filter(|w| !w.contains(' ')))
        .map(|word| {
            let unit: Vec<char> = std::iter::once(' ').chain(word.chars()).chain(std::iter::once(' ')).collect();
            hits.clear();
            index.hits(&unit, analyzer, &mut hits);
            (unit, hits.as_slice().into())
        })
        .collect()
}

impl MicroModel {
    /// Load and validate `<task>_classifier.onnx` + `<task>_preprocessor.bin` from `models_dir`.
    ///
    /// # Errors
    /// [`ArtifactError`] naming the file: missing or corrupt, unsupported format or text spec
    /// version, another task's file, an `.onnx` whose SHA-256 differs from the one recorded in
    /// the `.bin`, a graph this runtime does not read, or labels / dimensions that disagree.
    pub fn load(task: &str, models_dir: impl AsRef<Path>) -> Result<Self, ArtifactError> {
        let dir = models_dir.as_ref();
        let bin_path = dir.join(format!("{task}_preprocessor.bin"));
        let onnx_path = dir.join(format!("{task}_classifier.onnx"));
        // Rule P1: a mismatched pair is read again a few times (an export may be switching it).
        for delay in PAIR_RETRY_DELAYS_MS.iter().map(Some).chain([None]) {
            let bin = read_artifact(&bin_path, "preprocessor file", MAX_BIN_BYTES)?;
            let pre = parse_preprocessor(&bin, &bin_path, task)?;
            let onnx = read_artifact(&onnx_path, "classifier file", MAX_ONNX_BYTES)?;
            match (sha256_hex(&onnx) == pre.onnx_sha256, delay) {
                (false, Some(ms)) => std::thread::sleep(std::time::Duration::from_millis(*ms)),
                _ => return Self::from_bytes(task, &bin, &onnx, &bin_path, &onnx_path),
            }
        }
        unreachable!("the last round returns")
    }

    /// [`MicroModel::load`] from the two files' bytes (the paths only name them in errors):
    /// rules B1-B14, P1, O1-O3.
    pub fn from_bytes(
        task: &str,
        bin: &[u8],
        onnx: &[u8],
        bin_path: &Path,
        onnx_path: &Path,
    ) -> Result<Self, ArtifactError> {
        let pre = parse_preprocessor(bin, bin_path, task)?;
        let digest = sha256_hex(onnx);
        if digest != pre.onnx_sha256 {
            return Err(rule(
                onnx_path,
                format!(
                    "SHA-256 {}… does not match the {}… recorded in {}; the pair is mismatched (re-export both files together)",
                    &digest[..12],
                    &pre.onnx_sha256[..12],
                    file_name(bin_path)
                ),
                "P1",
            ));
        }
        let settings = NormalizerSettings::from_proto(pre.normalizer.as_ref()).map_err(|e| rule(bin_path, e, "B6"))?;
        let analyzer = Analyzer::from_proto(pre.analyzer.as_ref()).map_err(|e| rule(bin_path, e, "B8"))?;
        let graph = graph::read_onnx(onnx, pre.vocabulary.len(), pre.labels.len(), &file_name(bin_path))
            .map_err(|(id, e)| rule(onnx_path, e, id))?;
        Ok(Self::build(task, pre, settings, analyzer, graph, bin_path, onnx_path))
    }

    fn build(
        task: &str,
        pre: pb::Preprocessor,
        settings: NormalizerSettings,
        analyzer: Analyzer,
        graph: LinearGraph,
        bin_path: &Path,
        onnx_path: &Path,
    ) -> Self {
        let weighting = pre.weighting.clone().unwrap_or_default();
        let d = pre.vocabulary.len();
        let k = graph.n_classes;
        let idf: Vec<f64> = if weighting.use_idf { pre.idf.clone() } else { vec![1.0; d] };
        let w = &graph.coefficients;
        let b = &graph.intercepts;
        // A binary logistic regression is exported as rows (-w, w), intercepts (-b, b): one
        // score row then suffices.
        let antisymmetric = k == 2 && b[0] == -b[1] && (0..d).all(|j| w[j] == -w[d + j]);
        let first_row = if antisymmetric { 1 } else { 0 };
        let rows = k - first_row;
        let stride = if rows > 8 { rows.next_multiple_of(16) } else { rows };
        let mut weights = vec![0.0f32; d * stride];
        for r in 0..rows {
            for j in 0..d {
                weights[j * stride + r] = w[(first_row + r) * d + j];
            }
        }
        let gate = pre.familiarity.clone().unwrap_or_default();
        let min_order = gate.min_order as usize;
        let index = GramIndex::new(&pre.vocabulary, analyzer.max_n);
        MicroModel {
            min_order,
            max_unfamiliar: gate.max_unfamiliar,
            counted: pre.vocabulary.iter()
                .map(|g| !g.starts_with([WORD_MARK, HEAD_MARK]) && g.chars().count() >= min_order)
                .collect(),
            task: task.to_owned(),
            labels: pre.labels.clone(),
            threshold: pre.threshold,
            out_of_scope: pre.labels.iter().position(|l| !pre.out_of_scope.is_empty() && *l == pre.out_of_scope),
            normalizer: Normalizer::new(&settings),
            known: known_units(&pre.vocabulary, &index, &analyzer),
            index,
            words: marked_columns(&pre.vocabulary, WORD_MARK),
            heads: marked_columns(&pre.vocabulary, HEAD_MARK),
            analyzer,
            n_features: d,
            idf2: idf.iter().map(|v| v * v).collect(),
            idf,
            sublinear_tf: weighting.sublinear_tf,
            l2: weighting.norm == 1,
            rows,
            weights,
            stride,
            intercepts: b.iter().map(|&v| v as f64).collect(),
            transform: graph.transform,
            bin_path: bin_path.to_owned(),
            onnx_path: onnx_path.to_owned(),
            preprocessor: pre,
        }
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    /// Class names; `labels()[k]` is column `k` of the probabilities.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The unfamiliarity gate: `(min_order, max_unfamiliar)`.
    pub fn familiarity(&self) -> (usize, f64) {
        (self.min_order, self.max_unfamiliar)
    }

    /// Section 5: `(total - known) / total` over the n-grams of at least `min_order` code
    /// points of the normalised text `chars`, `known` being those among `hits` (the columns
    /// of its in-vocabulary n-grams, with repeats); 0 when `total` is 0. `total` by
    /// arithmetic: a unit of `L` code points has `L - n + 1` n-grams of order `n <= L`.
    fn unfamiliarity(&self, chars: &[char], hits: &[u32]) -> f64 {
        if chars.is_empty() {
            return 0.0;
        }
        let (low, high) = (self.min_order.max(self.analyzer.min_n), self.analyzer.max_n);
        if low > high {
            return 0.0;
        }
        let per_unit = |len: usize| -> u64 { (low..=high.min(len)).map(|n| (len - n + 1) as u64).sum() };
        let padded = self.analyzer.word_boundary_padding;
        let mut total: u64 = 0;
        if padded {
            let mut units = 0u64;
            for word in chars.split(|&c| c == ' ') {
                total += per_unit(word.len() + 2);
                units += 1;
            }
            if low == 1 {
                total -= 2 * units; // the one-code-point n-gram " " is never yielded
            }
        } else {
            total = per_unit(chars.len());
            if low == 1 {
                total -= chars.iter().filter(|&&c| c == ' ').count() as u64;
            }
        }
        if total == 0 {
            return 0.0;
        }
        let known = hits.iter().filter(|&&col| self.counted[col as usize]).count() as u64;
        (total - known) as f64 / total as f64
    }

    /// The unfamiliarity of one text (section 5).
    pub fn unfamiliar(&self, text: &str) -> f64 {
        let mut scratch = Scratch::default();
        self.collect_hits(text.chars().map(|c| c as u32), &mut scratch).expect("a str holds scalar values");
        self.unfamiliarity(&scratch.chars, &scratch.hits)
    }

    /// `D`, the number of feature columns (vocabulary size).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The decoded `.bin` (provenance, Unicode version of the trainer, ...).
    pub fn preprocessor(&self) -> &pb::Preprocessor {
        &self.preprocessor
    }

    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// The `.bin` and `.onnx` paths the model was loaded from.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.bin_path, &self.onnx_path)
    }

    /// Steps 1-5: the normalised text.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text)
    }

    /// Steps 1-7: the normalised text and the non-zero features `(column, value)`, ascending,
    /// in float64 (before the float32 cast of step 7.4).
    pub fn featurize(&self, text: &str) -> (String, Vec<(usize, f64)>) {
        let mut scratch = Scratch::default();
        self.collect_hits(text.chars().map(|c| c as u32), &mut scratch).expect("a str holds scalar values");
        let mut counts: Vec<(usize, u32)> = Vec::new();
        scratch.hits.sort_unstable();
        for &col in &scratch.hits {
            match counts.last_mut() {
                Some((last, n)) if *last == col as usize => *n += 1,
                _ => counts.push((col as usize, 1)),
            }
        }
        let mut row: Vec<(usize, f64)> = counts.iter().map(|&(col, n)| (col, self.tf(n) * self.idf[col])).collect();
        if self.l2 {
            let norm = row.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|(_, v)| *v /= norm);
            }
        }
        (scratch.chars.iter().collect(), row)
    }

    #[inline(always)]
    fn tf(&self, count: u32) -> f64 {
        if count == 1 {
            1.0
        } else if self.sublinear_tf {
            1.0 + (count as f64).ln()
        } else {
            count as f64
        }
    }

    /// Steps 1-6: normalise `cps` into `scratch.chars`, and list the vocabulary columns of its
    /// n-grams (with repeats) in `scratch.hits`: character (6), word (6b) and head (6c)
    /// n-grams. Every path from a text to features (featurize, the answers, the native
    /// extension's and the C ABI's calls) comes through here; the known-unit look-up covers
    /// character n-grams only, the word and head n-grams are looked up after it.
    #[inline]
    fn collect_hits<I>(&self, cps: I, scratch: &mut Scratch) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32> + Clone,
    {
        self.normalizer.normalize_into(cps, &mut scratch.chars)?;
        scratch.hits.clear();
        let Scratch { chars, units, word, hits, .. } = scratch;
        let (index, analyzer, known) = (&self.index, &self.analyzer, &self.known);
        analyzer.for_each_unit(chars, units, |unit| match known.get(unit) {
            Some(cols) => hits.extend_from_slice(cols),
            None => index.hits(unit, analyzer, hits),
        });
        let (words, heads) = (&self.words, &self.heads);
        analyzer.for_each_word_gram(chars, word, |gram| hits.extend(words.get(gram)));
        analyzer.for_each_head_gram(chars, word, |gram| hits.extend(heads.get(gram)));
        Ok(())
    }

    /// The probabilities of the text given as code points `cps`, into `out` (length K), and
    /// its unfamiliarity into `scratch.unfamiliar`. This is the whole answer path; `scratch`
    /// may be reused across calls and models.
    ///
    /// # Errors
    /// [`InvalidCodePoint`]: see [`Normalizer::normalize_into`] (never for a `str`).
    #[inline]
    pub fn proba_into<I>(&self, cps: I, scratch: &mut Scratch, out: &mut [f64]) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32> + Clone,
    {
        self.collect_hits(cps, scratch)?;
        scratch.unfamiliar = self.unfamiliarity(&scratch.chars, &scratch.hits);
        let Scratch { hits, counts, distinct, terms, sums, raw, .. } = scratch;
        if counts.len() < self.n_features {
            counts.resize(self.n_features, 0);
        }
        distinct.clear();
        for &col in hits.iter() {
            let count = &mut counts[col as usize];
            if *count == 0 {
                distinct.push(col);
            }
            *count += 1;
        }
        // With x = tf * idf / ||tf * idf||, the score of class k is b_k + sum_j x_j W[k][j]:
        // sums of (tf idf_j) W[k][j] and of (tf idf_j)^2, then one division.
        let rows = self.rows;
        let mut norm2 = 0.0;
        terms.clear();
        for &col in distinct.iter() {
            let tf = self.tf(std::mem::take(&mut counts[col as usize]));
            norm2 += tf * tf * self.idf2[col as usize];
            terms.push((col, tf * self.idf[col as usize]));
        }
        sums.clear();
        sums.resize(self.stride, 0.0);
        kernel::accumulate(sums, &self.weights, terms);
        let scale = if self.l2 && norm2 > 0.0 { 1.0 / norm2.sqrt() } else { 1.0 };
        let k = self.labels.len();
        raw.clear();
        if rows + 1 == k {
            let z = sums[0] * scale + self.intercepts[1];
            raw.extend([-z, z]);
        } else {
            raw.extend(sums.iter().zip(&self.intercepts).map(|(s, b)| s * scale + b));
        }
        self.transform.apply(raw, out);
        Ok(())
    }

    /// The probabilities of one text, in label order, and its unfamiliarity.
    pub fn predict_scored(&self, text: &str) -> (Vec<f64>, f64) {
        let mut out = vec![0.0; self.labels.len()];
        let unfamiliar = SCRATCH
            .with(|s| match s.try_borrow_mut() {
                Ok(mut scratch) => self
                    .proba_into(text.chars().map(|c| c as u32), &mut scratch, &mut out)
                    .map(|()| scratch.unfamiliar),
                Err(_) => {
                    let mut scratch = Scratch::default();
                    self.proba_into(text.chars().map(|c| c as u32), &mut scratch, &mut out)
                        .map(|()| scratch.unfamiliar)
                }
            })
            .expect("a str holds scalar values");
        (out, unfamiliar)
    }

    /// The probabilities of one text, in label order.
    pub fn predict_proba(&self, text: &str) -> Vec<f64> {
        self.predict_scored(text).0
    }

    /// The top class of one probability row (the first of equals) and its probability.
    #[inline]
    pub fn top(probabilities: &[f64]) -> (usize, f64) {
        let mut best = 0;
        for (k, &p) in probabilities.iter().enumerate().skip(1) {
            if p > probabilities[best] {
                best = k;
            }
        }
        (best, probabilities[best])
    }

    /// The answer for one probability row and its text's unfamiliarity:
    /// `(label index, confident, score)` (section 5); the label is the out-of-scope label
    /// when the task has one and the answer is not confident.
    #[inline]
    pub fn answer(&self, probabilities: &[f64], unfamiliar: f64) -> (usize, bool, f64) {
        let (best, score) = Self::top(probabilities);
        let confident = score >= self.threshold && unfamiliar <= self.max_unfamiliar;
        // A task with an out-of-scope label answers it whenever it is unsure.
        let label = if confident { best } else { self.out_of_scope.unwrap_or(best) };
        (label, confident, score)
    }

    /// The reflex rules of the `.bin` (format 4), tried in order before the model.
    pub fn rules(&self) -> &[pb::Rule] {
        &self.preprocessor.rules
    }

    /// Index of the first reflex rule answering a normalised text, or `None`.
    pub fn rule_for_normalized(&self, normalized: &str) -> Option<usize> {
        self.preprocessor.rules.iter().position(|r| rule_matches(r, normalized))
    }

    /// Index of the first reflex rule answering `text`, or `None` (the text is normalised
    /// only when the model has rules).
    pub fn rule(&self, text: &str) -> Option<usize> {
        if self.preprocessor.rules.is_empty() {
            return None;
        }
        self.rule_for_normalized(&self.normalizer.normalize(text))
    }

    /// The label index of reflex rule `index` (its answer: probability 1 for it, 0 else).
    pub fn rule_label(&self, index: usize) -> usize {
        self.preprocessor.rules[index].label as usize
    }

    /// The answer of reflex rule `index`.
    pub fn rule_prediction(&self, index: usize) -> Prediction {
        let label = self.rule_label(index);
        let probabilities = (0..self.labels.len()).map(|k| if k == label { 1.0 } else { 0.0 }).collect();
        Prediction { label, probabilities, confident: true, score: 1.0, unfamiliar: 0.0, rule: Some(index) }
    }

    /// Classify one text: the first matching reflex rule answers, else the model.
    pub fn predict(&self, text: &str) -> Prediction {
        if let Some(index) = self.rule(text) {
            return self.rule_prediction(index);
        }
        let (probabilities, unfamiliar) = self.predict_scored(text);
        let (label, confident, score) = self.answer(&probabilities, unfamiliar);
        Prediction { label, probabilities, confident, score, unfamiliar, rule: None }
    }

    /// Classify many texts; answers in input order.
    pub fn predict_many<S: AsRef<str>>(&self, texts: &[S]) -> Vec<Prediction> {
        texts.iter().map(|t| self.predict(t.as_ref())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(fields: impl FnOnce(&mut pb::Rule)) -> pb::Rule {
        let mut r = pb::Rule { name: "r".into(), label: 1, ..Default::default() };
        fields(&mut r);
        r
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_word_list_is_a_plain_test_on_the_normalised_text() {
        let contains = rule(|r| r.contains = words(&["删除", "清空"]));
        assert!(rule_matches(&contains, "请删除它") && rule_matches(&contains, "清空"));
        assert!(!rule_matches(&contains, "删掉它") && !rule_matches(&contains, ""));
        let prefix = rule(|r| r.starts_with = words(&["delete"]));
        assert!(rule_matches(&prefix, "deleted") && !rule_matches(&prefix, "undelete"));
        let suffix = rule(|r| r.ends_with = words(&["吗"]));
        assert!(rule_matches(&suffix, "好吗") && !rule_matches(&suffix, "吗了"));
        let equals = rule(|r| r.equals = words(&["ok", "好的"]));
        assert!(rule_matches(&equals, "好的") && !rule_matches(&equals, "好的吧"));
        let all = rule(|r| {
            r.contains = words(&["删除"]);
            r.also_contains = words(&["提醒", "全部"]);
            r.unless_contains = words(&["不要"]);
        });
        assert!(rule_matches(&all, "删除全部提醒"));
        assert!(!rule_matches(&all, "删除提醒") && !rule_matches(&all, "不要删除全部提醒"));
    }

    /// A `.bin` of format 7 (`min_n..max_n = 1..3`, `head_chars = 3`) whose vocabulary is
    /// `vocabulary` (front-coded, sorted here), edited by `edit`, with its integrity trailer.
    fn head_bin(vocabulary: &[&str], edit: impl FnOnce(&mut pb::Preprocessor)) -> Vec<u8> {
        let v1 = NormalizerSettings::v1(256);
        let mut msg = pb::Preprocessor {
            format_version: HEAD_FORMAT_VERSION,
            task: "t".into(),
            labels: words(&["no", "yes"]),
            normalizer: Some(pb::Normalizer {
                spec_version: 1,
                nfkc: true,
                lowercase: true,
                removed_categories: v1.removed_categories.clone(),
                whitespace: v1.whitespace.clone(),
                max_chars: 256,
            }),
            analyzer: Some(pb::Analyzer { min_n: 1, max_n: 3, word_boundary_padding: true, word_max_n: 0, head_chars: 3 }),
            weighting: Some(pb::Weighting { sublinear_tf: true, use_idf: false, norm: 1 }),
            threshold: 0.5,
            onnx_sha256: "0".repeat(64),
            familiarity: Some(pb::Familiarity { min_order: 1, max_unfamiliar: 0.5 }),
            ..Default::default()
        };
        let mut grams: Vec<&[u8]> = vocabulary.iter().map(|g| g.as_bytes()).collect();
        grams.sort_unstable();
        let mut prev: &[u8] = &[];
        for gram in grams {
            let shared = prev.iter().zip(gram).take_while(|(a, b)| a == b).count();
            msg.vocab_prefix.push(shared as u32);
            msg.vocab_suffix_len.push((gram.len() - shared) as u32);
            msg.vocab_suffixes.extend_from_slice(&gram[shared..]);
            prev = gram;
        }
        edit(&mut msg);
        let mut data = msg.encode_to_vec();
        let digest = Sha256::digest(&data);
        data.extend_from_slice(&INTEGRITY_HEADER);
        data.extend_from_slice(&digest);
        data
    }

    /// The spec rule that refuses `data`, or `None` when it is accepted.
    fn refusal(data: &[u8]) -> Option<String> {
        let err = parse_preprocessor(data, Path::new("t.bin"), "t").err()?;
        Some(err.0.rsplit("(spec rule ").next().unwrap().trim_end_matches(')').to_owned())
    }

    const HEAD_VOCABULARY: [&str; 6] = ["好", "好的", "\u{2}好", "\u{2} 好", "\u{2}好的", "\u{1}好"];

    #[test]
    fn format_7_with_head_ngrams_is_read() {
        let data = head_bin(&HEAD_VOCABULARY[..5], |_| {});
        let msg = parse_preprocessor(&data, Path::new("t.bin"), "t").unwrap();
        assert_eq!(msg.analyzer.unwrap().head_chars, 3);
        assert!(msg.vocabulary.contains(&"\u{2} 好".to_string()));
        // with word n-grams too, and rules
        let rules = |m: &mut pb::Preprocessor| {
            m.analyzer.as_mut().unwrap().word_max_n = 2;
            m.rules = vec![rule(|r| r.contains = words(&["x"]))];
        };
        assert_eq!(refusal(&head_bin(&HEAD_VOCABULARY, rules)), None);
        // a head n-gram of max_n code points, each of 4 UTF-8 bytes: 1 + 4 * max_n bytes
        assert_eq!(refusal(&head_bin(&["a", "\u{2}𝄞𝄞𝄞"], |_| {})), None);
        assert_eq!(refusal(&head_bin(&["a"], |m| m.format_version = 8)).as_deref(), Some("B3"));
    }

    #[test]
    fn rule_b8_limits_head_chars() {
        let format = |v: u32| move |m: &mut pb::Preprocessor| m.format_version = v;
        assert_eq!(refusal(&head_bin(&["好"], format(6))).as_deref(), Some("B8"));
        assert_eq!(refusal(&head_bin(&["好"], format(5))).as_deref(), Some("B8"));
        let head = |n: u32| move |m: &mut pb::Preprocessor| m.analyzer.as_mut().unwrap().head_chars = n;
        assert_eq!(refusal(&head_bin(&["好"], head(MAX_HEAD_CHARS + 1))).as_deref(), Some("B8"));
        assert_eq!(refusal(&head_bin(&["好"], head(MAX_HEAD_CHARS))), None);
        let message = parse_preprocessor(&head_bin(&["好"], head(17)), Path::new("t.bin"), "t").unwrap_err().0;
        assert!(message.contains("analyzer.head_chars = 17 is outside 0..16"), "{message}");
        // without head n-grams, format 6's settings are format 7's
        let words_only = |m: &mut pb::Preprocessor| {
            let a = m.analyzer.as_mut().unwrap();
            (a.head_chars, a.word_max_n) = (0, 3);
        };
        assert_eq!(refusal(&head_bin(&["好", "\u{1}好"], words_only)), None);
    }

    #[test]
    fn rule_b9_refuses_misplaced_head_ngrams() {
        let no_heads = |m: &mut pb::Preprocessor| m.analyzer.as_mut().unwrap().head_chars = 0;
        assert_eq!(refusal(&head_bin(&["好", "\u{2}好"], no_heads)).as_deref(), Some("B9"));
        let message = parse_preprocessor(&head_bin(&["\u{2}好"], no_heads), Path::new("t.bin"), "t").unwrap_err().0;
        assert!(message.ends_with("nor a word n-gram of 1..word_max_n = 0 words (spec rule B9)"), "{message}");
        let message = parse_preprocessor(&head_bin(&["\u{2}好好好好"], |_| {}), Path::new("t.bin"), "t").unwrap_err().0;
        assert!(
            message.ends_with("nor a word n-gram of 1..word_max_n = 0 words nor a head n-gram of min_n..max_n code points (spec rule B9)"),
            "{message}"
        );
        for bad in ["\u{2}", "\u{2}ab\u{2}", "\u{2}a\u{1}", "\u{2}\u{1}"] {
            assert_eq!(refusal(&head_bin(&["好", bad], |_| {})).as_deref(), Some("B9"), "{bad:?}");
        }
        // too many bytes for an entry: the mark and four 4-byte code points
        assert_eq!(refusal(&head_bin(&["\u{2}𝄞𝄞𝄞𝄞"], |_| {})).as_deref(), Some("B9"));
        let min_2 = |m: &mut pb::Preprocessor| m.analyzer.as_mut().unwrap().min_n = 2;
        assert_eq!(refusal(&head_bin(&["好的", "\u{2}好"], min_2)).as_deref(), Some("B9"));
        assert_eq!(refusal(&head_bin(&["好的", "\u{2} 好"], min_2)), None);
    }

    #[test]
    fn entry_bytes_and_terms_follow_rule_b9() {
        let terms = Terms { min_n: 1, max_n: 3, word_max_n: 0, head_chars: 0, max_chars: 256 };
        assert_eq!(terms.entry_bytes(), 12);
        assert_eq!(Terms { head_chars: 3, ..terms }.entry_bytes(), 13);
        assert_eq!(Terms { word_max_n: 1, ..terms }.entry_bytes(), 1025);
        assert_eq!(Terms { word_max_n: 1, head_chars: 3, max_chars: 2, ..terms }.entry_bytes(), 13);
        assert!(!terms.valid("\u{2}a"));
        assert!(Terms { head_chars: 1, ..terms }.valid("\u{2}abc"));
        assert!(!Terms { head_chars: 1, ..terms }.valid("\u{2}abcd"));
    }

    /// A model over `HEAD_VOCABULARY` whose class 1 weighs each column by its index + 1.
    fn head_model() -> MicroModel {
        let pre = parse_preprocessor(&head_bin(&HEAD_VOCABULARY, |m| m.analyzer.as_mut().unwrap().word_max_n = 1), Path::new("t.bin"), "t").unwrap();
        let d = pre.vocabulary.len();
        let coefficients = (0..2 * d).map(|i| if i < d { 0.0 } else { (i - d + 1) as f32 }).collect();
        let graph = LinearGraph {
            coefficients,
            intercepts: vec![0.0, 0.0],
            n_classes: 2,
            n_features: d,
            transform: Transform::Direct { post: graph::Post::Softmax, l1: false },
        };
        let settings = NormalizerSettings::from_proto(pre.normalizer.as_ref()).unwrap();
        let analyzer = Analyzer::from_proto(pre.analyzer.as_ref()).unwrap();
        MicroModel::build("t", pre, settings, analyzer, graph, Path::new("t.bin"), Path::new("t.onnx"))
    }

    #[test]
    fn head_ngrams_are_features_but_never_count_as_familiar() {
        let model = head_model();
        let column = |g: &str| model.preprocessor().vocabulary.iter().position(|v| v == g).unwrap();
        // 好的,好 (one word, so no word n-gram 好): characters 好 x2 and 好的; the head 好的
        // (cut at the comma) gives 好, 好的 and " 好" (and 的, " 好的", not in the vocabulary).
        let (normalized, features) = model.featurize("好的，好");
        assert_eq!(normalized, "好的,好");
        let cols: Vec<usize> = features.iter().map(|&(c, _)| c).collect();
        let mut want = vec![column("好"), column("好的"), column("\u{2}好"), column("\u{2} 好"), column("\u{2}好的")];
        want.sort_unstable();
        assert_eq!(cols, want);
        // Character 好 twice (sublinear tf), each head n-gram once, all with idf 1, then L2.
        let tf = 1.0 + 2f64.ln();
        let norm = (tf * tf + 4.0).sqrt();
        for &(col, value) in &features {
            let want = if col == column("好") { tf / norm } else { 1.0 / norm };
            assert!((value - want).abs() < 1e-12, "{col}: {value} != {want}");
        }
        // Unfamiliarity counts the character n-grams only: the text's n-grams of " 好的,好 "
        // (orders 1..3, " " excepted) are 4 + 5 + 4 = 13, of which 好 x2 and 好的 are known.
        let unfamiliar = model.unfamiliar("好的，好");
        assert_eq!(unfamiliar, (13.0 - 3.0) / 13.0);
        let (_, scored) = model.predict_scored("好的，好");
        assert_eq!(scored, unfamiliar);
        // A text whose head is nothing: no head features.
        let (_, features) = model.featurize("?!");
        assert!(features.is_empty());
    }

    #[test]
    fn rule_b14_refuses_malformed_rules() {
        let path = Path::new("x.bin");
        let mut msg = pb::Preprocessor { format_version: 4, labels: words(&["a", "b"]), ..Default::default() };
        msg.rules = vec![rule(|r| r.contains = words(&["x"]))];
        assert!(check_rules(&msg, path).is_ok());
        let refused = |m: &pb::Preprocessor| check_rules(m, path).unwrap_err().0.ends_with("(spec rule B14)");
        let mut bad = msg.clone();
        bad.rules[0].label = 2;
        assert!(refused(&bad));
        let mut bad = msg.clone();
        bad.rules[0].contains.clear();
        assert!(refused(&bad));
        let mut bad = msg.clone();
        bad.rules[0].contains = words(&[""]);
        assert!(refused(&bad));
        let mut bad = msg.clone();
        bad.format_version = 3;
        assert!(refused(&bad));
        let mut bad = msg.clone();
        bad.rules.clear();
        assert!(refused(&bad));
    }
}
