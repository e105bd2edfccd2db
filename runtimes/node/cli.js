#!/usr/bin/env node
'use strict';
/**
 * node runtimes/node/cli.js --models-dir DIR --task TASK [--verify]
 *
 * Reads one text per line from stdin (split at "\n", trailing "\r"/"\n" removed, as
 * `foundry predict` does) and prints one JSON line per text, formatted exactly like
 * `foundry predict TASK --json`: {"text", "label", "probabilities": {label: p}, "confident"}
 * (probabilities are ONNX Runtime's float32 values; see docs/preprocessor-spec.md, section 5).
 * With --verify, replays <task>_conformance.json instead and exits 1 on any mismatch.
 * Exit codes: 0 ok, 1 artifact or conformance problem, 2 usage error.
 */
const path = require('node:path');
const { parseArgs } = require('node:util');
const { ArtifactError, MicroModel } = require('./src/runtime');
const { checkConformance } = require('./src/conformance');
const { pyJsonDumps } = require('./src/pyjson');

const BATCH = 256;
const USAGE = 'usage: node cli.js --models-dir DIR --task TASK [--verify] < texts.txt';

/** @returns {Promise<string>} all of stdin, decoded as UTF-8 (a BOM is kept, like Python) */
async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Split like Python's `[line.rstrip("\r\n") for line in sys.stdin]` on POSIX.
 * @param {string} data
 * @returns {string[]}
 */
function splitLines(data) {
  const lines = data.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((line) => line.replace(/[\r\n]+$/, ''));
}

/**
 * Batches of at most BATCH + 1 texts, never a batch of one unless there is only one text:
 * ONNX Runtime computes a 1-row input with another kernel (GEMV, not GEMM) whose float32
 * results differ in the last bits, and `foundry predict` runs all lines as one batch.
 * @param {string[]} texts
 * @returns {string[][]}
 */
function batches(texts) {
  const out = [];
  let start = 0;
  while (start < texts.length) {
    let end = Math.min(start + BATCH, texts.length);
    if (texts.length - end === 1) end = texts.length;
    out.push(texts.slice(start, end));
    start = end;
  }
  return out;
}

async function predict(model) {
  const texts = splitLines(await readStdin());
  for (const batch of batches(texts)) {
    const answers = await model.predictMany(batch);
    const out = answers.map((p, i) =>
      pyJsonDumps({ text: batch[i], label: p.label, probabilities: p.probabilities, confident: p.confident }),
    );
    process.stdout.write(`${out.join('\n')}\n`);
  }
  return 0;
}

async function verify(model, modelsDir, task) {
  const file = path.join(modelsDir, `${task}_conformance.json`);
  const report = await checkConformance(model, file);
  if (report.failures.length > 0) {
    process.stderr.write(
      `${file}: ${report.failures.length} of ${report.vectors} conformance vectors fail:\n  ` +
        `${report.failures.slice(0, 10).join('\n  ')}\n`,
    );
    return 1;
  }
  process.stdout.write(`${task}: ${report.vectors} conformance vectors ok\n`);
  if (model.unicodeVersion.split('.')[0] !== model.runtimeUnicodeVersion.split('.')[0]) {
    process.stderr.write(
      `note: ${task} was normalised with Unicode ${model.unicodeVersion || '(unrecorded)'}, this ` +
        `runtime has Unicode ${model.runtimeUnicodeVersion}; texts with code points that differ ` +
        'between the two may be read differently (docs/preprocessor-spec.md, section 7)\n',
    );
  }
  return 0;
}

async function main(argv) {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        'models-dir': { type: 'string', default: 'models' },
        task: { type: 'string' },
        verify: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!args.task) {
    process.stderr.write(`--task is required\n${USAGE}\n`);
    return 2;
  }
  try {
    const model = await MicroModel.load(args.task, args['models-dir']);
    return args.verify ? await verify(model, args['models-dir'], args.task) : await predict(model);
  } catch (err) {
    if (err instanceof ArtifactError) {
      process.stderr.write(`foundry (node): ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
