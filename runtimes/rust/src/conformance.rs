//! Replay a `<task>_conformance.json` (written by the scikit-learn side at export): normalised
//! text exact, feature indices exact, feature values within 1e-6, probabilities within 1e-5,
//! labels exact, unfamiliarity exact, `confident` exact away from the threshold
//! (docs/preprocessor-spec.md, section 6).

use std::path::Path;

use serde_json::Value;

use crate::error::ArtifactError;
use crate::model::MicroModel;

pub const FEATURE_TOLERANCE: f64 = 1e-6;
pub const PROBABILITY_TOLERANCE: f64 = 1e-5;

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Report {
    pub vectors: usize,
    pub failures: Vec<String>,
}

/// One vector of the file.
#[derive(Debug, Clone)]
pub struct Vector {
    pub text: String,
    pub normalized: String,
    pub features: Vec<(usize, f64)>,
    pub probabilities: Vec<f64>,
    pub label: String,
    pub unfamiliar: Option<f64>,
    pub confident: Option<bool>,
    /// With reflex rules: `Some(name)` of the rule that answers the text, `Some(None)`: none.
    pub rule: Option<Option<String>>,
}

fn field<'v>(v: &'v Value, key: &str, i: usize) -> Result<&'v Value, String> {
    v.get(key).ok_or_else(|| format!("vector {i} has no {key:?}"))
}

fn parse_vector(v: &Value, i: usize) -> Result<Vector, String> {
    let string = |key| field(v, key, i)?.as_str().map(str::to_owned).ok_or_else(|| format!("vector {i}: {key:?} is not a string"));
    let number = |x: &Value| x.as_f64().ok_or_else(|| format!("vector {i}: {x} is not a number"));
    let features = field(v, "features", i)?
        .as_array()
        .ok_or_else(|| format!("vector {i}: \"features\" is not a list"))?
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([col, value]) => Ok((col.as_u64().ok_or_else(|| format!("vector {i}: bad column {col}"))? as usize, number(value)?)),
            _ => Err(format!("vector {i}: feature {pair} is not [index, value]")),
        })
        .collect::<Result<_, _>>()?;
    let probabilities = field(v, "probabilities", i)?
        .as_array()
        .ok_or_else(|| format!("vector {i}: \"probabilities\" is not a list"))?
        .iter()
        .map(number)
        .collect::<Result<_, _>>()?;
    Ok(Vector {
        text: string("text")?,
        normalized: string("normalized")?,
        features,
        probabilities,
        label: string("label")?,
        unfamiliar: v.get("unfamiliar").map(number).transpose()?,
        confident: v.get("confident").map(|c| c.as_bool().ok_or_else(|| format!("vector {i}: \"confident\" is not a boolean"))).transpose()?,
        rule: v
            .get("rule")
            .map(|r| match r {
                Value::Null => Ok(None),
                Value::String(name) => Ok(Some(name.clone())),
                _ => Err(format!("vector {i}: \"rule\" is neither a string nor null")),
            })
            .transpose()?,
    })
}

/// The vectors of a conformance file.
///
/// # Errors
/// An unreadable file, or one without a `"vectors"` list of well-formed vectors.
pub fn read_vectors(path: &Path) -> Result<Vec<Vector>, ArtifactError> {
    let unreadable = |e: String| ArtifactError::at(path.display(), format!("unreadable conformance file: {e}"));
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    let vectors = doc.get("vectors").and_then(Value::as_array).ok_or_else(|| ArtifactError::at(path.display(), "no \"vectors\" list"))?;
    vectors.iter().enumerate().map(|(i, v)| parse_vector(v, i).map_err(unreadable)).collect()
}

fn excerpt(text: &str) -> String {
    let head: String = text.chars().take(30).collect();
    if head.len() < text.len() {
        format!("{:?}…", head)
    } else {
        format!("{text:?}")
    }
}

/// Compare one vector with what `model` computes; `None` when it conforms.
pub fn check_vector(model: &MicroModel, v: &Vector) -> Vec<String> {
    let mut failures = Vec::new();
    let (normalized, features) = model.featurize(&v.text);
    let reference = model.normalizer().normalize_reference(&v.text);
    if normalized != v.normalized || reference != v.normalized {
        failures.push(format!("normalised text {normalized:?} (reference path {reference:?}) != {:?}", v.normalized));
        return failures;
    }
    let got: Vec<usize> = features.iter().map(|f| f.0).collect();
    let want: Vec<usize> = v.features.iter().map(|f| f.0).collect();
    if got != want {
        failures.push(format!("feature indices differ: got {:?}, want {:?}", &got[..got.len().min(12)], &want[..want.len().min(12)]));
        return failures;
    }
    let worst = features.iter().zip(&v.features).map(|(g, w)| (g.1 - w.1).abs()).fold(0.0, f64::max);
    if worst > FEATURE_TOLERANCE {
        failures.push(format!("feature values differ by {worst:.2e}"));
    }
    let (proba, unfamiliar) = model.predict_scored(&v.text);
    let diff = if proba.len() == v.probabilities.len() {
        proba.iter().zip(&v.probabilities).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max)
    } else {
        f64::INFINITY
    };
    if !(diff <= PROBABILITY_TOLERANCE) {
        failures.push(format!("probabilities differ by {diff:.2e}"));
    }
    let (_, confident, score) = model.answer(&proba, unfamiliar);
    let label = &model.labels()[MicroModel::top(&proba).0]; // the model's label, as recorded
    if *label != v.label {
        failures.push(format!("label {label} != {}", v.label));
    }
    if v.unfamiliar.is_some_and(|want| want != unfamiliar) {
        failures.push(format!("unfamiliar {unfamiliar} != {}", v.unfamiliar.unwrap_or_default()));
    }
    if let Some(want) = &v.rule {
        // A reflex rule answers instead of the model: the same rule, by name, in every path.
        let got = model.rule(&v.text).map(|i| model.rules()[i].name.clone());
        let answered = model.predict(&v.text).rule.map(|i| model.rules()[i].name.clone());
        if got != *want || answered != *want {
            failures.push(format!("rule {got:?} (predict: {answered:?}) != {want:?}"));
        }
        if want.is_some() {
            return failures; // the answer is the rule's; the model's confident is not asked
        }
    }
    if v.confident.is_some_and(|want| want != confident) && (score - model.threshold()).abs() > PROBABILITY_TOLERANCE {
        failures.push(format!("confident {confident} != {}", !confident));
    }
    failures
}

/// Replay every vector of `path` against `model`.
///
/// # Errors
/// An unreadable conformance file (a mismatch is a failure in the report, not an error).
pub fn check(model: &MicroModel, path: &Path) -> Result<Report, ArtifactError> {
    let vectors = read_vectors(path)?;
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        for problem in check_vector(model, v) {
            failures.push(format!("vector {i} ({}): {problem}", excerpt(&v.text)));
        }
    }
    Ok(Report { vectors: vectors.len(), failures })
}
