'use strict';
/**
 * The load-time rules of a `<task>_preprocessor.bin` (docs/preprocessor-spec.md, section 1,
 * "Validation a runtime performs at load time"): the same table, in the same order, with the
 * same rule ids as `foundry/artifacts.py`, so that both runtimes reject the same files for the
 * same reason. The pair (P1) and `.onnx` rules (O1-O3) are applied in `runtime.js`.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const { HEAD_MARK, MAX_HEAD_CHARS, MAX_WORD_N, WORD_MARK, codePointLength } = require('./textspec');

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Layout version of the `.bin` this runtime reads (3: with the unfamiliarity gate). */
const FORMAT_VERSION = 3;
/** The layout of a `.bin` with reflex rules (rule B14). */
const RULES_FORMAT_VERSION = 4;
/** The layout written now: vocabulary front-coded, idf as a table index; rules optional. */
const COMPACT_FORMAT_VERSION = 5;
/** Format 5's layout plus word n-grams (text spec step 6b, analyzer.word_max_n). */
const WORDS_FORMAT_VERSION = 6;
/** Format 6's layout plus head n-grams (text spec step 6c, analyzer.head_chars). */
const HEAD_FORMAT_VERSION = 7;
const SUPPORTED_FORMAT_VERSIONS = Object.freeze([
  FORMAT_VERSION,
  RULES_FORMAT_VERSION,
  COMPACT_FORMAT_VERSION,
  WORDS_FORMAT_VERSION,
  HEAD_FORMAT_VERSION,
]);
/** The formats whose vocabulary and idf are front-coded and tabled (fields 17-21). */
const COMPACT_LAYOUTS = Object.freeze([COMPACT_FORMAT_VERSION, WORDS_FORMAT_VERSION, HEAD_FORMAT_VERSION]);
/** The word lists of a reflex rule (camelCase, in `.bin` field order); a rule needs one of the first four. */
const RULE_WORD_LISTS = Object.freeze(['contains', 'startsWith', 'endsWith', 'equals', 'alsoContains', 'unlessContains']);
const RULE_LIST_NAMES = Object.freeze({
  contains: 'contains',
  startsWith: 'starts_with',
  endsWith: 'ends_with',
  equals: 'equals',
  alsoContains: 'also_contains',
  unlessContains: 'unless_contains',
});
/** Resource limits (rules F2, B5, B7, B8, B9). */
const LIMITS = Object.freeze({
  binBytes: 16 * 1024 * 1024,
  onnxBytes: 256 * 1024 * 1024,
  labels: 1024,
  maxChars: 4096,
  maxN: 8,
  vocabulary: 1 << 18,
  rules: 256,
  ruleWords: 4096,
  wordChars: 64,
  ruleNameChars: 64,
});
/** Tag (field 13, wire type 2) and length byte that open the integrity trailer (rule B1). */
const INTEGRITY_HEADER = Object.freeze([(13 << 3) | 2, 32]);
const INTEGRITY_BYTES = INTEGRITY_HEADER.length + 32;
/** Text spec 1's removed general categories and whitespace code points (rule B6). */
const V1_REMOVED_CATEGORIES = Object.freeze(['Cc', 'Cf', 'Cs']);
const V1_WHITESPACE = Object.freeze([
  ...[9, 10, 11, 12, 13], 0x20, 0x85, 0xa0, 0x1680,
  ...Array.from({ length: 11 }, (_, i) => 0x2000 + i), 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

/** An artifact file is missing, corrupt, or does not match its pair. */
class ArtifactError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ArtifactError';
  }
}

/**
 * @param {string} file
 * @param {string} message
 * @param {string} rule id in the spec's table, e.g. "B5"
 * @returns {ArtifactError}
 */
function ruleError(file, message, rule) {
  return new ArtifactError(`${file}: ${message} (spec rule ${rule})`);
}

/**
 * Rules F1 (a regular file: never block on a FIFO or a device) and F2 (readable, within the
 * size limit, checked before reading).
 * @param {string} file
 * @param {string} what
 * @param {number} limit bytes
 * @returns {Buffer}
 */
function readArtifact(file, what, limit) {
  let info;
  try {
    info = fs.statSync(file);
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      throw ruleError(
        file,
        `${what} not found; forge it with \`foundry forge <blueprint>\` or pass the right --models-dir`,
        'F1',
      );
    }
    throw ruleError(file, `cannot read the ${what}: ${err.message}`, 'F2');
  }
  if (!info.isFile()) throw ruleError(file, `the ${what} is not a regular file`, 'F1');
  if (info.size > limit) {
    throw ruleError(
      file,
      `the ${what} has ${info.size.toLocaleString('en-US')} bytes, more than the limit of ${limit.toLocaleString('en-US')}`,
      'F2',
    );
  }
  let data;
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK || 0));
    try {
      data = fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    throw ruleError(file, `cannot read the ${what}: ${err.message}`, 'F2');
  }
  if (data.length > limit) {
    throw ruleError(file, `the ${what} is larger than the limit of ${limit.toLocaleString('en-US')} bytes`, 'F2');
  }
  return data;
}

/**
 * Rule B1: the file ends with its integrity trailer (0x6A 0x20 + SHA-256 of every byte before).
 * @param {Buffer} data
 * @param {string} file
 */
function checkIntegrity(data, file) {
  const at = data.length - INTEGRITY_BYTES;
  if (at < 0 || data[at] !== INTEGRITY_HEADER[0] || data[at + 1] !== INTEGRITY_HEADER[1]) {
    throw ruleError(
      file,
      'not a preprocessor file of this format: it does not end with the integrity check (content_sha256); re-export the model',
      'B1',
    );
  }
  const digest = crypto.createHash('sha256').update(data.subarray(0, at)).digest();
  if (!digest.equals(data.subarray(at + 2))) {
    throw ruleError(
      file,
      'the file is damaged: its content does not match its integrity check (content_sha256); re-export the model or restore a copy',
      'B1',
    );
  }
}

/** @returns {boolean} whether two lists hold the same set of values */
function sameSet(values, expected) {
  const got = new Set(values);
  return got.size === new Set(expected).size && expected.every((v) => got.has(v));
}

/**
 * Rules B3-B14 on a decoded `.bin` (protobufjs object, camelCase fields), in table order.
 * @param {object} msg
 * @param {string} file
 * @param {string} task the task the caller asked for
 */
function checkPreprocessor(msg, file, task) {
  const formatVersion = Number(msg.formatVersion);
  if (!SUPPORTED_FORMAT_VERSIONS.includes(formatVersion)) {
    throw ruleError(
      file,
      `format_version ${formatVersion} is not supported by this runtime ` +
        `(supported: ${SUPPORTED_FORMAT_VERSIONS.join(', ')}); re-export the model or upgrade the runtime`,
      'B3',
    );
  }
  if (msg.task !== task) {
    throw ruleError(file, `belongs to task ${JSON.stringify(msg.task)}, not ${JSON.stringify(task)}`, 'B4');
  }
  const { labels } = msg;
  if (labels.length < 2 || labels.length > LIMITS.labels) {
    throw ruleError(file, `needs 2 to ${LIMITS.labels} labels, has ${labels.length}`, 'B5');
  }
  if (labels.includes('') || new Set(labels).size !== labels.length) {
    throw ruleError(file, `labels ${JSON.stringify(labels.slice(0, 20))} hold an empty or a repeated name`, 'B5');
  }
  if (msg.outOfScope && !labels.includes(msg.outOfScope)) {
    throw ruleError(file, `out_of_scope ${JSON.stringify(msg.outOfScope.slice(0, 40))} is not one of the labels`, 'B5');
  }
  const norm = msg.normalizer || {};
  if (Number(norm.specVersion) !== 1 || !norm.nfkc) {
    throw ruleError(
      file,
      `normalizer.spec_version = ${Number(norm.specVersion || 0)} (nfkc = ${Boolean(norm.nfkc)}) is not supported ` +
        '(this runtime implements text spec 1, with NFKC)',
      'B6',
    );
  }
  if (
    !sameSet(norm.removedCategories || [], V1_REMOVED_CATEGORIES) ||
    !sameSet((norm.whitespace || []).map(Number), V1_WHITESPACE)
  ) {
    throw ruleError(file, 'normaliser settings (removed categories / whitespace list) differ from text spec 1', 'B6');
  }
  const maxChars = Number(norm.maxChars || 0);
  if (!(maxChars >= 1 && maxChars <= LIMITS.maxChars)) {
    throw ruleError(file, `normalizer.max_chars = ${maxChars} is outside 1..${LIMITS.maxChars}`, 'B7');
  }
  const analyzer = msg.analyzer || {};
  const minN = Number(analyzer.minN || 0);
  const maxN = Number(analyzer.maxN || 0);
  if (!(minN >= 1 && minN <= maxN && maxN <= LIMITS.maxN)) {
    throw ruleError(file, `analyzer needs 1 <= min_n <= max_n <= ${LIMITS.maxN}, got min_n=${minN}, max_n=${maxN}`, 'B8');
  }
  const wordMaxN = Number(analyzer.wordMaxN || 0);
  const wordsAllowed = formatVersion >= WORDS_FORMAT_VERSION ? MAX_WORD_N : 0;
  if (!(wordMaxN >= 0 && wordMaxN <= wordsAllowed)) {
    throw ruleError(
      file,
      `analyzer.word_max_n = ${wordMaxN} is outside 0..${wordsAllowed} ` +
        `(word n-grams need format ${WORDS_FORMAT_VERSION} or ${HEAD_FORMAT_VERSION}, at most ${MAX_WORD_N} words)`,
      'B8',
    );
  }
  const headChars = Number(analyzer.headChars || 0);
  const headAllowed = formatVersion === HEAD_FORMAT_VERSION ? MAX_HEAD_CHARS : 0;
  if (!(headChars >= 0 && headChars <= headAllowed)) {
    throw ruleError(
      file,
      `analyzer.head_chars = ${headChars} is outside 0..${headAllowed} ` +
        `(head n-grams need format ${HEAD_FORMAT_VERSION}, at most ${MAX_HEAD_CHARS} code points)`,
      'B8',
    );
  }
  const vocabulary = vocabularyOf(msg, file, entryBytes(maxN, wordMaxN, maxChars, headChars), formatVersion);
  if (vocabulary.length < 1 || vocabulary.length > LIMITS.vocabulary) {
    throw ruleError(file, `the vocabulary has ${vocabulary.length} entries; it needs 1 to ${LIMITS.vocabulary}`, 'B9');
  }
  for (const gram of vocabulary) {
    if (!validTerm(gram, minN, maxN, wordMaxN, maxChars, headChars)) {
      throw ruleError(
        file,
        `vocabulary entry ${JSON.stringify(gram.slice(0, 40))} is neither a character n-gram of ` +
          `min_n..max_n = ${minN}..${maxN} code points nor a word n-gram of 1..word_max_n = ${wordMaxN} words` +
          (headChars ? ' nor a head n-gram of min_n..max_n code points' : ''),
        'B9',
      );
    }
  }
  if (new Set(vocabulary).size !== vocabulary.length) {
    throw ruleError(file, 'the vocabulary has repeated entries; the file is corrupt', 'B9');
  }
  const weighting = msg.weighting || {};
  const normKind = Number(weighting.norm || 0);
  if (normKind !== 0 && normKind !== 1) {
    throw ruleError(file, `weighting.norm = ${normKind} is neither NORM_NONE (0) nor NORM_L2 (1)`, 'B10');
  }
  const idfTable = msg.idfTable || [];
  const idfIndex = msg.idfIndex || [];
  const idf = weighting.useIdf ? idfOf(msg, file, vocabulary.length, formatVersion) : msg.idf;
  if (weighting.useIdf) {
    if (idf.length !== vocabulary.length) {
      throw ruleError(
        file,
        `idf has ${idf.length} values but the vocabulary has ${vocabulary.length} entries; the file is corrupt`,
        'B10',
      );
    }
    if (![...idfTable, ...idf].every((x) => Number.isFinite(x) && x > 0)) {
      throw ruleError(file, 'idf holds a value that is not a finite number > 0', 'B10');
    }
  } else if (msg.idf.length !== 0 || idfTable.length !== 0 || idfIndex.length !== 0) {
    throw ruleError(
      file,
      `use_idf is false but idf has ${msg.idf.length} values, idf_table ${idfTable.length}, idf_index ${idfIndex.length}`,
      'B10',
    );
  }
  const threshold = Number(msg.threshold);
  if (!(Number.isFinite(threshold) && threshold >= 0 && threshold <= 1)) {
    throw ruleError(file, `threshold ${threshold} is not a number in [0, 1]`, 'B11');
  }
  if (!/^[0-9a-f]{64}$/.test(msg.onnxSha256)) {
    throw ruleError(file, `onnx_sha256 ${JSON.stringify(msg.onnxSha256.slice(0, 70))} is not 64 lowercase hex digits`, 'B12');
  }
  const gate = msg.familiarity;
  const minOrder = gate ? Number(gate.minOrder || 0) : 0;
  const maxUnfamiliar = gate ? Number(gate.maxUnfamiliar ?? 0) : NaN;
  if (!gate || !(minOrder >= 1 && minOrder <= maxN) || !(Number.isFinite(maxUnfamiliar) && maxUnfamiliar >= 0 && maxUnfamiliar <= 1)) {
    throw ruleError(
      file,
      'familiarity must be present with 1 <= min_order <= max_n and max_unfamiliar a number in [0, 1], ' +
        `got min_order=${minOrder}, max_unfamiliar=${maxUnfamiliar}`,
      'B13',
    );
  }
  checkRules(msg, file, formatVersion);
  if (COMPACT_LAYOUTS.includes(formatVersion)) {
    // Readers find the vocabulary and idf per column in fields 7 and 8, whatever the layout.
    msg.vocabulary = vocabulary;
    msg.idf = idf;
  }
}

/**
 * The most UTF-8 bytes a vocabulary entry may have (rule B9): 4 * max_n; with head n-grams the
 * mark and max_n code points, 1 + 4 * max_n; with word n-grams the mark and a whole normalised
 * text, 1 + 4 * max_chars, if larger.
 * @param {number} maxN
 * @param {number} wordMaxN
 * @param {number} maxChars
 * @param {number} headChars
 * @returns {number}
 */
function entryBytes(maxN, wordMaxN, maxChars, headChars) {
  const longest = headChars ? 1 + 4 * maxN : 4 * maxN;
  return wordMaxN ? Math.max(longest, 1 + 4 * maxChars) : longest;
}

/**
 * Rule B9 for one entry: a character n-gram of min_n..max_n code points starting with neither
 * mark; or (word_max_n > 0) the word mark and 1..word_max_n non-empty words joined by single
 * spaces, at most max_chars code points after the mark; or (head_chars > 0) the head mark and
 * min_n..max_n code points, none of them a mark.
 * @returns {boolean}
 */
function validTerm(gram, minN, maxN, wordMaxN, maxChars, headChars) {
  if (gram[0] === HEAD_MARK) {
    const rest = gram.slice(1);
    const n = codePointLength(rest);
    return headChars > 0 && n >= minN && n <= maxN && !rest.includes(WORD_MARK) && !rest.includes(HEAD_MARK);
  }
  if (gram[0] !== WORD_MARK) {
    const n = codePointLength(gram);
    return n >= minN && n <= maxN;
  }
  const words = gram.slice(1).split(' ');
  return (
    words.length >= 1 &&
    words.length <= wordMaxN &&
    codePointLength(gram) <= 1 + maxChars &&
    words.every((w) => w.length > 0 && !w.includes(WORD_MARK))
  );
}

/**
 * Rule B9's layout part: the vocabulary of field 7 (formats 3-4) or of fields 17-19 (formats
 * 5-7, front-coded: every entry at most `maxBytes` bytes (entryBytes), valid UTF-8, strictly
 * ascending in bytes).
 * @param {object} msg decoded `.bin`
 * @param {string} file
 * @param {number} maxBytes the largest entry, in bytes
 * @param {number} formatVersion
 * @returns {string[]}
 */
function vocabularyOf(msg, file, maxBytes, formatVersion) {
  const prefix = msg.vocabPrefix || [];
  const suffixLen = msg.vocabSuffixLen || [];
  const blob = msg.vocabSuffixes && msg.vocabSuffixes.length ? Uint8Array.from(msg.vocabSuffixes) : new Uint8Array(0);
  if (!COMPACT_LAYOUTS.includes(formatVersion)) {
    if (prefix.length || suffixLen.length || blob.length) {
      throw ruleError(file, `format ${formatVersion} holds the front-coded vocabulary of format 5 (fields 17-19)`, 'B9');
    }
    return msg.vocabulary;
  }
  if (msg.vocabulary.length) {
    throw ruleError(file, 'format 5 holds field 7 (vocabulary); its vocabulary is front-coded in fields 17-19', 'B9');
  }
  const d = prefix.length;
  if (d < 1 || d > LIMITS.vocabulary || suffixLen.length !== d) {
    throw ruleError(
      file,
      `vocab_prefix has ${d} values and vocab_suffix_len ${suffixLen.length}; they need the same length, 1 to ${LIMITS.vocabulary}`,
      'B9',
    );
  }
  const grams = new Array(d);
  let at = 0;
  let prev = new Uint8Array(0);
  for (let i = 0; i < d; i += 1) {
    const shared = Number(prefix[i]);
    const rest = Number(suffixLen[i]);
    if (shared > prev.length || shared + rest > maxBytes || at + rest > blob.length) {
      throw ruleError(
        file,
        `vocabulary entry ${i}: prefix ${shared} + suffix ${rest} bytes do not fit (entry ${i - 1} has ${prev.length} bytes, ` +
          `at most ${maxBytes} bytes an entry, ${blob.length - at} suffix bytes left)`,
        'B9',
      );
    }
    const data = new Uint8Array(shared + rest);
    data.set(prev.subarray(0, shared), 0);
    data.set(blob.subarray(at, at + rest), shared);
    at += rest;
    if (i > 0 && Buffer.compare(data, prev) <= 0) {
      throw ruleError(file, `vocabulary entry ${i} does not come after entry ${i - 1} in byte order; the file is corrupt`, 'B9');
    }
    try {
      grams[i] = strictUtf8.decode(data);
    } catch {
      throw ruleError(file, `vocabulary entry ${i} is not valid UTF-8`, 'B9');
    }
    prev = data;
  }
  if (at !== blob.length) {
    throw ruleError(file, `vocab_suffixes has ${blob.length - at} bytes more than vocab_suffix_len uses`, 'B9');
  }
  return grams;
}

/**
 * Rule B10's layout part (with use_idf): the idf of field 8 (formats 3-4) or of fields 20-21
 * (format 5: idf_table[idf_index[i]], 1 to d table values).
 * @param {object} msg decoded `.bin`
 * @param {string} file
 * @param {number} d vocabulary size
 * @param {number} formatVersion
 * @returns {number[]}
 */
function idfOf(msg, file, d, formatVersion) {
  const table = msg.idfTable || [];
  const index = msg.idfIndex || [];
  if (!COMPACT_LAYOUTS.includes(formatVersion)) {
    if (table.length || index.length) {
      throw ruleError(file, `format ${formatVersion} holds the idf table of format 5 (fields 20-21)`, 'B10');
    }
    return msg.idf;
  }
  if (msg.idf.length || table.length < 1 || table.length > d || index.length !== d) {
    throw ruleError(
      file,
      `format 5 needs idf empty, 1 to ${d} idf_table values and one idf_index per vocabulary entry (${d}); ` +
        `got ${msg.idf.length}, ${table.length} and ${index.length}`,
      'B10',
    );
  }
  const bad = index.findIndex((j) => j >= table.length);
  if (bad >= 0) {
    throw ruleError(file, `idf_index[${bad}] = ${index[bad]} is outside the idf_table (0..${table.length - 1})`, 'B10');
  }
  return index.map((j) => table[j]);
}

/**
 * Rule B14: the reflex rules are well formed; format 3 has none, format 4 has some, formats 5-7
 * any number.
 * @param {object} msg decoded `.bin`
 * @param {string} file
 * @param {number} formatVersion
 */
function checkRules(msg, file, formatVersion) {
  const rules = msg.rules || [];
  if ((rules.length > 0 && formatVersion === FORMAT_VERSION) || (formatVersion === RULES_FORMAT_VERSION && rules.length === 0)) {
    throw ruleError(
      file,
      `format_version ${formatVersion} with ${rules.length} rules: rules need format ${RULES_FORMAT_VERSION} or ` +
        `${COMPACT_FORMAT_VERSION}-${HEAD_FORMAT_VERSION}, and format ${RULES_FORMAT_VERSION} needs rules`,
      'B14',
    );
  }
  if (rules.length > LIMITS.rules) throw ruleError(file, `${rules.length} rules; at most ${LIMITS.rules}`, 'B14');
  const names = new Set();
  let words = 0;
  rules.forEach((rule, i) => {
    const nameChars = codePointLength(rule.name || '');
    if (nameChars < 1 || nameChars > LIMITS.ruleNameChars || names.has(rule.name)) {
      throw ruleError(
        file,
        `rules[${i}].name ${JSON.stringify(String(rule.name || '').slice(0, 70))} is empty, longer than ` +
          `${LIMITS.ruleNameChars} code points or repeated`,
        'B14',
      );
    }
    names.add(rule.name);
    const label = Number(rule.label || 0);
    if (label >= msg.labels.length) {
      throw ruleError(file, `rules[${i}].label ${label} is not a label index (0..${msg.labels.length - 1})`, 'B14');
    }
    if (RULE_WORD_LISTS.slice(0, 4).every((list) => (rule[list] || []).length === 0)) {
      throw ruleError(file, `rules[${i}] has no contains, starts_with, ends_with or equals words`, 'B14');
    }
    for (const list of RULE_WORD_LISTS) {
      for (const word of rule[list] || []) {
        const n = codePointLength(word);
        if (n < 1 || n > LIMITS.wordChars) {
          throw ruleError(
            file,
            `rules[${i}].${RULE_LIST_NAMES[list]}: the word ${JSON.stringify(word.slice(0, 40))} has ${n} code points; ` +
              `it needs 1 to ${LIMITS.wordChars}`,
            'B14',
          );
        }
      }
      words += (rule[list] || []).length;
    }
  });
  if (words > LIMITS.ruleWords) throw ruleError(file, `the rules hold ${words} words; at most ${LIMITS.ruleWords}`, 'B14');
}

/**
 * Whether a reflex rule answers a normalised text (spec section 5): every word list it has is
 * satisfied; plain substring, prefix, suffix and equality tests (no regular expressions).
 * @param {object} rule decoded foundry.v1.Rule
 * @param {string} normalized
 * @returns {boolean}
 */
function ruleMatches(rule, normalized) {
  const has = (list) => (rule[list] || []).length > 0;
  return (
    (!has('equals') || rule.equals.includes(normalized)) &&
    (!has('startsWith') || rule.startsWith.some((w) => normalized.startsWith(w))) &&
    (!has('endsWith') || rule.endsWith.some((w) => normalized.endsWith(w))) &&
    (!has('contains') || rule.contains.some((w) => normalized.includes(w))) &&
    (rule.alsoContains || []).every((w) => normalized.includes(w)) &&
    !(rule.unlessContains || []).some((w) => normalized.includes(w))
  );
}

module.exports = {
  ArtifactError,
  COMPACT_FORMAT_VERSION,
  FORMAT_VERSION,
  HEAD_FORMAT_VERSION,
  INTEGRITY_BYTES,
  INTEGRITY_HEADER,
  LIMITS,
  RULES_FORMAT_VERSION,
  SUPPORTED_FORMAT_VERSIONS,
  WORDS_FORMAT_VERSION,
  V1_REMOVED_CATEGORIES,
  V1_WHITESPACE,
  checkIntegrity,
  checkPreprocessor,
  readArtifact,
  ruleError,
  ruleMatches,
};
