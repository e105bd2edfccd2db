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
const { ArtifactError, MicroModel } = require('../src/runtime');
const { MODELS_DIR, copyArtifacts, forgedTasks, rewritePreprocessor } = require('../support/models');

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

test('there are forged artifacts to tamper with', () => {
  assert.ok(task, `no forged models in ${MODELS_DIR}`);
});

if (task) {
  test('the untouched copy loads (the fixtures are sound)', async () => {
    const model = await MicroModel.load(task, copyArtifacts(task));
    assert.equal(model.labels.length, model.preprocessor.labels.length);
  });

  test('a .bin truncated anywhere is rejected', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    for (let k = 1; k < 16; k += 1) {
      fs.writeFileSync(bin(dir), data.subarray(0, Math.floor((data.length * k) / 16) + 1));
      // A cut between two entries of a repeated field parses, but then lacks what follows.
      await assertRejected(dir, /not a valid preprocessor file \(truncated or corrupt\)|idf has/, bin(dir));
    }
  });

  test('a .bin cut inside a field says so', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    fs.writeFileSync(bin(dir), data.subarray(0, data.length - 1));
    await assertRejected(dir, /truncated or corrupt\): it ends in the middle of a field/, bin(dir));
  });

  test('a .bin cut to nothing is rejected (no format version)', async () => {
    const dir = copyArtifacts(task);
    fs.writeFileSync(bin(dir), Buffer.alloc(0));
    await assertRejected(dir, /format_version 0 is not supported/, bin(dir));
  });

  test('a .bin with a corrupt tag byte is rejected', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    data[0] = 0xff;
    fs.writeFileSync(bin(dir), data);
    await assertRejected(dir, /not a valid preprocessor file/, bin(dir));
  });

  test('a .bin with invalid UTF-8 inside the vocabulary is rejected', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(bin(dir));
    const model = await MicroModel.load(task, dir);
    const gram = model.preprocessor.vocabulary.find((g) => Buffer.byteLength(g) >= 3);
    const at = data.indexOf(Buffer.from(gram, 'utf8'));
    assert.ok(at > 0);
    data[at] = 0xff;
    fs.writeFileSync(bin(dir), data);
    await assertRejected(dir, /not a valid preprocessor file.*UTF-8/, bin(dir));
  });

  test('an unsupported format version is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.formatVersion = 2;
    });
    await assertRejected(dir, /format_version 2 is not supported by this runtime \(supported: 1\)/, bin(dir));
  });

  test('an unsupported text spec version is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.normalizer.specVersion = 9;
    });
    await assertRejected(dir, /normalizer.spec_version = 9 is not supported/, bin(dir));
  });

  test('a vocabulary/idf length mismatch is rejected', async () => {
    const dir = copyArtifacts(task);
    let n = 0;
    rewritePreprocessor(bin(dir), (msg) => {
      msg.idf.pop();
      n = msg.vocabulary.length;
    });
    await assertRejected(dir, new RegExp(`idf has ${n - 1} values but the vocabulary has ${n} entries`), bin(dir));
  });

  test('a vocabulary longer than the ONNX input is rejected', async () => {
    const dir = copyArtifacts(task);
    let n = 0;
    rewritePreprocessor(bin(dir), (msg) => {
      msg.vocabulary.push('\u0000extra');
      msg.idf.push(1.0);
      n = msg.vocabulary.length;
    });
    await assertRejected(dir, new RegExp(`expects ${n - 1} features but .* vocabulary of ${n}`), onnx(dir));
  });

  test('more labels than ONNX classes is rejected', async () => {
    const dir = copyArtifacts(task);
    rewritePreprocessor(bin(dir), (msg) => {
      msg.labels.push('Extra');
    });
    await assertRejected(dir, /classes but .* lists \d+ labels/, onnx(dir));
  });

  test('a modified .onnx is rejected by its hash', async () => {
    const dir = copyArtifacts(task);
    const data = fs.readFileSync(onnx(dir));
    data[data.length - 1] ^= 0x01;
    fs.writeFileSync(onnx(dir), data);
    await assertRejected(dir, /SHA-256 .* does not match .* the pair is mismatched/, onnx(dir));
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
      msg.idf.pop();
    });
    const run = spawnSync(process.execPath, [CLI, '--models-dir', dir, '--task', task], {
      input: '你好\n',
      encoding: 'utf8',
    });
    assert.equal(run.status, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^foundry \(node\): .*idf has/);
    assert.doesNotMatch(run.stderr, /\n\s+at /);
  });
}
