//! The `keras_attn._rust` extension module: thin wrappers only (validate, release the GIL, return
//! new arrays). Kernels live in their own modules and know nothing of Python.
//!
//! Arrays arrive as C-contiguous float32 (`keras_attn.kernels` and `keras_attn.cpu` convert
//! anything else once, with clear errors); this layer still checks every shape so that no input
//! can reach a panic.

use crate::apply::{self, Fusion};
use crate::blocks::bam::Bam;
use crate::blocks::cbam::{Cbam, ChannelGate};
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::blocks::matmul::Dense;
use crate::blocks::squeeze_excite::SqueezeExcite;
use crate::exec::{all_cores, Exec};
use crate::layout::{Dims, Layout};
use crate::simd::Level;
use crate::{bandwidth, pool};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArray4, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

type Out<'py> = Bound<'py, PyAny>;

fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// The run settings from the `threads` and `simd` arguments.
fn exec(threads: Option<usize>, simd: Option<&str>) -> PyResult<Exec> {
    if threads == Some(0) {
        return Err(value_error("`threads` must be a positive int or None (all cores); got 0"));
    }
    let level = match simd {
        Some(name) => Level::from_name(name).map_err(value_error)?,
        None => Level::active(),
    };
    Ok(Exec::new(level, threads))
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

fn shaped<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> PyResult<Out<'py>> {
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
    filled(py, x.shape(), |out| apply::apply_gates(exec, data, dims, channel, spatial, out))
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
    filled(py, x.shape(), |out| apply::apply_bam(exec, data, dims, channel, spatial, fusion, out))
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

#[derive(Debug)]
enum Kind {
    Cbam(Cbam),
    SqueezeExcite(SqueezeExcite),
    Bam(Bam),
}

/// A whole attention block with its weights folded, run in Rust. Built by `keras_attn.cpu`.
#[pyclass(frozen, module = "keras_attn._rust")]
struct Block {
    kind: Kind,
}

fn array<'a>(a: &'a PyReadonlyArrayDyn<'_, f32>, name: &str, ndim: usize) -> PyResult<(&'a [f32], Vec<usize>)> {
    if a.ndim() != ndim {
        return Err(value_error(format!("`{name}` must be {ndim}-D; got shape {:?}", a.shape())));
    }
    Ok((contiguous(a, name)?, a.shape().to_vec()))
}

/// A dense layer from a (in, out) kernel and an (out,) bias.
fn dense(kernel: &PyReadonlyArrayDyn<'_, f32>, bias: &PyReadonlyArrayDyn<'_, f32>, relu: bool) -> PyResult<Dense> {
    let (k, shape) = array(kernel, "kernel", 2)?;
    let (b, _) = array(bias, "bias", 1)?;
    Dense::new(k, b, shape[0], relu).map_err(value_error)
}

#[pymethods]
impl Block {
    /// CBAM, or one of its gates alone: the channel gate from the MLP's two dense layers and the
    /// pools, the spatial gate from a (K, K, 2, 1) kernel and a bias (BatchNorm folded in).
    #[staticmethod]
    #[pyo3(signature = (channels, hidden_kernel=None, hidden_bias=None, output_kernel=None, output_bias=None, pool_avg=true, pool_max=true, conv_kernel=None, conv_bias=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn cbam(
        channels: usize,
        hidden_kernel: Option<PyReadonlyArrayDyn<'_, f32>>,
        hidden_bias: Option<PyReadonlyArrayDyn<'_, f32>>,
        output_kernel: Option<PyReadonlyArrayDyn<'_, f32>>,
        output_bias: Option<PyReadonlyArrayDyn<'_, f32>>,
        pool_avg: bool,
        pool_max: bool,
        conv_kernel: Option<PyReadonlyArrayDyn<'_, f32>>,
        conv_bias: f32,
    ) -> PyResult<Block> {
        let channel = match (hidden_kernel, hidden_bias, output_kernel, output_bias) {
            (Some(hk), Some(hb), Some(ok), Some(ob)) => {
                let gate = ChannelGate::new(dense(&hk, &hb, true)?, dense(&ok, &ob, false)?, pool_avg, pool_max);
                Some(gate.map_err(value_error)?)
            }
            (None, None, None, None) => None,
            _ => return Err(value_error("the channel gate needs all of hidden_kernel, hidden_bias, output_kernel, output_bias")),
        };
        let spatial = match conv_kernel {
            Some(kernel) => {
                let (k, shape) = array(&kernel, "conv_kernel", 4)?;
                if shape[1] != shape[0] || shape[2] != 2 || shape[3] != 1 {
                    return Err(value_error(format!("`conv_kernel` must have shape (K, K, 2, 1); got {shape:?}")));
                }
                Some(PoolConv::new(k, shape[0], conv_bias).map_err(value_error)?)
            }
            None => None,
        };
        Ok(Block { kind: Kind::Cbam(Cbam::new(channel, spatial, channels).map_err(value_error)?) })
    }

    /// Squeeze-and-excitation from its reduce (ReLU) and expand (sigmoid) dense layers.
    #[staticmethod]
    fn squeeze_excite(
        reduce_kernel: PyReadonlyArrayDyn<'_, f32>,
        reduce_bias: PyReadonlyArrayDyn<'_, f32>,
        expand_kernel: PyReadonlyArrayDyn<'_, f32>,
        expand_bias: PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<Block> {
        let reduce = dense(&reduce_kernel, &reduce_bias, true)?;
        let expand = dense(&expand_kernel, &expand_bias, false)?;
        Ok(Block { kind: Kind::SqueezeExcite(SqueezeExcite::new(reduce, expand).map_err(value_error)?) })
    }

    /// BAM from its channel MLP (kernels and biases, ReLU after all but the last) and its spatial
    /// convolutions ((K, K, in, out) kernels, the first and last 1x1, the others dilated by
    /// `dilation`, ReLU after all but the last), BatchNorm folded in.
    #[staticmethod]
    fn bam(
        dense_kernels: Vec<PyReadonlyArrayDyn<'_, f32>>,
        dense_biases: Vec<PyReadonlyArrayDyn<'_, f32>>,
        conv_kernels: Vec<PyReadonlyArrayDyn<'_, f32>>,
        conv_biases: Vec<PyReadonlyArrayDyn<'_, f32>>,
        dilation: usize,
        fusion: &str,
    ) -> PyResult<Block> {
        if dense_kernels.len() != dense_biases.len() || conv_kernels.len() != conv_biases.len() {
            return Err(value_error("BAM: every kernel needs one bias"));
        }
        let fusion = parse_fusion(fusion)?;
        let last_dense = dense_kernels.len().saturating_sub(1);
        let channel_mlp = dense_kernels
            .iter()
            .zip(&dense_biases)
            .enumerate()
            .map(|(i, (k, b))| dense(k, b, i < last_dense))
            .collect::<PyResult<Vec<_>>>()?;
        let last_conv = conv_kernels.len().saturating_sub(1);
        let mut spatial_convs = Vec::new();
        for (i, (kernel, bias)) in conv_kernels.iter().zip(&conv_biases).enumerate() {
            let (k, shape) = array(kernel, "conv kernel", 4)?;
            let (b, _) = array(bias, "conv bias", 1)?;
            let d = if i == 0 || i == last_conv { 1 } else { dilation };
            if shape[0] != shape[1] {
                return Err(value_error(format!("BAM conv kernels must be square; got shape {shape:?}")));
            }
            spatial_convs.push(Conv2d::new(k, shape[0], shape[2], b, d, i < last_conv).map_err(value_error)?);
        }
        Ok(Block { kind: Kind::Bam(Bam::new(channel_mlp, spatial_convs, fusion).map_err(value_error)?) })
    }

    /// The channel count the block was compiled for.
    #[getter]
    fn channels(&self) -> usize {
        match &self.kind {
            Kind::Cbam(b) => b.channels(),
            Kind::SqueezeExcite(b) => b.channels(),
            Kind::Bam(b) => b.channels(),
        }
    }

    /// The block applied to `x`.
    #[pyo3(signature = (x, data_format, threads=None, simd=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray4<'py, f32>,
        data_format: &str,
        threads: Option<usize>,
        simd: Option<&str>,
    ) -> PyResult<Out<'py>> {
        let exec = exec(threads, simd)?;
        let (data, dims) = map(&x, data_format)?;
        if dims.c != self.channels() {
            return Err(value_error(format!(
                "`x` must have {} channels (the compiled layer's) on its {data_format} channel axis; got shape {:?}",
                self.channels(),
                x.shape()
            )));
        }
        filled(py, x.shape(), |out| match &self.kind {
            Kind::Cbam(b) => b.forward(exec, data, dims, out),
            Kind::SqueezeExcite(b) => b.forward(exec, data, dims, out),
            Kind::Bam(b) => b.forward(exec, data, dims, out),
        })
    }

    fn __repr__(&self) -> String {
        let kind = match &self.kind {
            Kind::Cbam(_) => "cbam",
            Kind::SqueezeExcite(_) => "squeeze_excite",
            Kind::Bam(_) => "bam",
        };
        format!("Block({kind}, channels={})", self.channels())
    }
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
    #[pyo3(signature = (library, model_path, threads=None))]
    fn new(py: Python<'_>, library: &str, model_path: &str, threads: Option<usize>) -> PyResult<Self> {
        let runtime = py.detach(|| crate::litert::runtime::Runtime::new(library, model_path, threads)).map_err(value_error)?;
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

    /// Runs the model on C-contiguous float32 arrays; returns float32 arrays.
    fn run<'py>(&self, py: Python<'py>, inputs: Vec<PyReadonlyArrayDyn<'py, f32>>) -> PyResult<Vec<Out<'py>>> {
        let slices = inputs.iter().enumerate().map(|(i, a)| contiguous(a, &format!("inputs[{i}]"))).collect::<PyResult<Vec<_>>>()?;
        let (results, shapes) = py.detach(|| {
            let mut runtime = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            (runtime.run(&slices), runtime.output_shapes().to_vec())
        });
        let results = results.map_err(value_error)?;
        results.into_iter().zip(shapes).map(|(data, shape)| shaped(py, data, &shape)).collect()
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
    m.add_class::<Block>()?;
    m.add_class::<LiteRtRuntime>()?;
    m.add("__version__", crate::VERSION)?;
    Ok(())
}
