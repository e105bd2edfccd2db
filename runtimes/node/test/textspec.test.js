'use strict';
/** Unit tests of the JavaScript text spec (the differential fuzz lives on the Python side). */
const test = require('node:test');
const assert = require('node:assert/strict');
const { compileSpec, normalize, charNgrams, weigh } = require('../src/textspec');

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

test('bad settings name the file and the field', () => {
  assert.throws(() => spec({ specVersion: 2 }), /test.bin: normalizer.spec_version = 2 is not supported/);
  assert.throws(() => spec({ removedCategories: ['Cx'] }), /removed_categories contains "Cx"/);
  assert.throws(() => spec({ maxChars: 0 }), /max_chars must be >= 1, got 0/);
  assert.throws(() => spec({}, { minN: 3, maxN: 2 }), /min_n=3, max_n=2/);
});
