'use strict';
/** Replays every <task>_conformance.json of the models dir through the JavaScript runtime. */
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { MicroModel } = require('../src/runtime');
const { checkConformance, readConformance } = require('../src/conformance');
const { MODELS_DIR, requireForgedTasks } = require('../support/models');

test('the models dir holds forged models with conformance vectors', () => {
  assert.ok(requireForgedTasks().length > 0);
});

for (const task of (() => {
  try {
    return requireForgedTasks();
  } catch {
    return [];
  }
})()) {
  test(`${task}: every conformance vector is reproduced`, async () => {
    const file = path.join(MODELS_DIR, `${task}_conformance.json`);
    const model = await MicroModel.load(task, MODELS_DIR);
    const report = await checkConformance(model, file);
    assert.ok(report.vectors > 0, `${file} has no vectors`);
    assert.deepEqual(report.failures, [], `${file}: ${report.failures.length} failures`);
  });

  test(`${task}: the conformance vectors hold the hard cases`, () => {
    const { vectors } = readConformance(path.join(MODELS_DIR, `${task}_conformance.json`));
    const texts = new Set(vectors.map((v) => v.text));
    for (const hard of ['', 'İSTANBUL İstanbul ıi Iİ', 'ΟΔΥΣΣΕΥΣ', '😀'.repeat(300)]) {
      assert.ok(texts.has(hard), `missing hard case ${JSON.stringify(hard.slice(0, 20))}`);
    }
  });

  test(`${task}: a tampered expectation is caught (the replay can fail)`, async () => {
    const file = path.join(MODELS_DIR, `${task}_conformance.json`);
    const model = await MicroModel.load(task, MODELS_DIR);
    const doc = readConformance(file);
    const v = doc.vectors.find((x) => x.features.length > 0);
    const fs = require('node:fs');
    const os = require('node:os');
    const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'foundry-conf-')), 'c.json');
    const bad = structuredClone(v);
    bad.features[0][1] += 1e-4;
    bad.probabilities[0] += 1e-3;
    fs.writeFileSync(tmp, JSON.stringify({ ...doc, vectors: [bad] }));
    const report = await checkConformance(model, tmp);
    assert.equal(report.failures.length, 2, report.failures.join('\n'));
  });

  test(`${task}: vectors of another export, or none, are refused`, async () => {
    const file = path.join(MODELS_DIR, `${task}_conformance.json`);
    const model = await MicroModel.load(task, MODELS_DIR);
    const doc = readConformance(file);
    const fs = require('node:fs');
    const os = require('node:os');
    const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'foundry-conf-')), 'c.json');
    fs.writeFileSync(tmp, JSON.stringify({ ...doc, preprocessor_sha256: '0'.repeat(64) }));
    await assert.rejects(checkConformance(model, tmp), /written for another export/);
    fs.writeFileSync(tmp, JSON.stringify({ ...doc, vectors: [] }));
    await assert.rejects(checkConformance(model, tmp), /holds no vectors/);
  });
}
