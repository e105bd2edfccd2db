'use strict';
/**
 * The text spec (v1) in JavaScript: normaliser, n-gram analyzer (character, word and head
 * n-grams) and tf-idf featuriser. A line-by-line port of `foundry/textspec.py`, driven
 * entirely by the settings recorded in the `.bin` (see docs/preprocessor-spec.md).
 *
 * Everything that counts "characters" counts CODE POINTS (`Array.from`, `for...of`), never
 * UTF-16 code units: an emoji is one character here as it is in Python.
 */

/** Text spec versions this implementation understands. */
const SUPPORTED_SPEC_VERSIONS = Object.freeze([1]);
/** The first code point of every word n-gram (step 6b); step 3 removes it from every text. */
const WORD_MARK = '\u0001';
/** The largest word n-gram order a runtime accepts. */
const MAX_WORD_N = 3;
/** The first code point of every head n-gram (step 6c); step 3 removes it from every text. */
const HEAD_MARK = '\u0002';
/** The longest head a runtime accepts (rule B8). */
const MAX_HEAD_CHARS = 16;
/**
 * The code points that end a text's first clause (step 6c), as they are after step 1's NFKC
 * (which maps the full-width ，！？；～ and … onto the ASCII ones). All are single UTF-16 units.
 */
const CLAUSE_MARKS = Object.freeze(new Set([' ', ',', '.', '!', '?', ';', '~', '\u3002', '\u3001']));

/** The 30 two-letter Unicode general categories (the only accepted removed_categories). */
const GENERAL_CATEGORIES = Object.freeze([
  'Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe',
  'Pi', 'Pf', 'Po', 'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Cs', 'Co', 'Cn',
]);

/**
 * @typedef {object} CompiledSpec
 * @property {number} specVersion
 * @property {boolean} nfkc
 * @property {boolean} lowercase
 * @property {string[]} removedCategories
 * @property {RegExp|null} removed   matches one code point of a removed category
 * @property {RegExp|null} spaces    matches (globally) a code point of the whitespace list
 * @property {RegExp|null} removals  matches (globally) a code point of a removed category
 * @property {Set<number>} whitespace code points mapped to U+0020
 * @property {number} maxChars
 * @property {number} minN
 * @property {number} maxN
 * @property {boolean} wordBoundaryPadding
 * @property {number} wordMaxN   word n-gram orders 1..wordMaxN (step 6b); 0: none
 * @property {number} headChars  head n-grams of the first headChars code points of the first
 *                                clause (step 6c); 0: none
 */

/**
 * Build a {@link CompiledSpec} from the decoded `normalizer` and `analyzer` messages of a
 * `.bin` (protobufjs objects or plain objects with the same camelCase field names).
 *
 * @param {object} normalizer  foundry.v1.Normalizer
 * @param {object} analyzer    foundry.v1.Analyzer
 * @param {string} [where]     file name used in error messages
 * @returns {CompiledSpec}
 */
function compileSpec(normalizer, analyzer, where = '<preprocessor>') {
  if (!normalizer) throw new Error(`${where}: field 'normalizer' is missing`);
  if (!analyzer) throw new Error(`${where}: field 'analyzer' is missing`);
  const specVersion = Number(normalizer.specVersion);
  if (!SUPPORTED_SPEC_VERSIONS.includes(specVersion)) {
    throw new Error(
      `${where}: normalizer.spec_version = ${specVersion} is not supported ` +
        `(this runtime implements text spec ${SUPPORTED_SPEC_VERSIONS.join(', ')})`,
    );
  }
  const removedCategories = [...(normalizer.removedCategories || [])];
  for (const cat of removedCategories) {
    if (!GENERAL_CATEGORIES.includes(cat)) {
      throw new Error(
        `${where}: normalizer.removed_categories contains ${JSON.stringify(cat)}, ` +
          'which is not a two-letter Unicode general category',
      );
    }
  }
  const whitespace = new Set();
  for (const cp of normalizer.whitespace || []) {
    const n = Number(cp);
    if (!Number.isInteger(n) || n < 0 || n > 0x10ffff) {
      throw new Error(`${where}: normalizer.whitespace contains ${cp}, not a code point`);
    }
    whitespace.add(n);
  }
  const maxChars = Number(normalizer.maxChars);
  if (!(maxChars >= 1)) {
    throw new Error(`${where}: normalizer.max_chars must be >= 1, got ${maxChars}`);
  }
  const minN = Number(analyzer.minN);
  const maxN = Number(analyzer.maxN);
  if (!(minN >= 1 && minN <= maxN)) {
    throw new Error(
      `${where}: analyzer needs 1 <= min_n <= max_n, got min_n=${minN}, max_n=${maxN}`,
    );
  }
  const wordMaxN = Number(analyzer.wordMaxN || 0);
  if (!(Number.isInteger(wordMaxN) && wordMaxN >= 0 && wordMaxN <= MAX_WORD_N)) {
    throw new Error(`${where}: analyzer.word_max_n must be in 0..${MAX_WORD_N}, got ${wordMaxN}`);
  }
  const headChars = Number(analyzer.headChars || 0);
  if (!(Number.isInteger(headChars) && headChars >= 0 && headChars <= MAX_HEAD_CHARS)) {
    throw new Error(`${where}: analyzer.head_chars must be in 0..${MAX_HEAD_CHARS}, got ${headChars}`);
  }
  const removed = removedCategories.length
    ? new RegExp(`^[${removedCategories.map((c) => `\\p{gc=${c}}`).join('')}]$`, 'u')
    : null;
  // Steps 3 and 4 as two global replaces with constant replacements (no per-match callback):
  // the whitespace list to U+0020 first (it wins over a removed category), then the removed
  // categories to nothing (U+0020 is Zs, never removed).
  const spaces = whitespace.size
    ? new RegExp(`[${[...whitespace].map((cp) => `\\u{${cp.toString(16)}}`).join('')}]`, 'gu')
    : null;
  const removals = removedCategories.length
    ? new RegExp(`[${removedCategories.map((c) => `\\p{gc=${c}}`).join('')}]`, 'gu')
    : null;
  return {
    specVersion,
    nfkc: Boolean(normalizer.nfkc),
    lowercase: Boolean(normalizer.lowercase),
    removedCategories,
    removed,
    spaces,
    removals,
    whitespace,
    maxChars,
    minN,
    maxN,
    wordBoundaryPadding: Boolean(analyzer.wordBoundaryPadding),
    wordMaxN,
    headChars,
  };
}

/**
 * Walk the first `n` code points of `text` (a surrogate pair is one code point, a lone
 * surrogate too), without splitting it into an array: a long input must not cost an array
 * entry per character.
 * @param {string} text
 * @param {number} n
 * @returns {{index: number, count: number}} the UTF-16 index just after them, and how many
 *   code points were walked (fewer than `n` if the text is shorter)
 */
function walkCodePoints(text, n) {
  let index = 0;
  let count = 0;
  while (index < text.length && count < n) {
    const c = text.charCodeAt(index);
    const pair = c >= 0xd800 && c <= 0xdbff && index + 1 < text.length
      && text.charCodeAt(index + 1) >= 0xdc00 && text.charCodeAt(index + 1) <= 0xdfff;
    index += pair ? 2 : 1;
    count += 1;
  }
  return { index, count };
}

/** @param {string} text @returns {number} its length in code points */
function codePointLength(text) {
  return walkCodePoints(text, Infinity).count;
}

/**
 * The first `n` code points of `text`.
 * @param {string} text
 * @param {number} n
 * @returns {string}
 */
function firstCodePoints(text, n) {
  if (text.length <= n) return text; // n code points take at least n UTF-16 units
  return text.slice(0, walkCodePoints(text, n).index);
}

/** UTF-16 units per slice of a long text in steps 3-4 (see {@link normalize}). */
const SLICE = 1 << 16;
const ASCII_ONLY = /^[\x00-\x7f]*$/;

/**
 * Steps 3 and 4 (map the whitespace list to U+0020, drop removed categories, collapse runs of
 * U+0020) on a text, slice by slice: V8's global replace keeps a record per match until it
 * finishes, which for a 50 MB line of short words costs gigabytes. Slices never split a
 * surrogate pair, and the steps are per code point, so slicing changes nothing; runs of
 * spaces that meet at slice borders are collapsed afterwards.
 * @param {string} text
 * @param {CompiledSpec} spec
 * @returns {string}
 */
function cleanAndCollapse(text, spec) {
  const clean = (piece) => {
    let t = piece;
    if (spec.spaces !== null) t = t.replace(spec.spaces, ' ');
    if (spec.removals !== null) t = t.replace(spec.removals, '');
    return t.replace(/ {2,}/g, ' ');
  };
  if (text.length <= SLICE) return clean(text);
  const pieces = [];
  for (let start = 0; start < text.length; ) {
    let end = Math.min(start + SLICE, text.length);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end -= 1;
    pieces.push(clean(text.slice(start, end)));
    start = end;
  }
  return pieces.join('').replace(/ {2,}/g, ' ');
}

/**
 * Normalise a text by steps 1-5 of the text spec. Memory stays a small multiple of the
 * text's size whatever its length (no per-character objects, no per-match records).
 * @param {string} text
 * @param {CompiledSpec} spec
 * @returns {string}
 */
function normalize(text, spec) {
  if (typeof text !== 'string') {
    throw new TypeError(`text must be a string, got ${typeof text}`);
  }
  // NFKC leaves ASCII unchanged; skipping it spares a two-byte copy of a long ASCII line.
  let t = spec.nfkc && !ASCII_ONLY.test(text) ? text.normalize('NFKC') : text;
  if (spec.lowercase) t = t.toLowerCase();
  t = cleanAndCollapse(t, spec);
  // Step 4's strip, of U+0020 only (never String.prototype.trim's whitespace).
  if (t.startsWith(' ')) t = t.slice(1);
  if (t.endsWith(' ')) t = t.slice(0, -1);
  return firstCodePoints(t, spec.maxChars);
}

/**
 * The character n-grams of an already normalised text (step 6), in order of emission.
 * With word-boundary padding every space-separated word w is taken as ' ' + w + ' ';
 * the one-character n-gram ' ' is never emitted.
 * @param {string} normalized
 * @param {CompiledSpec} spec
 * @returns {string[]}
 */
function charNgrams(normalized, spec) {
  const grams = [];
  if (normalized.length === 0) return grams;
  const units = spec.wordBoundaryPadding ? normalized.split(' ').map((w) => ` ${w} `) : [normalized];
  for (const unit of units) unitNgrams(unit, spec, '', grams);
  return grams;
}

/**
 * Push `mark` + every n-gram of `unit` for n = minN..maxN (orders longer than the unit
 * skipped), except the one-code-point ' ', onto `grams`: steps 6 and 6c alike.
 * @param {string} unit
 * @param {CompiledSpec} spec
 * @param {string} mark '' or HEAD_MARK
 * @param {string[]} grams
 */
function unitNgrams(unit, spec, mark, grams) {
  // Code point i of the unit is unit.slice(starts[i], starts[i + 1]): an n-gram is one slice.
  const starts = codePointStarts(unit);
  const length = starts.length - 1;
  const top = Math.min(spec.maxN, length);
  for (let n = spec.minN; n <= top; n += 1) {
    for (let i = 0; i + n <= length; i += 1) {
      const gram = unit.slice(starts[i], starts[i + n]);
      if (gram !== ' ') grams.push(mark + gram);
    }
  }
}

/**
 * The UTF-16 offset of each code point of `s`, then `s.length`. A lone surrogate is one code
 * point, as `Array.from` counts it.
 * @param {string} s
 * @returns {number[]}
 */
function codePointStarts(s) {
  const starts = [];
  for (let i = 0; i < s.length; i += 1) {
    starts.push(i);
    const unit = s.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i += 1;
    }
  }
  starts.push(s.length);
  return starts;
}

/**
 * The word n-grams of an already normalised text (step 6b), in order of emission: the words
 * are the non-empty pieces of the text split on U+0020; for n = 1..wordMaxN every run of n
 * consecutive words gives WORD_MARK followed by the words joined by one U+0020.
 * @param {string} normalized
 * @param {CompiledSpec} spec
 * @returns {string[]}
 */
function wordNgrams(normalized, spec) {
  const grams = [];
  if (!spec.wordMaxN || normalized.length === 0) return grams;
  const words = normalized.split(' ').filter((w) => w.length > 0);
  const top = Math.min(spec.wordMaxN, words.length);
  for (let n = 1; n <= top; n += 1) {
    for (let i = 0; i + n <= words.length; i += 1) {
      grams.push(WORD_MARK + words.slice(i, i + n).join(' '));
    }
  }
  return grams;
}

/**
 * The head of an already normalised text (step 6c): the code points after the clause marks
 * that open it, up to (not including) the next clause mark or the end, cut to the first
 * `headChars` code points; '' when the text holds clause marks only (or is empty).
 * @param {string} normalized
 * @param {number} headChars
 * @returns {string}
 */
function headOf(normalized, headChars) {
  let start = 0;
  while (start < normalized.length && CLAUSE_MARKS.has(normalized[start])) start += 1;
  // Clause marks are single UTF-16 units, never halves of a surrogate pair: the clause ends
  // at the first unit that is one.
  let stop = start;
  while (stop < normalized.length && !CLAUSE_MARKS.has(normalized[stop])) stop += 1;
  return firstCodePoints(normalized.slice(start, stop), headChars);
}

/**
 * The head n-grams of an already normalised text (step 6c), in order of emission: the unit
 * ' ' + head gives every n-gram for n = minN..maxN, each after HEAD_MARK, except the
 * one-code-point ' '. None when headChars is 0 or the head is empty.
 * @param {string} normalized
 * @param {CompiledSpec} spec
 * @returns {string[]}
 */
function headNgrams(normalized, spec) {
  const grams = [];
  if (!spec.headChars) return grams;
  const head = headOf(normalized, spec.headChars);
  if (head.length === 0) return grams;
  unitNgrams(` ${head}`, spec, HEAD_MARK, grams);
  return grams;
}

/**
 * Every term of step 6: the character n-grams, then the word n-grams (step 6b), then the head
 * n-grams (step 6c).
 * @param {string} normalized
 * @param {CompiledSpec} spec
 * @returns {string[]}
 */
function ngrams(normalized, spec) {
  let grams = charNgrams(normalized, spec);
  if (spec.wordMaxN) grams = grams.concat(wordNgrams(normalized, spec));
  if (spec.headChars) grams = grams.concat(headNgrams(normalized, spec));
  return grams;
}

/**
 * @typedef {object} Weighting
 * @property {Map<string, number>} index  n-gram -> column
 * @property {Float64Array} idf
 * @property {boolean} sublinearTf
 * @property {boolean} useIdf
 * @property {'none'|'l2'} norm
 */

/**
 * Step 7: sparse tf-idf features of a text, computed in float64 and rounded to float32.
 * Zero features are omitted; entries are sorted by column.
 * @param {string[]} grams n-grams of the normalised text
 * @param {Weighting} w
 * @returns {Array<[number, number]>} [column, float32 value] pairs
 */
function weigh(grams, w) {
  // The columns of the known grams, sorted: equal columns are adjacent, counted as one run.
  const hits = [];
  for (const gram of grams) {
    const col = w.index.get(gram);
    if (col !== undefined) hits.push(col);
  }
  const cols = Int32Array.from(hits).sort();
  const unique = [];
  const values = [];
  for (let i = 0; i < cols.length;) {
    const col = cols[i];
    let end = i + 1;
    while (end < cols.length && cols[end] === col) end += 1;
    const count = end - i;
    const tf = w.sublinearTf ? 1 + Math.log(count) : count;
    unique.push(col);
    values.push(w.useIdf ? tf * w.idf[col] : tf);
    i = end;
  }
  if (w.norm === 'l2') {
    let sumSq = 0;
    for (const v of values) sumSq += v * v;
    const norm = Math.sqrt(sumSq);
    if (norm > 0) for (let i = 0; i < values.length; i += 1) values[i] /= norm;
  }
  const out = [];
  for (let i = 0; i < unique.length; i += 1) {
    const v = Math.fround(values[i]);
    if (v !== 0) out.push([unique[i], v]);
  }
  return out;
}

/**
 * Unfamiliarity of a text (docs/preprocessor-spec.md, section 5): the share of its character n-grams of
 * at least `minOrder` code points (with repeats) that are not in the vocabulary, as one
 * division of two integers; 0 when there is none.
 * @param {string[]} grams n-grams of the normalised text (step 6)
 * @param {Map<string, number>} index the vocabulary
 * @param {number} minOrder
 * @returns {number}
 */
function unfamiliarity(grams, index, minOrder) {
  let total = 0;
  let known = 0;
  for (const gram of grams) {
    // Word and head n-grams (steps 6b, 6c) do not count. Code points, not UTF-16 units: stop
    // counting once the gram is long enough.
    if (gram[0] !== WORD_MARK && gram[0] !== HEAD_MARK && walkCodePoints(gram, minOrder).count >= minOrder) {
      total += 1;
      if (index.has(gram)) known += 1;
    }
  }
  return total === 0 ? 0 : (total - known) / total;
}

module.exports = {
  CLAUSE_MARKS,
  HEAD_MARK,
  MAX_HEAD_CHARS,
  MAX_WORD_N,
  SUPPORTED_SPEC_VERSIONS,
  WORD_MARK,
  codePointLength,
  unfamiliarity,
  GENERAL_CATEGORIES,
  compileSpec,
  normalize,
  charNgrams,
  headNgrams,
  ngrams,
  weigh,
  wordNgrams,
};
