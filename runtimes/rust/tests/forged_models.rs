//! The runtime on real forged artifacts: FOUNDRY_MODELS_DIR (default: the repository's
//! `models/`, filled by `make forge`). Fails, rather than skips, when there are none.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use foundry_rt::{conformance, MicroModel};

fn models_dir() -> PathBuf {
    std::env::var_os("FOUNDRY_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

/// Tasks with a conformance file in the models dir.
fn forged_tasks() -> Vec<String> {
    let dir = models_dir();
    let mut tasks: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; forge models first (make forge) or set FOUNDRY_MODELS_DIR", dir.display()))
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix("_conformance.json").map(str::to_owned))
        .collect();
    tasks.sort();
    assert!(!tasks.is_empty(), "no <task>_conformance.json in {}: forge models first (make forge)", dir.display());
    tasks
}

fn cli(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_foundry-rt"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The CLI may exit (a usage or artifact error) before it reads: a closed pipe is fine.
    if let Err(err) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn every_conformance_vector_is_reproduced() {
    for task in forged_tasks() {
        let model = MicroModel::load(&task, models_dir()).unwrap();
        let report = conformance::check(&model, &models_dir().join(format!("{task}_conformance.json"))).unwrap();
        assert!(report.vectors > 0);
        assert!(report.failures.is_empty(), "{task}: {:#?}", &report.failures[..report.failures.len().min(10)]);
    }
}

#[test]
fn a_tampered_expectation_is_caught() {
    let task = &forged_tasks()[0];
    let model = MicroModel::load(task, models_dir()).unwrap();
    let vectors = conformance::read_vectors(&models_dir().join(format!("{task}_conformance.json"))).unwrap();
    let mut bad = vectors.into_iter().find(|v| !v.features.is_empty()).unwrap();
    bad.features[0].1 += 1e-4;
    bad.probabilities[0] += 1e-3;
    // one ulp off: the unfamiliarity is compared exactly
    bad.unfamiliar = bad.unfamiliar.map(|u| f64::from_bits(u.to_bits() + 1));
    let problems = conformance::check_vector(&model, &bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[2].starts_with("unfamiliar "), "{problems:?}");
}

#[test]
fn the_unfamiliarity_gate_decides_confident() {
    for task in forged_tasks() {
        let model = MicroModel::load(&task, models_dir()).unwrap();
        let (min_order, max_unfamiliar) = model.familiarity();
        assert!(min_order >= 1 && (0.0..=1.0).contains(&max_unfamiliar));
        for text in ["", "今天天气怎么样？", "ΣΑΣ İ café", "qxzj vbnm wprt"] {
            let p = model.predict(text);
            assert_eq!(p.unfamiliar, model.unfamiliar(text));
            assert!((0.0..=1.0).contains(&p.unfamiliar));
            assert_eq!(p.confident, p.score >= model.threshold() && p.unfamiliar <= max_unfamiliar, "{text}");
            // past the gate no answer is confident, however high its probability
            let (_, confident, _) = model.answer(&p.probabilities, max_unfamiliar + 1e-9);
            assert!(!confident, "{text}");
        }
        assert_eq!(model.unfamiliar(""), 0.0);
    }
}

#[test]
fn cli_verify_and_predict() {
    let dir = models_dir();
    let dir = dir.to_str().unwrap();
    for task in forged_tasks() {
        let (code, out, _) = cli(&["--models-dir", dir, "--task", &task, "--verify"], b"");
        assert_eq!(code, 0);
        assert!(out.starts_with(&format!("{task}: ")) && out.ends_with(" conformance vectors ok\n"), "{out}");
        let model = MicroModel::load(&task, dir).unwrap();
        let (code, out, err) = cli(&["--models-dir", dir, "--task", &task], "今天天气怎么样？\r\n\n好的\nlast".as_bytes());
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4], "");
        for (line, text) in lines.iter().zip(["今天天气怎么样？", "", "好的", "last"]) {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(json["text"], text);
            let p = model.predict(text);
            assert_eq!(json["label"], model.labels()[p.label].as_str());
            assert_eq!(json["confident"], p.confident);
            for (k, label) in model.labels().iter().enumerate() {
                // float_roundtrip parsing and Python's shortest repr: the same double
                assert_eq!(json["probabilities"][label].as_f64().unwrap(), p.probabilities[k]);
            }
        }
    }
}

#[test]
fn cli_replaces_invalid_utf8_like_the_javascript_cli() {
    let task = &forged_tasks()[0];
    let dir = models_dir();
    let (code, out, _) = cli(&["--models-dir", dir.to_str().unwrap(), "--task", task], b"a\xffb\xe4\xbd\n");
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(json["text"], "a\u{fffd}b\u{fffd}");
}

#[test]
fn cli_errors_have_exit_codes() {
    let (code, _, err) = cli(&["--models-dir", "/nonexistent"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--task"), "{err}");
    let (code, _, err) = cli(&["--task", "x", "--bogus"], b"");
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = cli(&["--models-dir", "/nonexistent", "--task", "is_question"], b"x\n");
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("foundry (rust): /nonexistent/is_question_preprocessor.bin: preprocessor file not found"), "{err}");
    let (code, out, _) = cli(&["--help"], b"");
    assert_eq!(code, 0);
    assert!(out.contains("--models-dir"));
}

#[test]
fn one_text_and_a_batch_answer_alike() {
    for task in forged_tasks() {
        let model = MicroModel::load(&task, models_dir()).unwrap();
        let texts = ["", "今天天气怎么样？", "ＯＫ，没问题！！！", "好吧好吧，那就按你说的来", "ΣΑΣ İ café"];
        let many = model.predict_many(&texts);
        for (text, p) in texts.iter().zip(many) {
            assert_eq!(model.predict(text), p);
            let sum: f64 = p.probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        }
    }
}
