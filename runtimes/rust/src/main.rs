//! `foundry-rt --models-dir DIR --task TASK [--verify]`
//!
//! Reads one text per line from stdin (split at "\n", trailing "\r" removed; invalid UTF-8
//! becomes U+FFFD, one per maximal invalid sequence, with a warning on stderr naming the line,
//! as `foundry predict` does) and prints one JSON line per text, formatted
//! like `foundry predict TASK --json`: `{"text", "label", "probabilities": {label: p},
//! "confident"}`. Lines are answered as they arrive (output is flushed whenever stdin has
//! nothing more buffered), so a program can hold a pipe open and ask one text at a time.
//! With `--verify`, replays `<task>_conformance.json` instead and exits 1 on any mismatch.
//! Exit codes: 0 ok, 1 artifact or conformance problem (or unreadable stdin), 2 usage error,
//! 141 stdout closed before the answers were written (`| head`), silently.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};
use foundry_rt::conformance;
use foundry_rt::unicode::runtime_unicode_versions;
use foundry_rt::{pyjson, ArtifactError, MicroModel, Scratch};

fn command() -> Command {
    Command::new("foundry-rt")
        .about("Answer with a Model Foundry micro-model: one text per stdin line, one JSON line out")
        .arg(Arg::new("models-dir").long("models-dir").value_name("DIR").default_value("models").help("folder holding <task>_preprocessor.bin and <task>_classifier.onnx"))
        .arg(Arg::new("task").long("task").value_name("TASK").required(true).help("task name (the files' prefix)"))
        .arg(Arg::new("verify").long("verify").action(ArgAction::SetTrue).help("replay <task>_conformance.json instead of reading stdin"))
}

/// Invalid-UTF-8 warnings printed; later ones are counted in one last line.
const MAX_UTF8_WARNINGS: usize = 10;
/// 128 + SIGPIPE: what a shell reports for a process stopped by a closed pipe.
const EXIT_BROKEN_PIPE: u8 = 141;

fn predict(model: &MicroModel) -> io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, io::stdin().lock());
    let mut output = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let (mut bytes, mut line) = (Vec::new(), String::new());
    let mut scratch = Scratch::default();
    let mut probabilities = vec![0.0; model.labels().len()];
    let (mut number, mut invalid) = (0, 0);
    loop {
        if input.buffer().is_empty() {
            output.flush()?; // the next read may wait: answer what came so far
        }
        bytes.clear();
        if input.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        number += 1;
        let text = String::from_utf8_lossy(&bytes);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            invalid += 1;
            if invalid <= MAX_UTF8_WARNINGS {
                eprintln!("foundry (rust): warning: line {number}: invalid UTF-8 replaced by U+FFFD");
            }
        }
        line.clear();
        // A reflex rule answers before the model (section 5); the line then says which one.
        if let Some(index) = model.rule(&text) {
            let answer = model.rule_prediction(index);
            let name = Some(Some(model.rules()[index].name.as_str()));
            pyjson::prediction_line(&mut line, &text, model.labels(), &answer.probabilities, answer.label, true, name);
        } else {
            model
                .proba_into(text.chars().map(|c| c as u32), &mut scratch, &mut probabilities)
                .expect("a str holds scalar values");
            let (label, confident, _) = model.answer(&probabilities, scratch.unfamiliar);
            let rule = if model.rules().is_empty() { None } else { Some(None) };
            pyjson::prediction_line(&mut line, &text, model.labels(), &probabilities, label, confident, rule);
        }
        line.push('\n');
        output.write_all(line.as_bytes())?;
    }
    if invalid > MAX_UTF8_WARNINGS {
        eprintln!("foundry (rust): warning: {} more lines held invalid UTF-8", invalid - MAX_UTF8_WARNINGS);
    }
    output.flush()
}

fn verify(model: &MicroModel, models_dir: &Path, task: &str) -> Result<bool, ArtifactError> {
    let file = models_dir.join(format!("{task}_conformance.json"));
    let report = conformance::check(model, &file)?;
    if !report.failures.is_empty() {
        eprintln!(
            "{}: {} of {} conformance vectors fail:\n  {}",
            file.display(),
            report.failures.len(),
            report.vectors,
            report.failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
        );
        return Ok(false);
    }
    println!("{task}: {} conformance vectors ok", report.vectors);
    let trained = &model.preprocessor().unicode_version;
    eprintln!(
        "note: {task} was normalised with Unicode {}, this runtime has {}; texts with code points \
         that differ between the versions may be read differently (docs/preprocessor-spec.md, section 7)",
        if trained.is_empty() { "(unrecorded)" } else { trained },
        runtime_unicode_versions()
    );
    Ok(true)
}

fn main() -> ExitCode {
    let args = match command().try_get_matches() {
        Ok(args) => args,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let models_dir = Path::new(args.get_one::<String>("models-dir").expect("has a default"));
    let task = args.get_one::<String>("task").expect("required");
    let model = match MicroModel::load(task, models_dir) {
        Ok(model) => model,
        Err(err) => {
            eprintln!("foundry (rust): {err}");
            return ExitCode::from(1);
        }
    };
    if args.get_flag("verify") {
        return match verify(&model, models_dir, task) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => {
                eprintln!("foundry (rust): {err}");
                ExitCode::from(1)
            }
        };
    }
    match predict(&model) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(err) => {
            eprintln!("foundry (rust): {err}");
            ExitCode::from(1)
        }
    }
}

