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
const { MODELS_DIR, copyArtifacts, forgedTasks, rewritePreprocessor, seal, unseal } = require('../support/models');

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
      msg.formatVersion = 7;
    });
    await assertRejected(dir, /format_version 7 is not supported by this runtime \(supported: 3, 4, 5, 6\).*rule B3/, bin(dir));
  });

  test('format 4 needs reflex rules, and rules need format 4, 5 or 6', async () => {
    const { preprocessor } = await MicroModel.load(task, copyArtifacts(task));
    /** The message in the layout of formats 3-4 (fields 7 and 8). */
    const legacy = (msg, formatVersion) => {
      Object.assign(msg, {
        formatVersion,
        vocabulary: preprocessor.vocabulary,
        idf: preprocessor.idf,
        vocabPrefix: [],
        vocabSuffixLen: [],
        vocabSuffixes: Buffer.alloc(0),
        idfTable: [],
        idfIndex: [],
      });
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
