//! Verification of a whole `.tflite` flatbuffer before LiteRT reads it: LiteRT's CompiledModel
//! does not verify the file, and follows a corrupted offset out of the buffer.
//!
//! Hand-written bounds checks over the TFLite schema (`tensorflow/compiler/mlir/lite/schema/
//! schema.fbs`): every table, vtable, vector and string the file holds lies within it (what
//! flatbuffers' own verifier checks), and the model is consistent: operator codes, tensors,
//! buffers and subgraphs are referenced by indices in range, constant tensors hold exactly the
//! bytes their shape and type need, and no tensor is larger than [`MAX_TENSOR_BYTES`].
//! Builtin-options tables are checked as tables, with the vectors of the options that hold
//! any; StableHLO options (`builtin_options_2`) and sparse tensors are refused, as the CPU
//! runtime has no use for them. The int8 fused ops' quantization is checked too (see
//! [`quantization`]).

mod quantization;

use std::ops::Range;

/// The largest tensor accepted, in bytes: a larger one is a corrupted shape (and allocating it
/// would abort the process).
pub const MAX_TENSOR_BYTES: u64 = 1 << 31;

/// TensorType codes with a fixed element size in bits (STRING, RESOURCE and VARIANT have none).
fn element_bits(tensor_type: i8) -> Option<Option<u64>> {
    Some(match tensor_type {
        0 | 2 | 15 => Some(32),     // FLOAT32, INT32, UINT32
        1 | 7 | 16 | 18 => Some(16), // FLOAT16, INT16, UINT16, BFLOAT16
        3 | 6 | 9 => Some(8),       // UINT8, BOOL, INT8
        4 | 8 | 10 | 12 => Some(64), // INT64, COMPLEX64, FLOAT64, UINT64
        11 => Some(128),            // COMPLEX128
        17 | 20 => Some(4),         // INT4, UINT4
        19 => Some(2),              // INT2
        5 | 13 | 14 => None,        // STRING, RESOURCE, VARIANT
        _ => return None,
    })
}

/// `BuiltinOperator.CUSTOM`.
const CUSTOM: i32 = 32;
/// `BuiltinOptions` of the tables that hold vectors: (union type, the fields that are vectors
/// of 4-byte values).
const OPTIONS_WITH_VECTORS: [(u8, &[usize]); 4] = [(3, &[1, 2]), (17, &[0]), (30, &[0]), (115, &[0])];
/// `BuiltinOptions` that name subgraphs: (union type, the fields holding subgraph indices):
/// IfOptions, WhileOptions, CallOnceOptions.
const OPTIONS_WITH_SUBGRAPHS: [(u8, &[usize]); 3] = [(92, &[0, 1]), (93, &[0, 1]), (103, &[0])];

type Result<T> = std::result::Result<T, String>;

/// A table of the buffer: its position, its vtable, and the sizes of both.
#[derive(Clone, Copy)]
struct Table<'a> {
    data: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    object_len: usize,
}

fn read<const N: usize>(data: &[u8], pos: usize, what: &dyn Fn() -> String) -> Result<[u8; N]> {
    pos.checked_add(N)
        .and_then(|end| data.get(pos..end))
        .map(|b| b.try_into().expect("N bytes"))
        .ok_or_else(|| format!("{} lies outside the file", what()))
}

fn u32_at(data: &[u8], pos: usize, what: &dyn Fn() -> String) -> Result<u32> {
    read::<4>(data, pos, what).map(u32::from_le_bytes)
}

fn u16_at(data: &[u8], pos: usize, what: &dyn Fn() -> String) -> Result<u16> {
    read::<2>(data, pos, what).map(u16::from_le_bytes)
}

/// The position an offset at `pos` points to (forward, within the file, aligned to `align`).
fn follow(data: &[u8], pos: usize, align: usize, what: &dyn Fn() -> String) -> Result<usize> {
    let target = pos
        .checked_add(u32_at(data, pos, what)? as usize)
        .filter(|&t| t < data.len())
        .ok_or_else(|| format!("{} points outside the file", what()))?;
    if !target.is_multiple_of(align) {
        return Err(format!("{} is misaligned", what()));
    }
    Ok(target)
}

impl<'a> Table<'a> {
    fn at(data: &'a [u8], pos: usize, what: &dyn Fn() -> String) -> Result<Table<'a>> {
        if !pos.is_multiple_of(4) {
            return Err(format!("{} is misaligned", what()));
        }
        let soffset = i32::from_le_bytes(read::<4>(data, pos, what)?) as i64;
        let vtable = usize::try_from(pos as i64 - soffset)
            .ok()
            .filter(|v| v.is_multiple_of(2))
            .ok_or_else(|| format!("{}: its vtable lies outside the file", what()))?;
        let vtable_len = u16_at(data, vtable, &|| format!("{}'s vtable", what()))? as usize;
        let object_len = u16_at(data, vtable + 2, &|| format!("{}'s vtable", what()))? as usize;
        if vtable_len < 4 || !vtable_len.is_multiple_of(2) || vtable + vtable_len > data.len() {
            return Err(format!("{}: malformed vtable", what()));
        }
        if object_len < 4 || pos + object_len > data.len() {
            return Err(format!("{}: its fields lie outside the file", what()));
        }
        Ok(Table { data, pos, vtable, vtable_len, object_len })
    }

    /// The position of field `slot` of `size` bytes, None when absent.
    fn field(&self, slot: usize, size: usize, what: &dyn Fn() -> String) -> Result<Option<usize>> {
        let entry = 4 + 2 * slot;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let offset = u16_at(self.data, self.vtable + entry, what)? as usize;
        if offset == 0 {
            return Ok(None);
        }
        if offset + size > self.object_len {
            return Err(format!("{}: field {slot} lies outside its table", what()));
        }
        Ok(Some(self.pos + offset))
    }

    /// Every field lies within the table (for tables whose field types are not checked).
    fn fields_in_bounds(&self, what: &dyn Fn() -> String) -> Result<()> {
        for slot in 0..(self.vtable_len - 4) / 2 {
            self.field(slot, 1, what)?;
        }
        Ok(())
    }

    fn scalar<const N: usize>(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Option<[u8; N]>> {
        match self.field(slot, N, what)? {
            None => Ok(None),
            Some(pos) => read::<N>(self.data, pos, what).map(Some),
        }
    }

    fn u8(&self, slot: usize, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.scalar::<1>(slot, what)?.map_or(0, |b| b[0]))
    }

    fn i32(&self, slot: usize, what: &dyn Fn() -> String) -> Result<i32> {
        Ok(self.scalar::<4>(slot, what)?.map_or(0, i32::from_le_bytes))
    }

    fn u64(&self, slot: usize, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(self.scalar::<8>(slot, what)?.map_or(0, u64::from_le_bytes))
    }

    /// The target of offset field `slot`, None when absent.
    fn offset(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Option<usize>> {
        match self.field(slot, 4, what)? {
            None => Ok(None),
            Some(pos) => follow(self.data, pos, 4, what).map(Some),
        }
    }

    fn table(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Option<Table<'a>>> {
        match self.offset(slot, what)? {
            None => Ok(None),
            Some(pos) => Table::at(self.data, pos, what).map(Some),
        }
    }

    /// Vector field `slot` of `elem`-byte elements: (position of the first, length); empty
    /// when absent.
    fn vector(&self, slot: usize, elem: usize, what: &dyn Fn() -> String) -> Result<(usize, usize)> {
        let Some(pos) = self.offset(slot, what)? else { return Ok((0, 0)) };
        let len = u32_at(self.data, pos, what)? as usize;
        let end = len.checked_mul(elem).and_then(|b| b.checked_add(pos + 4));
        if end.is_none_or(|e| e > self.data.len()) {
            return Err(format!("{}: its {len} values lie outside the file", what()));
        }
        Ok((pos + 4, len))
    }

    fn i32s(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Vec<i32>> {
        let (start, len) = self.vector(slot, 4, what)?;
        Ok((0..len).map(|i| i32::from_le_bytes(self.data[start + 4 * i..start + 4 * i + 4].try_into().expect("4 bytes"))).collect())
    }

    fn f32s(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Vec<f32>> {
        let (start, len) = self.vector(slot, 4, what)?;
        Ok(self.data[start..start + 4 * len].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }

    fn i64s(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Vec<i64>> {
        let (start, len) = self.vector(slot, 8, what)?;
        Ok(self.data[start..start + 8 * len].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
    }

    fn string(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Option<&'a [u8]>> {
        let Some(pos) = self.offset(slot, what)? else { return Ok(None) };
        let len = u32_at(self.data, pos, what)? as usize;
        // The NUL terminator after the bytes must be in the file too.
        match self.data.get(pos + 4..).and_then(|rest| rest.get(..len.checked_add(1)?)) {
            Some(bytes) if bytes[len] == 0 => Ok(Some(&bytes[..len])),
            Some(_) => Err(format!("{}: string without its NUL terminator", what())),
            None => Err(format!("{}: its {len} bytes lie outside the file", what())),
        }
    }

    /// The tables of vector-of-tables field `slot`.
    fn tables(&self, slot: usize, what: &dyn Fn() -> String) -> Result<Vec<Table<'a>>> {
        let (start, len) = self.vector(slot, 4, what)?;
        (0..len).map(|i| Table::at(self.data, follow(self.data, start + 4 * i, 4, &|| format!("{}[{i}]", what()))?, &|| format!("{}[{i}]", what()))).collect()
    }
}

/// Checks `data`, the bytes of a `.tflite` file; the error says what is wrong, and where.
pub fn verify_model(data: &[u8]) -> Result<()> {
    if data.len() < 8 {
        return Err(format!("{} bytes are too few for a TFLite flatbuffer", data.len()));
    }
    if &data[4..8] != b"TFL3" {
        return Err("no 'TFL3' file identifier: not a TFLite flatbuffer".into());
    }
    let root = || "the model table".to_string();
    let model = Table::at(data, follow(data, 0, 4, &root)?, &root)?;
    let codes = model.tables(1, &|| "operator_codes".into())?;
    let mut custom = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let what = || format!("operator_codes[{i}]");
        let builtin = (code.u8(0, &what)? as i8 as i32).max(code.i32(3, &what)?);
        let name = code.string(1, &what)?;
        if builtin < 0 {
            return Err(format!("operator_codes[{i}]: builtin code {builtin} is negative"));
        }
        if builtin == CUSTOM && name.is_none() {
            return Err(format!("operator_codes[{i}]: a custom op without its name"));
        }
        custom.push(name.filter(|_| builtin == CUSTOM));
    }
    let buffers = model.tables(4, &|| "buffers".into())?;
    // The bytes each buffer holds: inline data, or a range of the file after the flatbuffer.
    let mut buffer_bytes = Vec::with_capacity(buffers.len());
    for (i, buffer) in buffers.iter().enumerate() {
        let what = || format!("buffers[{i}]");
        let (start, inline) = buffer.vector(0, 1, &what)?;
        let (offset, size) = (buffer.u64(1, &what)?, buffer.u64(2, &what)?);
        // Offset 1 is the exporter's placeholder for "no data".
        if offset > 1 && offset.checked_add(size).is_none_or(|end| end > data.len() as u64) {
            return Err(format!("buffers[{i}]: {size} bytes at offset {offset} lie outside the file of {} bytes", data.len()));
        }
        // Within the file (checked above), so the casts are lossless.
        buffer_bytes.push(if offset > 1 { offset as usize..(offset + size) as usize } else { start..start + inline });
    }
    let subgraphs = model.tables(2, &|| "subgraphs".into())?;
    if subgraphs.is_empty() {
        return Err("the model has no subgraph".into());
    }
    let io = subgraphs
        .iter()
        .enumerate()
        .map(|(s, subgraph)| verify_subgraph(s, subgraph, &codes, &custom, &buffer_bytes, subgraphs.len()))
        .collect::<Result<Vec<_>>>()?;
    model.string(3, &|| "description".into())?;
    for (i, &b) in model.i32s(5, &|| "metadata_buffer".into())?.iter().enumerate() {
        index(b, buffers.len(), &|| format!("metadata_buffer[{i}]: buffer"))?;
    }
    for (i, metadata) in model.tables(6, &|| "metadata".into())?.iter().enumerate() {
        let what = || format!("metadata[{i}]");
        metadata.string(0, &what)?;
        index(metadata.i32(1, &what)?, buffers.len(), &|| format!("metadata[{i}]: buffer"))?;
    }
    for (i, signature) in model.tables(7, &|| "signature_defs".into())?.iter().enumerate() {
        let what = || format!("signature_defs[{i}]");
        signature.string(2, &what)?;
        let s = index(signature.i32(4, &what)?, subgraphs.len(), &|| format!("signature_defs[{i}]: subgraph"))?;
        // LiteRT looks a signature's tensors up among its subgraph's inputs and outputs.
        for (slot, kind, tensors) in [(0, "inputs", &io[s].0), (1, "outputs", &io[s].1)] {
            for (j, map) in signature.tables(slot, &|| format!("signature_defs[{i}].{kind}"))?.iter().enumerate() {
                let what = || format!("signature_defs[{i}].{kind}[{j}]");
                map.string(0, &what)?;
                let t = map.i32(1, &what)?;
                if !tensors.contains(&t) {
                    return Err(format!("signature_defs[{i}].{kind}[{j}]: tensor {t} is not one of subgraph {s}'s {kind} {tensors:?}"));
                }
            }
        }
    }
    Ok(())
}

/// `value` as an index below `count`.
fn index(value: i32, count: usize, what: &dyn Fn() -> String) -> Result<usize> {
    usize::try_from(value).ok().filter(|&v| v < count).ok_or_else(|| format!("{} {value} is out of range (there are {count})", what()))
}

/// Checks subgraph `s`; returns its input and output tensors.
/// `custom[c]`: the name of operator code `c` when it is a custom op; `buffers[b]`: the bytes of
/// buffer `b` in the file.
fn verify_subgraph(s: usize, subgraph: &Table, codes: &[Table], custom: &[Option<&[u8]>], buffers: &[Range<usize>], subgraph_count: usize) -> Result<(Vec<i32>, Vec<i32>)> {
    let tensors = subgraph.tables(0, &|| format!("subgraphs[{s}].tensors"))?;
    for (t, tensor) in tensors.iter().enumerate() {
        verify_tensor(tensor, buffers, &|| format!("subgraphs[{s}].tensors[{t}]"))?;
    }
    let n = tensors.len();
    let (inputs, outputs) = (subgraph.i32s(1, &|| format!("subgraphs[{s}].inputs"))?, subgraph.i32s(2, &|| format!("subgraphs[{s}].outputs"))?);
    for (kind, tensors) in [("inputs", &inputs), ("outputs", &outputs)] {
        for (i, &t) in tensors.iter().enumerate() {
            index(t, n, &|| format!("subgraphs[{s}].{kind}[{i}]: tensor"))?;
        }
    }
    subgraph.string(4, &|| format!("subgraphs[{s}].name"))?;
    for (o, op) in subgraph.tables(3, &|| format!("subgraphs[{s}].operators"))?.iter().enumerate() {
        let what = || format!("subgraphs[{s}].operators[{o}]");
        let code = index(op.i32(0, &what)?, codes.len(), &|| format!("subgraphs[{s}].operators[{o}]: operator code"))?;
        for (slot, kind) in [(1, "inputs"), (2, "outputs"), (8, "intermediates")] {
            for (i, &t) in op.i32s(slot, &what)?.iter().enumerate() {
                // -1: an optional input left out.
                if t != -1 {
                    index(t, n, &|| format!("subgraphs[{s}].operators[{o}].{kind}[{i}]: tensor"))?;
                }
            }
        }
        let options_type = op.u8(3, &what)?;
        if let Some(options) = op.table(4, &|| format!("subgraphs[{s}].operators[{o}].builtin_options"))? {
            let what = || format!("subgraphs[{s}].operators[{o}].builtin_options");
            options.fields_in_bounds(&what)?;
            for (_, slots) in OPTIONS_WITH_VECTORS.iter().filter(|(t, _)| *t == options_type) {
                for &slot in slots.iter() {
                    options.vector(slot, 4, &what)?;
                }
            }
            for (_, slots) in OPTIONS_WITH_SUBGRAPHS.iter().filter(|(t, _)| *t == options_type) {
                for &slot in slots.iter() {
                    index(options.i32(slot, &what)?, subgraph_count, &|| format!("{}: subgraph", what()))?;
                }
            }
        }
        let (custom_start, custom_len) = op.vector(5, 1, &what)?;
        if custom_len > 0 && custom[code].is_none() {
            return Err(format!("subgraphs[{s}].operators[{o}]: custom options on a builtin op"));
        }
        op.vector(7, 1, &what)?;
        let (large_offset, large_size) = (op.u64(9, &what)?, op.u64(10, &what)?);
        let file = subgraph.data.len() as u64;
        if large_offset > 0 && large_offset.checked_add(large_size).is_none_or(|end| end > file) {
            return Err(format!("subgraphs[{s}].operators[{o}]: custom options at offset {large_offset} lie outside the file"));
        }
        if op.u8(11, &what)? != 0 || op.offset(12, &what)?.is_some() {
            return Err(format!("subgraphs[{s}].operators[{o}]: StableHLO options (builtin_options_2) are not supported"));
        }
        if let Some(name) = custom[code] {
            let op_io = quantization::OpTensors { s, o, inputs: &op.i32s(1, &what)?, outputs: &op.i32s(2, &what)?, tensors: &tensors, buffers };
            quantization::verify_fused_int8(name, &op_io, &subgraph.data[custom_start..custom_start + custom_len])?;
        }
    }
    Ok((inputs, outputs))
}

fn verify_tensor(tensor: &Table, buffers: &[Range<usize>], what: &dyn Fn() -> String) -> Result<()> {
    let shape = tensor.i32s(0, what)?;
    let tensor_type = tensor.u8(1, what)? as i8;
    let bits = element_bits(tensor_type).ok_or_else(|| format!("{}: unknown tensor type {tensor_type}", what()))?;
    let buffer = tensor.i32(2, what)?;
    let buffer = usize::try_from(buffer as u32).ok().filter(|&b| b < buffers.len().max(1)).ok_or_else(|| {
        format!("{}: buffer {} is out of range (there are {})", what(), buffer as u32, buffers.len())
    })?;
    tensor.string(3, what)?;
    let mut count: u64 = 1;
    for &d in &shape {
        let d = u64::try_from(d).map_err(|_| format!("{}: negative dimension in shape {shape:?}", what()))?;
        count = count.saturating_mul(d);
    }
    if let Some(bits) = bits {
        let bytes = count.saturating_mul(bits).div_ceil(8);
        if bytes > MAX_TENSOR_BYTES {
            return Err(format!("{}: shape {shape:?} needs {bytes} bytes, over the {MAX_TENSOR_BYTES} accepted", what()));
        }
        let held = buffers.get(buffer).map_or(0, |b| b.len() as u64);
        // Sub-byte types are stored packed or one value a byte.
        let fits = held == bytes || (bits < 8 && held == count);
        if buffer > 0 && held > 0 && !fits {
            return Err(format!("{}: buffer {buffer} holds {held} bytes, shape {shape:?} needs {bytes}", what()));
        }
    }
    if let Some(q) = tensor.table(4, &|| format!("{}.quantization", what()))? {
        let what = || format!("{}.quantization", what());
        for slot in 0..3 {
            q.vector(slot, 4, &what)?;
        }
        q.vector(3, 8, &what)?;
        match q.u8(4, &what)? {
            0 => {}
            // CustomQuantization: a vector of bytes.
            1 => {
                if let Some(details) = q.table(5, &what)? {
                    details.vector(0, 1, &what)?;
                }
            }
            other => return Err(format!("{}: unknown quantization details type {other}", what())),
        }
        q.i32(6, &what)?;
    }
    tensor.u8(5, what)?;
    if tensor.offset(6, what)?.is_some() {
        return Err(format!("{}: sparse tensors are not supported", what()));
    }
    for (i, &d) in tensor.i32s(7, what)?.iter().enumerate() {
        if d < -1 {
            return Err(format!("{}: shape_signature[{i}] is {d}", what()));
        }
    }
    tensor.u8(8, what)?;
    for (i, variant) in tensor.tables(9, &|| format!("{}.variant_tensors", what()))?.iter().enumerate() {
        let what = || format!("{}.variant_tensors[{i}]", what());
        variant.i32s(0, &what)?;
        variant.fields_in_bounds(&what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
