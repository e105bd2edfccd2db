'use strict';
/**
 * Scoring a linear graph (`graph.js`, {@link readLinearGraph}) in plain JavaScript: one text's
 * sparse feature row against the weights of its non-zero columns only.
 *
 * ONNX Runtime multiplies the whole dense row `[D]` by the `[D, K]` matrix it folds at load, so a
 * 150-label model with 57k n-grams costs it ~9M multiply-adds per text; a text has a few hundred
 * non-zero features at most, so this head does `K` multiply-adds per feature instead. Scores are
 * summed in float64 and the post transform, normaliser and calibration reproduce ONNX Runtime's
 * (`foundry/runtime/heads.py` does the same in Python); the probabilities are rounded to float32,
 * the type ONNX Runtime returns.
 */

/** Logistic function; exp of -|x| never overflows, and 1 - v for negative x as ONNX Runtime does. */
function logistic(x) {
  const v = 1 / (1 + Math.exp(-Math.abs(x)));
  return x < 0 ? 1 - v : v;
}

/** Below this share of non-zero weights, a feature's weights are stored as (class, weight) pairs. */
const SPARSE_BELOW = 0.5;

class LinearHead {
  /** @param {import('./graph').LinearGraph} graph */
  constructor(graph) {
    this.graph = graph;
    this.k = graph.k;
    this.name = 'linear';
    this.sparse = sparseRows(graph.weights, graph.k);
  }

  /**
   * Probabilities of one sparse feature row.
   * @param {Array<[number, number]>} features `[column, value]` pairs
   * @returns {number[]} K float32 values
   */
  proba(features) {
    const { k } = this;
    const { weights, intercepts } = this.graph;
    const sums = Float64Array.from(intercepts);
    if (this.sparse !== null) {
      // Many-label int8 models keep a few per cent of their weights: visit only those.
      const { starts, classes, values } = this.sparse;
      for (let i = 0; i < features.length; i += 1) {
        const col = features[i][0];
        const value = features[i][1];
        for (let at = starts[col], end = starts[col + 1]; at < end; at += 1) sums[classes[at]] += value * values[at];
      }
    } else {
      for (let i = 0; i < features.length; i += 1) {
        const col = features[i][0];
        const value = features[i][1];
        const base = col * k;
        for (let c = 0; c < k; c += 1) sums[c] += value * weights[base + c];
      }
    }
    return Array.from(this.finish(sums), Math.fround);
  }

  /**
   * The graph's post transform, then its normaliser or calibration, on one score row.
   * @param {Float64Array} scores overwritten
   * @returns {Float64Array|number[]}
   */
  finish(scores) {
    const { post, l1, calibration } = this.graph;
    if (calibration !== null) {
      const p1 = logistic(-(calibration.a * scores[calibration.column] + calibration.b));
      return [1 - p1, p1];
    }
    const out = scores; // transformed in place
    const n = out.length;
    if (post === 'LOGISTIC') {
      for (let i = 0; i < n; i += 1) out[i] = logistic(out[i]);
    } else if (post === 'SOFTMAX') {
      let top = -Infinity;
      for (let i = 0; i < n; i += 1) if (out[i] > top) top = out[i];
      let total = 0;
      for (let i = 0; i < n; i += 1) {
        out[i] = Math.exp(out[i] - top);
        total += out[i];
      }
      for (let i = 0; i < n; i += 1) out[i] /= total;
    }
    if (l1) {
      let total = 0;
      for (let i = 0; i < n; i += 1) total += Math.abs(out[i]);
      for (let i = 0; i < n; i += 1) out[i] = total > 0 ? out[i] / total : 0;
    }
    return out;
  }
}

/**
 * The non-zero weights of a feature-major `[D, K]` matrix, row by row (compressed sparse rows:
 * feature `j`'s are `starts[j]` to `starts[j + 1]`), or null when at least half are non-zero.
 * @param {Float32Array} weights
 * @param {number} k
 * @returns {{starts: Int32Array, classes: Uint16Array, values: Float32Array}|null}
 */
function sparseRows(weights, k) {
  let nonZero = 0;
  for (let i = 0; i < weights.length; i += 1) if (weights[i] !== 0) nonZero += 1;
  if (k < 3 || nonZero >= SPARSE_BELOW * weights.length) return null;
  const d = weights.length / k;
  const starts = new Int32Array(d + 1);
  const classes = new Uint16Array(nonZero);
  const values = new Float32Array(nonZero);
  let at = 0;
  for (let j = 0; j < d; j += 1) {
    starts[j] = at;
    for (let c = 0; c < k; c += 1) {
      const w = weights[j * k + c];
      if (w !== 0) {
        classes[at] = c;
        values[at] = w;
        at += 1;
      }
    }
  }
  starts[d] = at;
  return { starts, classes, values };
}

module.exports = { LinearHead, logistic };
