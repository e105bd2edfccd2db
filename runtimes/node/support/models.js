'use strict';
/**
 * Test support: where the node tests find real forged artifacts, and how they copy and
 * tamper with them in a temporary directory.
 *
 * FOUNDRY_MODELS_DIR selects the models dir (default: the repository's `models/`).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const protobuf = require('protobufjs');
const { PROTO_PATH } = require('../src/runtime');
const { INTEGRITY_BYTES, INTEGRITY_HEADER } = require('../src/rules');

const MODELS_DIR = path.resolve(
  process.env.FOUNDRY_MODELS_DIR || path.join(__dirname, '..', '..', '..', 'models'),
);

/** @returns {string[]} tasks with a conformance file in {@link MODELS_DIR}, sorted */
function forgedTasks() {
  if (!fs.existsSync(MODELS_DIR)) return [];
  return fs
    .readdirSync(MODELS_DIR)
    .filter((name) => name.endsWith('_conformance.json'))
    .map((name) => name.slice(0, -'_conformance.json'.length))
    .sort();
}

/** Like {@link forgedTasks} but throws a helpful error if there is none. */
function requireForgedTasks() {
  const tasks = forgedTasks();
  if (tasks.length === 0) {
    throw new Error(
      `no <task>_conformance.json in ${MODELS_DIR}: forge models first (make forge) ` +
        'or point FOUNDRY_MODELS_DIR at a models dir',
    );
  }
  return tasks;
}

/**
 * Copy a task's .onnx/.bin into a fresh temporary directory.
 * @param {string} task
 * @returns {string} the temporary models dir
 */
function copyArtifacts(task) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'foundry-node-'));
  for (const suffix of ['classifier.onnx', 'preprocessor.bin']) {
    fs.copyFileSync(path.join(MODELS_DIR, `${task}_${suffix}`), path.join(dir, `${task}_${suffix}`));
  }
  return dir;
}

const Preprocessor = protobuf.loadSync(PROTO_PATH).lookupType('foundry.v1.Preprocessor');

/**
 * Bytes of a `.bin` body (fields 1-12) with the integrity trailer appended (rule B1).
 * @param {Uint8Array} body
 * @returns {Buffer}
 */
function seal(body) {
  const digest = crypto.createHash('sha256').update(body).digest();
  return Buffer.concat([Buffer.from(body), Buffer.from(INTEGRITY_HEADER), digest]);
}

/**
 * Decode a .bin, let `edit` change the message, and write it back, sealed again (so that the
 * rule under test is the one that fails, not the integrity check).
 * @param {string} file
 * @param {(msg: object) => void} edit
 */
function rewritePreprocessor(file, edit) {
  const msg = Preprocessor.decode(fs.readFileSync(file));
  edit(msg);
  msg.contentSha256 = Buffer.alloc(0);
  fs.writeFileSync(file, seal(Preprocessor.encode(msg).finish()));
}

/**
 * The body of a sealed .bin (without its integrity trailer).
 * @param {Buffer} data
 * @returns {Buffer}
 */
function unseal(data) {
  return data.subarray(0, data.length - INTEGRITY_BYTES);
}

module.exports = {
  MODELS_DIR, copyArtifacts, forgedTasks, requireForgedTasks, rewritePreprocessor, seal, unseal,
};
