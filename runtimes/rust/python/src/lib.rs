//! `foundry._native`: the Rust runtime as the native fast path of `foundry.runtime.MicroModel`
//! (loaded by `foundry/native.py`; build with `make native`).
//!
//! Texts are read straight from the Python `str` objects' code points (no UTF-8 copy), answers
//! are `foundry.runtime.Prediction` objects built directly (their `probabilities` a
//! `foundry.runtime.Probabilities` over the scores' float64 bytes: no Python float per label
//! until one is read), and batch calls compute with the GIL released.

use std::cell::RefCell;
use std::path::Path;

use foundry_rt::{MicroModel, Scratch};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};
use pyo3::{ffi, AsPyPointer};

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// From this many texts on, a batch is computed with the GIL released.
const RELEASE_GIL_FROM: usize = 16;

/// The code points of a Python `str`, in its own storage (1, 2 or 4 bytes per code point).
#[derive(Clone, Copy)]
enum CodePoints<'a> {
    One(&'a [u8]),
    Two(&'a [u16]),
    Four(&'a [u32]),
}

// The slices point into immutable `str` objects that the caller keeps alive.
unsafe impl Send for CodePoints<'_> {}

fn code_points(text: &PyAny) -> PyResult<CodePoints<'_>> {
    let text: &PyString = text.downcast().map_err(|_| {
        PyTypeError::new_err(format!("text must be str, got {}", text.get_type().name().unwrap_or("?")))
    })?;
    let ptr = text.as_ptr();
    // SAFETY: `ptr` is a live str (the GIL is held); PyUnicode_READY makes its canonical
    // representation available, which stays valid and unchanged as long as the object lives.
    #[allow(deprecated)] // a no-op from Python 3.12; 3.11 may still hold legacy strings
    unsafe {
        if ffi::PyUnicode_READY(ptr) != 0 {
            return Err(PyErr::fetch(text.py()));
        }
        let n = ffi::PyUnicode_GET_LENGTH(ptr) as usize;
        let data = ffi::PyUnicode_DATA(ptr);
        Ok(match ffi::PyUnicode_KIND(ptr) {
            ffi::PyUnicode_1BYTE_KIND => CodePoints::One(std::slice::from_raw_parts(data as *const u8, n)),
            ffi::PyUnicode_2BYTE_KIND => CodePoints::Two(std::slice::from_raw_parts(data as *const u16, n)),
            _ => CodePoints::Four(std::slice::from_raw_parts(data as *const u32, n)),
        })
    }
}

fn proba(model: &MicroModel, text: CodePoints<'_>, scratch: &mut Scratch, out: &mut [f64]) -> Result<(), String> {
    match text {
        CodePoints::One(d) => model.proba_into(d.iter().map(|&c| c as u32), scratch, out),
        CodePoints::Two(d) => model.proba_into(d.iter().map(|&c| c as u32), scratch, out),
        CodePoints::Four(d) => model.proba_into(d.iter().copied(), scratch, out),
    }
    .map_err(|e| e.to_string())
}

/// A loaded model answering with `foundry.runtime.Prediction` objects.
#[pyclass(module = "foundry._native", name = "NativeModel")]
struct NativeModel {
    model: MicroModel,
    prediction: Py<PyType>,
    /// `foundry.runtime.Probabilities`, filled through its slots.
    probabilities: Py<PyType>,
    labels: Vec<Py<PyString>>,
    /// The labels as one tuple, shared by every answer's `Probabilities`.
    names: Py<PyTuple>,
    /// The reflex rules' names (section 5).
    rule_names: Vec<Py<PyString>>,
    /// `label`, `probabilities`, `confident`, `score`, `__dict__`, `rule`, and the slots of
    /// `Probabilities`: `_labels`, `_scores`, `_items` (interned).
    keys: [Py<PyString>; 9],
    frombuffer: PyObject,
    float32: PyObject,
}

impl NativeModel {
    /// `object.__new__(Prediction)` with its `__dict__` filled, as `foundry.runtime` does.
    /// Built with the C API directly: this is most of the cost of a batch of answers.
    fn prediction(&self, py: Python<'_>, probabilities: &[f64], unfamiliar: f64) -> PyResult<PyObject> {
        let (label, confident, score) = self.model.answer(probabilities, unfamiliar);
        self.build(py, probabilities, label, confident, score, None)
    }

    /// The answer of reflex rule `index`: probability 1 for its label, 0 for the others,
    /// confident, and `rule` set to its name.
    fn rule_prediction(&self, py: Python<'_>, index: usize) -> PyResult<PyObject> {
        let answer = self.model.rule_prediction(index);
        self.build(py, &answer.probabilities, answer.label, true, 1.0, Some(index))
    }

    /// The first reflex rule answering a text, or `None` (the text is normalised only when
    /// the model has rules).
    fn rule_of(&self, text: CodePoints<'_>) -> PyResult<Option<usize>> {
        if self.rule_names.is_empty() {
            return Ok(None);
        }
        let normalizer = self.model.normalizer();
        let mut chars = Vec::new();
        match text {
            CodePoints::One(d) => normalizer.normalize_into(d.iter().map(|&c| c as u32), &mut chars),
            CodePoints::Two(d) => normalizer.normalize_into(d.iter().map(|&c| c as u32), &mut chars),
            CodePoints::Four(d) => normalizer.normalize_into(d.iter().copied(), &mut chars),
        }
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let normalized: String = chars.into_iter().collect();
        Ok(self.model.rule_for_normalized(&normalized))
    }

    /// A `Prediction`; `score` is the top probability (also when the label is the
    /// out-of-scope label answered for an unsure text, as in `foundry.runtime`).
    #[allow(clippy::too_many_arguments)]
    fn build(&self, py: Python<'_>, probabilities: &[f64], label: usize, confident: bool, score: f64, rule: Option<usize>) -> PyResult<PyObject> {
        let set = |dict: &PyObject, key: &Py<PyString>, value: *mut ffi::PyObject| -> PyResult<()> {
            // SAFETY: live objects, GIL held; PyDict_SetItem takes its own references.
            match unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value) } {
                0 => Ok(()),
                _ => Err(PyErr::fetch(py)),
            }
        };
        // SAFETY: the GIL is held; every owned pointer is wrapped (released on error paths).
        unsafe {
            // The scores as float64 bytes (native byte order, read back by a memoryview).
            let scores = PyObject::from_owned_ptr_or_err(
                py,
                ffi::PyBytes_FromStringAndSize(
                    probabilities.as_ptr() as *const std::os::raw::c_char,
                    std::mem::size_of_val(probabilities) as ffi::Py_ssize_t,
                ),
            )?;
            let values = self.new_object(py, &self.probabilities)?;
            self.set_attribute(py, &values, &self.keys[6], self.names.as_ptr())?;
            self.set_attribute(py, &values, &self.keys[7], scores.as_ptr())?;
            self.set_attribute(py, &values, &self.keys[8], ffi::Py_None())?;
            let score = PyObject::from_owned_ptr_or_err(py, ffi::PyFloat_FromDouble(score))?;
            let fields = PyObject::from_owned_ptr_or_err(py, ffi::PyDict_New())?;
            set(&fields, &self.keys[0], self.labels[label].as_ptr())?;
            set(&fields, &self.keys[1], values.as_ptr())?;
            set(&fields, &self.keys[2], if confident { ffi::Py_True() } else { ffi::Py_False() })?;
            set(&fields, &self.keys[3], score.as_ptr())?;
            if let Some(index) = rule {
                set(&fields, &self.keys[5], self.rule_names[index].as_ptr())?;
            }
            let obj = self.new_object(py, &self.prediction)?;
            self.set_attribute(py, &obj, &self.keys[4], fields.as_ptr())?;
            Ok(obj)
        }
    }

    /// `object.__new__(cls)`: tp_alloc is what it calls (no `__init__` runs).
    ///
    /// # Safety
    /// The GIL is held and `cls` is a class whose instances need no other initialisation.
    unsafe fn new_object(&self, py: Python<'_>, cls: &Py<PyType>) -> PyResult<PyObject> {
        let cls = cls.as_ptr() as *mut ffi::PyTypeObject;
        let alloc = (*cls).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        PyObject::from_owned_ptr_or_err(py, alloc(cls, 0))
    }

    /// `object.__setattr__(obj, name, value)`: past a frozen dataclass's or a read-only
    /// class's own `__setattr__`, through the slot descriptors.
    ///
    /// # Safety
    /// The GIL is held and `value` is a live object (the call takes its own reference).
    unsafe fn set_attribute(&self, py: Python<'_>, obj: &PyObject, name: &Py<PyString>, value: *mut ffi::PyObject) -> PyResult<()> {
        match ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value) {
            0 => Ok(()),
            _ => Err(PyErr::fetch(py)),
        }
    }

    /// Probabilities `[N * K]` of `texts` and their unfamiliarity `[N]`, with the GIL released
    /// for large batches.
    fn proba_rows(&self, py: Python<'_>, texts: &PyAny) -> PyResult<(Vec<f64>, Vec<f64>)> {
        let items: Vec<&PyAny> = match texts.downcast::<PyList>() {
            Ok(list) => list.iter().collect(),
            Err(_) => texts.iter()?.collect::<PyResult<_>>()?,
        };
        let views = items.iter().map(|t| code_points(t)).collect::<PyResult<Vec<_>>>()?;
        let k = self.model.labels().len();
        let model = &self.model;
        let compute = move || -> Result<(Vec<f64>, Vec<f64>), String> {
            let mut out = vec![0.0; views.len() * k];
            let mut unfamiliar = Vec::with_capacity(views.len());
            let mut scratch = Scratch::default();
            for (text, row) in views.iter().zip(out.chunks_exact_mut(k)) {
                proba(model, *text, &mut scratch, row)?;
                unfamiliar.push(scratch.unfamiliar);
            }
            Ok((out, unfamiliar))
        };
        let rows = if items.len() >= RELEASE_GIL_FROM { py.allow_threads(compute) } else { compute() };
        rows.map_err(PyValueError::new_err)
    }
}

#[pymethods]
impl NativeModel {
    /// `NativeModel(task, bin_data, onnx_data, bin_path, onnx_path, prediction_class,
    /// probabilities_class, artifact_error_class)`: validates the pair like the Python
    /// runtime; raises `artifact_error_class(message)` when it is not usable.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        task: &str,
        bin_data: &[u8],
        onnx_data: &[u8],
        bin_path: &str,
        onnx_path: &str,
        prediction_class: &PyType,
        probabilities_class: &PyType,
        artifact_error_class: &PyType,
    ) -> PyResult<Self> {
        let model = MicroModel::from_bytes(task, bin_data, onnx_data, Path::new(bin_path), Path::new(onnx_path))
            .map_err(|e| match artifact_error_class.call1((e.to_string(),)) {
                Ok(error) => PyErr::from_value(error),
                Err(err) => err,
            })?;
        let labels: Vec<Py<PyString>> = model.labels().iter().map(|l| PyString::new(py, l).into()).collect();
        let names = PyTuple::new(py, labels.iter().map(|l| l.clone_ref(py))).into();
        let rule_names = model.rules().iter().map(|r| PyString::new(py, &r.name).into()).collect();
        let key = |s: &str| -> Py<PyString> { PyString::intern(py, s).into() };
        let numpy = py.import("numpy")?;
        Ok(NativeModel {
            labels,
            names,
            rule_names,
            keys: [
                key("label"),
                key("probabilities"),
                key("confident"),
                key("score"),
                key("__dict__"),
                key("rule"),
                key("_labels"),
                key("_scores"),
                key("_items"),
            ],
            prediction: prediction_class.into(),
            probabilities: probabilities_class.into(),
            frombuffer: numpy.getattr("frombuffer")?.into(),
            float32: numpy.getattr("float32")?.into(),
            model,
        })
    }

    /// What computes the probabilities (`MicroModel.backend`).
    #[getter]
    fn name(&self) -> &'static str {
        "native"
    }

    /// Classify one text: a `foundry.runtime.Prediction`.
    fn predict(&self, py: Python<'_>, text: &PyAny) -> PyResult<PyObject> {
        let view = code_points(text)?;
        if let Some(index) = self.rule_of(view)? {
            return self.rule_prediction(py, index);
        }
        let mut out = [0.0f64; 8];
        let mut heap;
        let row: &mut [f64] = match self.model.labels().len() {
            k if k <= out.len() => &mut out[..k],
            k => {
                heap = vec![0.0; k];
                &mut heap
            }
        };
        let unfamiliar = SCRATCH
            .with(|s| {
                let mut scratch = s.borrow_mut();
                proba(&self.model, view, &mut scratch, row).map(|()| scratch.unfamiliar)
            })
            .map_err(PyValueError::new_err)?;
        self.prediction(py, row, unfamiliar)
    }

    /// Classify many texts (any iterable of str); answers in input order.
    fn predict_many(&self, py: Python<'_>, texts: &PyAny) -> PyResult<Vec<PyObject>> {
        if texts.is_instance_of::<PyString>()? || texts.is_instance_of::<PyBytes>()? {
            // a str is iterable: it would answer per character
            return Err(PyTypeError::new_err("predict_many takes a list of texts; use predict() for one text"));
        }
        if !self.rule_names.is_empty() {
            // A model with reflex rules answers text by text: a rule or the model.
            return texts.iter()?.map(|t| self.predict(py, t?)).collect();
        }
        let (rows, unfamiliar) = self.proba_rows(py, texts)?;
        let k = self.model.labels().len();
        rows.chunks_exact(k).zip(unfamiliar).map(|(row, u)| self.prediction(py, row, u)).collect()
    }

    /// Probabilities `[N, K]` (float32 ndarray), columns in label order.
    fn predict_proba(&self, py: Python<'_>, texts: &PyAny) -> PyResult<PyObject> {
        if texts.is_instance_of::<PyString>()? {
            return Err(PyTypeError::new_err("predict_proba takes a list of texts; use predict() for one text"));
        }
        let (rows, _) = self.proba_rows(py, texts)?;
        let bytes: Vec<u8> = rows.iter().flat_map(|&p| (p as f32).to_le_bytes()).collect();
        let k = self.model.labels().len();
        let array = self.frombuffer.call1(py, (PyBytes::new(py, &bytes), self.float32.clone_ref(py)))?;
        array.call_method1(py, "reshape", (rows.len() / k, k))
    }

    /// Steps 1-5 of the text spec (the native normaliser).
    fn normalize(&self, text: &str) -> String {
        self.model.normalize(text)
    }

    /// Unicode versions of the native normaliser's data.
    #[staticmethod]
    fn unicode_versions() -> String {
        foundry_rt::unicode::runtime_unicode_versions()
    }
}

#[pymodule]
fn _native(_py: Python<'_>, m: &PyModule) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    Ok(())
}
