//! The C ABI of the Rust runtime: `include/foundry.h`. Every function checks its pointers;
//! nothing unwinds across the boundary.

use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use foundry_rt::MicroModel;

/// A loaded model and its labels as C strings.
pub struct FoundryModel {
    model: MicroModel,
    labels: Vec<CString>,
    /// The reflex rules' names (section 5), as C strings.
    rule_names: Vec<CString>,
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).expect("no NUL left")
}

fn write_error(error: *mut c_char, error_len: usize, message: &str) {
    if error.is_null() || error_len == 0 {
        return;
    }
    let bytes = message.as_bytes();
    let mut n = bytes.len().min(error_len - 1);
    while n > 0 && !message.is_char_boundary(n) {
        n -= 1; // never cut a UTF-8 sequence
    }
    // SAFETY: the caller provides error_len writable bytes at error.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), error as *mut u8, n);
        *error.add(n) = 0;
    }
}

/// # Safety
/// `models_dir` and `task` are NUL-terminated strings; `error` is NULL or `error_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_load(
    models_dir: *const c_char,
    task: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> *mut FoundryModel {
    if models_dir.is_null() || task.is_null() {
        write_error(error, error_len, "models_dir and task must not be NULL");
        return std::ptr::null_mut();
    }
    let dir = CStr::from_ptr(models_dir).to_string_lossy().into_owned();
    let task = CStr::from_ptr(task).to_string_lossy().into_owned();
    match catch_unwind(|| MicroModel::load(&task, &dir)) {
        Ok(Ok(model)) => {
            let labels = model.labels().iter().map(|l| c_string(l)).collect();
            let rule_names = model.rules().iter().map(|r| c_string(&r.name)).collect();
            Box::into_raw(Box::new(FoundryModel { model, labels, rule_names }))
        }
        Ok(Err(err)) => {
            write_error(error, error_len, &err.to_string());
            std::ptr::null_mut()
        }
        Err(_) => {
            write_error(error, error_len, "internal error while loading the model");
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `model` is NULL or a pointer returned by `foundry_model_load`, freed once.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_free(model: *mut FoundryModel) {
    if !model.is_null() {
        drop(Box::from_raw(model));
    }
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_num_labels(model: *const FoundryModel) -> usize {
    model.as_ref().map_or(0, |m| m.labels.len())
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_label(model: *const FoundryModel, k: usize) -> *const c_char {
    model.as_ref().and_then(|m| m.labels.get(k)).map_or(std::ptr::null(), |l| l.as_ptr())
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_threshold(model: *const FoundryModel) -> f64 {
    model.as_ref().map_or(f64::NAN, |m| m.model.threshold())
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_max_unfamiliar(model: *const FoundryModel) -> f64 {
    model.as_ref().map_or(f64::NAN, |m| m.model.familiarity().1)
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`; `text` holds `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_unfamiliar(model: *const FoundryModel, text: *const c_char, len: usize) -> f64 {
    let (Some(m), false) = (model.as_ref(), text.is_null() && len > 0) else {
        return f64::NAN;
    };
    let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(text as *const u8, len) };
    let text = String::from_utf8_lossy(bytes);
    catch_unwind(AssertUnwindSafe(|| m.model.unfamiliar(&text))).unwrap_or(f64::NAN)
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`; `text` holds `len` bytes;
/// `probabilities` has room for `foundry_model_num_labels(model)` doubles; `confident` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_predict(
    model: *const FoundryModel,
    text: *const c_char,
    len: usize,
    probabilities: *mut f64,
    confident: *mut c_int,
) -> c_int {
    let (Some(m), false, false) = (model.as_ref(), text.is_null() && len > 0, probabilities.is_null()) else {
        return -1;
    };
    let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(text as *const u8, len) };
    let text = String::from_utf8_lossy(bytes);
    let out = std::slice::from_raw_parts_mut(probabilities, m.labels.len());
    let answered = catch_unwind(AssertUnwindSafe(|| {
        if let Some(index) = m.model.rule(&text) {
            // A reflex rule answers before the model (probability 1 for its label, confident).
            let answer = m.model.rule_prediction(index);
            out.copy_from_slice(&answer.probabilities);
            return (answer.label, true, 1.0);
        }
        let (probabilities, unfamiliar) = m.model.predict_scored(&text);
        out.copy_from_slice(&probabilities);
        m.model.answer(out, unfamiliar)
    }));
    match answered {
        Ok((label, is_confident, _)) => {
            if !confident.is_null() {
                *confident = c_int::from(is_confident);
            }
            label as c_int
        }
        Err(_) => -1,
    }
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_num_rules(model: *const FoundryModel) -> usize {
    model.as_ref().map_or(0, |m| m.rule_names.len())
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_rule_name(model: *const FoundryModel, i: usize) -> *const c_char {
    model.as_ref().and_then(|m| m.rule_names.get(i)).map_or(std::ptr::null(), |n| n.as_ptr())
}

/// # Safety
/// `model` is a live pointer from `foundry_model_load`; `text` holds `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn foundry_model_rule(model: *const FoundryModel, text: *const c_char, len: usize) -> c_int {
    let (Some(m), false) = (model.as_ref(), text.is_null() && len > 0) else {
        return -2;
    };
    let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(text as *const u8, len) };
    let text = String::from_utf8_lossy(bytes);
    match catch_unwind(AssertUnwindSafe(|| m.model.rule(&text))) {
        Ok(Some(index)) => index as c_int,
        Ok(None) => -1,
        Err(_) => -2,
    }
}
