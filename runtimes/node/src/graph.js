'use strict';
/**
 * Reading a `<task>_classifier.onnx` without ONNX Runtime, as `foundry/runtime/graph.py` does:
 * a minimal reader of the protobuf wire format for the few ONNX fields needed, the graph's
 * declared signature (rules O2, O3) and, when the graph is linear, its parameters.
 *
 * A linear graph is one `LinearClassifier` (+ an L1 `Normalizer`, or skl2onnx's binary sigmoid
 * calibration), or the int8 softmax graph of `foundry/quantized.py` (weights dense or sparse).
 * {@link readLinearGraph} returns those parameters and `linear.js` scores them in plain
 * JavaScript; any other graph is left to ONNX Runtime. The field numbers are fixed by
 * onnx.proto (proto2) forever.
 */
const protobuf = require('protobufjs');
const { LIMITS } = require('./rules');

const MODEL_GRAPH = 7;
const GRAPH = { node: 1, initializer: 5, input: 11, output: 12, sparseInitializer: 15 };
const NODE = { input: 1, output: 2, opType: 4, attribute: 5, domain: 7 };
const ATTR = { name: 1, i: 3, s: 4, t: 5, floats: 7, ints: 8 };
const TENSOR = { dims: 1, dataType: 2, floatData: 4, int32Data: 5, int64Data: 7, name: 8, rawData: 9 };
/** ONNX TensorProto.DataType FLOAT and INT64. */
const ONNX_FLOAT = 1;
const ONNX_INT64 = 7;
/** Post transforms of the ONNX `LinearClassifier` that the linear head reproduces. */
const POST_TRANSFORMS = Object.freeze(['NONE', 'LOGISTIC', 'SOFTMAX']);

const utf8 = new TextDecoder('utf-8');

/**
 * The fields of one protobuf message: field number -> values, in order. Varints are Numbers,
 * length-delimited fields Uint8Arrays, fixed32 fields Float32Arrays (a run of unpacked
 * repeated floats, proto2's default, is read as one array), fixed64 fields their 8 bytes.
 * @param {Uint8Array} buf
 * @returns {Map<number, Array<number|Uint8Array|Float32Array>>}
 */
function protoFields(buf) {
  const reader = protobuf.Reader.create(buf);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const fields = new Map();
  while (reader.pos < reader.len) {
    const keyAt = reader.pos;
    const key = reader.uint32();
    const number = key >>> 3;
    const wire = key & 7;
    let value;
    if (wire === 0) value = Number(reader.int64());
    else if (wire === 2) value = reader.bytes();
    else if (wire === 5) {
      if (reader.pos + 4 > reader.len) throw new Error('truncated fixed32 field');
      // A run of one-byte keys, each followed by 4 bytes: the unpacked repeated floats.
      let end = reader.pos + 4;
      if (key < 0x80) while (end + 5 <= reader.len && buf[end] === key) end += 5;
      const n = (end - keyAt) / 5 | 0;
      value = new Float32Array(key < 0x80 ? n : 1);
      for (let i = 0; i < value.length; i += 1) value[i] = view.getFloat32(keyAt + 5 * i + 1, true);
      reader.pos = key < 0x80 ? keyAt + 5 * n : reader.pos + 4;
    } else if (wire === 1) {
      if (reader.pos + 8 > reader.len) throw new Error('truncated fixed64 field');
      value = buf.subarray(reader.pos, reader.pos + 8);
      reader.pos += 8;
    } else {
      reader.skipType(wire);
      continue;
    }
    if (!fields.has(number)) fields.set(number, []);
    fields.get(number).push(value);
  }
  return fields;
}

/** The strings of field `number`. */
function strings(fields, number) {
  return (fields.get(number) || []).map((b) => utf8.decode(b));
}

/** The integers of field `number`, packed or not (int64 two's complement, as Numbers). */
function ints(fields, number) {
  const out = [];
  for (const v of fields.get(number) || []) {
    if (typeof v === 'number') out.push(v);
    else if (v instanceof Uint8Array) {
      const reader = protobuf.Reader.create(v);
      while (reader.pos < reader.len) out.push(Number(reader.int64()));
    }
  }
  return out;
}

/** The float32 values of field `number`: packed bytes or runs of fixed32 records. */
function floats(fields, number) {
  const parts = (fields.get(number) || []).map((v) => {
    if (v instanceof Float32Array) return v;
    if (v instanceof Uint8Array) {
      if (v.length % 4) throw new Error(`packed floats of ${v.length} bytes`);
      return new Float32Array(v.slice().buffer);
    }
    return Float32Array.of(v);
  });
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** @returns {{name: string, elemType: number|null, shape: Array<number|string>|null}} */
function valueInfo(raw) {
  const fields = protoFields(raw);
  const name = strings(fields, 1).join('');
  const type = (fields.get(2) || [])[0];
  const tensor = type ? (protoFields(type).get(1) || [])[0] : undefined;
  if (!tensor) return { name, elemType: null, shape: null };
  const tensorFields = protoFields(tensor);
  const elemType = (tensorFields.get(1) || [null])[0];
  const shapeRaw = (tensorFields.get(2) || [])[0];
  if (!shapeRaw) return { name, elemType, shape: null };
  const shape = (protoFields(shapeRaw).get(1) || []).map((rawDim) => {
    const dim = protoFields(rawDim);
    if (dim.has(1)) return dim.get(1)[0];
    return dim.has(2) ? utf8.decode(dim.get(2)[0]) : '?';
  });
  return { name, elemType, shape };
}

/** The one graph of a ModelProto, as fields. */
function graphFields(data) {
  const graphs = protoFields(new Uint8Array(data.buffer, data.byteOffset, data.length)).get(MODEL_GRAPH) || [];
  if (graphs.length !== 1) throw new Error('no graph');
  return protoFields(graphs[0]);
}

/**
 * The declared inputs and outputs of an `.onnx` graph (ModelProto.graph = 7, GraphProto
 * input = 11, output = 12), as `foundry/runtime/graph.py`'s graph_signature reads them.
 * @param {Buffer} data
 * @returns {{inputs: object[], outputs: object[]}}
 */
function graphSignature(data) {
  const graph = graphFields(data);
  return { inputs: (graph.get(GRAPH.input) || []).map(valueInfo), outputs: (graph.get(GRAPH.output) || []).map(valueInfo) };
}

/** @returns {{opType: string, domain: string, input: string[], output: string[], attributes: Map<string, Map>}} */
function readNode(raw) {
  const fields = protoFields(raw);
  const attributes = new Map();
  for (const rawAttr of fields.get(NODE.attribute) || []) {
    const attr = protoFields(rawAttr);
    attributes.set(strings(attr, ATTR.name).join(''), attr);
  }
  return {
    opType: strings(fields, NODE.opType).join(''),
    domain: strings(fields, NODE.domain).join(''),
    input: strings(fields, NODE.input),
    output: strings(fields, NODE.output),
    attributes,
  };
}

/** Element types of the initializers read: TensorProto.DataType -> [typed array, bytes, min, max]. */
const TENSOR_TYPES = new Map([
  [1, [Float32Array, 4]],
  [2, [Uint8Array, 1, 0, 255]],
  [3, [Int8Array, 1, -128, 127]],
  [6, [Int32Array, 4, -(2 ** 31), 2 ** 31 - 1]],
  [7, [Float64Array, 8]], // int64 values, held as Numbers
  [11, [Float64Array, 8]],
]);

/**
 * `{name, dataType, dims, values}` of an initializer; `values` is null for other element types.
 * @throws {Error} an int8/uint8/int32 tensor holds a value outside its type
 */
function readTensor(fields) {
  const name = strings(fields, TENSOR.name).join('');
  const dataType = (fields.get(TENSOR.dataType) || [0])[0];
  const dims = ints(fields, TENSOR.dims);
  const type = TENSOR_TYPES.get(dataType);
  if (type === undefined) return { name, dataType, dims, values: null };
  const [Typed, bytes, min, max] = type;
  if (fields.has(TENSOR.rawData)) {
    const raw = fields.get(TENSOR.rawData)[0];
    const n = Math.floor(raw.length / bytes);
    const copy = raw.slice(0, n * bytes).buffer;
    if (dataType === ONNX_INT64) return { name, dataType, dims, values: Float64Array.from(new BigInt64Array(copy), Number) };
    return { name, dataType, dims, values: new Typed(copy) };
  }
  if (dataType === ONNX_FLOAT) return { name, dataType, dims, values: floats(fields, TENSOR.floatData) };
  const wide = ints(fields, dataType === ONNX_INT64 ? TENSOR.int64Data : TENSOR.int32Data);
  if (min !== undefined && wide.some((v) => v < min || v > max)) {
    throw new Error(`initializer ${name} holds values outside ${Typed.name.replace('Array', '').toLowerCase()}`);
  }
  return { name, dataType, dims, values: Typed.from(wide) };
}

function intAttribute(node, name, fallback) {
  const attr = node.attributes.get(name);
  const values = attr ? ints(attr, ATTR.i) : [];
  return values.length ? values[0] : fallback;
}

/** The node writing `output`: an `op` of `nInputs` inputs (and no attribute outside `allowed`). */
function producer(byOutput, output, op, nInputs, allowed) {
  const found = byOutput.get(output);
  if (found === undefined || found.opType !== op || found.input.length !== nInputs
      || (allowed !== undefined && [...found.attributes.keys()].some((a) => !allowed.includes(a)))) {
    throw new LookupError(output);
  }
  return found;
}

class LookupError extends Error {}

/**
 * The parameters of a linear graph.
 * @typedef {object} LinearGraph
 * @property {number} k classes
 * @property {number} d features
 * @property {Float32Array} weights `[D, K]`, feature-major: a feature's K weights are adjacent
 * @property {Float64Array} intercepts `[K]` (float32 values)
 * @property {string} post 'NONE' | 'LOGISTIC' | 'SOFTMAX'
 * @property {boolean} l1 whether a `Normalizer(norm="L1")` follows
 * @property {{column: number, a: number, b: number}|null} calibration binary Platt scaling
 */

/**
 * The {@link LinearGraph} of an `.onnx` file, or null when the graph is anything else.
 * @param {Buffer} data
 * @returns {LinearGraph|null}
 * @throws {Error} malformed protobuf, or a sparse int8 layout whose constants are not a matrix
 */
function readLinearGraph(data) {
  const graph = graphFields(data);
  const nodes = (graph.get(GRAPH.node) || []).map(readNode);
  const inputs = (graph.get(GRAPH.input) || []).map((raw) => strings(protoFields(raw), 1));
  const tensors = new Map();
  for (const raw of graph.get(GRAPH.initializer) || []) {
    const tensor = readTensor(protoFields(raw));
    tensors.set(tensor.name, tensor);
  }
  if (nodes.length === 0 || inputs.length !== 1 || graph.has(GRAPH.sparseInitializer)) return null;
  const clf = nodes[0];
  if (clf.opType !== 'LinearClassifier' || clf.domain !== 'ai.onnx.ml') {
    const { shape } = valueInfo(graph.get(GRAPH.input)[0]);
    const nFeatures = shape && shape.length === 2 && typeof shape[1] === 'number' ? shape[1] : null;
    return int8SoftmaxGraph(nodes, tensors, inputs[0].join(''), nFeatures);
  }
  if (clf.output.length !== 2 || clf.input.join('\0') !== inputs[0].join('\0')) return null;
  const allowed = ['classlabels_ints', 'coefficients', 'intercepts', 'multi_class', 'post_transform'];
  if ([...clf.attributes.keys()].some((a) => !allowed.includes(a))) return null; // e.g. string labels
  const attr = (name) => clf.attributes.get(name) || new Map();
  const post = strings(attr('post_transform'), ATTR.s).join('') || 'NONE';
  const labels = ints(attr('classlabels_ints'), ATTR.ints);
  const coefficients = floats(attr('coefficients'), ATTR.floats);
  const intercepts = floats(attr('intercepts'), ATTR.floats);
  const k = labels.length;
  if (!POST_TRANSFORMS.includes(post) || labels.some((v, i) => v !== i) || k < 2) return null;
  if (intercepts.length !== k || coefficients.length % k || coefficients.length === 0) return null;
  const linear = (l1, calibration) => ({
    ...classMajor(coefficients, k), intercepts: Float64Array.from(intercepts), post, l1, calibration,
  });
  if (clf.output[0] !== 'label') { // something else computes the label: a calibration?
    const calibration = sigmoidCalibration(nodes, tensors, clf.output[1], k);
    return calibration === null || post !== 'NONE' ? null : linear(false, calibration);
  }
  if (tensors.size) return null;
  if (nodes.length === 1) return clf.output[1] === 'probabilities' ? linear(false, null) : null;
  const norm = nodes[1];
  if (nodes.length !== 2 || norm.opType !== 'Normalizer' || norm.domain !== 'ai.onnx.ml'
      || norm.input.length !== 1 || norm.input[0] !== clf.output[1]
      || norm.output.length !== 1 || norm.output[0] !== 'probabilities'
      || strings(norm.attributes.get('norm') || new Map(), ATTR.s).join('\0') !== 'L1') {
    return null;
  }
  return linear(true, null);
}

/** `{k, d, weights}` of class-major coefficients `[K, D]`, transposed to feature-major. */
function classMajor(coefficients, k) {
  const d = coefficients.length / k;
  const weights = new Float32Array(coefficients.length);
  for (let c = 0; c < k; c += 1) for (let j = 0; j < d; j += 1) weights[j * k + c] = coefficients[c * d + j];
  return { k, d, weights };
}

/** The nodes rebuilding a sparse `W_q` (`foundry.quantized.sparse_entries`). */
const SPARSE_OPS = 5;

/**
 * Match the int8 graph of `foundry.quantized.quantized_onnx`:
 *
 *     W = Mul(Cast(W_q int8 [D, K], to=FLOAT), scale [1, K])
 *     probabilities = Softmax(Add(MatMul(features, W), b [K]), axis=-1 or 1)
 *     label = ArgMax(probabilities, axis=1, keepdims=0)
 *
 * with `W_q` a constant or rebuilt from its sparse entries ({@link sparseLayout}).
 */
function int8SoftmaxGraph(nodes, tensors, features, nFeatures) {
  if (nodes.length !== 6 && nodes.length !== 6 + SPARSE_OPS) return null;
  const byOutput = new Map(nodes.filter((n) => n.output.length === 1).map((n) => [n.output[0], n]));
  if (byOutput.size !== nodes.length || nodes.some((n) => n.domain !== '' && n.domain !== 'ai.onnx')) return null;
  const arg = byOutput.get('label');
  const soft = byOutput.get('probabilities');
  if (arg === undefined || soft === undefined || arg.opType !== 'ArgMax' || soft.opType !== 'Softmax'
      || arg.input.join('\0') !== 'probabilities' || intAttribute(arg, 'axis', 0) !== 1
      || intAttribute(arg, 'keepdims', 1) !== 0
      || ![-1, 1].includes(intAttribute(soft, 'axis', -1)) || soft.input.length !== 1) {
    return null;
  }
  const add = byOutput.get(soft.input[0]);
  if (add === undefined || add.opType !== 'Add' || add.input.length !== 2) return null;
  const matmul = byOutput.get(add.input[0]);
  const b = tensors.get(add.input[1]);
  if (matmul === undefined || matmul.opType !== 'MatMul' || matmul.input[0] !== features
      || matmul.input.length !== 2 || b === undefined || b.values === null) {
    return null;
  }
  const mul = byOutput.get(matmul.input[1]);
  if (mul === undefined || mul.opType !== 'Mul' || mul.input.length !== 2) return null;
  const cast = byOutput.get(mul.input[0]);
  const scale = tensors.get(mul.input[1]);
  if (cast === undefined || cast.opType !== 'Cast' || intAttribute(cast, 'to', 0) !== ONNX_FLOAT
      || scale === undefined || scale.values === null || cast.input.length !== 1) {
    return null;
  }
  const k = b.values.length;
  if (k < 2 || scale.values.length !== k) return null;
  const source = cast.input[0];
  let wq;
  if (nodes.length === 6) { // W_q is a constant
    const constant = tensors.get(source);
    if (constant === undefined || !(constant.values instanceof Int8Array) || constant.values.length % k) return null;
    wq = constant.values;
  } else {
    const layout = sparseLayout(byOutput, source);
    if (layout === null || tensors.has(source)) return null;
    wq = sparseWeights(layout, tensors, nFeatures, k);
  }
  const weights = new Float32Array(wq.length);
  const scales = Float32Array.from(scale.values);
  for (let i = 0; i < wq.length; i += 1) weights[i] = Math.fround(wq[i] * scales[i % k]);
  return {
    k, d: wq.length / k, weights, intercepts: Float64Array.from(Float32Array.from(b.values)),
    post: 'SOFTMAX', l1: false, calibration: null,
  };
}

/**
 * Match `W_q = Reshape(ScatterElements(ConstantOfShape(W_size, value=int8 [0]),
 * CumSum(Cast(W_gaps, to=INT64), W_axis), W_values, axis=0), W_shape)` and return the names
 * of its constants and the `value` attribute of ConstantOfShape; null on any difference.
 */
function sparseLayout(byOutput, wq) {
  let reshape; let scatter; let zeros; let cumsum; let steps;
  try {
    reshape = producer(byOutput, wq, 'Reshape', 2, []);
    scatter = producer(byOutput, reshape.input[0], 'ScatterElements', 3, ['axis']);
    zeros = producer(byOutput, scatter.input[0], 'ConstantOfShape', 1, ['value']);
    cumsum = producer(byOutput, scatter.input[1], 'CumSum', 2, ['exclusive', 'reverse']);
    steps = producer(byOutput, cumsum.input[0], 'Cast', 1, ['to']);
  } catch (err) {
    if (err instanceof LookupError) return null;
    throw err;
  }
  const zero = (zeros.attributes.get('value') || new Map()).get(ATTR.t);
  if (intAttribute(scatter, 'axis', 0) !== 0 || zero === undefined
      || intAttribute(cumsum, 'exclusive', 0) !== 0 || intAttribute(cumsum, 'reverse', 0) !== 0
      || intAttribute(steps, 'to', 0) !== ONNX_INT64) {
    return null;
  }
  return {
    gaps: steps.input[0], axis: cumsum.input[1], size: zeros.input[0], values: scatter.input[2],
    shape: reshape.input[1], zero: protoFields(zero[0]),
  };
}

/**
 * The int8 `W_q` `[D, K]` (flat) of a sparse layout, checked as `_sparse_weights` checks it.
 * @throws {Error} naming the first constant that is not what the exporter writes
 */
function sparseWeights(layout, tensors, nFeatures, k) {
  const constant = (key, Typed, dataType, shapes) => {
    const name = layout[key];
    const tensor = tensors.get(name);
    if (tensor === undefined || tensor.values === null || tensor.dataType !== dataType) {
      throw new Error(`sparse int8 weights: ${name} is not a ${Typed} constant`);
    }
    const size = tensor.dims.reduce((a, v) => a * v, 1);
    const shapeOk = shapes === undefined ? tensor.dims.length === 1
      : shapes.some((s) => s.length === tensor.dims.length && s.every((v, i) => v === tensor.dims[i]));
    if (size !== tensor.values.length || !shapeOk) {
      throw new Error(`sparse int8 weights: ${name} has dims ${JSON.stringify(tensor.dims)} and ${tensor.values.length} values`);
    }
    return tensor.values;
  };
  const gaps = constant('gaps', 'uint8', 2);
  const values = constant('values', 'int8', 3);
  const axis = constant('axis', 'int64', ONNX_INT64, [[], [1]]);
  const size = constant('size', 'int64', ONNX_INT64, [[1]]);
  const shape = constant('shape', 'int64', ONNX_INT64, [[2]]);
  const zero = readTensor(layout.zero);
  if (!(zero.values instanceof Int8Array) || zero.values.length !== 1 || zero.values[0] !== 0) {
    throw new Error("sparse int8 weights: ConstantOfShape's value is not the int8 0");
  }
  if (axis[0] !== 0) throw new Error(`sparse int8 weights: CumSum over axis ${axis[0]}, not 0`);
  if (nFeatures === null) throw new Error('sparse int8 weights: the graph does not declare its number of features');
  const [d, kShape] = shape;
  if (d !== nFeatures || kShape !== k || !(d > 0 && d <= LIMITS.vocabulary && k <= LIMITS.labels)) {
    throw new Error(`sparse int8 weights: W_shape [${d}, ${kShape}] is not [D, K] with D = ${nFeatures} `
      + `(the declared features, at most ${LIMITS.vocabulary}) and K = ${k} (the intercepts, at most ${LIMITS.labels})`);
  }
  const nWeights = d * k;
  if (size[0] !== nWeights) throw new Error(`sparse int8 weights: W_size ${size[0]} is not ${d} * ${k}`);
  if (gaps.length !== values.length) throw new Error(`sparse int8 weights: ${gaps.length} gaps but ${values.length} values`);
  if (gaps.length > nWeights) throw new Error(`sparse int8 weights: ${gaps.length} entries in ${nWeights} positions`);
  const wq = new Int8Array(nWeights);
  let position = 0;
  for (let i = 0; i < gaps.length; i += 1) {
    if (i > 0 && gaps[i] === 0) throw new Error(`sparse int8 weights: gap ${i} is 0 (a repeated position)`);
    position += gaps[i];
    if (position >= nWeights) {
      throw new Error(`sparse int8 weights: position ${position} is past the ${d} x ${k} matrix`);
    }
    wq[position] = values[i];
  }
  return wq;
}

/**
 * Match skl2onnx's graph of a binary `CalibratedClassifierCV(method="sigmoid")` downstream of
 * the `LinearClassifier` writing `rawScores`:
 *
 *     p1 = 1 / (1 + exp(a * raw[:, column] + b)); probabilities = concat(1 - p1, p1) (Sum, / 1)
 *     label = Cast(Reshape(ArrayFeatureExtractor(classes, ArgMax(probabilities))))
 *
 * Every node must be part of it; null on any difference.
 */
function sigmoidCalibration(nodes, tensors, rawScores, nClasses) {
  const byOutput = new Map();
  for (const n of nodes) for (const out of n.output) byOutput.set(out, n);
  let used = 0;
  const node = (output, op, nInputs) => {
    const found = producer(byOutput, output, op, nInputs);
    used += 1;
    return found;
  };
  const scalar = (name) => {
    const tensor = tensors.get(name);
    if (tensor === undefined || tensor.values === null || tensor.values.length !== 1) throw new LookupError(name);
    return Number(tensor.values[0]);
  };
  // (constant, other input) of a commutative binary node.
  const split = ([first, second]) => (tensors.has(first) ? [scalar(first), second] : [scalar(second), first]);
  try {
    const divide = node('probabilities', 'Div', 2);
    const total = node(divide.input[0], 'Sum', 1);
    const merged = node(total.input[0], 'Concat', 2);
    const complement = node(merged.input[0], 'Sub', 2);
    const p1 = node(merged.input[1], 'Div', 2);
    const denominator = node(p1.input[1], 'Add', 2);
    const [one, expOut] = split(denominator.input);
    const exponent = node(node(expOut, 'Exp', 1).input[0], 'Add', 2);
    const [b, product] = split(exponent.input);
    const [a, columnOut] = split(node(product, 'Mul', 2).input);
    const extract = node(columnOut, 'ArrayFeatureExtractor', 2);
    let labelPath = node('label', 'Cast', 1);
    labelPath = node(node(labelPath.input[0], 'Reshape', 2).input[0], 'ArrayFeatureExtractor', 2);
    const argmax = node(labelPath.input[1], 'ArgMax', 1);
    const classes = tensors.get(labelPath.input[0]);
    const ok = scalar(divide.input[1]) === 1 && one === 1
      && scalar(p1.input[0]) === 1 && scalar(complement.input[0]) === 1
      && complement.input[1] === merged.input[1]
      && [1, -1].includes(intAttribute(merged, 'axis', 0))
      && extract.input[0] === rawScores
      && argmax.input[0] === 'probabilities'
      && intAttribute(argmax, 'axis', 0) === 1
      && classes !== undefined && classes.values !== null
      && classes.values.length === nClasses && classes.values.every((v, i) => Number(v) === i)
      && nClasses === 2 && used === nodes.length - 1;
    const column = Math.trunc(scalar(extract.input[1]));
    if (!ok || (column !== 0 && column !== 1)) return null;
    return { column, a, b };
  } catch (err) {
    if (err instanceof LookupError) return null;
    throw err;
  }
}

module.exports = { ONNX_FLOAT, graphSignature, protoFields, readLinearGraph };
