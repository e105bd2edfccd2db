//! The classifier graphs Model Foundry's exporter writes (skl2onnx 1.20 with the faithful
//! isotonic graph of `foundry/onnx_isotonic.py`), read into their parameters.
//!
//! Every graph maps the input `features` `[N, D]` to raw class scores `s = x W + b` (one
//! `ai.onnx.ml.LinearClassifier`, or a `MatMul` for naive Bayes), then to `probabilities`
//! `[N, K]` by one of these [`Transform`]s:
//!
//! | trainer / calibration | graph after the scores | [`Transform`] |
//! |---|---|---|
//! | logistic regression | `post_transform` LOGISTIC (2 classes) or SOFTMAX + `Normalizer(L1)` | `Direct` |
//! | complement naive Bayes | `exp(s - ReduceLogSumExp(s))` | `Direct` (softmax) |
//! | any, `sigmoid` | per class `1 / (1 + exp(a t + b))` of a score column `t` | `Calibrated` |
//! | any, `isotonic` | per class linear interpolation between thresholds, clipped | `Calibrated` |
//! | int8 SVM (`foundry/quantized.py`) | `Softmax(x (W_q · scale) + b)`, `W_q` dense or sparse | `Direct` (softmax) |
//!
//! A calibrated binary model calibrates one column `p` and answers `[1 - p, p]`; a calibrated
//! multi-class model calibrates every class and divides by the sum (uniform when it is 0).
//! The scores a calibrator reads are the raw scores (linear models) or the naive Bayes
//! probabilities. Any other graph is refused with a message saying where it differs. Nodes
//! that only compute the `label` output are not read: like the other runtimes, this one takes
//! the label from the probabilities.

use std::collections::HashMap;

use prost::Message;

use crate::model::{MAX_LABELS, MAX_VOCABULARY};
use crate::proto::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::onnx::{type_proto, AttributeProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// `LinearClassifier`'s `post_transform` (and naive Bayes' softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    None,
    Logistic,
    Softmax,
}

/// One class's calibration map of a score.
#[derive(Debug, Clone, PartialEq)]
pub enum Calibrator {
    /// Platt scaling: `p = 1 / (1 + exp(a t + b))`.
    Sigmoid { a: f64, b: f64 },
    /// `t' = clip(t, min, max)`, `i = #{j : inner[j] <= t'}`, `p = y_lo[i] + (t' - x_lo[i]) slope[i]`
    /// (`inner` is empty for one segment or a constant).
    Isotonic { min: f64, max: f64, inner: Vec<f64>, x_lo: Vec<f64>, y_lo: Vec<f64>, slopes: Vec<f64> },
}

/// Raw class scores -> probabilities.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// `post(s)`, then divided by its L1 norm when `l1`.
    Direct { post: Post, l1: bool },
    /// `post(s)` (`None` for linear models, `Softmax` for naive Bayes), then one calibrator per
    /// `(column, calibrator)`: binary `[1 - p, p]` from one, multi-class normalised.
    Calibrated { post: Post, calibrators: Vec<(usize, Calibrator)>, binary: bool },
}

/// The parameters of a classifier graph.
#[derive(Debug, Clone)]
pub struct LinearGraph {
    /// `K x D`, row `k` = class `k` (float32 values as stored).
    pub coefficients: Vec<f32>,
    /// `K` (zeros for naive Bayes).
    pub intercepts: Vec<f32>,
    pub n_classes: usize,
    pub n_features: usize,
    pub transform: Transform,
}

/// Decode `.onnx` bytes and read its graph: rules O1-O3 for a vocabulary of `d` entries and
/// `k` labels (`bin_name` names the `.bin` in messages).
///
/// # Errors
/// `(rule id, message)`: O1 when the bytes are not an ONNX model with one graph or the graph
/// is not one of the above, O2 / O3 when its declared signature or its weights do not fit.
pub fn read_onnx(data: &[u8], d: usize, k: usize, bin_name: &str) -> Result<LinearGraph, (&'static str, String)> {
    let model = ModelProto::decode(data).map_err(|e| ("O1", format!("not a valid ONNX model: {e}")))?;
    let graph = model.graph.as_ref().ok_or(("O1", "not a valid ONNX model: no graph".to_string()))?;
    // O2: one float32 input `features` of rank 2 declared [N, D].
    if graph.input.len() != 1 {
        let names: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        return Err(("O2", format!("the graph has inputs {names:?}; it needs exactly one, 'features'")));
    }
    let input = &graph.input[0];
    if input.name() != "features" {
        return Err(("O2", format!("the graph's input is named {:?}, not 'features'", input.name())));
    }
    let (elem, dims) = declared(input);
    match (elem, dims.as_deref()) {
        (Some(1), Some([_, last])) => {
            if *last != Some(d as i64) {
                let shown = last.map_or("an unnamed number of".to_string(), |v| v.to_string());
                return Err(("O2", format!("expects {shown} features but {bin_name} has a vocabulary of {d}")));
            }
        }
        _ => return Err(("O2", format!("input 'features' is not declared float32 of rank 2 (element type {elem:?}, shape {dims:?})"))),
    }
    // O3: outputs start with label, probabilities; a declared K must be len(labels).
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
    if outputs.len() < 2 || outputs[..2] != ["label", "probabilities"] {
        return Err(("O3", format!("outputs {outputs:?}, expected label, probabilities")));
    }
    if let (_, Some(dims)) = declared(&graph.output[1]) {
        if let Some(Some(declared_k)) = dims.last() {
            if *declared_k != k as i64 {
                return Err(("O3", format!("{declared_k} classes but {bin_name} lists {k} labels")));
            }
        }
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(("O1", "sparse initializers are not read by this runtime".into()));
    }
    let refused = |e: String| ("O1", not_linear(graph.name(), &graph.node, &e));
    let reader = Reader::new(&graph.node, &graph.initializer, d).map_err(refused)?;
    let linear = reader.probabilities().map_err(refused)?;
    if linear.n_features != d {
        return Err(("O2", format!("its weights expect {} features but {bin_name} has a vocabulary of {d}", linear.n_features)));
    }
    if linear.n_classes != k {
        return Err(("O3", format!("its weights have {} classes but {bin_name} lists {k} labels", linear.n_classes)));
    }
    Ok(linear)
}

/// The O1 message for a graph this runtime does not read: the graph's name, where it differs,
/// and what this runtime reads (a non-linear model, e.g. trainer `tfidf_mlp`, runs in the
/// runtimes with ONNX Runtime).
fn not_linear(name: &str, nodes: &[NodeProto], detail: &str) -> String {
    let mut ops: Vec<&str> = nodes.iter().map(|n| n.op_type()).collect();
    ops.sort_unstable();
    ops.dedup();
    format!(
        "not a classifier graph this runtime reads: graph {name:?} (operators {}): {detail}; the \
         Rust runtime reads only the linear graphs Model Foundry exports (a LinearClassifier, \
         naive Bayes or int8 MatMul over the features, optionally sigmoid or isotonic \
         calibrated); a non-linear model (e.g. trainer tfidf_mlp) runs in the Python or Node \
         runtime through ONNX Runtime; see docs/preprocessor-spec.md, section 5",
        ops.join(", ")
    )
}

/// The declared element type and dimensions (None: symbolic) of a graph input or output.
fn declared(value: &ValueInfoProto) -> (Option<i32>, Option<Vec<Option<i64>>>) {
    let tensor = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        None => return (None, None),
    };
    let dims = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|dim| match dim.value {
                Some(DimValue::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect()
    });
    (tensor.elem_type, dims)
}

/// An initializer's values.
enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

struct Tensor {
    dims: Vec<i64>,
    /// ONNX `TensorProto.DataType` (1 float32, 2 uint8, 3 int8, 6 int32, 7 int64, 11 double).
    data_type: i32,
    values: Values,
}

fn decode_tensor(t: &TensorProto) -> Result<Tensor, String> {
    if t.data_location() == 1 {
        return Err(format!("initializer {} keeps its data outside the file", t.name()));
    }
    let raw = t.raw_data.as_deref();
    let chunks = |width: usize| -> Result<Vec<&[u8]>, String> {
        let raw = raw.unwrap_or_default();
        if raw.len() % width != 0 {
            return Err(format!("initializer {} has {} raw bytes", t.name(), raw.len()));
        }
        Ok(raw.chunks_exact(width).collect())
    };
    let values = match t.data_type() {
        1 if raw.is_some() => Values::Float(chunks(4)?.iter().map(|c| f32::from_le_bytes((*c).try_into().unwrap()) as f64).collect()),
        1 => Values::Float(t.float_data.iter().map(|&v| v as f64).collect()),
        11 if raw.is_some() => Values::Float(chunks(8)?.iter().map(|c| f64::from_le_bytes((*c).try_into().unwrap())).collect()),
        11 => Values::Float(t.double_data.clone()),
        7 if raw.is_some() => Values::Int(chunks(8)?.iter().map(|c| i64::from_le_bytes((*c).try_into().unwrap())).collect()),
        7 => Values::Int(t.int64_data.clone()),
        6 if raw.is_some() => Values::Int(chunks(4)?.iter().map(|c| i32::from_le_bytes((*c).try_into().unwrap()) as i64).collect()),
        6 => Values::Int(t.int32_data.iter().map(|&v| v as i64).collect()),
        // INT8 (the int8 weights of foundry/quantized.py) and UINT8 (the gaps of its sparse
        // layout): raw bytes, or widened in int32_data (whose range the reader checks).
        3 if raw.is_some() => Values::Int(raw.unwrap_or_default().iter().map(|&b| b as i8 as i64).collect()),
        2 if raw.is_some() => Values::Int(raw.unwrap_or_default().iter().map(|&b| b as i64).collect()),
        2 | 3 => Values::Int(t.int32_data.iter().map(|&v| v as i64).collect()),
        other => return Err(format!("initializer {} has data type {other}", t.name())),
    };
    let n = match &values {
        Values::Float(v) => v.len(),
        Values::Int(v) => v.len(),
    };
    let want: i64 = t.dims.iter().product();
    if t.dims.iter().any(|&d| d < 0) || want as usize != n {
        return Err(format!("initializer {} has dims {:?} but {n} values", t.name(), t.dims));
    }
    Ok(Tensor { dims: t.dims.clone(), data_type: t.data_type(), values })
}

/// Reads the graph backwards from `probabilities`, one expected node at a time.
struct Reader<'a> {
    producer: HashMap<&'a str, &'a NodeProto>,
    tensors: HashMap<&'a str, Tensor>,
    /// `D`: the features the graph declares (= the `.bin`'s vocabulary, rule O2).
    n_features: usize,
}

/// The standard ONNX domain ("" or "ai.onnx"), or the ML domain.
fn domain_ok(node: &NodeProto, op: &str) -> bool {
    let ml = matches!(op, "LinearClassifier" | "Normalizer" | "ArrayFeatureExtractor");
    match node.domain() {
        "" | "ai.onnx" => !ml,
        "ai.onnx.ml" => ml,
        _ => false,
    }
}

impl<'a> Reader<'a> {
    fn new(nodes: &'a [NodeProto], initializers: &'a [TensorProto], n_features: usize) -> Result<Self, String> {
        let mut producer = HashMap::new();
        for node in nodes {
            for out in &node.output {
                if producer.insert(out.as_str(), node).is_some() {
                    return Err(format!("tensor {out} is produced twice"));
                }
            }
        }
        let mut tensors = HashMap::new();
        for t in initializers {
            tensors.insert(t.name(), decode_tensor(t)?);
        }
        Ok(Reader { producer, tensors, n_features })
    }

    /// The node computing `tensor`, which must be a `op` with `inputs` inputs.
    fn node(&self, tensor: &str, op: &str, inputs: usize) -> Result<&'a NodeProto, String> {
        let node = self.variadic(tensor, op)?;
        if node.input.len() != inputs {
            return Err(format!("{op} computing {tensor} has {} inputs, expected {inputs}", node.input.len()));
        }
        Ok(node)
    }

    /// The node computing `tensor`, which must be a `op` (any number of inputs).
    fn variadic(&self, tensor: &str, op: &str) -> Result<&'a NodeProto, String> {
        let node = self
            .producer
            .get(tensor)
            .ok_or_else(|| format!("{tensor} is computed by no node, expected {op}"))?;
        if node.op_type() != op || !domain_ok(node, op) {
            return Err(format!("{tensor} is computed by {} ({}), expected {op}", node.op_type(), node.domain()));
        }
        Ok(node)
    }

    fn floats(&self, name: &str) -> Result<&[f64], String> {
        match self.tensors.get(name) {
            Some(Tensor { values: Values::Float(v), .. }) => Ok(v),
            _ => Err(format!("{name} is not a float constant")),
        }
    }

    fn ints(&self, name: &str) -> Result<&[i64], String> {
        match self.tensors.get(name) {
            Some(Tensor { values: Values::Int(v), .. }) => Ok(v),
            _ => Err(format!("{name} is not an integer constant")),
        }
    }

    fn scalar(&self, name: &str) -> Result<f64, String> {
        match self.floats(name)? {
            [v] => Ok(*v),
            _ => Err(format!("{name} is not one number")),
        }
    }

    fn expect_scalar(&self, name: &str, want: f64) -> Result<(), String> {
        let got = self.scalar(name)?;
        if got != want {
            return Err(format!("{name} is {got}, expected {want}"));
        }
        Ok(())
    }

    /// `(constant, other input)` of a commutative binary node with one constant input.
    fn split(&self, node: &'a NodeProto) -> Result<(f64, &'a str), String> {
        let (a, b) = (node.input[0].as_str(), node.input[1].as_str());
        if self.tensors.contains_key(a) {
            Ok((self.scalar(a)?, b))
        } else {
            Ok((self.scalar(b)?, a))
        }
    }

    fn attribute(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
        node.attribute.iter().find(|a| a.name() == name)
    }

    fn int_attribute(node: &'a NodeProto, name: &str, default: i64) -> i64 {
        Self::attribute(node, name).map_or(default, |a| a.i())
    }

    fn ints_attribute(node: &'a NodeProto, name: &str) -> Option<Vec<i64>> {
        Self::attribute(node, name).map(|a| a.ints.clone())
    }

    fn check_attributes(node: &NodeProto, allowed: &[&str]) -> Result<(), String> {
        match node.attribute.iter().find(|a| !allowed.contains(&a.name())) {
            Some(a) => Err(format!("{} has an unexpected attribute {}", node.op_type(), a.name())),
            None => Ok(()),
        }
    }

    /// `probabilities`, read backwards.
    fn probabilities(&self) -> Result<LinearGraph, String> {
        let node = self
            .producer
            .get("probabilities")
            .ok_or("probabilities is computed by no node")?;
        match node.op_type() {
            "LinearClassifier" => {
                let mut linear = self.linear_classifier("probabilities")?;
                if node.output[0] != "label" {
                    return Err("LinearClassifier does not write label".into());
                }
                let post = match &linear.transform {
                    Transform::Direct { post, .. } => *post,
                    _ => unreachable!(),
                };
                linear.transform = Transform::Direct { post, l1: false };
                Ok(linear)
            }
            "Normalizer" => {
                let norm = self.node("probabilities", "Normalizer", 1)?;
                Self::check_attributes(norm, &["norm"])?;
                if Self::attribute(norm, "norm").map(|a| a.s()) != Some(b"L1".as_slice()) {
                    return Err("Normalizer is not L1".into());
                }
                let mut linear = self.linear_classifier(&norm.input[0])?;
                if let Transform::Direct { l1, .. } = &mut linear.transform {
                    *l1 = true;
                }
                Ok(linear)
            }
            "Exp" => self.naive_bayes("probabilities"),
            "Softmax" => self.int8_softmax(),
            "Div" => self.calibrated(),
            other => Err(format!("probabilities is computed by {other}")),
        }
    }

    /// A `LinearClassifier` on `features` whose second output is `scores`.
    fn linear_classifier(&self, scores: &str) -> Result<LinearGraph, String> {
        let node = self.node(scores, "LinearClassifier", 1)?;
        if node.input[0] != "features" || node.output.len() != 2 || node.output[1] != scores {
            return Err("LinearClassifier does not map features to the scores".into());
        }
        Self::check_attributes(node, &["classlabels_ints", "coefficients", "intercepts", "multi_class", "post_transform"])?;
        let labels = Self::ints_attribute(node, "classlabels_ints").unwrap_or_default();
        let k = labels.len();
        if k < 2 || labels.iter().enumerate().any(|(i, &l)| l != i as i64) {
            return Err(format!("LinearClassifier class labels {labels:?} are not 0..K-1"));
        }
        let coefficients = Self::attribute(node, "coefficients").map(|a| a.floats.clone()).unwrap_or_default();
        let intercepts = Self::attribute(node, "intercepts").map(|a| a.floats.clone()).unwrap_or_default();
        if intercepts.len() != k || coefficients.is_empty() || coefficients.len() % k != 0 {
            return Err(format!(
                "LinearClassifier has {} coefficients and {} intercepts for {k} classes",
                coefficients.len(),
                intercepts.len()
            ));
        }
        let post = match Self::attribute(node, "post_transform").map_or(&b"NONE"[..], |a| a.s()) {
            b"NONE" => Post::None,
            b"LOGISTIC" => Post::Logistic,
            b"SOFTMAX" => Post::Softmax,
            other => return Err(format!("post_transform {} is not read", String::from_utf8_lossy(other))),
        };
        Ok(LinearGraph {
            n_features: coefficients.len() / k,
            coefficients,
            intercepts,
            n_classes: k,
            transform: Transform::Direct { post, l1: false },
        })
    }

    /// Complement naive Bayes: `exp(s - reshape(ReduceLogSumExp(s)))`, `s = MatMul(features, W)`.
    fn naive_bayes(&self, probabilities: &str) -> Result<LinearGraph, String> {
        let exp = self.node(probabilities, "Exp", 1)?;
        let sub = self.node(&exp.input[0], "Sub", 2)?;
        let scores = sub.input[0].as_str();
        let reshape = self.node(&sub.input[1], "Reshape", 2)?;
        if self.ints(&reshape.input[1])? != [-1, 1] {
            return Err("the log-sum-exp is not reshaped to [-1, 1]".into());
        }
        let lse = self.node(&reshape.input[0], "ReduceLogSumExp", 1)?;
        Self::check_attributes(lse, &["axes", "keepdims"])?;
        if lse.input[0] != scores
            || Self::ints_attribute(lse, "axes").as_deref() != Some(&[1][..])
            || Self::int_attribute(lse, "keepdims", 1) != 0
        {
            return Err("ReduceLogSumExp is not over the classes of the scores".into());
        }
        let matmul = self.node(scores, "MatMul", 2)?;
        if matmul.input[0] != "features" {
            return Err("MatMul does not multiply features".into());
        }
        let weights = self.tensors.get(matmul.input[1].as_str()).ok_or("MatMul weights are not a constant")?;
        let (d, k) = match weights.dims[..] {
            [d, k] if d > 0 && k >= 2 => (d as usize, k as usize),
            _ => return Err(format!("MatMul weights have dims {:?}", weights.dims)),
        };
        let w = self.floats(&matmul.input[1])?;
        // [D, K] -> K x D rows, as a LinearClassifier stores them.
        let coefficients = (0..k).flat_map(|c| (0..d).map(move |j| w[j * k + c] as f32)).collect();
        Ok(LinearGraph {
            coefficients,
            intercepts: vec![0.0; k],
            n_classes: k,
            n_features: d,
            transform: Transform::Direct { post: Post::Softmax, l1: false },
        })
    }

    /// The int8 graph of foundry/quantized.py:
    /// `W = Mul(Cast(W_q int8 [D, K], to=FLOAT), scale [1, K])`,
    /// `probabilities = Softmax(Add(MatMul(features, W), b [K]))`,
    /// `label = ArgMax(probabilities, axis=1, keepdims=0)`, with `W_q` a constant or rebuilt
    /// from its sparse entries ([`Reader::sparse_weights`]); dequantised here once.
    fn int8_softmax(&self) -> Result<LinearGraph, String> {
        let softmax = self.node("probabilities", "Softmax", 1)?;
        Self::check_attributes(softmax, &["axis"])?;
        if !matches!(Self::int_attribute(softmax, "axis", -1), -1 | 1) {
            return Err("Softmax is not over the classes".into());
        }
        let argmax = self.node("label", "ArgMax", 1)?;
        Self::check_attributes(argmax, &["axis", "keepdims"])?;
        if argmax.input[0] != "probabilities"
            || Self::int_attribute(argmax, "axis", 0) != 1
            || Self::int_attribute(argmax, "keepdims", 1) != 0
        {
            return Err("label is not the ArgMax of the probabilities over the classes".into());
        }
        let add = self.node(&softmax.input[0], "Add", 2)?;
        let intercepts: Vec<f32> = self.floats(&add.input[1])?.iter().map(|&v| v as f32).collect();
        let matmul = self.node(&add.input[0], "MatMul", 2)?;
        if matmul.input[0] != "features" {
            return Err("MatMul does not multiply features".into());
        }
        let mul = self.node(&matmul.input[1], "Mul", 2)?;
        let cast = self.node(&mul.input[0], "Cast", 1)?;
        Self::check_attributes(cast, &["to"])?;
        if Self::int_attribute(cast, "to", 0) != 1 {
            return Err("Cast does not produce float32".into());
        }
        let scale = self.floats(&mul.input[1])?;
        let source = cast.input[0].as_str();
        let (d, k, w) = if self.producer.contains_key(source) {
            if self.tensors.contains_key(source) {
                return Err(format!("{source} is both a constant and computed"));
            }
            let k = intercepts.len();
            if k < 2 || scale.len() != k {
                return Err(format!("{} scales and {k} intercepts", scale.len()));
            }
            let (d, w) = self.sparse_weights(source, k)?;
            (d, k, w)
        } else {
            let quantized = self.tensors.get(source).ok_or("the int8 weights are not a constant")?;
            let (d, k) = match quantized.dims[..] {
                [d, k] if d > 0 && k >= 2 => (d as usize, k as usize),
                _ => return Err(format!("the int8 weights have dims {:?}", quantized.dims)),
            };
            if scale.len() != k || intercepts.len() != k {
                return Err(format!("{} scales and {} intercepts for {k} classes", scale.len(), intercepts.len()));
            }
            let w: Option<Vec<i8>> = self.ints(source)?.iter().map(|&v| i8::try_from(v).ok()).collect();
            (d, k, w.ok_or("the quantised weights are not int8")?)
        };
        // As ONNX Runtime computes it: float32(W_q) * float32(scale), then K x D rows.
        let scale32: Vec<f32> = scale.iter().map(|&v| v as f32).collect();
        let w = &w;
        let coefficients = (0..k).flat_map(|c| {
            let s = scale32[c];
            (0..d).map(move |j| w[j * k + c] as f32 * s)
        }).collect();
        Ok(LinearGraph {
            coefficients,
            intercepts,
            n_classes: k,
            n_features: d,
            transform: Transform::Direct { post: Post::Softmax, l1: false },
        })
    }

    /// The integer constant `name` of ONNX type `data_type` whose dims are one of `shapes`
    /// (`None`: any rank 1).
    fn int_constant(&self, name: &str, data_type: i32, shapes: Option<&[&[i64]]>) -> Result<&[i64], String> {
        let (dims, values) = match self.tensors.get(name) {
            Some(Tensor { dims, data_type: t, values: Values::Int(v) }) if *t == data_type => (dims, v),
            _ => return Err(format!("sparse int8 weights: {name} is not a constant of data type {data_type}")),
        };
        let fits = match shapes {
            None => dims.len() == 1,
            Some(shapes) => shapes.contains(&dims.as_slice()),
        };
        if !fits {
            return Err(format!("sparse int8 weights: {name} has dims {dims:?}"));
        }
        Ok(values)
    }

    /// The int8 `W_q` (`D x K`, row-major) computed as the sparse layout of
    /// foundry/quantized.py writes it:
    /// `Reshape(ScatterElements(ConstantOfShape(W_size, value=int8 [0]),
    /// CumSum(Cast(W_gaps, to=INT64), W_axis), W_values, axis=0), W_shape)`
    /// with `W_gaps` uint8 `[n]`, `W_values` int8 `[n]`, `W_axis` int64 0, `W_size` int64
    /// `[1]` = `[D K]`, `W_shape` int64 `[2]` = `[D, K]` (`D` the declared features, at most
    /// MAX_VOCABULARY; `K` the intercepts, at most MAX_LABELS), every gap after the first at
    /// least 1 and the last position `< D K`. Returns `(D, W_q)`; the shape is checked before
    /// the matrix is allocated.
    fn sparse_weights(&self, w_q: &str, k: usize) -> Result<(usize, Vec<i8>), String> {
        let reshape = self.node(w_q, "Reshape", 2)?;
        Self::check_attributes(reshape, &[])?;
        let scatter = self.node(&reshape.input[0], "ScatterElements", 3)?;
        Self::check_attributes(scatter, &["axis"])?;
        let zeros = self.node(&scatter.input[0], "ConstantOfShape", 1)?;
        Self::check_attributes(zeros, &["value"])?;
        let cumsum = self.node(&scatter.input[1], "CumSum", 2)?;
        Self::check_attributes(cumsum, &["exclusive", "reverse"])?;
        let steps = self.node(&cumsum.input[0], "Cast", 1)?;
        Self::check_attributes(steps, &["to"])?;
        if Self::int_attribute(scatter, "axis", 0) != 0
            || Self::int_attribute(cumsum, "exclusive", 0) != 0
            || Self::int_attribute(cumsum, "reverse", 0) != 0
            || Self::int_attribute(steps, "to", 0) != 7
        {
            return Err("the sparse int8 weights are not rebuilt as ScatterElements(axis=0) at CumSum(Cast(gaps, to=INT64))".into());
        }
        let zero = Self::attribute(zeros, "value").and_then(|a| a.t.as_ref());
        match zero.map(decode_tensor).transpose()? {
            Some(Tensor { data_type: 3, values: Values::Int(v), .. }) if v == [0] => {}
            _ => return Err("sparse int8 weights: ConstantOfShape's value is not the int8 0".into()),
        }
        let gaps = self.int_constant(&steps.input[0], 2, None)?;
        let values = self.int_constant(&scatter.input[2], 3, None)?;
        if self.int_constant(&cumsum.input[1], 7, Some(&[&[], &[1]]))? != [0] {
            return Err("sparse int8 weights: CumSum is not over axis 0".into());
        }
        let size = self.int_constant(&zeros.input[0], 7, Some(&[&[1]]))?;
        let d = self.n_features;
        match self.int_constant(&reshape.input[1], 7, Some(&[&[2]]))? {
            [rows, columns] if *rows == d as i64 && *columns == k as i64 && d <= MAX_VOCABULARY && k <= MAX_LABELS => {}
            shape => {
                return Err(format!(
                    "sparse int8 weights: W_shape {shape:?} is not [D, K] with D = {d} (the declared features, at most \
                     {MAX_VOCABULARY}) and K = {k} (the intercepts, at most {MAX_LABELS})"
                ))
            }
        }
        let n = d * k;
        if size != [n as i64] {
            return Err(format!("sparse int8 weights: W_size {size:?} is not [{d} * {k}]"));
        }
        if gaps.len() != values.len() {
            return Err(format!("sparse int8 weights: {} gaps but {} values", gaps.len(), values.len()));
        }
        if gaps.len() > n {
            return Err(format!("sparse int8 weights: {} entries in {n} positions", gaps.len()));
        }
        let mut w = vec![0i8; n];
        let mut position = 0i64;
        for (i, (&gap, &value)) in gaps.iter().zip(values).enumerate() {
            if !(0..=255).contains(&gap) || !(-128..=127).contains(&value) {
                return Err(format!("sparse int8 weights: entry {i} has gap {gap} and value {value}"));
            }
            if i > 0 && gap == 0 {
                return Err(format!("sparse int8 weights: gap {i} is 0 (a repeated position)"));
            }
            position += gap;
            if position >= n as i64 {
                return Err(format!("sparse int8 weights: position {position} is past the {d} x {k} matrix"));
            }
            w[position as usize] = value as i8;
        }
        Ok((d, w))
    }

    /// The calibrated graph: `probabilities = Sum(x) / 1` over the calibrated classes.
    fn calibrated(&self) -> Result<LinearGraph, String> {
        let div = self.node("probabilities", "Div", 2)?;
        self.expect_scalar(&div.input[1], 1.0)?; // one calibrated classifier (ensemble=False)
        let sum = self.node(&div.input[0], "Sum", 1)?;
        let (columns, binary) = match self.producer.get(sum.input[0].as_str()).map(|n| n.op_type()) {
            Some("Concat") => (self.binary_columns(&sum.input[0])?, true),
            _ => (self.normalised_columns(&sum.input[0])?, false),
        };
        let mut scores = None;
        let mut calibrators = Vec::new();
        for p in columns {
            let (source, column, calibrator) = self.calibrator(p)?;
            if scores.get_or_insert(source) != &source {
                return Err("the calibrators read different score tensors".into());
            }
            calibrators.push((column, calibrator));
        }
        let scores = scores.ok_or("no calibrator")?;
        let mut linear = match self.producer.get(scores).map(|n| n.op_type()) {
            Some("Exp") => self.naive_bayes(scores)?,
            _ => self.linear_classifier(scores)?,
        };
        let post = match linear.transform {
            Transform::Direct { post, .. } => post,
            _ => unreachable!(),
        };
        if calibrators.iter().any(|(c, _)| *c >= linear.n_classes)
            || (binary && linear.n_classes != 2)
            || (!binary && calibrators.len() != linear.n_classes)
        {
            return Err(format!("{} calibrators do not fit {} classes", calibrators.len(), linear.n_classes));
        }
        linear.transform = Transform::Calibrated { post, calibrators, binary };
        Ok(linear)
    }

    /// Binary: `Concat(1 - p, p)` on axis 1; returns `[p]`.
    fn binary_columns(&self, merged: &str) -> Result<Vec<&'a str>, String> {
        let concat = self.node(merged, "Concat", 2)?;
        if Self::int_attribute(concat, "axis", 0) != 1 {
            return Err("Concat is not on axis 1".into());
        }
        let complement = self.node(&concat.input[0], "Sub", 2)?;
        self.expect_scalar(&complement.input[0], 1.0)?;
        if complement.input[1] != concat.input[1] {
            return Err("the first column is not 1 - the second".into());
        }
        Ok(vec![concat.input[1].as_str()])
    }

    /// Multi-class: `(c + m) / (sum(c) + m K)` with `m = (sum(c) == 0)`, `c = Concat(p_0..)`.
    fn normalised_columns(&self, normalised: &str) -> Result<Vec<&'a str>, String> {
        let div = self.node(normalised, "Div", 2)?;
        let masked = self.node(&div.input[0], "Add", 2)?;
        let concat = self.variadic(&masked.input[0], "Concat")?;
        if Self::int_attribute(concat, "axis", 0) != 1 {
            return Err("Concat is not on axis 1".into());
        }
        let mask = masked.input[1].as_str();
        let cast_mask = self.node(mask, "Cast", 1)?;
        let not = self.node(&cast_mask.input[0], "Not", 1)?;
        let cast_bool = self.node(&not.input[0], "Cast", 1)?;
        let total = cast_bool.input[0].as_str();
        let reduce = self.node(total, "ReduceSum", 2)?;
        if Self::int_attribute(cast_mask, "to", 0) != 1
            || Self::int_attribute(cast_bool, "to", 0) != 9
            || reduce.input[0] != concat.output[0]
            || self.ints(&reduce.input[1])? != [1]
            || Self::int_attribute(reduce, "keepdims", 1) != 1
        {
            return Err("the calibrated columns are not normalised by their sum".into());
        }
        let denominator = self.node(&div.input[1], "Add", 2)?;
        let scaled = self.node(&denominator.input[1], "Mul", 2)?;
        if denominator.input[0] != total || scaled.input[0] != mask {
            return Err("the calibrated columns are not normalised by their sum".into());
        }
        self.expect_scalar(&scaled.input[1], concat.input.len() as f64)?;
        Ok(concat.input.iter().map(|p| p.as_str()).collect())
    }

    /// One calibrator computing `p`: `(score tensor, column, map)`.
    fn calibrator(&self, p: &str) -> Result<(&'a str, usize, Calibrator), String> {
        let node = self.producer.get(p).ok_or_else(|| format!("{p} is computed by no node"))?;
        match node.op_type() {
            "Div" => self.sigmoid(p),
            "Add" => self.isotonic(p),
            other => Err(format!("calibrated column {p} is computed by {other}")),
        }
    }

    /// `ArrayFeatureExtractor(scores, k)`: `(scores, k)`.
    fn column(&self, tensor: &str) -> Result<(&'a str, usize), String> {
        let extract = self.node(tensor, "ArrayFeatureExtractor", 2)?;
        match self.ints(&extract.input[1])? {
            [k] if *k >= 0 => Ok((extract.input[0].as_str(), *k as usize)),
            other => Err(format!("column index {other:?}")),
        }
    }

    /// `1 / (1 + exp(a t + b))`.
    fn sigmoid(&self, p: &str) -> Result<(&'a str, usize, Calibrator), String> {
        let div = self.node(p, "Div", 2)?;
        self.expect_scalar(&div.input[0], 1.0)?;
        let (one, exp) = self.split(self.node(&div.input[1], "Add", 2)?)?;
        if one != 1.0 {
            return Err(format!("the sigmoid adds {one}, not 1"));
        }
        let exponent = self.node(exp, "Exp", 1)?;
        let (b, product) = self.split(self.node(&exponent.input[0], "Add", 2)?)?;
        let (a, column) = self.split(self.node(product, "Mul", 2)?)?;
        let (scores, k) = self.column(column)?;
        Ok((scores, k, Calibrator::Sigmoid { a, b }))
    }

    /// The three forms of `foundry/onnx_isotonic.py`'s interpolation graph.
    fn isotonic(&self, p: &str) -> Result<(&'a str, usize, Calibrator), String> {
        let add = self.node(p, "Add", 2)?;
        let clip_of = |tensor: &str| -> Result<(&'a str, f64, f64, &'a str, usize), String> {
            let clip = self.node(tensor, "Clip", 3)?;
            let reshape = self.node(&clip.input[0], "Reshape", 2)?;
            if self.ints(&reshape.input[1])? != [-1, 1] {
                return Err("the isotonic input is not reshaped to [-1, 1]".into());
            }
            let (scores, k) = self.column(&reshape.input[0])?;
            Ok((clip.output[0].as_str(), self.scalar(&clip.input[1])?, self.scalar(&clip.input[2])?, scores, k))
        };
        let constant = add.input.iter().find(|i| self.tensors.contains_key(i.as_str()));
        if constant.is_some() {
            // One segment: (t - x0) * slope + y0; or a constant: t * 0 + y0.
            let (y0, rise) = self.split(add)?;
            let (slope, offset) = self.split(self.node(rise, "Mul", 2)?)?;
            if let Ok(sub) = self.node(offset, "Sub", 2) {
                let x0 = self.scalar(&sub.input[1])?;
                let (_, min, max, scores, k) = clip_of(&sub.input[0])?;
                let calibrator = Calibrator::Isotonic { min, max, inner: vec![], x_lo: vec![x0], y_lo: vec![y0], slopes: vec![slope] };
                return Ok((scores, k, calibrator));
            }
            if slope != 0.0 {
                return Err("a constant isotonic map multiplies by a non-zero".into());
            }
            let (_, min, max, scores, k) = clip_of(offset)?;
            let calibrator = Calibrator::Isotonic { min, max, inner: vec![], x_lo: vec![0.0], y_lo: vec![y0], slopes: vec![0.0] };
            return Ok((scores, k, calibrator));
        }
        // y_lo[i] + (t - x_lo[i]) * slope[i], i = ReduceSum(Cast(LessOrEqual(inner, t))).
        let y_at = self.node(&add.input[0], "Gather", 2)?;
        let rise = self.node(&add.input[1], "Mul", 2)?;
        let offset = self.node(&rise.input[0], "Sub", 2)?;
        let slope_at = self.node(&rise.input[1], "Gather", 2)?;
        let x_at = self.node(&offset.input[1], "Gather", 2)?;
        let (clipped, min, max, scores, k) = clip_of(&offset.input[0])?;
        let index = y_at.input[1].as_str();
        if slope_at.input[1] != index || x_at.input[1] != index {
            return Err("the isotonic look-ups use different indices".into());
        }
        let reduce = self.node(index, "ReduceSum", 2)?;
        let cast = self.node(&reduce.input[0], "Cast", 1)?;
        let less = self.node(&cast.input[0], "LessOrEqual", 2)?;
        if less.input[1] != clipped
            || Self::int_attribute(cast, "to", 0) != 7
            || self.ints(&reduce.input[1])? != [1]
            || Self::int_attribute(reduce, "keepdims", 1) != 1
        {
            return Err("the isotonic segment index is not the count of thresholds passed".into());
        }
        for gather in [y_at, slope_at, x_at] {
            if Self::int_attribute(gather, "axis", 0) != 0 {
                return Err("Gather is not on axis 0".into());
            }
        }
        let inner = self.floats(&less.input[0])?.to_vec();
        let (x_lo, y_lo, slopes) = (
            self.floats(&x_at.input[0])?.to_vec(),
            self.floats(&y_at.input[0])?.to_vec(),
            self.floats(&slope_at.input[0])?.to_vec(),
        );
        if [x_lo.len(), y_lo.len(), slopes.len()] != [inner.len() + 1; 3] {
            return Err("the isotonic thresholds and segments do not fit".into());
        }
        Ok((scores, k, Calibrator::Isotonic { min, max, inner, x_lo, y_lo, slopes }))
    }
}

/// ONNX Runtime's logistic: `1 / (1 + exp(-|x|))`, mirrored for negative `x`.
#[inline]
pub fn logistic(x: f64) -> f64 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

impl Post {
    #[inline]
    fn apply(self, values: &mut [f64]) {
        match self {
            Post::None => {}
            Post::Logistic => values.iter_mut().for_each(|v| *v = logistic(*v)),
            Post::Softmax => {
                let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                for v in values.iter_mut() {
                    *v = (*v - top).exp();
                    total += *v;
                }
                values.iter_mut().for_each(|v| *v /= total);
            }
        }
    }
}

impl Calibrator {
    #[inline]
    pub fn apply(&self, t: f64) -> f64 {
        match self {
            Calibrator::Sigmoid { a, b } => 1.0 / (1.0 + (a * t + b).exp()),
            Calibrator::Isotonic { min, max, inner, x_lo, y_lo, slopes } => {
                let t = t.max(*min).min(*max);
                let i = inner.iter().filter(|&&x| x <= t).count();
                y_lo[i] + (t - x_lo[i]) * slopes[i]
            }
        }
    }
}

impl Transform {
    /// Raw scores `s` (length K) -> probabilities in `out` (length K). `s` is overwritten.
    #[inline]
    pub fn apply(&self, s: &mut [f64], out: &mut [f64]) {
        match self {
            Transform::Direct { post, l1 } => {
                post.apply(s);
                if *l1 {
                    let total: f64 = s.iter().map(|v| v.abs()).sum();
                    for (o, v) in out.iter_mut().zip(s.iter()) {
                        *o = if total > 0.0 { v / total } else { 0.0 };
                    }
                } else {
                    out.copy_from_slice(s);
                }
            }
            Transform::Calibrated { post, calibrators, binary } => {
                post.apply(s);
                if *binary {
                    let (column, calibrator) = &calibrators[0];
                    let p = calibrator.apply(s[*column]);
                    out[0] = 1.0 - p;
                    out[1] = p;
                    return;
                }
                let mut total = 0.0;
                for (o, (column, calibrator)) in out.iter_mut().zip(calibrators) {
                    *o = calibrator.apply(s[*column]);
                    total += *o;
                }
                let mask = if total == 0.0 { 1.0 } else { 0.0 };
                let k = out.len() as f64;
                out.iter_mut().for_each(|o| *o = (*o + mask) / (total + mask * k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::onnx::tensor_shape_proto::Dimension;
    use crate::proto::onnx::{GraphProto, TensorShapeProto, TypeProto};

    const D: usize = 120;
    const K: usize = 3;

    /// A `[D, K]` int8 matrix, mostly zero, with runs of zeros longer than a gap of 255.
    fn matrix() -> Vec<i8> {
        let mut w = vec![0i8; D * K];
        for (i, p) in [0usize, 1, 7, 8, 300, 301, 359].iter().enumerate() {
            w[*p] = if i % 2 == 0 { 100 - i as i8 * 20 } else { -127 + i as i8 };
        }
        w
    }

    /// `(gaps, values)` of `w` as foundry.quantized.sparse_entries writes them.
    fn entries(w: &[i8]) -> (Vec<u8>, Vec<i8>) {
        let (mut gaps, mut values, mut last) = (vec![], vec![], 0usize);
        for (p, &v) in w.iter().enumerate().filter(|(_, &v)| v != 0) {
            let mut step = p - last;
            while step > 255 {
                gaps.push(255);
                values.push(0);
                step -= 255;
            }
            gaps.push(step as u8);
            values.push(v);
            last = p;
        }
        (gaps, values)
    }

    fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto { name: Some(name.into()), data_type: Some(data_type), dims: dims.to_vec(), raw_data: Some(raw), ..Default::default() }
    }

    fn int64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
        tensor(name, 7, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        tensor(name, 1, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn int_attr(name: &str, i: i64) -> AttributeProto {
        AttributeProto { name: Some(name.into()), i: Some(i), r#type: Some(2), ..Default::default() }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> ValueInfoProto {
        let dim = dims.iter().map(|d| Dimension { value: d.map(DimValue::DimValue) }).collect();
        let tensor = type_proto::Tensor { elem_type: Some(elem), shape: Some(TensorShapeProto { dim }) };
        ValueInfoProto { name: Some(name.into()), r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)) }) }
    }

    /// The graph of foundry.quantized.quantized_onnx for `matrix()`: `W_q` dense, or sparse.
    fn graph(sparse: bool) -> GraphProto {
        let w = matrix();
        let scale: Vec<f32> = (0..K).map(|c| 0.01 * (c + 1) as f32).collect();
        let mut initializer = vec![floats("W_scale", &[1, K as i64], &scale), floats("b", &[K as i64], &[0.5, -0.25, 0.0])];
        let mut node_list = vec![];
        if sparse {
            let (gaps, values) = entries(&w);
            let n = gaps.len() as i64;
            initializer.extend([
                tensor("W_gaps", 2, &[n], gaps),
                tensor("W_values", 3, &[n], values.iter().map(|&v| v as u8).collect()),
                int64s("W_axis", &[], &[0]),
                int64s("W_size", &[1], &[(D * K) as i64]),
                int64s("W_shape", &[2], &[D as i64, K as i64]),
            ]);
            let zero = AttributeProto { name: Some("value".into()), t: Some(tensor("zero", 3, &[1], vec![0])), r#type: Some(4), ..Default::default() };
            node_list.extend([
                node("Cast", &["W_gaps"], "W_steps", vec![int_attr("to", 7)]),
                node("CumSum", &["W_steps", "W_axis"], "W_positions", vec![]),
                node("ConstantOfShape", &["W_size"], "W_zeros", vec![zero]),
                node("ScatterElements", &["W_zeros", "W_positions", "W_values"], "W_flat", vec![int_attr("axis", 0)]),
                node("Reshape", &["W_flat", "W_shape"], "W_q", vec![]),
            ]);
        } else {
            initializer.push(tensor("W_q", 3, &[D as i64, K as i64], w.iter().map(|&v| v as u8).collect()));
        }
        node_list.extend([
            node("Cast", &["W_q"], "W_f", vec![int_attr("to", 1)]),
            node("Mul", &["W_f", "W_scale"], "W", vec![]),
            node("MatMul", &["features", "W"], "scores", vec![]),
            node("Add", &["scores", "b"], "logits", vec![]),
            node("Softmax", &["logits"], "probabilities", vec![int_attr("axis", -1)]),
            node("ArgMax", &["probabilities"], "label", vec![int_attr("axis", 1), int_attr("keepdims", 0)]),
        ]);
        GraphProto {
            name: Some("t_classifier".into()),
            node: node_list,
            initializer,
            input: vec![value_info("features", 1, &[None, Some(D as i64)])],
            output: vec![value_info("label", 7, &[None]), value_info("probabilities", 1, &[None, Some(K as i64)])],
            ..Default::default()
        }
    }

    fn read(graph: GraphProto) -> Result<LinearGraph, (&'static str, String)> {
        let model = ModelProto { ir_version: Some(8), graph: Some(graph), ..Default::default() };
        read_onnx(&model.encode_to_vec(), D, K, "t_preprocessor.bin")
    }

    /// The graph of `graph(true)` after `edit`, refused under rule O1 with `expected` in the message.
    fn refused(edit: impl FnOnce(&mut GraphProto), expected: &str) {
        let mut g = graph(true);
        edit(&mut g);
        match read(g) {
            Err((rule, message)) => {
                assert_eq!(rule, "O1", "{message}");
                assert!(message.contains(expected), "{expected:?} not in {message:?}");
            }
            Ok(_) => panic!("accepted; expected a refusal with {expected:?}"),
        }
    }

    fn init<'g>(g: &'g mut GraphProto, name: &str) -> &'g mut TensorProto {
        g.initializer.iter_mut().find(|t| t.name() == name).unwrap()
    }

    fn op<'g>(g: &'g mut GraphProto, output: &str) -> &'g mut NodeProto {
        g.node.iter_mut().find(|n| n.output[0] == output).unwrap()
    }

    #[test]
    fn the_sparse_int8_layout_reads_as_the_dense_matrix() {
        let (gaps, _) = entries(&matrix());
        assert!(gaps.len() > 7, "the fixture needs filler entries");
        let dense = read(graph(false)).unwrap();
        let sparse = read(graph(true)).unwrap();
        assert_eq!((sparse.n_features, sparse.n_classes), (D, K));
        assert_eq!(sparse.coefficients, dense.coefficients);
        assert_eq!(sparse.intercepts, dense.intercepts);
        assert_eq!(sparse.transform, Transform::Direct { post: Post::Softmax, l1: false });
        // Row c of the K x D coefficients is column c of W_q times scale[c].
        let w = matrix();
        assert_eq!(sparse.coefficients[D + 2], w[2 * K + 1] as f32 * 0.02);
        // No entries at all (every weight zero) is a valid matrix; so is int32_data storage.
        let mut g = graph(true);
        init(&mut g, "W_gaps").raw_data = Some(vec![]);
        init(&mut g, "W_gaps").dims = vec![0];
        init(&mut g, "W_values").raw_data = Some(vec![]);
        init(&mut g, "W_values").dims = vec![0];
        assert!(read(g).unwrap().coefficients.iter().all(|&c| c == 0.0));
        let mut g = graph(true);
        let (gaps, values) = entries(&w);
        let gaps_t = init(&mut g, "W_gaps");
        gaps_t.raw_data = None;
        gaps_t.int32_data = gaps.iter().map(|&v| v as i32).collect();
        let values_t = init(&mut g, "W_values");
        values_t.raw_data = None;
        values_t.int32_data = values.iter().map(|&v| v as i32).collect();
        assert_eq!(read(g).unwrap().coefficients, dense.coefficients);
    }

    #[test]
    fn invalid_sparse_entries_are_refused() {
        refused(|g| {
            let t = init(g, "W_values");
            t.raw_data.as_mut().unwrap().pop();
            t.dims = vec![t.dims[0] - 1];
        }, "gaps but");
        refused(|g| init(g, "W_gaps").raw_data.as_mut().unwrap()[3] = 0, "a repeated position");
        refused(|g| *init(g, "W_gaps").raw_data.as_mut().unwrap().last_mut().unwrap() = 255, "past the 120 x 3 matrix");
        refused(|g| *init(g, "W_size") = int64s("W_size", &[1], &[(D * K + 1) as i64]), "W_size");
        refused(|g| *init(g, "W_size") = int64s("W_size", &[], &[(D * K) as i64]), "W_size has dims");
        refused(|g| *init(g, "W_shape") = int64s("W_shape", &[2], &[K as i64, D as i64]), "W_shape [3, 120]");
        refused(|g| *init(g, "W_shape") = int64s("W_shape", &[3], &[D as i64, K as i64, 1]), "W_shape has dims");
        refused(|g| *init(g, "W_shape") = int64s("W_shape", &[2], &[-(D as i64), -(K as i64)]), "is not [D, K]");
        // A huge matrix is refused before it is allocated: its shape must be the .bin's.
        refused(|g| {
            *init(g, "W_shape") = int64s("W_shape", &[2], &[D as i64, 1 << 40]);
            *init(g, "W_size") = int64s("W_size", &[1], &[(D as i64) << 40]);
        }, "is not [D, K]");
        refused(|g| {
            *init(g, "W_shape") = int64s("W_shape", &[2], &[1 << 30, K as i64]);
            *init(g, "W_size") = int64s("W_size", &[1], &[(K as i64) << 30]);
        }, "is not [D, K]");
        refused(|g| init(g, "W_gaps").data_type = Some(3), "W_gaps is not a constant of data type 2");
        refused(|g| init(g, "W_values").data_type = Some(2), "W_values is not a constant of data type 3");
        refused(|g| *init(g, "W_axis") = int64s("W_axis", &[], &[1]), "not over axis 0");
        refused(|g| {
            let t = init(g, "W_gaps");
            t.raw_data = None;
            t.int32_data = vec![256; t.dims[0] as usize];
        }, "gap 256");
    }

    #[test]
    fn other_nodes_or_attributes_are_refused() {
        refused(|g| op(g, "W_flat").attribute[0].i = Some(1), "ScatterElements(axis=0)");
        refused(|g| op(g, "W_flat").attribute.push(AttributeProto { name: Some("reduction".into()), s: Some(b"add".to_vec()), ..Default::default() }), "unexpected attribute reduction");
        refused(|g| op(g, "W_steps").attribute[0].i = Some(6), "Cast(gaps, to=INT64)");
        refused(|g| op(g, "W_positions").attribute.push(int_attr("exclusive", 1)), "CumSum");
        refused(|g| op(g, "W_positions").attribute.push(int_attr("reverse", 1)), "CumSum");
        refused(|g| op(g, "W_zeros").attribute[0].t = Some(tensor("zero", 3, &[1], vec![1])), "not the int8 0");
        refused(|g| op(g, "W_zeros").attribute[0].t = Some(floats("zero", &[1], &[0.0])), "not the int8 0");
        refused(|g| op(g, "W_zeros").attribute.clear(), "not the int8 0");
        refused(|g| op(g, "W_q").op_type = Some("Identity".into()), "expected Reshape");
        refused(|g| g.initializer.push(tensor("W_q", 3, &[D as i64, K as i64], vec![0; D * K])), "both a constant and computed");
        // The CumSum attributes written as 0 change nothing.
        let mut g = graph(true);
        op(&mut g, "W_positions").attribute.extend([int_attr("exclusive", 0), int_attr("reverse", 0)]);
        assert!(read(g).is_ok());
    }
}
