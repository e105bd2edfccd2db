'use strict';
/** Unit tests of the JavaScript text spec (the differential fuzz lives on the Python side). */
const test = require('node:test');
const assert = require('node:assert/strict');
const {
  HEAD_MARK, compileSpec, normalize, charNgrams, headNgrams, ngrams, unfamiliarity, weigh, wordNgrams,
} = require('../src/textspec');

const WHITESPACE = [
  ...[9, 10, 11, 12, 13], 0x20, 0x85, 0xa0, 0x1680,
  ...Array.from({ length: 11 }, (_, i) => 0x2000 + i), 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];
const normalizer = (over = {}) => ({
  specVersion: 1, nfkc: true, lowercase: true, removedCategories: ['Cc', 'Cf', 'Cs'],
  whitespace: WHITESPACE, maxChars: 256, ...over,
});
const analyzer = (over = {}) => ({ minN: 1, maxN: 3, wordBoundaryPadding: true, ...over });
const spec = (n = {}, a = {}) => compileSpec(normalizer(n), analyzer(a), 'test.bin');

test('NFKC, lowercasing, removal and whitespace, in that order', () => {
  const s = spec();
  assert.equal(normalize('ＡＢＣ？\u3000\u200bDEF\x07  \t\n', s), 'abc? def');
  assert.equal(normalize('İ', s), 'i\u0307');
  assert.equal(normalize('ΟΔΥΣΣΕΥΣ', s), 'οδυσσευς');
  assert.equal(normalize('㍿', s), '株式会社');
  assert.equal(normalize('', s), '');
  assert.equal(normalize(' \u3000 ', s), '');
});

test('truncation counts code points, not UTF-16 units', () => {
  const s = spec({ maxChars: 3 });
  assert.equal(normalize('😀😀😀😀', s), '😀😀😀');
  assert.equal(normalize('ab cd', s), 'ab '); // the trailing space survives (spec step order)
});

test('a lone surrogate is one removed code point', () => {
  assert.equal(normalize('a\ud800b\udfff', spec()), 'ab');
});

test('n-grams: padded words, the lone " " never emitted, code points', () => {
  const s = spec({}, { minN: 1, maxN: 2 });
  assert.deepEqual(charNgrams('吗', s), ['吗', ' 吗', '吗 ']);
  assert.deepEqual(charNgrams('😀', spec({}, { minN: 2, maxN: 2 })), [' 😀', '😀 ']);
  assert.deepEqual(charNgrams('ab ', s), ['a', 'b', ' a', 'ab', 'b ', '  ']);
  assert.deepEqual(charNgrams('', s), []);
  const flat = spec({}, { minN: 1, maxN: 2, wordBoundaryPadding: false });
  assert.deepEqual(charNgrams('a b', flat), ['a', 'b', 'a ', ' b']);
});

test('orders longer than the padded word are skipped', () => {
  assert.deepEqual(charNgrams('a', spec({}, { minN: 1, maxN: 5 })), ['a', ' a', 'a ', ' a ']);
});

test('tf-idf: sublinear tf, idf, L2 norm, float32, sorted columns', () => {
  const w = {
    index: new Map([['a', 0], ['b', 1], ['c', 2]]),
    idf: Float64Array.from([1, 2, 3]),
    sublinearTf: true,
    useIdf: true,
    norm: 'l2',
  };
  const got = weigh(['b', 'a', 'a', 'x', 'a'], w);
  const a = (1 + Math.log(3)) * 1;
  const b = 2;
  const norm = Math.hypot(a, b);
  assert.deepEqual(got, [[0, Math.fround(a / norm)], [1, Math.fround(b / norm)]]);
  assert.deepEqual(weigh(['x'], w), []);
});

test('head n-grams (step 6c): the spec examples, head_chars = 3, n = 1..3', () => {
  const s = spec({}, { headChars: 3 });
  const head = (text) => headNgrams(normalize(text, s), s).map((g) => {
    assert.equal(g[0], HEAD_MARK);
    return g.slice(1);
  });
  assert.deepEqual(head('行吧,不过先备份'), ['行', '吧', ' 行', '行吧', ' 行吧']);
  assert.deepEqual(head('...是...我算错了'), ['是', ' 是']);
  assert.deepEqual(head('好的好的'), ['好', '的', '好', ' 好', '好的', '的好', ' 好的', '好的好']);
  assert.deepEqual(head('ok sure'), ['o', 'k', ' o', 'ok', ' ok']);
  assert.deepEqual(head('?!'), []);
  assert.deepEqual(head(''), []);
});

test('head n-grams: every clause mark ends the head, after NFKC; code points, not UTF-16 units', () => {
  const s = spec({}, { headChars: 2, minN: 2, maxN: 2 });
  const head = (text) => headNgrams(normalize(text, s), s).map((g) => g.slice(1));
  for (const mark of [' ', ',', '.', '!', '?', ';', '~', '\u3002', '\u3001', '，', '！', '？', '；', '～', '…']) {
    assert.deepEqual(head(`${mark}${mark}a${mark}b`), [' a'], `clause mark ${JSON.stringify(mark)}`);
  }
  assert.deepEqual(head('😀😀😀'), [' 😀', '😀😀']);
  assert.deepEqual(head('a:b-c'), [' a', 'a:']); // ':' and '-' are not clause marks
});

test('head n-grams: none when head_chars is 0; the terms are char, then word, then head n-grams', () => {
  assert.deepEqual(headNgrams('行吧', spec()), []);
  const s = spec({}, { minN: 1, maxN: 2, wordMaxN: 1, headChars: 1 });
  const t = normalize('ok go', s);
  assert.deepEqual(ngrams(t, s), [...charNgrams(t, s), ...wordNgrams(t, s), `${HEAD_MARK}o`, `${HEAD_MARK} o`]);
});

test('head n-grams never count towards unfamiliarity', () => {
  const s = spec({}, { minN: 1, maxN: 2, headChars: 2 });
  const grams = ngrams(normalize('ab', s), s);
  const chars = charNgrams(normalize('ab', s), s);
  const index = new Map(chars.map((g, i) => [g, i]));
  assert.ok(grams.some((g) => g[0] === HEAD_MARK));
  assert.equal(unfamiliarity(grams, index, 1), 0); // the head n-grams are unknown, and ignored
  assert.equal(unfamiliarity(grams, new Map(), 2), 1);
});

test('bad settings name the file and the field', () => {
  assert.throws(() => spec({ specVersion: 2 }), /test.bin: normalizer.spec_version = 2 is not supported/);
  assert.throws(() => spec({ removedCategories: ['Cx'] }), /removed_categories contains "Cx"/);
  assert.throws(() => spec({ maxChars: 0 }), /max_chars must be >= 1, got 0/);
  assert.throws(() => spec({}, { minN: 3, maxN: 2 }), /min_n=3, max_n=2/);
  assert.throws(() => spec({}, { headChars: 17 }), /analyzer.head_chars must be in 0..16, got 17/);
});
