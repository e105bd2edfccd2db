'use strict';
/**
 * Tampered and mismatched artifacts are rejected with an ArtifactError that names the file,
 * never a crash. Each case copies real artifacts into a temporary dir and damages them there.
 */
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { ArtifactError, MicroModel, PROTO_PATH } = require('../src/runtime');
const { MODELS_DIR, copyArtifacts, forgedTasks, rewritePreprocessor, seal, unseal } = require('../support/models');
const { HEAD_MARK, WORD_MARK } = require('../src/textspec');
const protobuf = require('protobufjs');

const Preprocessor = protobuf.loadSync(PROTO_PATH).lookupType('foundry.v1.Preprocessor');

const CLI = path.join(__dirname, '..', 'cli.js');
const tasks = forgedTasks();
const task = tasks[0];

/**
 * @param {string} dir
 * @param {RegExp} message
 * @param {string} file the file the message must name
 */
async function assertRejected(dir, message, file) {
  await assert.rejects(MicroModel.load(task, dir), (err) => {
    assert.ok(err instanceof ArtifactError, `not an ArtifactError: ${err.stack}`);
    assert.match(err.message, message);
    assert.ok(err.message.includes(file), `message does not name ${file}: ${err.message}`);
    return true;
  });
}

const bin = (dir) => path.join(dir, `${task}_preprocessor.bin`);
const onnx = (dir) => path.join(dir, `${task}_classifier.onnx`);

/** @param {string} text @returns {RegExp} matches a message that ends with `text`, verbatim */
const endsWith = (text) => new RegExp(`${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);

/**
 * Fields 17-19 of a vocabulary (sorted in byte order): per entry the bytes shared with the
 * entry before and the bytes that follow, and the blob of those bytes (spec section 1).
 * @param {string[]} vocabulary
 * @returns {{vocabPrefix: number[], vocabSuffixLen: number[], vocabSuffixes: Buffer}}
 */
function frontCode(vocabulary) {
  const entries = vocabulary.map((gram) => Buffer.from(gram, 'utf8')).sort(Buffer.compare);
  const vocabPrefix = [];
  const vocabSuffixLen = [];
  const suffixes = [];
  let prev = Buffer.alloc(0);
  for (const data of entries) {
    let shared = 0;
    while (shared < prev.length && shared < data.length && prev[shared] === data[shared]) shared += 1;
    vocabPrefix.push(shared);
    vocabSuffixLen.push(data.length - shared);
    suffixes.push(data.subarray(shared));
    prev = data;
  }
  return { vocabPrefix, vocabSuffixLen, vocabSuffixes: Buffer.concat(suffixes) };
}

/**
 * Distinct character n-grams of min_n..max_n code points that no text can yield: each is made
 * of C0/C1 control characters (general category Cc, which step 3 removes from every text),
 * never a mark (U+0001, U+0002) nor a whitespace code point.
 * @param {number} count
 * @param {number} minN
 * @param {number} maxN
 * @param {Set<string>} taken entries already in the vocabulary
 * @returns {string[]}
 */
function inertTerms(count, minN, maxN, taken) {
  const alphabet = [];
  for (let c = 0x03; c <= 0x9f; c += 1) {
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x7e) || c === 0x85) continue;
    alphabet.push(String.fromCodePoint(c));
  }
  const terms = [];
  const grow = (prefix, length) => {
    if (terms.length >= count) return;
    if (length === 0) {
      if (!taken.has(prefix)) terms.push(prefix);
      return;
    }
    for (const ch of alphabet) grow(prefix + ch, length - 1);
  };
  for (let n = minN; n <= maxN && terms.length < count; n += 1) grow('', n);
  assert.equal(terms.length, count, 'not enough inert terms to stand in for the marked entries');
  return terms;
}

/**
 * The task's vocabulary as `[entry, idf_index]` pairs (in the `.bin`'s byte order). With
 * `unmarked`, every word or head n-gram (U+0001, U+0002) is replaced by an inert character
 * n-gram ({@link inertTerms}) that keeps its idf, so that the vocabulary keeps its size (and
 * still fits the `.onnx`) and holds no marked entry, whatever the format of the forged model.
 * @param {{unmarked?: boolean}} [options]
 * @returns {Promise<{entries: Array<[string, number]>, inert: Set<string>, spec: object}>}
 */
async function vocabularyEntries({ unmarked = false } = {}) {
  const dir = copyArtifacts(task);
  const { preprocessor, spec } = await MicroModel.load(task, dir);
  const idfIndex = Preprocessor.decode(fs.readFileSync(bin(dir))).idfIndex.map(Number);
  assert.equal(idfIndex.length, preprocessor.vocabulary.length, 'the forged .bin is not front-coded (format 5-7)');
  let entries = preprocessor.vocabulary.map((gram, i) => [gram, idfIndex[i]]);
  const inert = new Set();
  if (unmarked) {
    const marked = (gram) => gram[0] === HEAD_MARK || gram[0] === WORD_MARK;
    const count = entries.filter(([gram]) => marked(gram)).length;
    const standIns = inertTerms(count, spec.minN, spec.maxN, new Set(preprocessor.vocabulary));
    entries = entries.map(([gram, j]) => {
      if (!marked(gram)) return [gram, j];
      const term = standIns.shift();
      inert.add(term);
      return [term, j];
    });
  }
  return { entries, inert, spec };
}

/**
 * Fields 17-21 for `entries` (re-sorted in UTF-8 byte order, each keeping its idf_index).
 * @param {object} msg decoded `.bin` (formats 5-7), changed in place
 * @param {Array<[string, number]>} entries
 */
function setVocabulary(msg, entries) {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a[0], 'utf8'), Buffer.from(b[0], 'utf8')));
  Object.assign(msg, frontCode(sorted.map(([gram]) => gram)));
  msg.idfIndex = sorted.map(([, j]) => j);
}

/**
 * A copy of the task's pair whose `.bin` has format `formatVersion`, `head_chars`, and
 * `entry` in its vocabulary in place of another entry (the vocabulary keeps its size, so the
 * `.onnx` still fits, and is re-sorted in byte order with its idf kept aligned). With
 * `unmarked`, the model's own word and head n-grams are first replaced by inert character
 * n-grams (see {@link vocabularyEntries}), so that `entry` is its only marked entry; `entry`
 * then takes the place of one of those, if any. Otherwise it takes the place of the first
 * entry in byte order, unless the vocabulary holds it already.
 * @param {{formatVersion: number, headChars: number, entry?: string, unmarked?: boolean}} change
 * @returns {Promise<string>} the temporary models dir
 */
async function withHead({ formatVersion, headChars, entry, unmarked = false }) {
  const { entries, inert } = await vocabularyEntries({ unmarked });
  if (entry !== undefined && !entries.some(([gram]) => gram === entry)) {
    const at = Math.max(0, entries.findIndex(([gram]) => inert.has(gram)));
    entries[at] = [entry, entries[at][1]];
  }
  const dir = copyArtifacts(task);
  rewritePreprocessor(bin(dir), (msg) => {
    msg.formatVersion = formatVersion;
    msg.analyzer.headChars = headChars;
    if (unmarked) msg.analyzer.wordMaxN = 0;
    setVocabulary(msg, entries);
  });
  return dir;
}

test('there are forged artifacts to tamper with', () => {
  assert.ok(task, `no forged models in ${MODELS_DIR}`);
});

if (task) {
  test('the untouched copy loads (the fixtures are sound)', async () => {
    const model = await MicroModel.load(task, copyArtifacts(task));
    assert.equal(model.labels.length, model.preprocessor.labels.length);
  });

  test('a .bin truncated anywhere fails its integrity check', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    for (let k = 0; k < 16; k += 1) {
      fs.writeFileSync(bin(dir), data.subarray(0, Math.floor((data.length * k) / 16) + 1));
      await assertRejected(dir, /integrity check.*\(spec rule B1\)/, bin(dir));
    }
  });

  test('one flipped bit anywhere in a .bin fails its integrity check', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    const step = Math.max(1, Math.floor((data.length * 8) / 200));
    for (let bit = 0; bit < data.length * 8; bit += step) {
      const copy = Buffer.from(data);
      copy[bit >> 3] ^= 1 << (bit & 7);
      fs.writeFileSync(bin(dir), copy);
      await assertRejected(dir, /\(spec rule B1\)/, bin(dir));
    }
  });

  test('a sealed .bin cut inside a field says so', async () => {
    const dir = copyArtifacts(task);
    const body = unseal(fs.readFileSync(bin(dir)));
    // Cut inside the packed idf_index (field 21, the last field of a format 5 body, one byte
    // or two per n-gram): its length then runs past the end of the file whatever the trailer's
    // hash bytes are. A cut inside a short last field (body.length - 1) let the field take its
    // missing bytes from the trailer, and the error depended on the hash.
    fs.writeFileSync(bin(dir), seal(body.subarray(0, body.length - 1000)));
    await assertRejected(dir, /truncated or corrupt\): it ends in the middle of a field.*rule B2/, bin(dir));
  });

  test('a sealed empty .bin is rejected (no format version)', async () => {
    const dir = copyArtifacts(task);
    fs.writeFileSync(bin(dir), seal(Buffer.alloc(0)));
    await assertRejected(dir, /format_version 0 is not supported.*rule B3/, bin(dir));
  });

  test('a sealed .bin with a corrupt tag byte is rejected', async () => {
    const dir = copyArtifacts(task);
    const body = Buffer.from(unseal(fs.readFileSync(bin(dir))));
    body[0] = 0xff;
    fs.writeFileSync(bin(dir), seal(body));
    await assertRejected(dir, /not a valid preprocessor file.*rule B2/, bin(dir));
  });

  test('a sealed .bin with invalid UTF-8 inside a string field is rejected', async () => {
    const dir = copyArtifacts(task);
    const body = Buffer.from(unseal(fs.readFileSync(bin(dir))));
    const model = await MicroModel.load(task, dir);
    const label = Buffer.from(model.labels[0], 'utf8');
    const at = body.indexOf(Buffer.concat([Buffer.from([(3 << 3) | 2, label.length]), label]));
    assert.ok(at > 0);
    body[at + 2] = 0xff;
    fs.writeFileSync(bin(dir), seal(body));
    await assertRejected(dir, /not a valid preprocessor file.*UTF-8.*rule B2/, bin(dir));
  });

  test('invalid UTF-8 inside the front-coded vocabulary is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.vocabSuffixes = Buffer.concat([msg.vocabSuffixes.subarray(0, -1), Buffer.from([0xff])]);
    });
    await assertRejected(dir, /vocabulary entry \d+ is not valid UTF-8.*rule B9/, bin(dir));
  });

  test('an unsupported format version is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.formatVersion = 8;
    });
    await assertRejected(dir, /format_version 8 is not supported by this runtime \(supported: 3, 4, 5, 6, 7\).*rule B3/, bin(dir));
  });

  test('format 7 with head n-grams loads, and both backends weigh its head n-grams', async () => {
    const gram = `${HEAD_MARK} 好`;
    const dir = await withHead({ formatVersion: 7, headChars: 3, entry: gram });
    for (const backend of ['auto', 'linear', 'onnxruntime']) {
      let model;
      try {
        model = await MicroModel.load(task, dir, { backend });
      } catch (err) {
        if (backend === 'linear' && /runs only a linear graph/.test(err.message)) continue;
        throw err;
      }
      assert.equal(model.spec.headChars, 3);
      const column = model.preprocessor.vocabulary.indexOf(gram);
      assert.ok(column >= 0, `${backend}: ${JSON.stringify(gram)} is not in the vocabulary`);
      const { features, unfamiliar } = model.featurize('好的,行');
      const weighed = features.find(([col]) => col === column);
      assert.ok(weighed && weighed[1] > 0, `${backend}: the head n-gram's column is not weighed`);
      const plain = await MicroModel.load(task, copyArtifacts(task), { backend });
      assert.equal(unfamiliar, plain.featurize('好的,行').unfamiliar, 'head n-grams count towards unfamiliarity');
    }
    const linear = await MicroModel.load(task, dir, { backend: 'auto' });
    const ort = await MicroModel.load(task, dir, { backend: 'onnxruntime' });
    const texts = ['好的,行', '好', '不好', ''];
    const a = await linear.predictProba(texts);
    const b = await ort.predictProba(texts);
    a.forEach((row, i) => row.forEach((p, k) => assert.ok(Math.abs(p - b[i][k]) <= 1e-5, `${texts[i]}: ${p} vs ${b[i][k]}`)));
    // head_chars = 0 in format 7 takes no head n-grams: it featurizes as format 6 does (the
    // same vocabulary, without the model's own head n-grams, in both).
    const headless = await MicroModel.load(task, await withHead({ formatVersion: 7, headChars: 0, unmarked: true }));
    const format6 = await MicroModel.load(task, await withHead({ formatVersion: 6, headChars: 0, unmarked: true }));
    assert.deepEqual(headless.preprocessor.vocabulary, format6.preprocessor.vocabulary);
    for (const text of texts) assert.deepEqual(headless.featurize(text).features, format6.featurize(text).features);
    assert.ok(headless.featurize('好的').features.length > 0);
  });

  test('head_chars outside 0..16, or before format 7, is refused (rule B8)', async () => {
    const early = await withHead({ formatVersion: 6, headChars: 3 });
    await assertRejected(early, /analyzer.head_chars = 3 is outside 0..0 \(head n-grams need format 7, at most 16 code points\).*rule B8/, bin(early));
    const long = await withHead({ formatVersion: 7, headChars: 17 });
    await assertRejected(long, /analyzer.head_chars = 17 is outside 0..16 .*rule B8/, bin(long));
  });

  test('a head n-gram in the vocabulary needs head_chars and min_n..max_n code points (rule B9)', async () => {
    const neither = 'is neither a character n-gram of min_n..max_n = 1..3 code points nor a word n-gram of 1..word_max_n = 0 words';
    const noHead = await withHead({ formatVersion: 7, headChars: 0, entry: `${HEAD_MARK}好`, unmarked: true });
    await assertRejected(noHead, endsWith(`vocabulary entry "\\u0002好" ${neither} (spec rule B9)`), bin(noHead));
    const tooLong = await withHead({ formatVersion: 7, headChars: 3, entry: `${HEAD_MARK} 好的好`, unmarked: true });
    await assertRejected(
      tooLong,
      endsWith(`vocabulary entry "\\u0002 好的好" ${neither} nor a head n-gram of min_n..max_n code points (spec rule B9)`),
      bin(tooLong),
    );
    const marked = await withHead({ formatVersion: 7, headChars: 3, entry: `${HEAD_MARK}${HEAD_MARK}好`, unmarked: true });
    await assertRejected(marked, /nor a head n-gram of min_n..max_n code points.*rule B9/, bin(marked));
    const empty = await withHead({ formatVersion: 7, headChars: 3, entry: HEAD_MARK, unmarked: true });
    await assertRejected(empty, /nor a head n-gram .*rule B9/, bin(empty));
  });

  test('a head n-gram entry may have 1 + 4 * max_n bytes, no more (rule B9)', async () => {
    const widest = await withHead({ formatVersion: 7, headChars: 3, entry: `${HEAD_MARK}😀😀😀`, unmarked: true });
    await MicroModel.load(task, widest); // 13 bytes, 1 + 4 * 3
    const wider = await withHead({ formatVersion: 7, headChars: 3, entry: `${HEAD_MARK}😀😀😀a`, unmarked: true });
    await assertRejected(wider, /prefix 0 \+ suffix 14 bytes do not fit .*at most 13 bytes an entry.*rule B9/, bin(wider));
  });

  test('format 4 needs reflex rules, and rules need format 4 or 5-7', async () => {
    // Formats 3-4 hold neither word nor head n-grams (rule B8): the model's own, if any, give
    // way to inert character n-grams, so that B14 is the rule that fails.
    const { entries } = await vocabularyEntries({ unmarked: true });
    /** The message in the layout of formats 3-4 (fields 7 and 8). */
    const legacy = (msg, formatVersion) => {
      const table = msg.idfTable;
      Object.assign(msg, {
        formatVersion,
        vocabulary: entries.map(([gram]) => gram),
        idf: entries.map(([, j]) => table[j]),
        vocabPrefix: [],
        vocabSuffixLen: [],
        vocabSuffixes: Buffer.alloc(0),
        idfTable: [],
        idfIndex: [],
      });
      msg.analyzer.headChars = 0;
      msg.analyzer.wordMaxN = 0;
    };
    const noRules = copyArtifacts(task);
    rewritePreprocessor(bin(noRules), (msg) => legacy(msg, 4));
    await assertRejected(noRules, /format_version 4 with 0 rules.*rule B14/, bin(noRules));
    const plain = copyArtifacts(task);
    rewritePreprocessor(bin(plain), (msg) => {
      legacy(msg, 3);
      msg.rules = [{ name: 'r', label: 0, contains: ['x'] }];
    });
    await assertRejected(plain, /format_version 3 with 1 rules.*rule B14/, bin(plain));
    const badLabel = copyArtifacts(task);
    rewritePreprocessor(bin(badLabel), (msg) => {
      msg.rules = [{ name: 'r', label: msg.labels.length, contains: ['x'] }];
    });
    await assertRejected(badLabel, /rules\[0\]\.label 2 is not a label index.*rule B14/, bin(badLabel));
  });

  test('an unsupported text spec version is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.normalizer.specVersion = 9;
    });
    await assertRejected(dir, /normalizer.spec_version = 9 .*is not supported.*rule B6/, bin(dir));
  });

  test('a FIFO in place of the .bin is refused without reading it (no hang)', { skip: process.platform === 'win32' }, async () => {
    const dir = copyArtifacts(task);
    fs.unlinkSync(bin(dir));
    const made = spawnSync('mkfifo', [bin(dir)]);
    assert.equal(made.status, 0, String(made.stderr));
    await assertRejected(dir, /not a regular file.*rule F1/, bin(dir));
  });

  test('a vocabulary/idf length mismatch is rejected', async () => {
    const dir = copyArtifacts(task);
    let n = 0;
    rewritePreprocessor(bin(dir), (msg) => {
      msg.idfIndex.pop();
      n = msg.vocabPrefix.length;
    });
    await assertRejected(dir, new RegExp(`one idf_index per vocabulary entry \\(${n}\\); got 0, \\d+ and ${n - 1}`), bin(dir));
  });

  test('a vocabulary longer than the ONNX input is rejected', async () => {
    const dir = copyArtifacts(task);
    let n = 0;
    rewritePreprocessor(bin(dir), (msg) => {
      // One more front-coded entry, after every other in byte order: U+10FFFF.
      const last = Buffer.from('\u{10FFFF}', 'utf8');
      msg.vocabPrefix.push(0);
      msg.vocabSuffixLen.push(last.length);
      msg.vocabSuffixes = Buffer.concat([msg.vocabSuffixes, last]);
      msg.idfIndex.push(0);
      n = msg.vocabPrefix.length;
    });
    await assertRejected(dir, new RegExp(`expects ${n - 1} features but .* vocabulary of ${n}.*rule O2`), onnx(dir));
  });

  test('more labels than ONNX classes is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.labels.push('Extra');
    });
    await assertRejected(dir, /classes but .* lists \d+ labels.*rule O3/, onnx(dir));
  });

  test('a modified .onnx is rejected by its hash', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(onnx(dir));
    data[data.length - 1] ^= 0x01;
    fs.writeFileSync(onnx(dir), data);
    await assertRejected(dir, /SHA-256 .* does not match .* the pair is mismatched.*rule P1/, onnx(dir));
  });

  test("a .bin paired with another task's .onnx is rejected", { skip: tasks.length < 2 && 'one task only' }, async () => {
    const dir = copyArtifacts(task);
    fs.copyFileSync(path.join(MODELS_DIR, `${tasks[1]}_classifier.onnx`), onnx(dir));
    await assertRejected(dir, /does not match .* recorded in/, onnx(dir));
  });

  test("a .bin loaded under another task's name is rejected", async () => {
    const dir = copyArtifacts(task);
    fs.renameSync(bin(dir), path.join(dir, 'other_preprocessor.bin'));
    fs.renameSync(onnx(dir), path.join(dir, 'other_classifier.onnx'));
    await assert.rejects(MicroModel.load('other', dir), /other_preprocessor.bin: belongs to task/);
  });

  test('a missing .onnx is reported by name', async () => {
    const dir = copyArtifacts(task);
    fs.unlinkSync(onnx(dir));
    await assertRejected(dir, /classifier file not found/, onnx(dir));
  });

  test('the CLI reports a tampered pair on stderr with exit code 1, no stack trace', () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.idfIndex.pop();
    });
    const run = spawnSync(process.execPath, [CLI, '--models-dir', dir, '--task', task], {
      input: '你好\n',
      encoding: 'utf8',
    });
    assert.equal(run.status, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^foundry \(node\): .*idf_index per vocabulary entry/);
    assert.doesNotMatch(run.stderr, /\n\s+at /);
  });
}
