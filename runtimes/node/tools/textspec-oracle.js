#!/usr/bin/env node
'use strict';
/**
 * Differential-testing oracle for the text spec (used by tests/test_fuzz_differential.py).
 *
 * Usage: node tools/textspec-oracle.js SETTINGS.json INPUT.jsonl OUTPUT.jsonl
 *   SETTINGS.json  {"normalizer": {...}, "analyzer": {...}} with the camelCase field names of
 *                  foundry.v1.Normalizer / foundry.v1.Analyzer (e.g. "wordMaxN", "headChars";
 *                  the terms are the character, word and head n-grams, in that order); with "normalizeOnly": true
 *                  the n-grams are not computed (written as [])
 *   INPUT.jsonl    one JSON string per line (texts travel through a file, never argv, so that
 *                  lone surrogates and NULs survive)
 * Writes to OUTPUT.jsonl one JSON object per input line: {"normalized": str, "ngrams": [str, ...]}.
 */
const fs = require('node:fs');
const { compileSpec, normalize, ngrams: terms } = require('../src/textspec');

function main(argv) {
  if (argv.length !== 3) {
    process.stderr.write('usage: textspec-oracle.js SETTINGS.json INPUT.jsonl OUTPUT.jsonl\n');
    return 2;
  }
  const [settingsPath, inputPath, outputPath] = argv;
  const settings = JSON.parse(fs.readFileSync(settingsPath, 'utf8'));
  const spec = compileSpec(settings.normalizer, settings.analyzer, settingsPath);
  const lines = fs.readFileSync(inputPath, 'utf8').split('\n');
  const out = [];
  for (const line of lines) {
    if (line.length === 0) continue;
    const normalized = normalize(JSON.parse(line), spec);
    const ngrams = settings.normalizeOnly ? [] : terms(normalized, spec);
    out.push(JSON.stringify({ normalized, ngrams }));
  }
  fs.writeFileSync(outputPath, out.join('\n') + (out.length ? '\n' : ''), 'utf8');
  return 0;
}

process.exitCode = main(process.argv.slice(2));
