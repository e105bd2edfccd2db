#!/usr/bin/env node
'use strict';
/**
 * The JavaScript runtime's two backends side by side (used by tests/test_node_backends.py).
 *
 * Usage:
 *   node tools/backend-oracle.js graph FILE.onnx
 *     prints {"graph": {k, d, post, l1, calibration, weights, intercepts}} for a linear graph,
 *     {"graph": null} for any other, or {"error": message} when the reader refuses the file
 *   node tools/backend-oracle.js proba MODELS_DIR TASK INPUT.jsonl
 *     prints {"auto": backend, "linear": rows | {"error": message}, "onnxruntime": rows}, the
 *     probabilities of every text of INPUT.jsonl (one JSON string per line) under each backend
 */
const fs = require('node:fs');
const { readLinearGraph } = require('../src/graph');
const { MicroModel } = require('../src/runtime');

async function probabilities(modelsDir, task, texts, backend) {
  try {
    const model = await MicroModel.load(task, modelsDir, { backend });
    return { backend: model.backend, rows: await model.predictProba(texts) };
  } catch (err) {
    return { backend, rows: { error: err.message } };
  }
}

async function main(argv) {
  if (argv[0] === 'graph' && argv.length === 2) {
    let out;
    try {
      const graph = readLinearGraph(fs.readFileSync(argv[1]));
      out = graph && { ...graph, weights: Array.from(graph.weights), intercepts: Array.from(graph.intercepts) };
      out = { graph: out };
    } catch (err) {
      out = { error: err.message };
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return 0;
  }
  if (argv[0] === 'proba' && argv.length === 4) {
    const [, modelsDir, task, inputPath] = argv;
    const texts = fs.readFileSync(inputPath, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
    const auto = await probabilities(modelsDir, task, [], 'auto');
    const linear = await probabilities(modelsDir, task, texts, 'linear');
    const ort = await probabilities(modelsDir, task, texts, 'onnxruntime');
    process.stdout.write(`${JSON.stringify({ auto: auto.backend, linear: linear.rows, onnxruntime: ort.rows })}\n`);
    return 0;
  }
  process.stderr.write('usage: backend-oracle.js graph FILE.onnx | proba MODELS_DIR TASK INPUT.jsonl\n');
  return 2;
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
