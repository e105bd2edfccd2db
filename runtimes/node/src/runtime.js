'use strict';
/**
 * The JavaScript runtime of a Model Foundry micro-model: `<task>_preprocessor.bin` (protobuf
 * `foundry.v1.Preprocessor`, decoded with protobufjs from the repository's `proto/`) turns a
 * text into the `features` row, `<task>_classifier.onnx` (onnxruntime-node) turns that row into
 * probabilities. Loading validates the pair as strictly as `foundry/runtime.py` does.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const protobuf = require('protobufjs');
const ort = require('onnxruntime-node');
const { compileSpec, normalize, charNgrams, weigh } = require('./textspec');

/** `.bin` layouts this runtime reads. */
const SUPPORTED_FORMAT_VERSIONS = Object.freeze([1]);

/** The `.proto` schema, relative to this file: runtimes/node/src -> repo/proto. */
const PROTO_PATH = path.resolve(__dirname, '..', '..', '..', 'proto', 'foundry', 'v1', 'preprocessor.proto');

/** An artifact file is missing, corrupt, or does not match its pair. */
class ArtifactError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ArtifactError';
  }
}

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
 * Read a file, turning "not found" into an {@link ArtifactError} that says what to do.
 * @param {string} file
 * @param {string} what
 * @returns {Buffer}
 */
function readArtifact(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new ArtifactError(
        `${file}: ${what} not found; forge it with \`foundry forge <blueprint>\` or pass the right --models-dir`,
      );
    }
    throw new ArtifactError(`${file}: cannot read ${what}: ${err.message}`);
  }
}

/**
 * Decode and validate a `.bin`.
 * @param {Uint8Array} data
 * @param {string} file  path, for error messages
 * @returns {object} the decoded foundry.v1.Preprocessor (camelCase fields)
 */
function parsePreprocessor(data, file) {
  const Type = preprocessorMessageType();
  let msg;
  try {
    msg = Type.decode(new StrictReader(new Uint8Array(data.buffer, data.byteOffset, data.length)));
  } catch (err) {
    const reason = err.message.startsWith('index out of range')
      ? `it ends in the middle of a field (${err.message})`
      : err.message;
    throw new ArtifactError(`${file}: not a valid preprocessor file (truncated or corrupt): ${reason}`);
  }
  const formatVersion = Number(msg.formatVersion);
  if (!SUPPORTED_FORMAT_VERSIONS.includes(formatVersion)) {
    throw new ArtifactError(
      `${file}: format_version ${formatVersion} is not supported by this runtime ` +
        `(supported: ${SUPPORTED_FORMAT_VERSIONS.join(', ')}); re-export the model or upgrade the runtime`,
    );
  }
  if (msg.labels.length < 2) {
    throw new ArtifactError(`${file}: needs at least 2 labels, has ${msg.labels.length}`);
  }
  if (new Set(msg.labels).size !== msg.labels.length) {
    throw new ArtifactError(`${file}: labels ${JSON.stringify(msg.labels)} have duplicates`);
  }
  if (msg.vocabulary.length === 0) throw new ArtifactError(`${file}: empty vocabulary`);
  const weighting = msg.weighting || {};
  if (weighting.useIdf && msg.idf.length !== msg.vocabulary.length) {
    throw new ArtifactError(
      `${file}: idf has ${msg.idf.length} values but the vocabulary has ` +
        `${msg.vocabulary.length} entries; the file is corrupt`,
    );
  }
  if (new Set(msg.vocabulary).size !== msg.vocabulary.length) {
    throw new ArtifactError(`${file}: vocabulary has duplicate entries; the file is corrupt`);
  }
  const norm = Number(weighting.norm || 0);
  if (norm !== 0 && norm !== 1) {
    throw new ArtifactError(`${file}: weighting.norm = ${norm} is neither NORM_NONE (0) nor NORM_L2 (1)`);
  }
  if (!Number.isFinite(msg.threshold)) {
    throw new ArtifactError(`${file}: threshold ${msg.threshold} is not a finite number`);
  }
  return msg;
}

/**
 * Shape checks on the ONNX session against the `.bin`.
 * @param {ort.InferenceSession} session
 * @param {object} pre decoded preprocessor
 * @param {string} onnxFile
 * @param {string} binName
 */
function checkSessionAgainstPreprocessor(session, pre, onnxFile, binName) {
  if (session.inputNames.length !== 1 || session.inputNames[0] !== 'features') {
    throw new ArtifactError(`${onnxFile}: inputs ${JSON.stringify(session.inputNames)}, expected ["features"]`);
  }
  const outputs = session.outputNames.slice(0, 2);
  if (outputs[0] !== 'label' || outputs[1] !== 'probabilities') {
    throw new ArtifactError(
      `${onnxFile}: outputs ${JSON.stringify(session.outputNames)}, expected label, probabilities`,
    );
  }
  const inShape = session.inputMetadata?.[0]?.shape || [];
  const d = inShape[inShape.length - 1];
  if (d !== pre.vocabulary.length) {
    throw new ArtifactError(
      `${onnxFile}: expects ${d} features but ${binName} has a vocabulary of ${pre.vocabulary.length}`,
    );
  }
  const outShape = session.outputMetadata?.[1]?.shape || [];
  const k = outShape[outShape.length - 1];
  if (typeof k === 'number' && k !== pre.labels.length) {
    throw new ArtifactError(`${onnxFile}: ${k} classes but ${binName} lists ${pre.labels.length} labels`);
  }
}

/**
 * @typedef {object} Prediction
 * @property {string} label          labels[argmax probabilities] (lowest index on ties)
 * @property {Object<string, number>} probabilities  label -> probability, in label order
 * @property {boolean} confident     top probability >= threshold
 * @property {number} score          the top probability
 */

/** A loaded, validated micro-model. Create with {@link MicroModel.load}. */
class MicroModel {
  /**
   * @param {string} task
   * @param {object} pre decoded foundry.v1.Preprocessor
   * @param {import('./textspec').CompiledSpec} spec compiled from pre's normalizer/analyzer
   * @param {ort.InferenceSession} session
   * @param {{onnx: string, bin: string}} paths
   */
  constructor(task, pre, spec, session, paths) {
    this.task = task;
    this.preprocessor = pre;
    this.labels = [...pre.labels];
    this.threshold = Number(pre.threshold);
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
    this.session = session;
  }

  /**
   * Load and validate `<task>_classifier.onnx` + `<task>_preprocessor.bin` from `modelsDir`.
   * @param {string} task
   * @param {string} [modelsDir='models']
   * @returns {Promise<MicroModel>}
   * @throws {ArtifactError} a file is missing or corrupt, the format version is unsupported,
   *   the .onnx hash differs from the .bin's record, or labels / dimensions disagree
   */
  static async load(task, modelsDir = 'models') {
    const onnxFile = path.join(modelsDir, `${task}_classifier.onnx`);
    const binFile = path.join(modelsDir, `${task}_preprocessor.bin`);
    const pre = parsePreprocessor(readArtifact(binFile, 'preprocessor file'), binFile);
    const onnxData = readArtifact(onnxFile, 'classifier file');
    if (pre.task !== task) {
      throw new ArtifactError(`${binFile}: belongs to task ${JSON.stringify(pre.task)}, not ${JSON.stringify(task)}`);
    }
    const digest = crypto.createHash('sha256').update(onnxData).digest('hex');
    if (digest !== pre.onnxSha256) {
      throw new ArtifactError(
        `${onnxFile}: SHA-256 ${digest.slice(0, 12)}… does not match the ` +
          `${pre.onnxSha256.slice(0, 12) || '(none)'}… recorded in ${path.basename(binFile)}; ` +
          'the pair is mismatched (re-export both files together)',
      );
    }
    let spec;
    try {
      spec = compileSpec(pre.normalizer, pre.analyzer, binFile);
    } catch (err) {
      throw new ArtifactError(err.message);
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
      throw new ArtifactError(`${onnxFile}: ONNX Runtime cannot load it: ${err.message}`);
    }
    checkSessionAgainstPreprocessor(session, pre, onnxFile, path.basename(binFile));
    return new MicroModel(task, pre, spec, session, { onnx: onnxFile, bin: binFile });
  }

  /**
   * Text-spec steps 1-7 for one text.
   * @param {string} text
   * @returns {{normalized: string, features: Array<[number, number]>}} sparse float32 row
   */
  featurize(text) {
    const normalized = normalize(text, this.spec);
    return { normalized, features: weigh(charNgrams(normalized, this.spec), this.weighting) };
  }

  /**
   * Probabilities `[N][K]` (float32 values), columns in {@link MicroModel#labels} order.
   * @param {string[]} texts
   * @returns {Promise<number[][]>}
   */
  async predictProba(texts) {
    if (!Array.isArray(texts)) throw new TypeError('predictProba takes an array of texts');
    if (texts.length === 0) return [];
    const d = this.nFeatures;
    const input = new Float32Array(texts.length * d);
    texts.forEach((text, row) => {
      for (const [col, value] of this.featurize(text).features) input[row * d + col] = value;
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
    return rows;
  }

  /**
   * @param {number[]} row probabilities of one text
   * @returns {Prediction}
   */
  answer(row) {
    let best = 0;
    for (let j = 1; j < row.length; j += 1) if (row[j] > row[best]) best = j;
    const probabilities = {};
    this.labels.forEach((label, j) => {
      probabilities[label] = row[j];
    });
    return {
      label: this.labels[best],
      probabilities,
      confident: row[best] >= this.threshold,
      score: row[best],
    };
  }

  /** @param {string} text @returns {Promise<Prediction>} */
  async predict(text) {
    return this.answer((await this.predictProba([text]))[0]);
  }

  /** @param {string[]} texts @returns {Promise<Prediction[]>} answers in input order */
  async predictMany(texts) {
    return (await this.predictProba(texts)).map((row) => this.answer(row));
  }
}

module.exports = { ArtifactError, MicroModel, PROTO_PATH, SUPPORTED_FORMAT_VERSIONS, parsePreprocessor };
