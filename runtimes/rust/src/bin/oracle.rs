//! Differential-testing oracle (used by tests/test_fuzz_differential.py), like
//! runtimes/node/tools/*-oracle.js. Texts travel through files of JSON lines, never argv.
//!
//! `foundry-rt-oracle textspec SETTINGS.json INPUT.jsonl OUTPUT.jsonl`
//!   SETTINGS.json: {"normalizer": {...}, "analyzer": {...}} with the camelCase field names of
//!   foundry.v1.Normalizer / Analyzer ("normalizeOnly": true skips the n-grams); writes
//!   {"normalized": str, "ngrams": [str, ...]} per input text.
//! `foundry-rt-oracle runtime MODELS_DIR TASK INPUT.jsonl OUTPUT.jsonl`
//!   writes {"normalized", "features": [[index, value], ...], "probabilities", "label"}.

use std::fs;
use std::process::ExitCode;

use foundry_rt::proto::foundry_v1 as pb;
use foundry_rt::textspec::{Analyzer, Normalizer, NormalizerSettings};
use foundry_rt::MicroModel;
use serde_json::{json, Value};

fn texts(path: &str) -> Result<Vec<String>, String> {
    fs::read_to_string(path)
        .map_err(|e| format!("{path}: {e}"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str::<String>(l).map_err(|e| format!("{path}: {e}: {l}")))
        .collect()
}

fn write_lines(path: &str, rows: Vec<Value>) -> Result<(), String> {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    fs::write(path, text).map_err(|e| format!("{path}: {e}"))
}

fn textspec(settings: &str, input: &str, output: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_str(&fs::read_to_string(settings).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let n = &doc["normalizer"];
    let a = &doc["analyzer"];
    let uint = |v: &Value| v.as_u64().unwrap_or(0) as u32;
    let normalizer = pb::Normalizer {
        spec_version: uint(&n["specVersion"]),
        nfkc: n["nfkc"].as_bool().unwrap_or(false),
        lowercase: n["lowercase"].as_bool().unwrap_or(false),
        removed_categories: n["removedCategories"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect(),
        whitespace: n["whitespace"].as_array().into_iter().flatten().map(uint).collect(),
        max_chars: uint(&n["maxChars"]),
    };
    let analyzer = pb::Analyzer {
        min_n: uint(&a["minN"]),
        max_n: uint(&a["maxN"]),
        word_boundary_padding: a["wordBoundaryPadding"].as_bool().unwrap_or(false),
        word_max_n: uint(&a["wordMaxN"]),
        head_chars: uint(&a["headChars"]),
    };
    let normalizer = Normalizer::new(&NormalizerSettings::from_proto(Some(&normalizer))?);
    let analyzer = Analyzer::from_proto(Some(&analyzer))?;
    let only = doc["normalizeOnly"].as_bool().unwrap_or(false);
    let rows = texts(input)?
        .iter()
        .map(|t| {
            let normalized = normalizer.normalize(t);
            let reference = normalizer.normalize_reference(t);
            assert_eq!(normalized, reference, "fast and reference paths differ on {t:?}");
            let ngrams = if only { vec![] } else { analyzer.ngrams(&normalized) };
            json!({"normalized": normalized, "ngrams": ngrams})
        })
        .collect();
    write_lines(output, rows)
}

fn runtime(models_dir: &str, task: &str, input: &str, output: &str) -> Result<(), String> {
    let model = MicroModel::load(task, models_dir).map_err(|e| e.to_string())?;
    let rows = texts(input)?
        .iter()
        .map(|t| {
            let (normalized, features) = model.featurize(t);
            let p = model.predict(t);
            json!({
                "normalized": normalized,
                "features": features.iter().map(|&(i, v)| json!([i, v])).collect::<Vec<_>>(),
                "probabilities": p.probabilities,
                "label": model.labels()[p.label],
                "confident": p.confident,
            })
        })
        .collect();
    write_lines(output, rows)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["textspec", settings, input, output] => textspec(settings, input, output),
        ["runtime", models_dir, task, input, output] => runtime(models_dir, task, input, output),
        _ => {
            eprintln!("usage: foundry-rt-oracle textspec SETTINGS.json IN.jsonl OUT.jsonl | runtime MODELS_DIR TASK IN.jsonl OUT.jsonl");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
