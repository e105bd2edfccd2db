#!/usr/bin/env node
'use strict';
/**
 * Differential-testing oracle for the whole runtime (used by tests/test_fuzz_differential.py).
 *
 * Usage: node tools/runtime-oracle.js MODELS_DIR TASK INPUT.jsonl OUTPUT.jsonl
 *   INPUT.jsonl   one JSON string per line (a file, never argv: NULs and lone surrogates)
 * Writes one JSON object per text to OUTPUT.jsonl:
 *   {"normalized": str, "features": [[index, value], ...], "probabilities": [p_0, ...], "label": str}
 */
const fs = require('node:fs');
const { MicroModel } = require('../src/runtime');

const BATCH = 256;

async function main(argv) {
  if (argv.length !== 4) {
    process.stderr.write('usage: runtime-oracle.js MODELS_DIR TASK INPUT.jsonl OUTPUT.jsonl\n');
    return 2;
  }
  const [modelsDir, task, inputPath, outputPath] = argv;
  const model = await MicroModel.load(task, modelsDir);
  const texts = fs
    .readFileSync(inputPath, 'utf8')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line));
  const out = [];
  for (let start = 0; start < texts.length; start += BATCH) {
    const batch = texts.slice(start, start + BATCH);
    const proba = await model.predictProba(batch);
    batch.forEach((text, i) => {
      const { normalized, features } = model.featurize(text);
      const { label } = model.answer(proba[i]);
      out.push(JSON.stringify({ normalized, features, probabilities: proba[i], label }));
    });
  }
  fs.writeFileSync(outputPath, out.join('\n') + (out.length ? '\n' : ''), 'utf8');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 1;
  },
);
