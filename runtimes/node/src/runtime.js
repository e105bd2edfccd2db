'use strict';
/**
 * The JavaScript runtime of a Model Foundry micro-model: `<task>_preprocessor.bin` (protobuf
 * `foundry.v1.Preprocessor`, decoded with protobufjs from the repository's `proto/`) turns a
 * text into the `features` row, `<task>_classifier.onnx` turns that row into probabilities:
 * scored in plain JavaScript when the graph is linear (`graph.js` reads it, `linear.js` scores
 * the row's non-zero columns, as `foundry/runtime` does in Python), else by onnxruntime-node.
 * Loading validates the pair as strictly as `foundry/runtime` does.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const protobuf = require('protobufjs');
const ort = require('onnxruntime-node');
const { ONNX_FLOAT, graphSignature, readLinearGraph } = require('./graph');
const { LinearHead } = require('./linear');
const { compileSpec, normalize, ngrams, unfamiliarity, weigh } = require('./textspec');
const {
  ArtifactError,
  LIMITS,
  SUPPORTED_FORMAT_VERSIONS,
  checkIntegrity,
  checkPreprocessor,
  readArtifact,
  ruleError,
  ruleMatches,
} = require('./rules');

/** The `.proto` schema, relative to this file: runtimes/node/src -> repo/proto. */
const PROTO_PATH = path.resolve(__dirname, '..', '..', '..', 'proto', 'foundry', 'v1', 'preprocessor.proto');

let preprocessorType = null;

/** @returns {protobuf.Type} foundry.v1.Preprocessor, loaded once from {@link PROTO_PATH}. */
function preprocessorMessageType() {
  if (preprocessorType === null) {
    if (!fs.existsSync(PROTO_PATH)) {
      throw new ArtifactError(`${PROTO_PATH}: the preprocessor schema is missing`);
    }
    preprocessorType = protobuf.loadSync(PROTO_PATH).lookupType('foundry.v1.Preprocessor');
  }
  return preprocessorType;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A protobufjs reader that rejects invalid UTF-8 in string fields (as the Python protobuf
 * runtime does) instead of silently replacing it with U+FFFD.
 */
class StrictReader extends protobuf.Reader {
  string() {
    const bytes = this.bytes();
    try {
      return strictUtf8.decode(bytes);
    } catch {
      throw new Error(`the string field ending at byte ${this.pos} holds invalid UTF-8`);
    }
  }
}

/**
 * Check (integrity), decode and validate a `.bin` for `task`: rules B1-B14.
 * @param {Buffer} data
 * @param {string} file  path, for error messages
 * @param {string} task  the task the caller asked for
 * @returns {object} the decoded foundry.v1.Preprocessor (camelCase fields)
 */
function parsePreprocessor(data, file, task) {
  checkIntegrity(data, file);
  const Type = preprocessorMessageType();
  let msg;
  try {
    msg = Type.decode(new StrictReader(new Uint8Array(data.buffer, data.byteOffset, data.length)));
  } catch (err) {
    const reason = err.message.startsWith('index out of range')
      ? `it ends in the middle of a field (${err.message})`
      : err.message;
    throw ruleError(file, `not a valid preprocessor file (truncated or corrupt): ${reason}`, 'B2');
  }
  checkPreprocessor(msg, file, task);
  return msg;
}

/**
 * Rules O2 and O3 on the graph's declared signature.
 * @param {{inputs: object[], outputs: object[]}} signature
 * @param {object} pre decoded preprocessor
 * @param {string} onnxFile
 * @param {string} binName
 */
function checkSignature(signature, pre, onnxFile, binName) {
  const { inputs, outputs } = signature;
  if (inputs.length !== 1) {
    throw ruleError(
      onnxFile,
      `the graph has inputs ${JSON.stringify(inputs.map((i) => i.name))}; it needs exactly one, 'features'`,
      'O2',
    );
  }
  const [input] = inputs;
  if (input.name !== 'features') {
    throw ruleError(onnxFile, `the graph's input is named ${JSON.stringify(input.name)}, not 'features'`, 'O2');
  }
  if (input.elemType !== ONNX_FLOAT || input.shape === null || input.shape.length !== 2) {
    throw ruleError(
      onnxFile,
      `input 'features' is not declared float32 of rank 2 (element type ${input.elemType}, shape ${JSON.stringify(input.shape)})`,
      'O2',
    );
  }
  if (input.shape[1] !== pre.vocabulary.length) {
    throw ruleError(onnxFile, `expects ${input.shape[1]} features but ${binName} has a vocabulary of ${pre.vocabulary.length}`, 'O2');
  }
  const names = outputs.map((o) => o.name);
  if (names[0] !== 'label' || names[1] !== 'probabilities') {
    throw ruleError(onnxFile, `outputs ${JSON.stringify(names)}, expected label, probabilities`, 'O3');
  }
  const shape = outputs[1].shape || [];
  const k = shape[shape.length - 1];
  if (typeof k === 'number' && k !== pre.labels.length) {
    throw ruleError(onnxFile, `${k} classes but ${binName} lists ${pre.labels.length} labels`, 'O3');
  }
}

/**
 * The weights of a linear graph agree with the `.bin` (a graph ONNX Runtime would not run).
 * @param {import('./graph').LinearGraph} graph
 * @param {object} pre decoded preprocessor
 * @param {string} onnxFile
 * @param {string} binName
 */
function checkLinearGraph(graph, pre, onnxFile, binName) {
  if (graph.d !== pre.vocabulary.length) {
    throw ruleError(onnxFile, `its weights expect ${graph.d} features but ${binName} has a vocabulary of ${pre.vocabulary.length}`, 'O2');
  }
  if (graph.k !== pre.labels.length) {
    throw ruleError(onnxFile, `its weights have ${graph.k} classes but ${binName} lists ${pre.labels.length} labels`, 'O3');
  }
}

/** The backends {@link MicroModel.load} accepts. */
const BACKENDS = Object.freeze(['auto', 'linear', 'onnxruntime']);

/** Pauses (ms) before re-reading a mismatched pair (rule P1): an export renames the two files
 * one after the other, and a reader may fall in between. */
const PAIR_RETRY_DELAYS_MS = Object.freeze([10, 20, 40, 80]);

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Rules F, B and P1: the validated `.bin`, the `.onnx` bytes and the `.bin`'s SHA-256 (hex).
 * @param {string} task
 * @param {string} onnxFile
 * @param {string} binFile
 * @returns {Promise<{pre: object, onnxData: Buffer, binSha256: string}>}
 */
async function readPair(task, onnxFile, binFile) {
  for (let attempt = 0; ; attempt += 1) {
    const binData = readArtifact(binFile, 'preprocessor file', LIMITS.binBytes);
    const pre = parsePreprocessor(binData, binFile, task);
    const onnxData = readArtifact(onnxFile, 'classifier file', LIMITS.onnxBytes);
    const digest = crypto.createHash('sha256').update(onnxData).digest('hex');
    if (digest === pre.onnxSha256) {
      return { pre, onnxData, binSha256: crypto.createHash('sha256').update(binData).digest('hex') };
    }
    if (attempt >= PAIR_RETRY_DELAYS_MS.length) {
      throw ruleError(
        onnxFile,
        `SHA-256 ${digest.slice(0, 12)}… does not match the ${pre.onnxSha256.slice(0, 12)}… recorded in ` +
          `${path.basename(binFile)}; the pair is mismatched (re-export both files together)`,
        'P1',
      );
    }
    await sleep(PAIR_RETRY_DELAYS_MS[attempt]);
  }
}

/**
 * @typedef {object} Prediction
 * @property {string} label          labels[argmax probabilities] (lowest index on ties)
 * @property {Object<string, number>} probabilities  label -> probability, in label order
 * @property {boolean} confident     top probability >= threshold, and the text familiar enough
 *                                   (unfamiliar <= familiarity.maxUnfamiliar, spec section 5)
 * @property {number} score          the top probability
 * @property {string|null} rule       the name of the reflex rule that answered, or null when the
 *                                   model did (a rule answers probability 1 for its label, 0 else)
 */

/** A loaded, validated micro-model. Create with {@link MicroModel.load}. */
class MicroModel {
  /**
   * @param {string} task
   * @param {object} pre decoded foundry.v1.Preprocessor
   * @param {import('./textspec').CompiledSpec} spec compiled from pre's normalizer/analyzer
   * @param {{session: ort.InferenceSession|null, linear: LinearHead|null}} head the backend:
   *   the linear head when the graph is linear (and not refused), else an ONNX Runtime session
   * @param {{onnx: string, bin: string}} paths
   */
  constructor(task, pre, spec, head, paths) {
    this.task = task;
    /** SHA-256 (hex) of the `.bin` file loaded (set by {@link MicroModel.load}). */
    this.preprocessorSha256 = '';
    this.preprocessor = pre;
    this.labels = [...pre.labels];
    this.threshold = Number(pre.threshold);
    /** The label answered when the answer is not confident (`.bin` out_of_scope), or null. */
    this.outOfScope = pre.outOfScope || null;
    /** The reflex rules of the `.bin` (format 4), tried in order before the model. */
    this.rules = [...(pre.rules || [])];
    this.paths = paths;
    /** Unicode version of the trainer's normaliser, as recorded in the .bin. */
    this.unicodeVersion = pre.unicodeVersion;
    /** Unicode version of this runtime's normaliser (Node's ICU). */
    this.runtimeUnicodeVersion = process.versions.unicode;
    this.spec = spec;
    this.nFeatures = pre.vocabulary.length;
    const weighting = pre.weighting || {};
    this.weighting = {
      index: new Map(pre.vocabulary.map((gram, i) => [gram, i])),
      idf: Float64Array.from(weighting.useIdf ? pre.idf : []),
      sublinearTf: Boolean(weighting.sublinearTf),
      useIdf: Boolean(weighting.useIdf),
      norm: Number(weighting.norm || 0) === 1 ? 'l2' : 'none',
    };
    /** The unfamiliarity gate of `confident`: {minOrder, maxUnfamiliar} (spec section 5). */
    this.familiarity = {
      minOrder: Number(pre.familiarity.minOrder),
      maxUnfamiliar: Number(pre.familiarity.maxUnfamiliar || 0),
    };
    this.session = head.session;
    this.linear = head.linear;
    /** 'linear' (plain JavaScript, graph.js/linear.js) or 'onnxruntime'. */
    this.backend = head.linear ? 'linear' : 'onnxruntime';
  }

  /**
   * Load and validate `<task>_classifier.onnx` + `<task>_preprocessor.bin` from `modelsDir`.
   * @param {string} task
   * @param {string} [modelsDir='models']
   * @param {{backend?: 'auto'|'linear'|'onnxruntime'}} [options] `auto` (the default) scores a
   *   linear graph in plain JavaScript (`linear.js`) and any other graph with ONNX Runtime;
   *   `linear` refuses a graph it cannot score; `onnxruntime` always uses ONNX Runtime
   * @returns {Promise<MicroModel>}
   * @throws {ArtifactError} the pair breaks a rule of docs/preprocessor-spec.md (section 1); the
   *   message names the file and ends with the rule's id
   */
  static async load(task, modelsDir = 'models', { backend = 'auto' } = {}) {
    if (!BACKENDS.includes(backend)) {
      throw new TypeError(`unknown backend ${JSON.stringify(backend)}; choose one of ${BACKENDS.join(', ')}`);
    }
    const onnxFile = path.join(modelsDir, `${task}_classifier.onnx`);
    const binFile = path.join(modelsDir, `${task}_preprocessor.bin`);
    const { pre, onnxData, binSha256 } = await readPair(task, onnxFile, binFile);
    let signature;
    try {
      signature = graphSignature(onnxData);
    } catch (err) {
      throw ruleError(onnxFile, `not a valid ONNX model: ${err.message}`, 'O1');
    }
    checkSignature(signature, pre, onnxFile, path.basename(binFile));
    let spec;
    try {
      spec = compileSpec(pre.normalizer, pre.analyzer, binFile);
    } catch (err) {
      throw new ArtifactError(err.message);
    }
    // Read even for backend 'onnxruntime': the reader refuses constants that ONNX Runtime would
    // load and fail on only when run (sparse int8 weights that write a position twice).
    let graph;
    try {
      graph = readLinearGraph(onnxData);
    } catch (err) {
      throw ruleError(onnxFile, `not a valid ONNX model: ${err.message}`, 'O1');
    }
    if (graph !== null) checkLinearGraph(graph, pre, onnxFile, path.basename(binFile));
    if (graph === null && backend === 'linear') {
      throw new ArtifactError(`${onnxFile}: the linear backend runs only a linear graph (one LinearClassifier, `
        + "+ an L1 Normalizer or a sigmoid calibration, or the int8 softmax graph); load it with backend 'onnxruntime' or 'auto'");
    }
    if (graph !== null && backend !== 'onnxruntime') {
      const model = new MicroModel(task, pre, spec, { session: null, linear: new LinearHead(graph) }, { onnx: onnxFile, bin: binFile });
      model.preprocessorSha256 = binSha256;
      return model;
    }
    let session;
    try {
      session = await ort.InferenceSession.create(onnxData, {
        executionProviders: ['cpu'],
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      throw ruleError(onnxFile, `ONNX Runtime cannot load it: ${err.message}`, 'O1');
    }
    const model = new MicroModel(task, pre, spec, { session, linear: null }, { onnx: onnxFile, bin: binFile });
    model.preprocessorSha256 = binSha256;
    return model;
  }

  /**
   * Text-spec steps 1-7 for one text, and its unfamiliarity.
   * @param {string} text
   * @returns {{normalized: string, features: Array<[number, number]>, unfamiliar: number}}
   *   sparse float32 row
   */
  featurize(text) {
    const normalized = normalize(text, this.spec);
    const grams = ngrams(normalized, this.spec);
    return {
      normalized,
      features: weigh(grams, this.weighting),
      unfamiliar: unfamiliarity(grams, this.weighting.index, this.familiarity.minOrder),
    };
  }

  /**
   * Probabilities `[N][K]` (float32 values), columns in {@link MicroModel#labels} order.
   * @param {string[]} texts
   * @returns {Promise<number[][]>}
   */
  async predictProba(texts) {
    return (await this.score(texts)).proba;
  }

  /**
   * Probabilities and unfamiliarity of each text.
   * @param {string[]} texts
   * @returns {Promise<{proba: number[][], unfamiliar: number[]}>}
   */
  async score(texts) {
    if (!Array.isArray(texts)) throw new TypeError('predictProba takes an array of texts');
    if (texts.length === 0) return { proba: [], unfamiliar: [] };
    if (this.linear !== null) {
      const proba = [];
      const unfamiliar = [];
      for (const text of texts) {
        const featurized = this.featurize(text);
        proba.push(this.linear.proba(featurized.features));
        unfamiliar.push(featurized.unfamiliar);
      }
      return { proba, unfamiliar };
    }
    const d = this.nFeatures;
    const input = new Float32Array(texts.length * d);
    const unfamiliar = [];
    texts.forEach((text, row) => {
      const featurized = this.featurize(text);
      for (const [col, value] of featurized.features) input[row * d + col] = value;
      unfamiliar.push(featurized.unfamiliar);
    });
    const feeds = { features: new ort.Tensor('float32', input, [texts.length, d]) };
    const out = await this.session.run(feeds, ['probabilities']);
    const proba = out.probabilities;
    const k = this.labels.length;
    if (proba.dims.length !== 2 || proba.dims[0] !== texts.length || proba.dims[1] !== k) {
      throw new ArtifactError(
        `${this.paths.onnx}: probabilities have shape [${proba.dims}], expected [${texts.length}, ${k}]`,
      );
    }
    const rows = [];
    for (let i = 0; i < texts.length; i += 1) rows.push(Array.from(proba.data.subarray(i * k, (i + 1) * k)));
    return { proba: rows, unfamiliar };
  }

  /**
   * @param {number[]} row probabilities of one text
   * @param {number} [unfamiliar=0] its unfamiliarity (section 5)
   * @returns {Prediction}
   */
  answer(row, unfamiliar = 0) {
    let best = 0;
    for (let j = 1; j < row.length; j += 1) if (row[j] > row[best]) best = j;
    const probabilities = {};
    this.labels.forEach((label, j) => {
      probabilities[label] = row[j];
    });
    const confident = row[best] >= this.threshold && unfamiliar <= this.familiarity.maxUnfamiliar;
    return {
      // A task with an out-of-scope label answers it whenever it is unsure.
      label: confident || this.outOfScope === null ? this.labels[best] : this.outOfScope,
      probabilities,
      confident,
      score: row[best],
      rule: null,
    };
  }

  /**
   * The index of the first reflex rule answering `text` (on its normalised text), or -1.
   * @param {string} text
   * @returns {number}
   */
  ruleIndex(text) {
    if (this.rules.length === 0) return -1;
    const normalized = normalize(text, this.spec);
    return this.rules.findIndex((rule) => ruleMatches(rule, normalized));
  }

  /**
   * The answer of reflex rule `index`: probability 1 for its label, 0 for the others.
   * @param {number} index
   * @returns {Prediction}
   */
  ruleAnswer(index) {
    const rule = this.rules[index];
    const label = Number(rule.label || 0);
    const probabilities = {};
    this.labels.forEach((name, j) => {
      probabilities[name] = j === label ? 1 : 0;
    });
    return { label: this.labels[label], probabilities, confident: true, score: 1, rule: rule.name };
  }

  /** @param {string} text @returns {Promise<Prediction>} */
  async predict(text) {
    if (this.linear === null) return (await this.predictMany([text]))[0];
    // The linear backend answers one text without a batch: normalised once, for the rules too.
    const normalized = normalize(text, this.spec);
    const hit = this.rules.findIndex((rule) => ruleMatches(rule, normalized));
    if (hit >= 0) return this.ruleAnswer(hit);
    const grams = ngrams(normalized, this.spec);
    const features = weigh(grams, this.weighting);
    return this.answer(this.linear.proba(features), unfamiliarity(grams, this.weighting.index, this.familiarity.minOrder));
  }

  /**
   * The first matching reflex rule answers a text; the model answers the others.
   * @param {string[]} texts
   * @returns {Promise<Prediction[]>} answers in input order
   */
  async predictMany(texts) {
    if (!Array.isArray(texts)) throw new TypeError('predictMany takes an array of texts');
    const hits = texts.map((text) => this.ruleIndex(text));
    const rest = texts.filter((_, i) => hits[i] < 0);
    const { proba, unfamiliar } = await this.score(rest);
    let next = 0;
    return hits.map((hit) => {
      if (hit >= 0) return this.ruleAnswer(hit);
      const answer = this.answer(proba[next], unfamiliar[next]);
      next += 1;
      return answer;
    });
  }
}

module.exports = { ArtifactError, MicroModel, PROTO_PATH, SUPPORTED_FORMAT_VERSIONS, parsePreprocessor };
