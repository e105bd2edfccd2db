'use strict';
/**
 * Replay a `<task>_conformance.json` (written by the scikit-learn side at export) against a
 * loaded {@link MicroModel}: normalised text exact, feature indices exact, feature values
 * within 1e-6, probabilities within 1e-5, labels exact, unfamiliarity exact, and `confident`
 * exact unless the top probability is within 1e-5 of the threshold. A file with no vectors, or written
 * for another `.bin` (its `preprocessor_sha256`), is an ArtifactError.
 */
const fs = require('node:fs');
const path = require('node:path');
const { ArtifactError } = require('./runtime');

const FEATURE_TOLERANCE = 1e-6;
const PROBABILITY_TOLERANCE = 1e-5;
const BATCH = 256;

/**
 * @param {string} file
 * @returns {{task: string, vectors: Array<object>}}
 */
function readConformance(file) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ArtifactError(`${file}: unreadable conformance file: ${err.message}`);
  }
  if (!doc || !Array.isArray(doc.vectors)) {
    throw new ArtifactError(`${file}: no "vectors" array`);
  }
  if (doc.vectors.length === 0) {
    throw new ArtifactError(`${file}: the conformance file holds no vectors; re-export the model`);
  }
  return doc;
}

/** @param {string} text @returns {string} a short printable excerpt */
function excerpt(text) {
  const cps = Array.from(text);
  return JSON.stringify(cps.length > 30 ? `${cps.slice(0, 30).join('')}…` : text);
}

/**
 * Compare one vector's features; returns a failure message or null.
 * @param {Array<[number, number]>} got
 * @param {Array<[number, number]>} want
 */
function compareFeatures(got, want) {
  const gotIdx = got.map(([i]) => i);
  const wantIdx = want.map(([i]) => i);
  if (gotIdx.length !== wantIdx.length || gotIdx.some((i, j) => i !== wantIdx[j])) {
    return `feature indices differ: got [${gotIdx.slice(0, 12)}], want [${wantIdx.slice(0, 12)}]`;
  }
  let worst = 0;
  got.forEach(([, v], j) => {
    worst = Math.max(worst, Math.abs(v - want[j][1]));
  });
  return worst > FEATURE_TOLERANCE ? `feature values differ by ${worst.toExponential(2)}` : null;
}

/**
 * @param {import('./runtime').MicroModel} model
 * @param {string} file path of the conformance JSON
 * @returns {Promise<{vectors: number, failures: string[]}>}
 */
async function checkConformance(model, file) {
  const { vectors, preprocessor_sha256: recorded } = readConformance(file);
  if (model.preprocessorSha256 && recorded !== model.preprocessorSha256) {
    // Vectors of another export say nothing about this model (an interrupted export, mixed files).
    throw new ArtifactError(
      `${file}: written for another export (preprocessor_sha256 ${String(recorded).slice(0, 12)}…, the loaded ` +
        `${path.basename(model.paths.bin)} is ${model.preprocessorSha256.slice(0, 12)}…): an export was ` +
        'interrupted or files were mixed; re-export the model',
    );
  }
  const failures = [];
  const proba = [];
  const answers = [];
  for (let start = 0; start < vectors.length; start += BATCH) {
    const texts = vectors.slice(start, start + BATCH).map((v) => v.text);
    const scored = await model.score(texts);
    proba.push(...scored.proba);
    answers.push(...scored.proba.map((row, j) => model.answer(row, scored.unfamiliar[j])));
  }
  vectors.forEach((v, i) => {
    const where = `vector ${i} (${excerpt(v.text)})`;
    const { normalized, features, unfamiliar } = model.featurize(v.text);
    if (normalized !== v.normalized) {
      failures.push(`${where}: normalised text ${JSON.stringify(normalized)} != ${JSON.stringify(v.normalized)}`);
      return;
    }
    const featureProblem = compareFeatures(features, v.features);
    if (featureProblem !== null) {
      failures.push(`${where}: ${featureProblem}`);
      if (featureProblem.startsWith('feature indices')) return;
    }
    const diff = Math.max(...proba[i].map((p, k) => Math.abs(p - v.probabilities[k])));
    if (!(diff <= PROBABILITY_TOLERANCE)) {
      failures.push(`${where}: probabilities differ by ${diff.toExponential(2)}`);
    }
    const { confident, score } = answers[i];
    let best = 0; // the model's label as recorded (the top class, not an out-of-scope answer)
    for (let j = 1; j < proba[i].length; j += 1) if (proba[i][j] > proba[i][best]) best = j;
    const label = model.labels[best];
    if (label !== v.label) failures.push(`${where}: label ${label} != ${v.label}`);
    if ('unfamiliar' in v && unfamiliar !== v.unfamiliar) {
      failures.push(`${where}: unfamiliar ${unfamiliar} != ${v.unfamiliar}`);
    }
    if ('rule' in v) {
      // A reflex rule answers instead of the model: the same rule, by name.
      const hit = model.ruleIndex(v.text);
      const rule = hit < 0 ? null : model.rules[hit].name;
      if (rule !== v.rule) failures.push(`${where}: rule ${JSON.stringify(rule)} != ${JSON.stringify(v.rule)}`);
      if (v.rule !== null) return; // the answer is the rule's; the model's confident is not asked
    }
    if ('confident' in v && Math.abs(score - model.threshold) > PROBABILITY_TOLERANCE && confident !== v.confident) {
      failures.push(`${where}: confident ${confident} != ${v.confident}`);
    }
  });
  return { vectors: vectors.length, failures };
}

module.exports = { FEATURE_TOLERANCE, PROBABILITY_TOLERANCE, checkConformance, readConformance };
