//! The fused custom ops, independent of LiteRT: their attributes, their inputs, and running
//! them on slices with the blocks of [`crate::blocks`].
//!
//! Every op takes the feature map (NHWC float32) first, then, when its `residual` attribute is
//! 1, the shortcut (a map of the same shape and type), then its folded weights, then one int32
//! "config" vector holding the op's attributes in the order of [`OpKind::keys`]. Its output is
//! `block(x) + shortcut` (when residual), then `max(., 0)` (when `relu`): a ResNet block's
//! ADD and RELU after the attention fused into the attention's output pass. The attributes
//! also travel as a flexbuffer map in the op's custom options, which LiteRT hands to `Init`
//! only: `Run` gets no per-node state (one `user_data` serves every node of an op name), so it
//! reads the same attributes from the config tensor.
//!
//! The int8 variant of an op (its map and shortcut are INT8) takes one more input before the
//! config: the float32 "quantization" vector `[input_scale, input_zero_point, output_scale,
//! output_zero_point]`, followed by `[residual_scale, residual_zero_point]` (the shortcut's) when
//! residual, and writes an INT8 map quantized as the output after the ReLU. Its custom options
//! may carry the same values under [`QUANTIZATION_KEYS`] (all four or none) and
//! [`RESIDUAL_QUANTIZATION_KEYS`] (both or none).

use crate::apply::{Epilogue, Fusion, MapEpilogue};
use crate::blocks::bam::Bam;
use crate::blocks::cbam::{Cbam, ChannelGate};
use crate::blocks::conv::{Conv2d, PoolConv};
use crate::blocks::matmul::Dense;
use crate::blocks::quantized::{self, QuantizedEpilogue, QuantizedShortcut, Quantization};
use crate::blocks::squeeze_excite::SqueezeExcite;
use crate::exec::Exec;
use crate::layout::{Dims, Layout};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The attribute layout version this crate reads and the exporter writes (2: the residual
/// epilogue's `residual` and `relu`).
pub const VERSION: i64 = 2;

/// The optional custom-option keys of an int8 op, in the order of its quantization vector.
pub const QUANTIZATION_KEYS: [&str; 4] = ["input_scale", "input_zero_point", "output_scale", "output_zero_point"];

/// The shortcut's quantization keys of a residual int8 op, after [`QUANTIZATION_KEYS`].
pub const RESIDUAL_QUANTIZATION_KEYS: [&str; 2] = ["residual_scale", "residual_zero_point"];

/// One of the fused ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// CBAM, ChannelAttention or SpatialAttention.
    Cbam,
    SqueezeExcite,
    Bam,
}

impl OpKind {
    pub const ALL: [OpKind; 3] = [OpKind::Cbam, OpKind::SqueezeExcite, OpKind::Bam];

    /// The custom op name in the `.tflite` file.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Cbam => "KerasAttnCBAM",
            OpKind::SqueezeExcite => "KerasAttnSE",
            OpKind::Bam => "KerasAttnBAM",
        }
    }

    /// The attribute names, in the order of the config tensor.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            OpKind::Cbam => &["version", "channel_gate", "spatial_gate", "pool_avg", "pool_max", "kernel_size", "residual", "relu"],
            OpKind::SqueezeExcite => &["version", "residual", "relu"],
            OpKind::Bam => &["version", "dense_layers", "conv_layers", "dilation", "fusion_product", "residual", "relu"],
        }
    }

    /// Checks attribute values (in `keys` order) and returns the float op's input count (the
    /// int8 variant takes one more).
    pub fn validate(self, values: &[i64]) -> Result<usize, String> {
        let name = self.name();
        if values.len() != self.keys().len() {
            return Err(format!("{name}: expected {} attributes {:?}, got {}", self.keys().len(), self.keys(), values.len()));
        }
        if values[0] != VERSION {
            return Err(format!(
                "{name}: attribute version {} is not supported (this build reads version {VERSION}; export the model again with this version of keras-attn)",
                values[0]
            ));
        }
        let flag = |i: usize| match values[i] {
            0 | 1 => Ok(values[i] == 1),
            v => Err(format!("{name}: attribute {} must be 0 or 1, got {v}", self.keys()[i])),
        };
        let range = |i: usize, lo: i64, hi: i64| match values[i] {
            v if (lo..=hi).contains(&v) => Ok(v as usize),
            v => Err(format!("{name}: attribute {} must be in {lo}..={hi}, got {v}", self.keys()[i])),
        };
        let residual = flag(values.len() - 2)?;
        flag(values.len() - 1)?;
        // The map, the shortcut, the weights, the config.
        let count = match self {
            OpKind::Cbam => {
                let (channel, spatial) = (flag(1)?, flag(2)?);
                let (avg, max) = (flag(3)?, flag(4)?);
                let size = range(5, 1, 255)?;
                if !channel && !spatial {
                    return Err(format!("{name}: expected channel_gate or spatial_gate (or both) to be 1"));
                }
                if channel && !(avg || max) {
                    return Err(format!("{name}: the channel gate needs pool_avg or pool_max"));
                }
                if spatial && size.is_multiple_of(2) {
                    return Err(format!("{name}: kernel_size must be odd, got {size}"));
                }
                2 + 4 * channel as usize + 2 * spatial as usize
            }
            OpKind::SqueezeExcite => 6,
            OpKind::Bam => {
                let dense = range(1, 1, 64)?;
                let convs = range(2, 2, 64)?;
                range(3, 1, 1 << 16)?;
                flag(4)?;
                2 + 2 * dense + 2 * convs
            }
        };
        Ok(count + residual as usize)
    }

    /// The epilogue flags `(residual, relu)` of checked attribute values.
    pub fn epilogue(values: &[i64]) -> (bool, bool) {
        (values[values.len() - 2] == 1, values[values.len() - 1] == 1)
    }

    /// The attributes from the op's flexbuffer custom options (a map of integers).
    pub fn attributes(self, options: &[u8]) -> Result<Vec<i64>, String> {
        let name = self.name();
        let bad = |what: String| format!("{name}: malformed attributes ({what})");
        let root = flexbuffers::Reader::get_root(options).map_err(|e| bad(format!("not a flexbuffer: {e}")))?;
        let map = root.get_map().map_err(|e| bad(format!("not a map: {e}")))?;
        let values = self
            .keys()
            .iter()
            .map(|key| {
                let value = map.index(*key).map_err(|_| bad(format!("missing {key:?}")))?;
                value.get_i64().map_err(|_| bad(format!("{key:?} is not an integer")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.validate(&values)?;
        self.quantization_attributes(options)?;
        Ok(values)
    }

    /// The int8 variant's quantization from the custom options (the flexbuffer map of
    /// [`OpKind::attributes`]), None when they hold none of [`QUANTIZATION_KEYS`]; the
    /// shortcut's [`RESIDUAL_QUANTIZATION_KEYS`] are checked too (both or none).
    pub fn quantization_attributes(self, options: &[u8]) -> Result<Option<Quantization>, String> {
        use flexbuffers::FlexBufferType as T;
        let name = self.name();
        let bad = |what: String| format!("{name}: malformed quantization attributes ({what})");
        let root = flexbuffers::Reader::get_root(options).map_err(|e| bad(format!("not a flexbuffer: {e}")))?;
        let map = root.get_map().map_err(|e| bad(format!("not a map: {e}")))?;
        let values: Vec<Option<f64>> = QUANTIZATION_KEYS
            .iter()
            .chain(&RESIDUAL_QUANTIZATION_KEYS)
            .map(|key| match map.index(*key) {
                Err(_) => Ok(None),
                Ok(v) => match v.flexbuffer_type() {
                    T::Int | T::UInt | T::Float | T::IndirectInt | T::IndirectUInt | T::IndirectFloat => Ok(Some(v.as_f64())),
                    other => Err(bad(format!("{key:?} must be a number, got {other:?}"))),
                },
            })
            .collect::<Result<_, _>>()?;
        let (values, residual) = values.split_at(QUANTIZATION_KEYS.len());
        match residual {
            [None, None] => {}
            [Some(scale), Some(zero_point)] => {
                quantized::scale(RESIDUAL_QUANTIZATION_KEYS[0], *scale).map_err(bad)?;
                quantized::zero_point(RESIDUAL_QUANTIZATION_KEYS[1], *zero_point).map_err(bad)?;
            }
            _ => return Err(bad(format!("expected both of {RESIDUAL_QUANTIZATION_KEYS:?} or neither"))),
        }
        match values.iter().filter(|v| v.is_some()).count() {
            0 => Ok(None),
            4 => {
                let values: Vec<f64> = values.iter().flatten().copied().collect();
                let q = Quantization::from_values([values[0], values[1], values[2], values[3]]);
                q.map(Some).map_err(bad)
            }
            _ => {
                let missing: Vec<&str> = QUANTIZATION_KEYS.iter().zip(values).filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
                Err(bad(format!("expected all of {QUANTIZATION_KEYS:?} or none, missing {missing:?}")))
            }
        }
    }
}

/// A tensor handed to a kernel.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub shape: &'a [usize],
    pub data: TensorData<'a>,
}

#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    I8(&'a [i8]),
    /// Any other element type (named for messages).
    Other(&'static str),
}

impl<'a> Tensor<'a> {
    fn f32(&self, what: &str) -> Result<&'a [f32], String> {
        match self.data {
            TensorData::F32(d) if d.len() == self.shape.iter().product::<usize>() => Ok(d),
            TensorData::F32(_) => Err(format!("{what}: buffer size does not match shape {:?}", self.shape)),
            TensorData::I32(_) => Err(format!("{what}: expected float32, got int32")),
            TensorData::I8(_) => Err(format!("{what}: expected float32, got int8")),
            TensorData::Other(t) => Err(format!("{what}: expected float32, got {t}")),
        }
    }
}

/// A block built from an op's inputs.
#[derive(Debug)]
pub enum Block {
    Cbam(Cbam),
    SqueezeExcite(SqueezeExcite),
    Bam(Bam),
}

impl Block {
    /// The same block computing its MLPs with int8 weights (see [`Dense::with_int8_weights`]):
    /// how the int8 ops run their blocks.
    pub fn with_int8_weights(self) -> Block {
        match self {
            Block::Cbam(b) => Block::Cbam(b.with_int8_weights()),
            Block::SqueezeExcite(b) => Block::SqueezeExcite(b.with_int8_weights()),
            Block::Bam(b) => Block::Bam(b.with_int8_weights()),
        }
    }

    /// The channels of the map the block takes.
    pub fn channels(&self) -> usize {
        match self {
            Block::Cbam(b) => b.channels(),
            Block::SqueezeExcite(b) => b.channels(),
            Block::Bam(b) => b.channels(),
        }
    }

    pub fn forward(&self, exec: Exec, x: &[f32], dims: Dims, out: &mut [f32]) {
        self.forward_with(exec, x, dims, Epilogue::NONE, out);
    }

    pub fn forward_with(&self, exec: Exec, x: &[f32], dims: Dims, epilogue: MapEpilogue, out: &mut [f32]) {
        match self {
            Block::Cbam(b) => b.forward_with(exec, x, dims, epilogue, out),
            Block::SqueezeExcite(b) => b.forward_with(exec, x, dims, epilogue, out),
            Block::Bam(b) => b.forward_with(exec, x, dims, epilogue, out),
        }
    }

    pub fn forward_int8_with(&self, exec: Exec, x: &[i8], dims: Dims, q: Quantization, epilogue: QuantizedEpilogue, out: &mut [i8]) {
        match self {
            Block::Cbam(b) => b.forward_int8_with(exec, x, dims, q, epilogue, out),
            Block::SqueezeExcite(b) => b.forward_int8_with(exec, x, dims, q, epilogue, out),
            Block::Bam(b) => b.forward_int8_with(exec, x, dims, q, epilogue, out),
        }
    }

    /// Runs the block on `map` into `out`, which must have the map's element type.
    fn run(&self, op: OpKind, exec: Exec, dims: Dims, map: Map, out: Output) -> Result<(), String> {
        let exec = exec_for(exec, dims.len());
        match (map, out) {
            (Map::F32(x, epilogue), Output::F32(out)) => self.forward_with(exec, x, dims, epilogue, out),
            (Map::I8(x, q, epilogue), Output::I8(out)) => self.forward_int8_with(exec, x, dims, q, epilogue, out),
            (Map::F32(..), Output::I8(_)) => return Err(format!("{}: a float32 map needs a float32 output, got int8", op.name())),
            (Map::I8(..), Output::F32(_)) => return Err(format!("{}: an int8 map needs an int8 output, got float32", op.name())),
        }
        Ok(())
    }
}

/// An op's feature map with its epilogue: float32, or int8 with its quantization.
#[derive(Clone, Copy, Debug)]
enum Map<'a> {
    F32(&'a [f32], MapEpilogue<'a>),
    I8(&'a [i8], Quantization, QuantizedEpilogue<'a>),
}

impl Map<'_> {
    fn len(&self) -> usize {
        match self {
            Map::F32(x, _) => x.len(),
            Map::I8(x, ..) => x.len(),
        }
    }
}

/// An op's output buffer: float32 for the float op, int8 for the int8 variant.
#[derive(Debug)]
pub enum Output<'a> {
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
}

impl Output<'_> {
    pub fn len(&self) -> usize {
        match self {
            Output::F32(o) => o.len(),
            Output::I8(o) => o.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> Output<'_> {
        match self {
            Output::F32(o) => Output::F32(o),
            Output::I8(o) => Output::I8(o),
        }
    }

    /// Marks a failed run: NaN for float32; an int8 map has no NaN, so the output zero point
    /// (a real 0) when known, else 0. The error itself is recorded by the caller.
    pub fn fill_failed(&mut self, zero_point: Option<i8>) {
        match self {
            Output::F32(o) => o.fill(f32::NAN),
            Output::I8(o) => o.fill(zero_point.unwrap_or(0)),
        }
    }
}

impl<'a> From<&'a mut [f32]> for Output<'a> {
    fn from(out: &'a mut [f32]) -> Self {
        Output::F32(out)
    }
}

impl<'a> From<&'a mut Vec<f32>> for Output<'a> {
    fn from(out: &'a mut Vec<f32>) -> Self {
        Output::F32(out)
    }
}

impl<'a> From<&'a mut [i8]> for Output<'a> {
    fn from(out: &'a mut [i8]) -> Self {
        Output::I8(out)
    }
}

impl<'a> From<&'a mut Vec<i8>> for Output<'a> {
    fn from(out: &'a mut Vec<i8>) -> Self {
        Output::I8(out)
    }
}

/// Whether the op's inputs are those of the int8 variant (its map is int8).
fn is_int8(inputs: &[Tensor]) -> bool {
    matches!(inputs.first().map(|t| t.data), Some(TensorData::I8(_)))
}

/// The checked quantization vector of an int8 op (the input before the config): the map's and
/// the output's, and the shortcut's `(scale, zero_point)` when `residual`.
fn quantization(op: OpKind, inputs: &[Tensor], residual: bool) -> Result<(Quantization, Option<(f32, i32)>), String> {
    let name = op.name();
    let tensor = &inputs[inputs.len() - 2];
    let bad = |e: String| format!("{name}: quantization input: {e}");
    match (tensor.data, residual) {
        (TensorData::F32(&[a, b, c, d]), false) if tensor.shape == [4] => Ok((Quantization::from_values([a, b, c, d].map(f64::from)).map_err(bad)?, None)),
        (TensorData::F32(&[a, b, c, d, e, f]), true) if tensor.shape == [6] => {
            let q = Quantization::from_values([a, b, c, d].map(f64::from)).map_err(bad)?;
            let scale = quantized::scale(RESIDUAL_QUANTIZATION_KEYS[0], e.into()).map_err(bad)?;
            Ok((q, Some((scale, quantized::zero_point(RESIDUAL_QUANTIZATION_KEYS[1], f.into()).map_err(bad)?))))
        }
        (_, false) => Err(format!("{name}: the input before the config must be the float32 quantization vector {QUANTIZATION_KEYS:?}, got shape {:?}", tensor.shape)),
        (_, true) => Err(format!(
            "{name}: the input before the config must be the float32 quantization vector {:?}, got shape {:?}",
            [&QUANTIZATION_KEYS[..], &RESIDUAL_QUANTIZATION_KEYS[..]].concat(),
            tensor.shape
        )),
    }
}

/// The output zero point of an int8 op, if its config and quantization vector are readable and
/// valid.
pub fn output_zero_point(op: OpKind, inputs: &[Tensor]) -> Option<i8> {
    let config = config(op, inputs).ok()?;
    let (residual, _) = OpKind::epilogue(&config);
    is_int8(inputs).then(|| quantization(op, inputs, residual).ok()).flatten().map(|(q, _)| q.output_zero_point as i8)
}

/// The config tensor's values (the last input), checked.
pub fn config(op: OpKind, inputs: &[Tensor]) -> Result<Vec<i64>, String> {
    let name = op.name();
    let last = inputs.last().ok_or_else(|| format!("{name}: no inputs"))?;
    let values: Vec<i64> = match last.data {
        TensorData::I32(v) if last.shape.len() == 1 => v.iter().map(|&v| v.into()).collect(),
        _ => return Err(format!("{name}: the last input must be the int32 config vector {:?}", op.keys())),
    };
    let count = op.validate(&values)? + is_int8(inputs) as usize;
    if inputs.len() != count {
        return Err(format!("{name}: expected {count} inputs for attributes {values:?}, got {}", inputs.len()));
    }
    Ok(values)
}

/// The NHWC dims of the feature map (input 0).
pub fn map_dims(op: OpKind, x: &Tensor) -> Result<Dims, String> {
    match *x.shape {
        [n, h, w, c] if n * h * w * c > 0 => Ok(Dims { n, h, w, c, layout: Layout::ChannelsLast }),
        _ => Err(format!("{}: expected a non-empty 4-D NHWC feature map, got shape {:?}", op.name(), x.shape)),
    }
}

fn dense(op: OpKind, kernel: &Tensor, bias: &Tensor, relu: bool) -> Result<Dense, String> {
    let k = kernel.f32(&format!("{} dense kernel", op.name()))?;
    let b = bias.f32(&format!("{} dense bias", op.name()))?;
    match *kernel.shape {
        [inputs, outputs] if bias.shape == [outputs] => Dense::new(k, b, inputs, relu),
        _ => Err(format!("{}: expected a (in, out) dense kernel and an (out,) bias, got {:?} and {:?}", op.name(), kernel.shape, bias.shape)),
    }
}

/// Builds the block of `op` from its weight inputs (see [`weights`]) and config, for a map of
/// `channels` channels: weights that are consistent with each other but not with the map are
/// an error (the block's forward would panic on them).
pub fn build(op: OpKind, w: &[Tensor], config: &[i64], channels: usize) -> Result<Block, String> {
    let block = build_block(op, w, config, channels)?;
    if block.channels() != channels {
        return Err(format!("{}: the weights are for {} channels, the feature map has {channels}", op.name(), block.channels()));
    }
    Ok(block)
}

fn build_block(op: OpKind, w: &[Tensor], config: &[i64], channels: usize) -> Result<Block, String> {
    let name = op.name();
    match op {
        OpKind::Cbam => {
            let (has_channel, has_spatial) = (config[1] == 1, config[2] == 1);
            let mut rest = w;
            let channel = if has_channel {
                let gate = ChannelGate::new(dense(op, &rest[0], &rest[1], true)?, dense(op, &rest[2], &rest[3], false)?, config[3] == 1, config[4] == 1)?;
                rest = &rest[4..];
                Some(gate)
            } else {
                None
            };
            let spatial = if has_spatial {
                let size = config[5] as usize;
                let (kernel, bias) = (&rest[0], &rest[1]);
                if kernel.shape != [size, size, 2, 1] || bias.shape != [1] {
                    return Err(format!("{name}: expected a ({size}, {size}, 2, 1) conv kernel and a (1,) bias, got {:?} and {:?}", kernel.shape, bias.shape));
                }
                Some(PoolConv::new(kernel.f32("conv kernel")?, size, bias.f32("conv bias")?[0])?)
            } else {
                None
            };
            Ok(Block::Cbam(Cbam::new(channel, spatial, channels)?))
        }
        OpKind::SqueezeExcite => {
            Ok(Block::SqueezeExcite(SqueezeExcite::new(dense(op, &w[0], &w[1], true)?, dense(op, &w[2], &w[3], false)?)?))
        }
        OpKind::Bam => {
            let (dense_layers, conv_layers, dilation) = (config[1] as usize, config[2] as usize, config[3] as usize);
            let fusion = if config[4] == 1 { Fusion::Product } else { Fusion::Sum };
            let mlp = (0..dense_layers)
                .map(|i| dense(op, &w[2 * i], &w[2 * i + 1], i + 1 < dense_layers))
                .collect::<Result<Vec<_>, _>>()?;
            let mut convs = Vec::with_capacity(conv_layers);
            for i in 0..conv_layers {
                let (kernel, bias) = (&w[2 * (dense_layers + i)], &w[2 * (dense_layers + i) + 1]);
                let (last, first) = (i + 1 == conv_layers, i == 0);
                let d = if first || last { 1 } else { dilation };
                match *kernel.shape {
                    [k, k2, inputs, outputs] if k == k2 && bias.shape == [outputs] => convs.push(Conv2d::new(
                        kernel.f32("conv kernel")?,
                        k,
                        inputs,
                        bias.f32("conv bias")?,
                        d,
                        !last,
                    )?),
                    _ => return Err(format!("{name}: expected square (K, K, in, out) conv kernels and (out,) biases, got {:?} and {:?}", kernel.shape, bias.shape)),
                }
            }
            Ok(Block::Bam(Bam::new(mlp, convs, fusion)?))
        }
    }
}

/// The weight inputs of a checked op with checked `config`: between the map (and shortcut) and
/// the config, or for the int8 variant the quantization vector.
pub fn weights<'i, 'a>(inputs: &'i [Tensor<'a>], config: &[i64]) -> &'i [Tensor<'a>] {
    let (residual, _) = OpKind::epilogue(config);
    &inputs[1 + residual as usize..inputs.len() - 1 - is_int8(inputs) as usize]
}

/// The checked config, the map's dims and the map of `op`'s inputs with its epilogue, for an
/// output of `out_len` values.
fn prepare<'a>(op: OpKind, inputs: &[Tensor<'a>], out_len: usize) -> Result<(Vec<i64>, Dims, Map<'a>), String> {
    let name = op.name();
    let config = config(op, inputs)?;
    let dims = map_dims(op, &inputs[0])?;
    let (residual, relu) = OpKind::epilogue(&config);
    let shortcut = residual.then_some(&inputs[1]);
    if let Some(s) = shortcut.filter(|s| s.shape != inputs[0].shape) {
        return Err(format!("{name}: the shortcut must have the feature map's shape {:?}, got {:?}", inputs[0].shape, s.shape));
    }
    let map = match inputs[0].data {
        TensorData::I8(x) if x.len() == dims.len() => {
            let (q, shortcut_quantization) = quantization(op, inputs, residual)?;
            let shortcut = match (shortcut, shortcut_quantization) {
                (Some(s), Some((scale, zero_point))) => match s.data {
                    TensorData::I8(map) if map.len() == x.len() => Some(QuantizedShortcut { map, scale, zero_point }),
                    _ => return Err(format!("{name}: the shortcut of an int8 map must be an int8 map of shape {:?}", inputs[0].shape)),
                },
                _ => None,
            };
            Map::I8(x, q, Epilogue { shortcut, relu })
        }
        TensorData::I8(_) => return Err(format!("{name}: feature map: buffer size does not match shape {:?}", inputs[0].shape)),
        _ => {
            let shortcut = shortcut.map(|s| s.f32("shortcut")).transpose()?;
            Map::F32(inputs[0].f32("feature map")?, Epilogue { shortcut, relu })
        }
    };
    if out_len != map.len() {
        return Err(format!("{}: the output holds {out_len} values, the input {}", op.name(), map.len()));
    }
    Ok((config, dims, map))
}

/// `exec` for a map of `elems` values: on the calling thread unless the map is large enough to
/// be split, since `Exec::run` would otherwise hand the whole call to a pool thread for nothing.
fn exec_for(exec: Exec, elems: usize) -> Exec {
    if exec.splits(elems) {
        exec
    } else {
        exec.serial()
    }
}

/// Runs `op` on its inputs into `out` (the map's size and element type), building its block
/// from the weights.
pub fn run<'o>(op: OpKind, exec: Exec, gates: GateWeights, inputs: &[Tensor], out: impl Into<Output<'o>>) -> Result<(), String> {
    let out = out.into();
    let (config, dims, map) = prepare(op, inputs, out.len())?;
    build_for(op, weights(inputs, &config), &config, dims.c, gates.int8_for(&map))?.run(op, exec, dims, map, out)
}

/// The weights the blocks' gate MLPs compute with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GateWeights {
    /// float32 on float32 maps, int8 on int8 maps.
    #[default]
    AsMap,
    /// int8 on every map (see [`Dense::with_int8_weights`]): on a float32 map the MLPs then read
    /// a quarter of the bytes, which matters inside a network, where their weights come from
    /// memory at every run (the 7x7x2048 blocks of a ResNet-50 hold 2 MB of them each).
    Int8,
}

impl GateWeights {
    /// Whether the block for `map` computes its MLPs with int8 weights.
    fn int8_for(self, map: &Map) -> bool {
        self == GateWeights::Int8 || matches!(map, Map::I8(..))
    }
}

/// [`build`], the MLPs then computing with int8 weights when `int8_weights`.
fn build_for(op: OpKind, w: &[Tensor], config: &[i64], channels: usize, int8_weights: bool) -> Result<Block, String> {
    let block = build(op, w, config, channels)?;
    Ok(if int8_weights { block.with_int8_weights() } else { block })
}

/// What a cached block was built from: the op, its config, the map's channels, whether its MLPs
/// compute with int8 weights and, for every weight input, where its data lies, how many values it holds and
/// its shape.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    op: OpKind,
    config: Vec<i64>,
    channels: usize,
    int8_weights: bool,
    weights: Vec<(usize, usize, Vec<usize>)>,
}

impl BlockKey {
    /// None when a weight is not float32 (building it fails, so there is nothing to cache).
    fn new(op: OpKind, config: &[i64], channels: usize, int8_weights: bool, weights: &[Tensor]) -> Option<BlockKey> {
        let weights = weights
            .iter()
            .map(|w| match w.data {
                TensorData::F32(d) => Some((d.as_ptr() as usize, d.len(), w.shape.to_vec())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(BlockKey { op, config: config.to_vec(), channels, int8_weights, weights })
    }
}

/// Blocks built once per node and reused on every run, so that a run does not re-pack the
/// weights (about 10 MB per CBAM-ResNet-50 inference). LiteRT gives a custom op no per-node
/// state, so a node's block is found by its weights' addresses, sizes and shapes and its config.
///
/// Only for weights that stay unchanged at their addresses while the cache holds them: the
/// constant tensors of a loaded model (see `litert::kernel::fused_weights_are_constant`), with
/// the cache cleared when the model's nodes are destroyed.
#[derive(Debug, Default)]
pub struct BlockCache {
    blocks: RwLock<HashMap<BlockKey, Arc<Block>>>,
}

impl BlockCache {
    /// Like [`run`], with the block built on the first run of each node only.
    pub fn run<'o>(&self, op: OpKind, exec: Exec, gates: GateWeights, inputs: &[Tensor], out: impl Into<Output<'o>>) -> Result<(), String> {
        let out = out.into();
        let (config, dims, map) = prepare(op, inputs, out.len())?;
        let int8_weights = gates.int8_for(&map);
        let Some(key) = BlockKey::new(op, &config, dims.c, int8_weights, weights(inputs, &config)) else {
            return run(op, exec, gates, inputs, out);
        };
        let cached = self.blocks.read().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let block = match cached {
            Some(block) => block,
            None => {
                let block = Arc::new(build_for(op, weights(inputs, &config), &config, dims.c, int8_weights)?);
                self.blocks.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(block).clone()
            }
        };
        block.run(op, exec, dims, map, out)
    }

    /// The number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every block (their weights may be about to go).
    pub fn clear(&self) {
        self.blocks.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod int8_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::data;

    fn flex(pairs: &[(&str, i64)]) -> Vec<u8> {
        let mut builder = flexbuffers::Builder::default();
        let mut map = builder.start_map();
        for (k, v) in pairs {
            map.push(k, *v);
        }
        map.end_map();
        builder.view().to_vec()
    }

    #[test]
    fn attributes_are_read_and_checked() {
        let good = [("version", 2), ("channel_gate", 1), ("spatial_gate", 1), ("pool_avg", 1), ("pool_max", 0), ("kernel_size", 7), ("residual", 0), ("relu", 1)];
        assert_eq!(OpKind::Cbam.attributes(&flex(&good)).unwrap(), vec![2, 1, 1, 1, 0, 7, 0, 1]);
        assert_eq!(OpKind::Cbam.validate(&[2, 1, 1, 1, 0, 7, 0, 1]).unwrap(), 8);
        // The shortcut is one more input.
        assert_eq!(OpKind::Cbam.validate(&[2, 1, 1, 1, 0, 7, 1, 1]).unwrap(), 9);
        assert!(OpKind::Cbam.validate(&[2, 1, 1, 1, 0, 7, 2, 1]).unwrap_err().contains("residual must be 0 or 1"));
        assert!(OpKind::Cbam.attributes(&flex(&good[1..])).unwrap_err().contains("missing \"version\""));
        assert!(OpKind::Cbam.attributes(&flex(&good[..7])).unwrap_err().contains("missing \"relu\""));
        let mut old = good;
        old[0].1 = 1;
        let err = OpKind::Cbam.attributes(&flex(&old)).unwrap_err();
        assert!(err.contains("version 1 is not supported") && err.contains("export the model again"), "{err}");
        let mut even = good;
        even[5].1 = 4;
        assert!(OpKind::Cbam.attributes(&flex(&even)).unwrap_err().contains("must be odd"));
        assert!(OpKind::Cbam.attributes(b"\x01\x02").unwrap_err().contains("malformed attributes"));
        assert!(OpKind::Bam.attributes(&flex(&[("version", 2)])).unwrap_err().contains("missing \"dense_layers\""));
    }

    #[test]
    fn squeeze_excite_op_matches_the_block() {
        let (n, h, w, c, r) = (2, 3, 5, 6, 2);
        let x = data(n * h * w * c, 1);
        let (rk, rb, ek, eb) = (data(c * r, 2), data(r, 3), data(r * c, 4), data(c, 5));
        let config = [2, 0, 0];
        let shapes: [&[usize]; 6] = [&[n, h, w, c], &[c, r], &[r], &[r, c], &[c], &[3]];
        let f = |i: usize, d: &'static [f32]| Tensor { shape: shapes[i], data: TensorData::F32(d) };
        let leak = |v: Vec<f32>| -> &'static [f32] { Box::leak(v.into_boxed_slice()) };
        let inputs = [
            f(0, leak(x.clone())),
            f(1, leak(rk.clone())),
            f(2, leak(rb.clone())),
            f(3, leak(ek.clone())),
            f(4, leak(eb.clone())),
            Tensor { shape: shapes[5], data: TensorData::I32(&config) },
        ];
        let mut out = vec![0.0; x.len()];
        run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs, &mut out).unwrap();
        let block = SqueezeExcite::new(Dense::new(&rk, &rb, c, true).unwrap(), Dense::new(&ek, &eb, r, false).unwrap()).unwrap();
        let mut want = vec![0.0; x.len()];
        let dims = Dims { n, h, w, c, layout: Layout::ChannelsLast };
        block.forward(Exec::single(), &x, dims, &mut want);
        assert_eq!(out, want);

        // With int8 gate weights, the float op is the block whose MLP computes with them, cached
        // or not (the cache keeps that block apart from the float one).
        let mut int8_want = vec![0.0; x.len()];
        block.clone().with_int8_weights().forward(Exec::single(), &x, dims, &mut int8_want);
        assert_ne!(int8_want, want);
        run(OpKind::SqueezeExcite, Exec::single(), GateWeights::Int8, &inputs, &mut out).unwrap();
        assert_eq!(out, int8_want);
        let cache = BlockCache::default();
        for (gates, expected) in [(GateWeights::Int8, &int8_want), (GateWeights::AsMap, &want)] {
            cache.run(OpKind::SqueezeExcite, Exec::single(), gates, &inputs, &mut out).unwrap();
            assert_eq!(&out, expected, "{gates:?}");
        }
        assert_eq!(cache.len(), 2);

        // One input short: the config asks for six.
        let err = run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs[1..], &mut out).unwrap_err();
        assert!(err.contains("expected 6 inputs"), "{err}");
        // A kernel that does not fit the map's channels.
        let transposed = [r, c];
        let mut wrong = inputs;
        wrong[1].shape = &transposed;
        assert!(run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &wrong, &mut out).is_err());
        // Weights consistent with each other, for half the map's channels.
        let half: [&[usize]; 4] = [&[c / 2, r], &[r], &[r, c / 2], &[c / 2]];
        let mut halved = inputs;
        for (i, shape) in half.iter().enumerate() {
            halved[i + 1] = Tensor { shape, data: TensorData::F32(leak(data(shape.iter().product(), 9))) };
        }
        let err = run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &halved, &mut out).unwrap_err();
        assert!(err.contains("the weights are for 3 channels, the feature map has 6"), "{err}");
    }

    #[test]
    fn residual_float_op_adds_the_shortcut_then_applies_relu() {
        let (n, h, w, c, r) = (1, 4, 5, 6, 2);
        let dims = Dims { n, h, w, c, layout: Layout::ChannelsLast };
        let (x, shortcut) = (data(dims.len(), 1), data(dims.len(), 9));
        let weights = [data(c * r, 2), data(r, 3), data(r * c, 4), data(c, 5)];
        let shapes: [&[usize]; 4] = [&[c, r], &[r], &[r, c], &[c]];
        let block = SqueezeExcite::new(Dense::new(&weights[0], &weights[1], c, true).unwrap(), Dense::new(&weights[2], &weights[3], r, false).unwrap()).unwrap();
        let mut plain = vec![0.0; x.len()];
        block.forward(Exec::single(), &x, dims, &mut plain);
        let map_shape = [n, h, w, c];
        for relu in [0, 1] {
            let config = [2, 1, relu];
            let mut inputs = vec![Tensor { shape: &map_shape, data: TensorData::F32(&x) }, Tensor { shape: &map_shape, data: TensorData::F32(&shortcut) }];
            inputs.extend(weights.iter().zip(shapes).map(|(d, shape)| Tensor { shape, data: TensorData::F32(d) }));
            inputs.push(Tensor { shape: &[3], data: TensorData::I32(&config) });
            let mut out = vec![0.0; x.len()];
            run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs, &mut out).unwrap();
            let want: Vec<f32> = plain.iter().zip(&shortcut).map(|(y, s)| if relu == 1 { (y + s).max(0.0) } else { y + s }).collect();
            assert_eq!(out, want, "relu {relu}");
            // Without its shortcut the op is one input short.
            inputs.remove(1);
            assert!(run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs, &mut out).unwrap_err().contains("expected 7 inputs"));
        }
    }

    #[test]
    fn block_cache_keeps_one_block_per_node_and_matches_building_each_run() {
        let (n, h, w, c, r) = (1, 4, 3, 8, 2);
        let x = data(n * h * w * c, 1);
        let config = [2, 0, 0];
        let shapes: [&[usize]; 6] = [&[n, h, w, c], &[c, r], &[r], &[r, c], &[c], &[3]];
        // Two nodes of the same op with the same shapes and different weights.
        let weights: Vec<Vec<Vec<f32>>> = (0..2)
            .map(|node| (0..4).map(|i| data(shapes[i + 1].iter().product(), 10 * node + i as u64 + 2)).collect())
            .collect();
        let inputs = |node: usize| -> Vec<Tensor> {
            let mut v = vec![Tensor { shape: shapes[0], data: TensorData::F32(&x) }];
            v.extend(weights[node].iter().enumerate().map(|(i, d)| Tensor { shape: shapes[i + 1], data: TensorData::F32(d) }));
            v.push(Tensor { shape: shapes[5], data: TensorData::I32(&config) });
            v
        };
        let want: Vec<Vec<f32>> = (0..2)
            .map(|node| {
                let mut out = vec![0.0; x.len()];
                run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs(node), &mut out).unwrap();
                out
            })
            .collect();
        assert_ne!(want[0], want[1]);
        let cache = BlockCache::default();
        for _ in 0..3 {
            for node in [0, 1] {
                let mut out = vec![f32::NAN; x.len()];
                cache.run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs(node), &mut out).unwrap();
                assert_eq!(out, want[node], "node {node}");
            }
        }
        assert_eq!(cache.len(), 2);
        // A bad call is an error and caches nothing.
        let mut short = vec![0.0; x.len() - 1];
        assert!(cache.run(OpKind::SqueezeExcite, Exec::single(), GateWeights::AsMap, &inputs(0), &mut short).unwrap_err().contains("output holds"));
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }
}
