#!/usr/bin/env node
'use strict';
/**
 * Latency and throughput of the JavaScript runtime's backends, in one Node process (driven by
 * bench/node_runtime.py, which prints the table).
 *
 * Usage: node tools/latency.js TEXTS.jsonl ROUNDS BATCH MODELS_DIR:TASK [MODELS_DIR:TASK ...]
 *   TEXTS.jsonl  one JSON string per line
 * Prints one JSON object per (task, backend):
 *   {"task", "backend", "p50_us", "p99_us", "batch_texts_per_s", "load_ms"}
 * Each task is loaded once per backend (`linear` when its graph is linear, and `onnxruntime`);
 * every round times each engine on every text (`await model.predict(text)`, one call per text)
 * and on batches of BATCH texts (`predictMany`), engines interleaved round by round so that the
 * machine's load hits them alike. p50 and p99 are medians over rounds of each round's quantile.
 */
const fs = require('node:fs');
const { MicroModel } = require('../src/runtime');

const now = () => Number(process.hrtime.bigint()) / 1000; // µs

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function engines(specs) {
  const out = [];
  for (const spec of specs) {
    const at = spec.lastIndexOf(':');
    const [modelsDir, task] = [spec.slice(0, at), spec.slice(at + 1)];
    for (const backend of ['linear', 'onnxruntime']) {
      const start = now();
      let model;
      try {
        model = await MicroModel.load(task, modelsDir, { backend });
      } catch (err) {
        if (backend === 'linear') continue; // not a linear graph: ONNX Runtime only
        throw err;
      }
      out.push({ task, backend, model, loadMs: (now() - start) / 1000, p50: [], p99: [], rates: [] });
    }
  }
  return out;
}

async function round(engine, texts, batch) {
  const times = new Float64Array(texts.length);
  for (let i = 0; i < texts.length; i += 1) {
    const start = now();
    await engine.model.predict(texts[i]);
    times[i] = now() - start;
  }
  times.sort();
  engine.p50.push(quantile(times, 0.5));
  engine.p99.push(quantile(times, 0.99));
  const start = now();
  let done = 0;
  for (let at = 0; at < texts.length; at += batch) {
    const chunk = texts.slice(at, at + batch);
    await engine.model.predictMany(chunk);
    done += chunk.length;
  }
  engine.rates.push(done / ((now() - start) / 1e6));
}

async function main(argv) {
  if (argv.length < 4) {
    process.stderr.write('usage: latency.js TEXTS.jsonl ROUNDS BATCH MODELS_DIR:TASK [...]\n');
    return 2;
  }
  const [textsPath, rounds, batch, ...specs] = argv;
  const texts = fs.readFileSync(textsPath, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
  const all = await engines(specs);
  for (const engine of all) await round(engine, texts.slice(0, 50), Number(batch)); // warm-up
  for (const engine of all) Object.assign(engine, { p50: [], p99: [], rates: [] });
  for (let r = 0; r < Number(rounds); r += 1) {
    for (const engine of all) await round(engine, texts, Number(batch));
    process.stderr.write(`round ${r + 1}/${rounds}\n`);
  }
  for (const e of all) {
    process.stdout.write(`${JSON.stringify({
      task: e.task,
      backend: e.backend,
      p50_us: median(e.p50),
      p99_us: median(e.p99),
      batch_texts_per_s: median(e.rates),
      load_ms: e.loadMs,
    })}\n`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  },
);
