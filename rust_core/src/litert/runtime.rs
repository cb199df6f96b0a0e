//! A `.tflite` model compiled by LiteRT's CompiledModel API for the CPU (XNNPACK), with the fused
//! kernels registered: float32 inputs in, float32 outputs out.

use super::api::{self, Api, Handle, RankedTensorType, ELEMENT_FLOAT32, HW_ACCELERATOR_CPU, LOCK_READ, LOCK_WRITE, OK};
use super::kernel::{fused_weights_are_constant, Kernels};
use std::ffi::{c_void, CString};

pub struct Runtime {
    api: &'static Api,
    env: Handle,
    model: Handle,
    options: Handle,
    compiled: Handle,
    inputs: Vec<Handle>,
    outputs: Vec<Handle>,
    input_shapes: Vec<Vec<usize>>,
    output_shapes: Vec<Vec<usize>>,
    kernels: Option<Box<Kernels>>,
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
    /// Loads `library` (`libLiteRt.so`) and compiles `model_path` on `threads` CPU threads
    /// (None: LiteRT's default), our kernels running on the same count (None: every core).
    pub fn new(library: &str, model_path: &str, threads: Option<usize>) -> Result<Runtime, String> {
        let api = api::api(Some(library))?;
        let path = CString::new(model_path).map_err(|_| "model path contains a NUL byte".to_string())?;
        let mut rt = Runtime {
            api,
            env: std::ptr::null_mut(),
            model: std::ptr::null_mut(),
            options: std::ptr::null_mut(),
            compiled: std::ptr::null_mut(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            input_shapes: Vec::new(),
            output_shapes: Vec::new(),
            kernels: None,
        };
        // SAFETY: every call below follows LiteRT's C API with live handles owned by `rt`, which
        // releases them in `drop` (also on an early error return).
        unsafe {
            check((api.LiteRtCreateEnvironment)(0, std::ptr::null(), &mut rt.env), "CreateEnvironment")?;
            check((api.LiteRtCreateModelFromFile)(rt.env, path.as_ptr(), &mut rt.model), "CreateModelFromFile")
                .map_err(|e| format!("{e}: {model_path:?} is not a model LiteRT can read"))?;
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
            let kernels = rt.kernels.insert(Kernels::register(api, rt.options, threads, cache_blocks)?);
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
                    let (buffer, shape) = rt.buffer(signature, i, is_input)?;
                    let (buffers, shapes) = if is_input { (&mut rt.inputs, &mut rt.input_shapes) } else { (&mut rt.outputs, &mut rt.output_shapes) };
                    buffers.push(buffer);
                    shapes.push(shape);
                }
            }
        }
        // LiteRT prepares the ops (and so calls GetOutputLayouts) on the first run: run once on
        // zeros so that every kernel has checked its inputs before the model is handed out.
        let zeros: Vec<Vec<f32>> = rt.input_shapes.iter().map(|s| vec![0.0; s.iter().product()]).collect();
        rt.run(&zeros.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        Ok(rt)
    }

    /// A managed host buffer for input or output `i` of the first signature, and its shape.
    unsafe fn buffer(&self, signature: Handle, i: usize, is_input: bool) -> Result<(Handle, Vec<usize>), String> {
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
        if tensor_type.element_type != ELEMENT_FLOAT32 {
            return Err(format!("model {kind} {i} is not float32 (LiteRT element type {}); only float32 models run here", tensor_type.element_type));
        }
        let shape = tensor_type.layout.shape().ok_or_else(|| format!("model {kind} {i} has a dynamic shape; export it with fixed sizes"))?;
        check((api.LiteRtCreateManagedTensorBufferFromRequirements)(self.env, &tensor_type, requirements, &mut buffer), "CreateManagedTensorBuffer")?;
        Ok((buffer, shape))
    }

    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.output_shapes
    }

    /// The fused blocks built and kept between runs: one per fused node once the model has run,
    /// 0 when its weights are not all constant.
    pub fn cached_blocks(&self) -> usize {
        self.kernels.as_ref().map_or(0, |k| k.cached_blocks())
    }

    /// Runs the model on `inputs` (one slice per input, each exactly its shape's size).
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, String> {
        let api = self.api;
        if inputs.len() != self.inputs.len() {
            return Err(format!("expected {} inputs, got {}", self.inputs.len(), inputs.len()));
        }
        // SAFETY: the buffers are live managed host buffers of at least the shapes' sizes.
        unsafe {
            for ((&buffer, data), shape) in self.inputs.iter().zip(inputs).zip(&self.input_shapes) {
                if data.len() != shape.iter().product::<usize>() {
                    return Err(format!("input of {} values for shape {shape:?}", data.len()));
                }
                let mut ptr = std::ptr::null_mut();
                check((api.LiteRtLockTensorBuffer)(buffer, &mut ptr, LOCK_WRITE), "LockTensorBuffer")?;
                std::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut f32, data.len());
                (api.LiteRtUnlockTensorBuffer)(buffer);
            }
            let status = (api.LiteRtRunCompiledModel)(self.compiled, 0, self.inputs.len(), self.inputs.as_mut_ptr(), self.outputs.len(), self.outputs.as_mut_ptr());
            let errors = self.kernels.as_ref().map(|k| k.take_errors()).unwrap_or_default();
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            check(status, "RunCompiledModel")?;
            let mut results = Vec::with_capacity(self.outputs.len());
            for (&buffer, shape) in self.outputs.iter().zip(&self.output_shapes) {
                let mut ptr = std::ptr::null_mut();
                check((api.LiteRtLockTensorBuffer)(buffer, &mut ptr, LOCK_READ), "LockTensorBuffer")?;
                results.push(std::slice::from_raw_parts(ptr as *const f32, shape.iter().product()).to_vec());
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
