#!/usr/bin/env node
'use strict';
/**
 * node runtimes/node/cli.js --models-dir DIR --task TASK [--verify]
 *
 * Reads one text per line from stdin (split at "\n", trailing "\r"/"\n" removed, invalid
 * UTF-8 replaced by U+FFFD with a warning on stderr, as `foundry predict` does) and prints one
 * JSON line per text, formatted exactly like `foundry predict TASK --json`:
 * {"text", "label", "probabilities": {label: p}, "confident"} (probabilities are ONNX Runtime's
 * float32 values; see docs/preprocessor-spec.md, section 5).
 * With --verify, replays <task>_conformance.json instead and exits 1 on any mismatch.
 * Exit codes: 0 ok, 1 artifact or conformance problem (or a failed write), 2 usage error,
 * 141 stdout closed early (quietly).
 */
const path = require('node:path');
const { parseArgs } = require('node:util');
let runtime;
try {
  runtime = require('./src/runtime');
} catch (err) {
  if (err.code !== 'MODULE_NOT_FOUND' || !/protobufjs|onnxruntime-node/.test(err.message)) throw err;
  process.stderr.write('node cli.js: the JavaScript runtime\'s packages are not installed; run '
    + '`make node` in the repository root (npm ci --ignore-scripts in runtimes/node)\n');
  process.exit(1);
}
const { ArtifactError, MicroModel } = runtime;
const { checkConformance } = require('./src/conformance');
const { pyJsonDumps } = require('./src/pyjson');

const BATCH = 256;
const USAGE = 'usage: node cli.js --models-dir DIR --task TASK [--verify] < texts.txt';

const PROG = 'foundry (node)';
/** Invalid-UTF-8 warnings printed per run; later ones are counted in one last line. */
const MAX_UTF8_WARNINGS = 10;
/** Exit status when stdout is closed before the answers are written (`| head`): 128 + SIGPIPE. */
const EXIT_BROKEN_PIPE = 141;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/**
 * One input line as text: invalid UTF-8 becomes U+FFFD, one per maximal invalid subsequence
 * (WHATWG; Python's "replace" does the same), and the line is noted in `warn`.
 * @param {Buffer} raw
 * @param {number} lineNo 1-based
 * @param {number[]} warn
 * @returns {string}
 */
function decodeLine(raw, lineNo, warn) {
  try {
    return strictUtf8.decode(raw);
  } catch {
    warn.push(lineNo);
    return lenientUtf8.decode(raw);
  }
}

/** @param {Buffer} line @returns {Buffer} without trailing CR/LF bytes */
function stripLineEnd(line) {
  let end = line.length;
  while (end > 0 && (line[end - 1] === 0x0d || line[end - 1] === 0x0a)) end -= 1;
  return line.subarray(0, end);
}

/**
 * The lines of stdin, one at a time, split at LF only, without trailing CR/LF bytes; a final
 * empty piece (input ending with a newline) is dropped, as `foundry predict` does. Only one
 * line is held in memory at a time (plus what the caller keeps).
 * @param {NodeJS.ReadableStream} stream
 * @returns {AsyncGenerator<Buffer>}
 */
async function* readLines(stream) {
  let pending = [];
  for await (const chunk of stream) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      pending.push(chunk.subarray(start, nl));
      yield stripLineEnd(pending.length === 1 ? pending[0] : Buffer.concat(pending));
      pending = [];
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) yield stripLineEnd(Buffer.concat(pending));
}

/**
 * Write to stdout, waiting when its buffer is full (so memory stays bounded).
 * @param {string} text
 * @returns {Promise<void>}
 */
function writeOut(text) {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once('drain', resolve);
  });
}

function warnInvalidUtf8(lines) {
  for (const lineNo of lines.slice(0, MAX_UTF8_WARNINGS)) {
    process.stderr.write(`${PROG}: warning: line ${lineNo}: invalid UTF-8 replaced by U+FFFD\n`);
  }
  if (lines.length > MAX_UTF8_WARNINGS) {
    process.stderr.write(`${PROG}: warning: ${lines.length - MAX_UTF8_WARNINGS} more lines held invalid UTF-8\n`);
  }
}

async function predictBatch(model, batch) {
  const answers = await model.predictMany(batch);
  // A model with reflex rules says which one answered ("rule": its name, or null).
  const withRule = model.rules.length > 0;
  const out = answers.map((p, i) =>
    pyJsonDumps({
      text: batch[i],
      label: p.label,
      probabilities: p.probabilities,
      confident: p.confident,
      ...(withRule ? { rule: p.rule } : {}),
    }),
  );
  await writeOut(`${out.join('\n')}\n`);
}

/**
 * Answer stdin line by line in batches of BATCH to BATCH + 1 texts, never a batch of one
 * unless the input is a single line: ONNX Runtime computes a 1-row input with another kernel
 * (GEMV, not GEMM) whose float32 results differ in the last bits, and `foundry predict` runs
 * all lines as one batch. A batch is sent once BATCH + 2 lines wait, so at least 2 remain.
 */
async function predict(model) {
  const warn = [];
  let batch = [];
  let lineNo = 0;
  for await (const raw of readLines(process.stdin)) {
    lineNo += 1;
    batch.push(decodeLine(raw, lineNo, warn));
    if (batch.length === BATCH + 2) {
      await predictBatch(model, batch.slice(0, BATCH));
      batch = batch.slice(BATCH);
    }
  }
  if (batch.length > 0) await predictBatch(model, batch);
  warnInvalidUtf8(warn);
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
      process.stderr.write(`${PROG}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/**
 * stdout errors: a closed pipe ends the run quietly with 141, anything else (a full disk)
 * with one line and 1.
 * @param {NodeJS.ErrnoException} err
 */
function onOutputError(err) {
  if (err.code === 'EPIPE') process.exit(EXIT_BROKEN_PIPE);
  process.stderr.write(`${PROG}: cannot write the output: ${err.message}\n`);
  process.exit(1);
}

process.stdout.on('error', onOutputError);
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    if (err && (err.code === 'EPIPE' || err.code === 'ENOSPC' || err.syscall === 'write')) onOutputError(err);
    else throw err;
  },
);
