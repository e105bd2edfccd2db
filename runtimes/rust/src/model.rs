//! [`MicroModel`]: load and validate an artifact pair, then answer.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::ArtifactError;
use crate::graph::{self, LinearGraph, Transform};
use crate::proto::foundry_v1 as pb;
use crate::textspec::{Analyzer, InvalidCodePoint, Normalizer, NormalizerSettings};
use crate::vocabulary::GramIndex;

/// `.bin` layouts this runtime reads.
pub const SUPPORTED_FORMAT_VERSIONS: [u32; 1] = [1];

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index into [`MicroModel::labels`] of the top probability (the lowest index on ties).
    pub label: usize,
    /// One probability per label, in label order.
    pub probabilities: Vec<f64>,
    /// `probabilities[label] >= threshold`: when false, the caller should fall back.
    pub confident: bool,
    /// `probabilities[label]`.
    pub score: f64,
}

/// Reusable buffers of one thread's predictions (nothing in them outlives a call).
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    chars: Vec<char>,
    units: Vec<char>,
    hits: Vec<u32>,
    counts: Vec<u32>,
    distinct: Vec<u32>,
    sums: Vec<f64>,
    raw: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A loaded, validated micro-model. Create with [`MicroModel::load`].
#[derive(Debug, Clone)]
pub struct MicroModel {
    task: String,
    labels: Vec<String>,
    threshold: f64,
    preprocessor: pb::Preprocessor,
    normalizer: Normalizer,
    analyzer: Analyzer,
    index: GramIndex,
    n_features: usize,
    idf: Vec<f64>,
    idf2: Vec<f64>,
    sublinear_tf: bool,
    l2: bool,
    /// Score rows kept in `weights`: 1 for a binary model exported as rows `(-w, w)`.
    rows: usize,
    /// `D x rows`: `idf[j] * W[k][j]` at `j * rows + k`.
    weights: Vec<f64>,
    intercepts: Vec<f64>,
    transform: Transform,
    bin_path: PathBuf,
    onnx_path: PathBuf,
}

fn read_artifact(path: &Path, what: &str) -> Result<Vec<u8>, ArtifactError> {
    std::fs::read(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            ArtifactError::at(
                path.display(),
                format!("{what} not found; forge it with `foundry forge <blueprint>` or pass the right --models-dir"),
            )
        } else {
            ArtifactError::at(path.display(), format!("cannot read {what}: {err}"))
        }
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Decode and validate a `.bin` (`path` names it in errors).
///
/// # Errors
/// The checks of docs/preprocessor-spec.md, section 1, that need the `.bin` alone.
pub fn parse_preprocessor(data: &[u8], path: &Path) -> Result<pb::Preprocessor, ArtifactError> {
    let at = |what: String| ArtifactError::at(path.display(), what);
    let msg = pb::Preprocessor::decode(data).map_err(|err| {
        let reason = err.to_string();
        let reason = if reason.contains("buffer underflow") || reason.contains("length exceeded") {
            format!("it ends in the middle of a field ({reason})")
        } else {
            reason
        };
        at(format!("not a valid preprocessor file (truncated or corrupt): {reason}"))
    })?;
    if !SUPPORTED_FORMAT_VERSIONS.contains(&msg.format_version) {
        return Err(at(format!(
            "format_version {} is not supported by this runtime (supported: {}); re-export the model or upgrade the runtime",
            msg.format_version,
            SUPPORTED_FORMAT_VERSIONS.map(|v| v.to_string()).join(", ")
        )));
    }
    if msg.labels.len() < 2 {
        return Err(at(format!("needs at least 2 labels, has {}", msg.labels.len())));
    }
    if msg.labels.iter().collect::<HashSet<_>>().len() != msg.labels.len() {
        return Err(at(format!("labels {:?} have duplicates", msg.labels)));
    }
    if msg.vocabulary.is_empty() {
        return Err(at("empty vocabulary".into()));
    }
    let weighting = msg.weighting.clone().unwrap_or_default();
    if weighting.use_idf && msg.idf.len() != msg.vocabulary.len() {
        return Err(at(format!(
            "idf has {} values but the vocabulary has {} entries; the file is corrupt",
            msg.idf.len(),
            msg.vocabulary.len()
        )));
    }
    if msg.vocabulary.iter().collect::<HashSet<_>>().len() != msg.vocabulary.len() {
        return Err(at("vocabulary has duplicate entries; the file is corrupt".into()));
    }
    if !matches!(weighting.norm, 0 | 1) {
        return Err(at(format!("weighting.norm = {} is neither NORM_NONE (0) nor NORM_L2 (1)", weighting.norm)));
    }
    if !msg.threshold.is_finite() {
        return Err(at(format!("threshold {} is not a finite number", msg.threshold)));
    }
    if let Some(bad) = msg.idf.iter().find(|v| !v.is_finite()) {
        return Err(at(format!("idf holds {bad}, not a finite number; the file is corrupt")));
    }
    Ok(msg)
}

impl MicroModel {
    /// Load and validate `<task>_classifier.onnx` + `<task>_preprocessor.bin` from `models_dir`.
    ///
    /// # Errors
    /// [`ArtifactError`] naming the file: missing or corrupt, unsupported format or text spec
    /// version, another task's file, an `.onnx` whose SHA-256 differs from the one recorded in
    /// the `.bin`, a graph this runtime does not read, or labels / dimensions that disagree.
    pub fn load(task: &str, models_dir: impl AsRef<Path>) -> Result<Self, ArtifactError> {
        let dir = models_dir.as_ref();
        let bin_path = dir.join(format!("{task}_preprocessor.bin"));
        let onnx_path = dir.join(format!("{task}_classifier.onnx"));
        let bin = read_artifact(&bin_path, "preprocessor file")?;
        let onnx = read_artifact(&onnx_path, "classifier file")?;
        Self::from_bytes(task, &bin, &onnx, &bin_path, &onnx_path)
    }

    /// [`MicroModel::load`] from the two files' bytes (the paths only name them in errors).
    pub fn from_bytes(
        task: &str,
        bin: &[u8],
        onnx: &[u8],
        bin_path: &Path,
        onnx_path: &Path,
    ) -> Result<Self, ArtifactError> {
        let pre = parse_preprocessor(bin, bin_path)?;
        if pre.task != task {
            return Err(ArtifactError::at(bin_path.display(), format!("belongs to task {:?}, not {:?}", pre.task, task)));
        }
        let digest: String = Sha256::digest(onnx).iter().map(|b| format!("{b:02x}")).collect();
        if digest != pre.onnx_sha256 {
            let recorded: String = pre.onnx_sha256.chars().take(12).collect();
            return Err(ArtifactError::at(
                onnx_path.display(),
                format!(
                    "SHA-256 {}… does not match the {}… recorded in {}; the pair is mismatched (re-export both files together)",
                    &digest[..12],
                    if recorded.is_empty() { "(none)".to_string() } else { recorded },
                    file_name(bin_path)
                ),
            ));
        }
        let settings = NormalizerSettings::from_proto(pre.normalizer.as_ref())
            .map_err(|e| ArtifactError::at(bin_path.display(), e))?;
        let analyzer = Analyzer::from_proto(pre.analyzer.as_ref()).map_err(|e| ArtifactError::at(bin_path.display(), e))?;
        let graph = graph::read_onnx(onnx).map_err(|(corrupt, e)| {
            if corrupt {
                ArtifactError::at(onnx_path.display(), format!("not a valid ONNX model: {e}"))
            } else {
                ArtifactError::at(onnx_path.display(), e)
            }
        })?;
        if graph.n_features != pre.vocabulary.len() {
            return Err(ArtifactError::at(
                onnx_path.display(),
                format!(
                    "expects {} features but {} has a vocabulary of {}",
                    graph.n_features,
                    file_name(bin_path),
                    pre.vocabulary.len()
                ),
            ));
        }
        if graph.n_classes != pre.labels.len() {
            return Err(ArtifactError::at(
                onnx_path.display(),
                format!("{} classes but {} lists {} labels", graph.n_classes, file_name(bin_path), pre.labels.len()),
            ));
        }
        Ok(Self::build(task, pre, settings, analyzer, graph, bin_path, onnx_path))
    }

    fn build(
        task: &str,
        pre: pb::Preprocessor,
        settings: NormalizerSettings,
        analyzer: Analyzer,
        graph: LinearGraph,
        bin_path: &Path,
        onnx_path: &Path,
    ) -> Self {
        let weighting = pre.weighting.clone().unwrap_or_default();
        let d = pre.vocabulary.len();
        let k = graph.n_classes;
        let idf: Vec<f64> = if weighting.use_idf { pre.idf.clone() } else { vec![1.0; d] };
        let w = &graph.coefficients;
        let b = &graph.intercepts;
        // A binary logistic regression is exported as rows (-w, w), intercepts (-b, b): one
        // score row then suffices.
        let antisymmetric = k == 2 && b[0] == -b[1] && (0..d).all(|j| w[j] == -w[d + j]);
        let first_row = if antisymmetric { 1 } else { 0 };
        let rows = k - first_row;
        let mut weights = vec![0.0; d * rows];
        for r in 0..rows {
            for j in 0..d {
                weights[j * rows + r] = idf[j] * w[(first_row + r) * d + j] as f64;
            }
        }
        MicroModel {
            task: task.to_owned(),
            labels: pre.labels.clone(),
            threshold: pre.threshold,
            normalizer: Normalizer::new(&settings),
            index: GramIndex::new(&pre.vocabulary, analyzer.max_n),
            analyzer,
            n_features: d,
            idf2: idf.iter().map(|v| v * v).collect(),
            idf,
            sublinear_tf: weighting.sublinear_tf,
            l2: weighting.norm == 1,
            rows,
            weights,
            intercepts: b.iter().map(|&v| v as f64).collect(),
            transform: graph.transform,
            bin_path: bin_path.to_owned(),
            onnx_path: onnx_path.to_owned(),
            preprocessor: pre,
        }
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    /// Class names; `labels()[k]` is column `k` of the probabilities.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// `D`, the number of feature columns (vocabulary size).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The decoded `.bin` (provenance, Unicode version of the trainer, ...).
    pub fn preprocessor(&self) -> &pb::Preprocessor {
        &self.preprocessor
    }

    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// The `.bin` and `.onnx` paths the model was loaded from.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.bin_path, &self.onnx_path)
    }

    /// Steps 1-5: the normalised text.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text)
    }

    /// Steps 1-7: the normalised text and the non-zero features `(column, value)`, ascending,
    /// in float64 (before the float32 cast of step 7.4).
    pub fn featurize(&self, text: &str) -> (String, Vec<(usize, f64)>) {
        let mut scratch = Scratch::default();
        self.collect_hits(text.chars().map(|c| c as u32), &mut scratch).expect("a str holds scalar values");
        let mut counts: Vec<(usize, u32)> = Vec::new();
        scratch.hits.sort_unstable();
        for &col in &scratch.hits {
            match counts.last_mut() {
                Some((last, n)) if *last == col as usize => *n += 1,
                _ => counts.push((col as usize, 1)),
            }
        }
        let mut row: Vec<(usize, f64)> = counts.iter().map(|&(col, n)| (col, self.tf(n) * self.idf[col])).collect();
        if self.l2 {
            let norm = row.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|(_, v)| *v /= norm);
            }
        }
        (scratch.chars.iter().collect(), row)
    }

    #[inline(always)]
    fn tf(&self, count: u32) -> f64 {
        if count == 1 {
            1.0
        } else if self.sublinear_tf {
            1.0 + (count as f64).ln()
        } else {
            count as f64
        }
    }

    /// Steps 1-6: normalise `cps` into `scratch.chars`, and list the vocabulary columns of its
    /// n-grams (with repeats) in `scratch.hits`.
    #[inline]
    fn collect_hits<I>(&self, cps: I, scratch: &mut Scratch) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32> + Clone,
    {
        self.normalizer.normalize_into(cps, &mut scratch.chars)?;
        scratch.hits.clear();
        let Scratch { chars, units, hits, .. } = scratch;
        let (index, analyzer) = (&self.index, &self.analyzer);
        analyzer.for_each_unit(chars, units, |unit| index.hits(unit, analyzer, hits));
        Ok(())
    }

    /// The probabilities of the text given as code points `cps`, into `out` (length K).
    /// This is the whole answer path; `scratch` may be reused across calls and models.
    ///
    /// # Errors
    /// [`InvalidCodePoint`]: see [`Normalizer::normalize_into`] (never for a `str`).
    #[inline]
    pub fn proba_into<I>(&self, cps: I, scratch: &mut Scratch, out: &mut [f64]) -> Result<(), InvalidCodePoint>
    where
        I: Iterator<Item = u32> + Clone,
    {
        self.collect_hits(cps, scratch)?;
        let Scratch { hits, counts, distinct, sums, raw, .. } = scratch;
        if counts.len() < self.n_features {
            counts.resize(self.n_features, 0);
        }
        distinct.clear();
        for &col in hits.iter() {
            let count = &mut counts[col as usize];
            if *count == 0 {
                distinct.push(col);
            }
            *count += 1;
        }
        // With x = tf * idf / ||tf * idf||, the score of class k is b_k + sum_j x_j W[k][j]:
        // sums of tf * (idf_j W[k][j]) and of (tf idf_j)^2, then one division.
        let rows = self.rows;
        sums.clear();
        sums.resize(rows, 0.0);
        let mut norm2 = 0.0;
        for &col in distinct.iter() {
            let col = col as usize;
            let tf = self.tf(std::mem::take(&mut counts[col]));
            norm2 += tf * tf * self.idf2[col];
            let w = &self.weights[col * rows..(col + 1) * rows];
            for (s, w) in sums.iter_mut().zip(w) {
                *s += tf * w;
            }
        }
        let scale = if self.l2 && norm2 > 0.0 { 1.0 / norm2.sqrt() } else { 1.0 };
        let k = self.labels.len();
        raw.clear();
        if rows + 1 == k {
            let z = sums[0] * scale + self.intercepts[1];
            raw.extend([-z, z]);
        } else {
            raw.extend(sums.iter().zip(&self.intercepts).map(|(s, b)| s * scale + b));
        }
        self.transform.apply(raw, out);
        Ok(())
    }

    /// The probabilities of one text, in label order.
    pub fn predict_proba(&self, text: &str) -> Vec<f64> {
        let mut out = vec![0.0; self.labels.len()];
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => self.proba_into(text.chars().map(|c| c as u32), &mut scratch, &mut out),
            Err(_) => self.proba_into(text.chars().map(|c| c as u32), &mut Scratch::default(), &mut out),
        })
        .expect("a str holds scalar values");
        out
    }

    /// The answer for one probability row: `(label index, confident, score)`.
    #[inline]
    pub fn answer(&self, probabilities: &[f64]) -> (usize, bool, f64) {
        let mut best = 0;
        for (k, &p) in probabilities.iter().enumerate().skip(1) {
            if p > probabilities[best] {
                best = k;
            }
        }
        let score = probabilities[best];
        (best, score >= self.threshold, score)
    }

    /// Classify one text.
    pub fn predict(&self, text: &str) -> Prediction {
        let probabilities = self.predict_proba(text);
        let (label, confident, score) = self.answer(&probabilities);
        Prediction { label, probabilities, confident, score }
    }

    /// Classify many texts; answers in input order.
    pub fn predict_many<S: AsRef<str>>(&self, texts: &[S]) -> Vec<Prediction> {
        texts.iter().map(|t| self.predict(t.as_ref())).collect()
    }
}
