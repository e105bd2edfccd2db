'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { pyFloatRepr, pyJsonDumps } = require('../src/pyjson');

test("floats are written like Python's repr", () => {
  const cases = {
    '1.0': 1, '0.5': 0.5, '1e-05': 1e-5, '1.5e-05': 1.5e-5, '0.0001': 1e-4, '123.0': 123,
    '1e+16': 1e16, '9999999999999998.0': 9999999999999998, '2.5e-08': 2.5e-8, '0.0': 0,
    '5e-324': 5e-324, '-0.25': -0.25, '0.7665952444076538': 0.7665952444076538,
  };
  for (const [want, x] of Object.entries(cases)) assert.equal(pyFloatRepr(x), want);
});

test('objects use the separators of json.dumps and keep non-ASCII', () => {
  assert.equal(
    pyJsonDumps({ text: '你好\n"\u0007', label: 'Q', probabilities: { Q: 1, S: 0 }, confident: true }),
    '{"text": "你好\\n\\"\\u0007", "label": "Q", "probabilities": {"Q": 1.0, "S": 0.0}, "confident": true}',
  );
});
