//! A `.tflite` model compiled by LiteRT's CompiledModel API for the CPU (XNNPACK), with the fused
//! kernels registered: float32 or int8 inputs in, float32 or int8 outputs out, each as the
//! model's tensor says.

use super::api::{self, Api, Handle, RankedTensorType, ELEMENT_FLOAT32, ELEMENT_INT8, HW_ACCELERATOR_CPU, LOCK_READ, LOCK_WRITE, OK};
use super::kernel::{fused_weights_are_constant, Kernels, OpTimings};
use super::ops::{GateWeights, OpKind};
use std::ffi::{c_void, CString};
use std::time::{Duration, Instant};

/// The element type of a model input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementType {
    Float32,
    Int8,
}

impl ElementType {
    /// The NumPy dtype name.
    pub fn name(self) -> &'static str {
        match self {
            ElementType::Float32 => "float32",
            ElementType::Int8 => "int8",
        }
    }

    fn from_litert(code: i32) -> Option<ElementType> {
        match code {
            ELEMENT_FLOAT32 => Some(ElementType::Float32),
            ELEMENT_INT8 => Some(ElementType::Int8),
            _ => None,
        }
    }
}

/// The values of one model input.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Float32(&'a [f32]),
    Int8(&'a [i8]),
}

impl Input<'_> {
    fn element_type(&self) -> ElementType {
        match self {
            Input::Float32(_) => ElementType::Float32,
            Input::Int8(_) => ElementType::Int8,
        }
    }
}

/// The values of one model output.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Float32(Vec<f32>),
    Int8(Vec<i8>),
}

/// A model file's bytes at a 64-byte aligned address: LiteRT reads the weights in place, and
/// the exporter aligns their buffers to 64 bytes within the file.
struct ModelBytes {
    chunks: Vec<Chunk>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Chunk([u8; 64]);

impl ModelBytes {
    fn new(bytes: &[u8]) -> ModelBytes {
        let mut chunks = vec![Chunk([0; 64]); bytes.len().div_ceil(64)];
        for (chunk, part) in chunks.iter_mut().zip(bytes.chunks(64)) {
            chunk.0[..part.len()].copy_from_slice(part);
        }
        ModelBytes { chunks, len: bytes.len() }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the chunks are contiguous 64-byte arrays without padding (repr(C), size 64),
        // initialised, and hold at least `len` bytes.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }
}

pub struct Runtime {
    api: &'static Api,
    env: Handle,
    model: Handle,
    /// The bytes `model` was created from, verified: LiteRT reads them for the model's life
    /// (dropped after [`Drop::drop`] destroyed the model).
    model_bytes: ModelBytes,
    options: Handle,
    compiled: Handle,
    inputs: Vec<Handle>,
    outputs: Vec<Handle>,
    input_shapes: Vec<Vec<usize>>,
    output_shapes: Vec<Vec<usize>>,
    input_types: Vec<ElementType>,
    output_types: Vec<ElementType>,
    kernels: Option<Box<Kernels>>,
    /// Time spent in `LiteRtRunCompiledModel` since the last [`Runtime::take_timings`].
    model_time: Duration,
}

// SAFETY: the handles are used by one caller at a time (`&mut self` for runs); LiteRT objects
// are not tied to the thread that created them.
unsafe impl Send for Runtime {}

fn check(status: i32, what: &str) -> Result<(), String> {
    if status == OK {
        Ok(())
    } else {
        Err(format!("LiteRT {what} failed (status {status})"))
    }
}

unsafe extern "C" fn drop_c_string(p: *mut c_void) {
    // SAFETY: `p` came from `CString::into_raw` in `Runtime::new`.
    drop(unsafe { CString::from_raw(p as *mut std::ffi::c_char) });
}

impl Runtime {
    /// Loads `library` (`libLiteRt.so`) and compiles the model `model` (the bytes of a
    /// `.tflite` file, `name` in messages) on `threads` CPU threads (None: LiteRT's default),
    /// our kernels running on the same count (None: every core), their gate MLPs computing with
    /// `gates`. LiteRT gets a copy of the bytes that were verified, never the file again (which
    /// could have changed since).
    pub fn new(library: &str, model: &[u8], name: &str, threads: Option<usize>, gates: GateWeights) -> Result<Runtime, String> {
        let api = api::api(Some(library))?;
        let model_bytes = ModelBytes::new(model);
        // LiteRT does not verify the flatbuffer: a corrupted file must not reach it.
        super::verify::verify_model(model_bytes.bytes()).map_err(|e| format!("{name:?} is not a valid .tflite model: {e}"))?;
        let mut rt = Runtime {
            api,
            env: std::ptr::null_mut(),
            model: std::ptr::null_mut(),
            model_bytes,
            options: std::ptr::null_mut(),
            compiled: std::ptr::null_mut(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            input_shapes: Vec::new(),
            output_shapes: Vec::new(),
            input_types: Vec::new(),
            output_types: Vec::new(),
            kernels: None,
            model_time: Duration::ZERO,
        };
        // SAFETY: every call below follows LiteRT's C API with live handles owned by `rt`, which
        // releases them in `drop` (also on an early error return).
        unsafe {
            check((api.LiteRtCreateEnvironment)(0, std::ptr::null(), &mut rt.env), "CreateEnvironment")?;
            let bytes = rt.model_bytes.bytes();
            check((api.LiteRtCreateModelFromBuffer)(rt.env, bytes.as_ptr().cast(), bytes.len(), &mut rt.model), "CreateModelFromBuffer")
                .map_err(|e| format!("{e}: {name:?} is not a model LiteRT can read"))?;
            check((api.LiteRtCreateOptions)(&mut rt.options), "CreateOptions")?;
            check((api.LiteRtSetOptionsHardwareAccelerators)(rt.options, HW_ACCELERATOR_CPU), "SetOptionsHardwareAccelerators")?;
            if let Some(n) = threads {
                // XNNPACK's options travel as a TOML payload (the CPU options functions are not
                // exported by the wheel's library).
                let payload = CString::new(format!("num_threads = {n}\n")).expect("no NUL").into_raw();
                let mut opaque = std::ptr::null_mut();
                let status = (api.LiteRtCreateOpaqueOptions)(c"xnnpack".as_ptr(), payload as *mut c_void, drop_c_string, &mut opaque);
                if status != OK {
                    drop_c_string(payload as *mut c_void);
                }
                check(status, "CreateOpaqueOptions")?;
                check((api.LiteRtAddOpaqueOptions)(rt.options, opaque), "AddOpaqueOptions")?;
            }
            let cache_blocks = fused_weights_are_constant(api, rt.model);
            let kernels = rt.kernels.insert(Kernels::register(api, rt.options, threads, gates, cache_blocks)?);
            let status = (api.LiteRtCreateCompiledModel)(rt.env, rt.model, rt.options, &mut rt.compiled);
            let errors = kernels.take_errors();
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            check(status, "CreateCompiledModel").map_err(|e| format!("{e} (see LiteRT's log above)"))?;
            let mut signature = std::ptr::null_mut();
            check((api.LiteRtGetModelSignature)(rt.model, 0, &mut signature), "GetModelSignature")?;
            let (mut n_in, mut n_out) = (0usize, 0usize);
            check((api.LiteRtGetNumSignatureInputs)(signature, &mut n_in), "GetNumSignatureInputs")?;
            check((api.LiteRtGetNumSignatureOutputs)(signature, &mut n_out), "GetNumSignatureOutputs")?;
            for (count, is_input) in [(n_in, true), (n_out, false)] {
                for i in 0..count {
                    let (buffer, shape, element_type) = rt.buffer(signature, i, is_input)?;
                    let (buffers, shapes, types) = if is_input {
                        (&mut rt.inputs, &mut rt.input_shapes, &mut rt.input_types)
                    } else {
                        (&mut rt.outputs, &mut rt.output_shapes, &mut rt.output_types)
                    };
                    buffers.push(buffer);
                    shapes.push(shape);
                    types.push(element_type);
                }
            }
        }
        // LiteRT prepares the ops (and so calls GetOutputLayouts) on the first run: run once on
        // zeros so that every kernel has checked its inputs before the model is handed out.
        let sizes: Vec<usize> = rt.input_shapes.iter().map(|s| s.iter().product()).collect();
        let (float_zeros, int_zeros) = (vec![0.0; sizes.iter().copied().max().unwrap_or(0)], vec![0; sizes.iter().copied().max().unwrap_or(0)]);
        let zeros: Vec<Input> = rt
            .input_types
            .iter()
            .zip(&sizes)
            .map(|(t, &n)| match t {
                ElementType::Float32 => Input::Float32(&float_zeros[..n]),
                ElementType::Int8 => Input::Int8(&int_zeros[..n]),
            })
            .collect();
        rt.run(&zeros)?;
        Ok(rt)
    }

    /// A managed host buffer for input or output `i` of the first signature, its shape and its
    /// element type.
    unsafe fn buffer(&self, signature: Handle, i: usize, is_input: bool) -> Result<(Handle, Vec<usize>, ElementType), String> {
        let api = self.api;
        let (mut tensor, mut requirements, mut buffer) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        let mut tensor_type = RankedTensorType::zeroed();
        if is_input {
            check((api.LiteRtGetSignatureInputTensorByIndex)(signature, i, &mut tensor), "GetSignatureInputTensor")?;
            check((api.LiteRtGetCompiledModelInputBufferRequirements)(self.compiled, 0, i, &mut requirements), "GetInputBufferRequirements")?;
        } else {
            check((api.LiteRtGetSignatureOutputTensorByIndex)(signature, i, &mut tensor), "GetSignatureOutputTensor")?;
            check((api.LiteRtGetCompiledModelOutputBufferRequirements)(self.compiled, 0, i, &mut requirements), "GetOutputBufferRequirements")?;
        }
        check((api.LiteRtGetRankedTensorType)(tensor, &mut tensor_type), "GetRankedTensorType")?;
        let kind = if is_input { "input" } else { "output" };
        let element_type = ElementType::from_litert(tensor_type.element_type).ok_or_else(|| {
            format!("model {kind} {i} is neither float32 nor int8 (LiteRT element type {}); only those run here", tensor_type.element_type)
        })?;
        let shape = tensor_type.layout.shape().ok_or_else(|| format!("model {kind} {i} has a dynamic shape; export it with fixed sizes"))?;
        check((api.LiteRtCreateManagedTensorBufferFromRequirements)(self.env, &tensor_type, requirements, &mut buffer), "CreateManagedTensorBuffer")?;
        Ok((buffer, shape, element_type))
    }

    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.output_shapes
    }

    pub fn input_types(&self) -> &[ElementType] {
        &self.input_types
    }

    pub fn output_types(&self) -> &[ElementType] {
        &self.output_types
    }

    /// The fused blocks built and kept between runs: one per fused node once the model has run,
    /// 0 when its weights are not all constant.
    pub fn cached_blocks(&self) -> usize {
        self.kernels.as_ref().map_or(0, |k| k.cached_blocks())
    }

    /// The fused ops' timings since the last call (see [`OpTimings`]), and the time spent in
    /// LiteRT's run calls (the whole model, fused ops included), cleared.
    pub fn take_timings(&mut self) -> (Vec<(OpKind, Vec<usize>, OpTimings)>, Duration) {
        let ops = self.kernels.as_ref().map(|k| k.take_timings()).unwrap_or_default();
        (ops, std::mem::take(&mut self.model_time))
    }

    /// Runs the model on `inputs` (one per input, each of its element type and exactly its
    /// shape's size).
    pub fn run(&mut self, inputs: &[Input]) -> Result<Vec<Output>, String> {
        let api = self.api;
        if inputs.len() != self.inputs.len() {
            return Err(format!("expected {} inputs, got {}", self.inputs.len(), inputs.len()));
        }
        // SAFETY: the buffers are live managed host buffers of at least the shapes' sizes in their
        // element types, which every input is checked to have before any is copied.
        unsafe {
            for (i, (input, (&expected, shape))) in inputs.iter().zip(self.input_types.iter().zip(&self.input_shapes)).enumerate() {
                if input.element_type() != expected {
                    return Err(format!("inputs[{i}]: expected {} values, got {}", expected.name(), input.element_type().name()));
                }
                let len = match input {
                    Input::Float32(d) => d.len(),
                    Input::Int8(d) => d.len(),
                };
                if len != shape.iter().product::<usize>() {
                    return Err(format!("inputs[{i}]: {len} values for shape {shape:?}"));
                }
            }
            for (&buffer, input) in self.inputs.iter().zip(inputs) {
                let (bytes, data) = match input {
                    Input::Float32(d) => (4 * d.len(), d.as_ptr() as *const u8),
                    Input::Int8(d) => (d.len(), d.as_ptr() as *const u8),
                };
                let mut ptr = std::ptr::null_mut();
                check((api.LiteRtLockTensorBuffer)(buffer, &mut ptr, LOCK_WRITE), "LockTensorBuffer")?;
                std::ptr::copy_nonoverlapping(data, ptr as *mut u8, bytes);
                (api.LiteRtUnlockTensorBuffer)(buffer);
            }
            let started = Instant::now();
            let status = (api.LiteRtRunCompiledModel)(self.compiled, 0, self.inputs.len(), self.inputs.as_mut_ptr(), self.outputs.len(), self.outputs.as_mut_ptr());
            self.model_time += started.elapsed();
            let errors = self.kernels.as_ref().map(|k| k.take_errors()).unwrap_or_default();
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            check(status, "RunCompiledModel")?;
            let mut results = Vec::with_capacity(self.outputs.len());
            for ((&buffer, shape), element_type) in self.outputs.iter().zip(&self.output_shapes).zip(&self.output_types) {
                let mut ptr = std::ptr::null_mut();
                check((api.LiteRtLockTensorBuffer)(buffer, &mut ptr, LOCK_READ), "LockTensorBuffer")?;
                let len = shape.iter().product();
                results.push(match element_type {
                    ElementType::Float32 => Output::Float32(std::slice::from_raw_parts(ptr as *const f32, len).to_vec()),
                    ElementType::Int8 => Output::Int8(std::slice::from_raw_parts(ptr as *const i8, len).to_vec()),
                });
                (api.LiteRtUnlockTensorBuffer)(buffer);
            }
            Ok(results)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let api = self.api;
        // SAFETY: each handle is either null (never created) or owned by `self` and released
        // once, dependents first.
        unsafe {
            for &buffer in self.inputs.iter().chain(&self.outputs) {
                (api.LiteRtDestroyTensorBuffer)(buffer);
            }
            if !self.compiled.is_null() {
                (api.LiteRtDestroyCompiledModel)(self.compiled);
            }
            if !self.options.is_null() {
                (api.LiteRtDestroyOptions)(self.options);
            }
            if !self.model.is_null() {
                (api.LiteRtDestroyModel)(self.model);
            }
            if !self.env.is_null() {
                (api.LiteRtDestroyEnvironment)(self.env);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModelBytes;

    #[test]
    fn model_bytes_are_the_bytes_given_at_an_aligned_address() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let copy = ModelBytes::new(&data);
            assert_eq!(copy.bytes(), &data[..]);
            assert_eq!(copy.bytes().as_ptr() as usize % 64, 0, "{len} bytes");
        }
    }
}
