//! The `keras_attn._rust` extension module: thin wrappers only (validate, release the GIL, return
//! new arrays). Kernels live in their own modules and know nothing of Python.
//!
//! Arrays arrive as C-contiguous float32 (`keras_attn.kernels` and `keras_attn.cpu` convert
//! anything else once, with clear errors); this layer still checks every shape so that no input
//! can reach a panic.

mod block;

use crate::apply::{self, Fusion};
use crate::exec::{all_cores, Exec};
use crate::litert::ops::GateWeights;
use crate::litert::runtime::{ElementType, Input, Output};
use crate::layout::{Dims, Layout};
use crate::simd::Level;
use crate::{bandwidth, pool};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArray4, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

type Out<'py> = Bound<'py, PyAny>;

fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// The run settings from the `threads` and `simd` arguments (lingering workers: Python callers
/// call in loops).
fn exec(threads: Option<usize>, simd: Option<&str>) -> PyResult<Exec> {
    if threads == Some(0) {
        return Err(value_error("`threads` must be a positive int or None (all cores); got 0"));
    }
    let level = match simd {
        Some(name) => Level::from_name(name).map_err(value_error)?,
        None => Level::active(),
    };
    Ok(Exec::new(level, threads).lingering())
}

fn layout(data_format: &str) -> PyResult<Layout> {
    match data_format {
        "channels_last" => Ok(Layout::ChannelsLast),
        "channels_first" => Ok(Layout::ChannelsFirst),
        other => Err(value_error(format!(
            "`data_format` must be \"channels_last\" or \"channels_first\"; got {other:?}"
        ))),
    }
}

/// The dims and contiguous data of a 4-D map with no zero-size dimension.
fn map<'a>(x: &'a PyReadonlyArray4<'_, f32>, data_format: &str) -> PyResult<(&'a [f32], Dims)> {
    let layout = layout(data_format)?;
    let shape = x.shape();
    if shape.contains(&0) {
        return Err(value_error(format!("`x` must have no zero-size dimension; got shape {shape:?}")));
    }
    let (n, h, w, c) = match layout {
        Layout::ChannelsLast => (shape[0], shape[1], shape[2], shape[3]),
        Layout::ChannelsFirst => (shape[0], shape[2], shape[3], shape[1]),
    };
    let data = x.as_slice().map_err(|_| value_error("`x` must be C-contiguous"))?;
    Ok((data, Dims { n, h, w, c, layout }))
}

fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| value_error(format!("`{name}` must be C-contiguous")))
}

fn shaped<'py, T: numpy::Element>(py: Python<'py>, data: Vec<T>, shape: &[usize]) -> PyResult<Out<'py>> {
    Ok(PyArray1::from_vec(py, data).reshape(shape)?.into_any())
}

/// A new array of `shape`, filled by `fill` with the GIL released. Its memory is not zeroed
/// first: zeroing a map-sized output would cost a third of a gate pass.
fn filled<'py>(py: Python<'py>, shape: &[usize], fill: impl FnOnce(&mut [f32]) + Send) -> PyResult<Out<'py>> {
    // SAFETY: the array is new and not yet visible to Python, so nothing else reads or writes
    // it; every bit pattern is a valid f32; and `fill` (a kernel writing the whole output)
    // writes every element before the array is returned.
    let array = unsafe { PyArrayDyn::<f32>::new(py, shape, false) };
    // SAFETY: as above; the slice is the array's whole, C-contiguous buffer and is the only
    // reference to it while `fill` runs.
    let out = unsafe { array.as_slice_mut() }.map_err(|_| value_error("internal: new array not contiguous"))?;
    py.detach(|| fill(out));
    Ok(array.into_any())
}

/// Mean and max over H and W for every (n, c): two (N, C) arrays.
#[pyfunction]
#[pyo3(signature = (x, data_format, threads=None, simd=None))]
fn channel_pool<'py>(
    py: Python<'py>,
    x: PyReadonlyArray4<'py, f32>,
    data_format: &str,
    threads: Option<usize>,
    simd: Option<&str>,
) -> PyResult<(Out<'py>, Out<'py>)> {
    let exec = exec(threads, simd)?;
    let (data, dims) = map(&x, data_format)?;
    let (mean, max) = py.detach(|| {
        let (mut mean, mut max) = (vec![0.0; dims.n * dims.c], vec![0.0; dims.n * dims.c]);
        pool::channel_pool(exec, data, dims, &mut mean, &mut max);
        (mean, max)
    });
    Ok((shaped(py, mean, &[dims.n, dims.c])?, shaped(py, max, &[dims.n, dims.c])?))
}

/// Max and mean over C for every pixel, stacked max first: (N, H, W, 2) or (N, 2, H, W).
#[pyfunction]
#[pyo3(signature = (x, data_format, threads=None, simd=None))]
fn spatial_pool<'py>(
    py: Python<'py>,
    x: PyReadonlyArray4<'py, f32>,
    data_format: &str,
    threads: Option<usize>,
    simd: Option<&str>,
) -> PyResult<Out<'py>> {
    let exec = exec(threads, simd)?;
    let (data, dims) = map(&x, data_format)?;
    let out = py.detach(|| {
        let mut out = vec![0.0; dims.n * dims.pixels() * 2];
        pool::spatial_pool(exec, data, dims, &mut out);
        out
    });
    let shape = match dims.layout {
        Layout::ChannelsLast => [dims.n, dims.h, dims.w, 2],
        Layout::ChannelsFirst => [dims.n, 2, dims.h, dims.w],
    };
    shaped(py, out, &shape)
}

/// `x * channel[n, c] * spatial[n, h, w]`, either gate optional.
#[pyfunction]
#[pyo3(signature = (x, data_format, channel=None, spatial=None, threads=None, simd=None))]
fn apply_gates<'py>(
    py: Python<'py>,
    x: PyReadonlyArray4<'py, f32>,
    data_format: &str,
    channel: Option<PyReadonlyArray2<'py, f32>>,
    spatial: Option<PyReadonlyArray3<'py, f32>>,
    threads: Option<usize>,
    simd: Option<&str>,
) -> PyResult<Out<'py>> {
    let exec = exec(threads, simd)?;
    let (data, dims) = map(&x, data_format)?;
    let channel = channel.as_ref().map(|g| gate(g.shape(), contiguous(g, "channel")?, &[dims.n, dims.c], "channel")).transpose()?;
    let spatial =
        spatial.as_ref().map(|s| gate(s.shape(), contiguous(s, "spatial")?, &[dims.n, dims.h, dims.w], "spatial")).transpose()?;
    filled(py, x.shape(), |out| apply::apply_gates(exec, data, dims, channel, spatial, apply::Epilogue::NONE, out))
}

/// `x * (1 + sigmoid(fuse(channel_logits[n, c], spatial_logits[n, h, w])))`.
#[pyfunction]
#[pyo3(signature = (x, data_format, channel_logits, spatial_logits, fusion, threads=None, simd=None))]
#[allow(clippy::too_many_arguments)]
fn apply_bam<'py>(
    py: Python<'py>,
    x: PyReadonlyArray4<'py, f32>,
    data_format: &str,
    channel_logits: PyReadonlyArray2<'py, f32>,
    spatial_logits: PyReadonlyArray3<'py, f32>,
    fusion: &str,
    threads: Option<usize>,
    simd: Option<&str>,
) -> PyResult<Out<'py>> {
    let exec = exec(threads, simd)?;
    let fusion = parse_fusion(fusion)?;
    let (data, dims) = map(&x, data_format)?;
    let channel = gate(channel_logits.shape(), contiguous(&channel_logits, "channel_logits")?, &[dims.n, dims.c], "channel_logits")?;
    let spatial =
        gate(spatial_logits.shape(), contiguous(&spatial_logits, "spatial_logits")?, &[dims.n, dims.h, dims.w], "spatial_logits")?;
    filled(py, x.shape(), |out| apply::apply_bam(exec, data, dims, channel, spatial, fusion, apply::Epilogue::NONE, out))
}

fn gate<'a>(shape: &[usize], data: &'a [f32], want: &[usize], name: &str) -> PyResult<&'a [f32]> {
    if shape != want {
        return Err(value_error(format!("`{name}` must have shape {want:?} to match `x`; got {shape:?}")));
    }
    Ok(data)
}

fn parse_fusion(fusion: &str) -> PyResult<Fusion> {
    match fusion {
        "sum" => Ok(Fusion::Sum),
        "product" => Ok(Fusion::Product),
        other => Err(value_error(format!("`fusion` must be \"sum\" or \"product\"; got {other:?}"))),
    }
}

/// Sums a float32 array with the simplest multi-accumulator loop, for measuring the machine's
/// streaming-read bandwidth.
#[pyfunction]
#[pyo3(signature = (x, threads=None))]
fn read_probe(py: Python<'_>, x: PyReadonlyArray1<'_, f32>, threads: Option<usize>) -> PyResult<f32> {
    let exec = exec(threads, None)?;
    let data = contiguous(&x, "x")?;
    Ok(py.detach(|| bandwidth::read_sum(exec, data)))
}

/// The SIMD levels this CPU supports, lowest first.
#[pyfunction]
fn simd_levels() -> Vec<&'static str> {
    Level::available().into_iter().map(Level::name).collect()
}

/// The level kernels use by default (`KERAS_ATTN_SIMD` if set and available, else the best).
#[pyfunction]
fn simd_level() -> &'static str {
    Level::active().name()
}

/// The number of cores `threads=None` uses.
#[pyfunction]
fn cpu_count() -> usize {
    all_cores()
}

/// The version of the compiled core.
#[pyfunction]
fn version() -> &'static str {
    crate::VERSION
}

/// Checks the bytes of a `.tflite` file (see `litert::verify`): `ValueError` saying what is wrong.
#[pyfunction]
fn verify_tflite(py: Python<'_>, data: &[u8]) -> PyResult<()> {
    py.detach(|| crate::litert::verify::verify_model(data)).map_err(value_error)
}

/// A `.tflite` model in LiteRT's CompiledModel API with the fused kernels registered. Built by
/// `keras_attn.edge.Runtime`.
#[pyclass(module = "keras_attn._rust")]
struct LiteRtRuntime {
    inner: std::sync::Mutex<crate::litert::runtime::Runtime>,
}

#[pymethods]
impl LiteRtRuntime {
    #[new]
    #[pyo3(signature = (library, model, name, threads=None, int8_gate_weights=false))]
    fn new(py: Python<'_>, library: &str, model: &[u8], name: &str, threads: Option<usize>, int8_gate_weights: bool) -> PyResult<Self> {
        let gates = if int8_gate_weights { GateWeights::Int8 } else { GateWeights::AsMap };
        let runtime = py.detach(|| crate::litert::runtime::Runtime::new(library, model, name, threads, gates)).map_err(value_error)?;
        Ok(LiteRtRuntime { inner: std::sync::Mutex::new(runtime) })
    }

    #[getter]
    fn input_shapes(&self) -> Vec<Vec<usize>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).input_shapes().to_vec()
    }

    #[getter]
    fn output_shapes(&self) -> Vec<Vec<usize>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).output_shapes().to_vec()
    }

    /// The NumPy dtype name of every input: "float32" or "int8".
    #[getter]
    fn input_dtypes(&self) -> Vec<&'static str> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).input_types().iter().map(|t| t.name()).collect()
    }

    /// The NumPy dtype name of every output: "float32" or "int8".
    #[getter]
    fn output_dtypes(&self) -> Vec<&'static str> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).output_types().iter().map(|t| t.name()).collect()
    }

    /// The fused blocks built once and kept between runs (one per fused node).
    #[getter]
    fn cached_blocks(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cached_blocks()
    }

    /// `(model_seconds, [(op name, map shape, calls, buffer seconds, compute seconds)])` since
    /// the last call: the time in LiteRT's runs of the whole model, and each fused op's share of
    /// it per feature-map shape.
    #[allow(clippy::type_complexity)]
    fn take_timings(&self) -> (f64, Vec<(&'static str, Vec<usize>, u64, f64, f64)>) {
        let (ops, model) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take_timings();
        let ops = ops.into_iter().map(|(op, shape, t)| (op.name(), shape, t.calls, t.buffers.as_secs_f64(), t.compute.as_secs_f64())).collect();
        (model.as_secs_f64(), ops)
    }

    /// Runs the model on C-contiguous arrays of the inputs' dtypes (`input_dtypes`); returns
    /// arrays of the outputs' dtypes.
    fn run<'py>(&self, py: Python<'py>, inputs: Vec<Bound<'py, PyAny>>) -> PyResult<Vec<Out<'py>>> {
        let types = self.inner.lock().unwrap_or_else(|e| e.into_inner()).input_types().to_vec();
        if inputs.len() != types.len() {
            return Err(value_error(format!("`inputs` must hold {} arrays, one per model input; got {}", types.len(), inputs.len())));
        }
        let held = inputs.iter().zip(&types).enumerate().map(|(i, (a, &t))| Held::extract(a, i, t)).collect::<PyResult<Vec<_>>>()?;
        let values = held.iter().enumerate().map(|(i, h)| h.values(i)).collect::<PyResult<Vec<_>>>()?;
        let (results, shapes) = py.detach(|| {
            let mut runtime = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            (runtime.run(&values), runtime.output_shapes().to_vec())
        });
        let results = results.map_err(value_error)?;
        results
            .into_iter()
            .zip(shapes)
            .map(|(data, shape)| match data {
                Output::Float32(d) => shaped(py, d, &shape),
                Output::Int8(d) => shaped(py, d, &shape),
            })
            .collect()
    }
}

/// A model input array, read-only borrowed as the model's element type.
enum Held<'py> {
    Float32(PyReadonlyArrayDyn<'py, f32>),
    Int8(PyReadonlyArrayDyn<'py, i8>),
}

impl<'py> Held<'py> {
    /// `inputs[i]` as an array of `expected`, or a `TypeError` naming both dtypes.
    fn extract(a: &Bound<'py, PyAny>, i: usize, expected: ElementType) -> PyResult<Held<'py>> {
        let held = match expected {
            ElementType::Float32 => a.extract().map(Held::Float32).ok(),
            ElementType::Int8 => a.extract().map(Held::Int8).ok(),
        };
        held.ok_or_else(|| {
            let given = match a.getattr("dtype") {
                Ok(dtype) => format!("dtype {}", dtype.str().map(|s| s.to_string()).unwrap_or_default()),
                Err(_) => format!("a {}", a.get_type().name().map(|s| s.to_string()).unwrap_or_default()),
            };
            PyTypeError::new_err(format!("`inputs[{i}]` must be an array of dtype {} (the model input's type); got {given}", expected.name()))
        })
    }

    fn values(&self, i: usize) -> PyResult<Input<'_>> {
        let name = format!("inputs[{i}]");
        Ok(match self {
            Held::Float32(a) => Input::Float32(contiguous(a, &name)?),
            Held::Int8(a) => Input::Int8(contiguous(a, &name)?),
        })
    }
}

#[pymodule]
fn _rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(channel_pool, m)?)?;
    m.add_function(wrap_pyfunction!(spatial_pool, m)?)?;
    m.add_function(wrap_pyfunction!(apply_gates, m)?)?;
    m.add_function(wrap_pyfunction!(apply_bam, m)?)?;
    m.add_function(wrap_pyfunction!(read_probe, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_count, m)?)?;
    m.add_function(wrap_pyfunction!(verify_tflite, m)?)?;
    m.add_class::<block::Block>()?;
    m.add_class::<LiteRtRuntime>()?;
    m.add("__version__", crate::VERSION)?;
    Ok(())
}
