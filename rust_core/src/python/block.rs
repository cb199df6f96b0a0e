//! The `Block` class: whole attention blocks built from folded weights (by `keras_attn.cpu`).

use super::{contiguous, exec, filled, map, parse_fusion, value_error, Out};
use crate::blocks::bam::Bam;
use crate::blocks::cbam::{Cbam, ChannelGate};
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::blocks::matmul::Dense;
use crate::blocks::squeeze_excite::SqueezeExcite;
use numpy::{PyReadonlyArray4, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

#[derive(Debug)]
enum Kind {
    Cbam(Cbam),
    SqueezeExcite(SqueezeExcite),
    Bam(Bam),
}

/// A whole attention block with its weights folded, run in Rust. Built by `keras_attn.cpu`.
#[pyclass(frozen, module = "keras_attn._rust")]
pub(super) struct Block {
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
