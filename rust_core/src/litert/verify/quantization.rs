//! The quantization of the int8 fused ops, checked in the file: the kernels take their scales
//! and zero points from the op's quantization vector (and its custom options), LiteRT's builtin
//! ops around them from the tensors' own quantization. Each must be valid (scales finite and
//! positive, zero points integers in -128..=127), and they must agree: a vector that differs
//! from the tensors would give wrong outputs without an error, and a NaN or zero scale in a
//! tensor only fails inside LiteRT, with a status that says nothing.

use super::{Result, Table};
use crate::blocks::quantized;
use crate::litert::ffi::guard;
use crate::litert::ops::{OpKind, QUANTIZATION_KEYS, RESIDUAL_QUANTIZATION_KEYS};
use std::ops::Range;

/// `TensorType.FLOAT32` and `TensorType.INT8`.
const FLOAT32: i8 = 0;
const INT8: i8 = 9;

/// An operator's tensors, and what the checks read of the file.
pub(super) struct OpTensors<'o, 'a> {
    /// Subgraph and operator index, for messages.
    pub s: usize,
    pub o: usize,
    pub inputs: &'o [i32],
    pub outputs: &'o [i32],
    pub tensors: &'o [Table<'a>],
    pub buffers: &'o [Range<usize>],
}

impl<'a> OpTensors<'_, 'a> {
    /// The tensor at `index` (already checked to be in range, or -1), None for -1.
    fn tensor(&self, index: Option<&i32>) -> Option<(usize, &Table<'a>)> {
        let t = usize::try_from(*index?).ok()?;
        Some((t, &self.tensors[t]))
    }

    /// `subgraphs[s].tensors[t] ("name")`.
    fn describe(&self, t: usize) -> String {
        let what = || format!("subgraphs[{}].tensors[{t}]", self.s);
        match self.tensors[t].string(3, &what) {
            Ok(Some(name)) => format!("{} ({:?})", what(), String::from_utf8_lossy(name)),
            _ => what(),
        }
    }

    /// The float32 values a constant tensor holds, None when it holds none.
    fn constant_f32s(&self, tensor: &Table) -> Result<Option<Vec<f32>>> {
        let buffer = tensor.i32(2, &|| "a tensor".into())? as u32 as usize;
        Ok(self.buffers.get(buffer).filter(|b| buffer > 0 && !b.is_empty()).map(|bytes| {
            tensor.data[bytes.clone()].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
        }))
    }
}

/// Checks operator `op` (custom op `name`, `options` its custom options) when it is the int8
/// variant of a fused op: its map is INT8.
pub(super) fn verify_fused_int8(name: &[u8], op: &OpTensors, options: &[u8]) -> Result<()> {
    let Some(kind) = OpKind::ALL.into_iter().find(|k| k.name().as_bytes() == name) else { return Ok(()) };
    let Some((_, map)) = op.tensor(op.inputs.first()) else { return Ok(()) };
    if map.u8(1, &|| "a tensor".into())? as i8 != INT8 || op.inputs.len() < 3 {
        return Ok(());
    }
    let here = format!("subgraphs[{}].operators[{}] ({})", op.s, op.o, kind.name());
    let Some((v, vector)) = op.tensor(op.inputs.get(op.inputs.len() - 2)) else {
        return Err(format!("{here}: the int8 op has no quantization vector (the input before the config)"));
    };
    let shape = vector.i32s(0, &|| op.describe(v))?;
    let keys: Vec<&str> = match shape[..] {
        [4] => QUANTIZATION_KEYS.to_vec(),
        [6] => [&QUANTIZATION_KEYS[..], &RESIDUAL_QUANTIZATION_KEYS[..]].concat(),
        _ => Vec::new(),
    };
    if keys.is_empty() || vector.u8(1, &|| op.describe(v))? as i8 != FLOAT32 {
        return Err(format!(
            "{}: the quantization vector of {here} must be float32 {QUANTIZATION_KEYS:?} (then {RESIDUAL_QUANTIZATION_KEYS:?} with a shortcut), got shape {shape:?}",
            op.describe(v)
        ));
    }
    // (scale, zero point) pairs of the map, the output and the shortcut, as the vector has them.
    let mut pairs = None;
    if let Some(values) = op.constant_f32s(vector)?.filter(|values| values.len() == keys.len()) {
        let checked: Vec<(f32, i32)> = values
            .chunks_exact(2)
            .zip(keys.chunks_exact(2))
            .map(|(v, k)| Ok((quantized::scale(k[0], v[0].into())?, quantized::zero_point(k[1], v[1].into())?)))
            .collect::<Result<_>>()
            .map_err(|e| format!("{}, the quantization vector of {here}: {e}", op.describe(v)))?;
        pairs = Some(checked);
    }
    // Options LiteRT holds outside the flatbuffer (large_custom_options) are the kernel's to
    // check, when it is built. The flexbuffers reader panics on some malformed maps.
    let from_options = if options.is_empty() {
        None
    } else {
        guard("the custom options", || kind.quantization_attributes(options)).and_then(|r| r).map_err(|e| format!("{here}: {e}"))?
    };
    if let Some(q) = from_options {
        let from_options = (q.input_scale, q.input_zero_point, q.output_scale, q.output_zero_point);
        if let Some(&[(a, b), (c, d), ..]) = pairs.as_deref() {
            if (a, b, c, d) != from_options {
                return Err(format!(
                    "{here}: the custom options' quantization {from_options:?} differs from the quantization vector {}: {:?}",
                    op.describe(v),
                    (a, b, c, d)
                ));
            }
        }
    }
    let roles = [("feature map", op.inputs.first()), ("output", op.outputs.first()), ("shortcut", op.inputs.get(1))];
    for (i, (role, index)) in roles.into_iter().enumerate().take(keys.len() / 2) {
        let Some((t, tensor)) = op.tensor(index) else { continue };
        let what = || op.describe(t);
        let q = tensor.table(4, &what)?;
        let (scales, zero_points) = match &q {
            Some(q) => (q.f32s(2, &what)?, q.i64s(3, &what)?),
            None => (Vec::new(), Vec::new()),
        };
        if tensor.u8(1, &what)? as i8 != INT8 || scales.len() != 1 || zero_points.len() != 1 {
            return Err(format!(
                "{}, the {role} of {here}: expected an int8 tensor with one scale and one zero point, got type {} with scales {scales:?} and zero points {zero_points:?}",
                what(),
                tensor.u8(1, &what)?
            ));
        }
        let bad = |e: String| format!("{}, the {role} of {here}: {e}", what());
        let scale = quantized::scale("its scale", scales[0].into()).map_err(bad)?;
        let zero_point = quantized::zero_point("its zero point", zero_points[0] as f64).map_err(bad)?;
        if let Some(pairs) = &pairs {
            if pairs[i] != (scale, zero_point) {
                return Err(format!(
                    "{}, the {role} of {here}: quantized with scale {scale} and zero point {zero_point}, where the op's quantization vector {} has {} and {}",
                    what(),
                    op.describe(v),
                    pairs[i].0,
                    pairs[i].1
                ));
            }
        }
    }
    Ok(())
}
