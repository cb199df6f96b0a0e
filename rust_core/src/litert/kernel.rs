//! The custom-op callbacks LiteRT calls, and their registration on a `LiteRtOptions`.
//!
//! LiteRT ignores the status that `Init`, `GetOutputLayouts` and `Run` return. So every problem
//! (malformed attributes, wrong input counts or shapes) is logged to stderr and recorded in the
//! shared [`Kernels`] state, which the runtime checks after compiling and after each run; `Run`
//! fills the output with NaN (an int8 output: with its zero point, see
//! [`ops::Output::fill_failed`]) rather than leave it stale.
//!
//! With constant weights, each node's block is built on its first run and kept in a
//! [`BlockCache`] until LiteRT destroys the nodes (see [`Kernels::register`]).

use super::api::{self, Api, CustomOpKernel, Handle, Layout, Status, ELEMENT_FLOAT32, ELEMENT_INT32, ELEMENT_INT8, LOCK_READ, LOCK_WRITE, OK};
use super::ffi;
use super::ops::{self, BlockCache, GateWeights, OpKind, Output, Tensor, TensorData};
use crate::exec::Exec;
use crate::simd::Level;
use std::ffi::{c_void, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where one op's calls spent their time, summed since the last [`Kernels::take_timings`]:
/// reading and locking its tensor buffers (and unlocking them), and running its block.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpTimings {
    pub calls: u64,
    pub buffers: Duration,
    pub compute: Duration,
}

/// What every node of one op name shares: LiteRT gives all of them one `user_data`.
pub struct OpState {
    op: OpKind,
    kernels: *const Kernels,
}

/// The kernels registered on one set of options, and the errors they met.
pub struct Kernels {
    threads: Option<usize>,
    gates: GateWeights,
    errors: Mutex<Vec<String>>,
    /// Per op and feature-map shape, in the order they first ran.
    timings: Mutex<Vec<(OpKind, Vec<usize>, OpTimings)>>,
    /// None: every run builds its block from the weights.
    blocks: Option<BlockCache>,
    states: Vec<OpState>,
    names: Vec<CString>,
}

// SAFETY: `OpState::kernels` points to the `Kernels` that owns it (boxed, never moved); the only
// mutable part is behind a Mutex.
unsafe impl Send for Kernels {}
unsafe impl Sync for Kernels {}

impl Kernels {
    /// Registers every fused op on `options`; the returned box must outlive the compiled model.
    /// `gates`: the weights the blocks' gate MLPs compute with. `cache_blocks`: keep each node's
    /// block between runs, found by its weights' addresses; only for a model whose fused ops all
    /// take constant weights, which stay in place for the life of the compiled model.
    ///
    /// # Safety
    /// `options` must be a live `LiteRtOptions`.
    pub unsafe fn register(api: &Api, options: Handle, threads: Option<usize>, gates: GateWeights, cache_blocks: bool) -> Result<Box<Kernels>, String> {
        let blocks = cache_blocks.then(BlockCache::default);
        let mut kernels = Box::new(Kernels { threads, gates, errors: Mutex::new(Vec::new()), timings: Mutex::default(), blocks, states: Vec::new(), names: Vec::new() });
        let this: *const Kernels = &*kernels;
        kernels.states = OpKind::ALL.iter().map(|&op| OpState { op, kernels: this }).collect();
        kernels.names = OpKind::ALL.iter().map(|op| CString::new(op.name()).expect("op names have no NUL")).collect();
        for (state, name) in kernels.states.iter().zip(&kernels.names) {
            let user_data = state as *const OpState as *mut c_void;
            // SAFETY: `options` is a live LiteRtOptions; LiteRT copies the name and the kernel
            // table; `user_data` lives as long as the returned box.
            let status = unsafe { (api.LiteRtAddCustomOpKernelOption)(options, name.as_ptr(), 1, &KERNEL, user_data) };
            if status != OK {
                return Err(format!("LiteRtAddCustomOpKernelOption({:?}) failed with status {status}", name));
            }
        }
        Ok(kernels)
    }

    /// The number of blocks cached (0 without a cache).
    pub fn cached_blocks(&self) -> usize {
        self.blocks.as_ref().map_or(0, BlockCache::len)
    }

    /// The errors recorded so far, cleared.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Each op's timings since the last call per feature-map shape (the shape of its input 0;
    /// empty when a call could not read it), cleared.
    pub fn take_timings(&self) -> Vec<(OpKind, Vec<usize>, OpTimings)> {
        std::mem::take(&mut *self.timings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add_timing(&self, op: OpKind, shape: Vec<usize>, buffers: Duration, compute: Duration) {
        let mut timings = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        // A network has a handful of (op, shape) pairs: a linear search is enough.
        let index = match timings.iter().position(|(o, s, _)| *o == op && *s == shape) {
            Some(index) => index,
            None => {
                timings.push((op, shape, OpTimings::default()));
                timings.len() - 1
            }
        };
        let t = &mut timings[index].2;
        (t.calls, t.buffers, t.compute) = (t.calls + 1, t.buffers + buffers, t.compute + compute);
    }

    fn record(&self, message: String) {
        eprintln!("keras_attn LiteRT kernel: {message}");
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }
}

/// Whether every weight input of every fused op in `model` (a `LiteRtModel`) is a constant
/// tensor, so that [`BlockCache`] may key blocks by the weights' addresses. False when the
/// model cannot be read.
///
/// # Safety
/// `model` is a live `LiteRtModel`.
pub unsafe fn fused_weights_are_constant(api: &Api, model: Handle) -> bool {
    let names: Vec<&str> = OpKind::ALL.iter().map(|op| op.name()).collect();
    let constant = |tensor: Handle| {
        let (mut weights, mut bytes, mut size) = (std::ptr::null_mut(), std::ptr::null(), 0usize);
        (api.LiteRtGetTensorWeights)(tensor, &mut weights) == OK && (api.LiteRtGetWeightsBytes)(weights, &mut bytes, &mut size) == OK && size > 0
    };
    let mut subgraphs = 0usize;
    if (api.LiteRtGetNumModelSubgraphs)(model, &mut subgraphs) != OK {
        return false;
    }
    for s in 0..subgraphs {
        let (mut subgraph, mut op_count) = (std::ptr::null_mut(), 0usize);
        if (api.LiteRtGetModelSubgraph)(model, s, &mut subgraph) != OK || (api.LiteRtGetNumSubgraphOps)(subgraph, &mut op_count) != OK {
            return false;
        }
        for o in 0..op_count {
            let (mut op, mut code, mut inputs) = (std::ptr::null_mut(), std::ptr::null(), 0usize);
            if (api.LiteRtGetSubgraphOp)(subgraph, o, &mut op) != OK {
                return false;
            }
            // Fails for builtin ops, which have no custom code.
            if (api.LiteRtGetCustomCode)(op, &mut code) != OK || code.is_null() {
                continue;
            }
            if !names.iter().any(|name| std::ffi::CStr::from_ptr(code).to_bytes() == name.as_bytes()) {
                continue;
            }
            if (api.LiteRtGetNumOpInputs)(op, &mut inputs) != OK {
                return false;
            }
            let input = |i: usize| {
                let mut tensor = std::ptr::null_mut();
                ((api.LiteRtGetOpInput)(op, i, &mut tensor) == OK).then_some(tensor)
            };
            // Input 0 is the feature map, input 1 the shortcut when the config (the last input)
            // says residual; the rest are the weights and the config.
            let Some(residual) = inputs.checked_sub(1).and_then(input).and_then(|config| residual_config(api, config)) else {
                return false;
            };
            for i in 1 + residual as usize..inputs {
                if !input(i).is_some_and(constant) {
                    return false;
                }
            }
        }
    }
    true
}

/// Whether the constant config vector `tensor` of a fused op asks for the residual epilogue
/// (see [`OpKind::epilogue`]); None when it is not a readable constant of int32 values.
///
/// # Safety
/// `tensor` is a live `LiteRtTensor`.
unsafe fn residual_config(api: &Api, tensor: Handle) -> Option<bool> {
    let (mut weights, mut bytes, mut size) = (std::ptr::null_mut(), std::ptr::null(), 0usize);
    if (api.LiteRtGetTensorWeights)(tensor, &mut weights) != OK || (api.LiteRtGetWeightsBytes)(weights, &mut bytes, &mut size) != OK {
        return None;
    }
    if bytes.is_null() || size < 8 || !size.is_multiple_of(4) {
        return None;
    }
    // SAFETY: LiteRT hands out `size` readable bytes of the constant; read unaligned.
    let values: Vec<i64> = (0..size / 4).map(|i| std::ptr::read_unaligned((bytes as *const u8).add(4 * i) as *const i32).into()).collect();
    Some(OpKind::epilogue(&values).0)
}

static KERNEL: CustomOpKernel = CustomOpKernel { init, get_output_layouts, run, destroy };

/// # Safety
/// `user_data` is an `OpState` given to `LiteRtAddCustomOpKernelOption`, still alive.
unsafe fn state<'a>(user_data: *mut c_void) -> (&'a OpState, &'a Kernels) {
    let state = &*(user_data as *const OpState);
    (state, &*state.kernels)
}

/// Runs the body of callback `what` of the op in `user_data`: a panic is recorded as an error
/// (LiteRT is C++, and a panic must not unwind into it) and fails the callback.
///
/// # Safety
/// As [`state`].
unsafe fn guarded(user_data: *mut c_void, what: &str, body: impl FnOnce() -> Status) -> Status {
    let (state, kernels) = state(user_data);
    ffi::guard(&format!("{} {what}", state.op.name()), body).unwrap_or_else(|e| {
        kernels.record(e);
        api::ERROR_RUNTIME_FAILURE
    })
}

unsafe extern "C" fn init(user_data: *mut c_void, data: *const c_void, size: usize) -> Status {
    guarded(user_data, "Init", || init_checked(user_data, data, size))
}

unsafe extern "C" fn get_output_layouts(user_data: *mut c_void, num_inputs: usize, inputs: *const Layout, num_outputs: usize, outputs: *mut Layout) -> Status {
    guarded(user_data, "GetOutputLayouts", || get_output_layouts_checked(user_data, num_inputs, inputs, num_outputs, outputs))
}

unsafe extern "C" fn run(user_data: *mut c_void, num_inputs: usize, inputs: *const Handle, num_outputs: usize, outputs: *mut Handle) -> Status {
    guarded(user_data, "Run", || run_checked(user_data, num_inputs, inputs, num_outputs, outputs))
}

unsafe extern "C" fn destroy(user_data: *mut c_void) -> Status {
    guarded(user_data, "Destroy", || destroy_checked(user_data))
}

unsafe fn init_checked(user_data: *mut c_void, data: *const c_void, size: usize) -> Status {
    let (state, kernels) = state(user_data);
    let options = if data.is_null() { &[][..] } else { std::slice::from_raw_parts(data as *const u8, size) };
    if let Err(e) = state.op.attributes(options) {
        kernels.record(e);
    }
    OK
}

unsafe fn get_output_layouts_checked(
    user_data: *mut c_void,
    num_inputs: usize,
    inputs: *const Layout,
    num_outputs: usize,
    outputs: *mut Layout,
) -> Status {
    let (state, kernels) = state(user_data);
    let name = state.op.name();
    if num_outputs != 1 || num_inputs < 2 {
        kernels.record(format!("{name}: expected the feature map, weights and config as inputs and one output, got {num_inputs} inputs and {num_outputs} outputs"));
        return OK;
    }
    let inputs = std::slice::from_raw_parts(inputs, num_inputs);
    let config = &inputs[num_inputs - 1];
    let keys = state.op.keys().len();
    if config.shape() != Some(vec![keys]) {
        kernels.record(format!("{name}: the last input must be the config vector of {keys} values, got shape {:?}", config.shape()));
    }
    // Valid configs take one of these input counts, one more with a shortcut; the exact one is
    // checked in Run. The int8 variant takes one more, the quantization vector of shape [4] (or
    // [6] with a shortcut) before the config: the layouts carry no element types, so that shape
    // is what names the variant in the message (a float op whose input there also has that
    // shape keeps its own counts).
    let plain_counts: Vec<usize> = match state.op {
        OpKind::Cbam => vec![4, 6, 8],
        OpKind::SqueezeExcite => vec![6],
        OpKind::Bam => (6..=num_inputs.max(6)).step_by(2).collect(),
    };
    let mut float_counts: Vec<usize> = plain_counts.iter().flat_map(|&n| [n, n + 1]).collect();
    float_counts.sort_unstable();
    float_counts.dedup();
    let int8_counts: Vec<usize> = float_counts.iter().map(|n| n + 1).collect();
    let looks_int8 = num_inputs >= 3 && matches!(inputs[num_inputs - 2].shape().as_deref(), Some([4] | [6]));
    let valid = float_counts.contains(&num_inputs) || (looks_int8 && int8_counts.contains(&num_inputs));
    if !valid {
        let (variant, possible) = if looks_int8 { (" (int8)", int8_counts) } else { ("", float_counts) };
        kernels.record(format!("{name}{variant}: expected {possible:?} inputs, got {num_inputs}"));
    }
    let out = &mut *outputs;
    // Zeroed first: LiteRT reads more than the dimensions.
    *out = Layout { rank_and_flags: 0, dimensions: [0; 8], strides: [0; 8] };
    out.rank_and_flags = inputs[0].rank() as u32;
    out.dimensions = inputs[0].dimensions;
    OK
}

/// int8 maps of fewer bytes run on the calling thread alone, whatever the thread count. Inside a
/// network at 2 threads, waking our worker costs the calling thread about 10 µs (a futex wake
/// into this virtual machine's idle core) and the worker starts 16-25 µs into the op, about as
/// long as a whole 14x14x1024 int8 op on one thread: measured on int8 CBAM-ResNet-50 (in one
/// process, alternating run by run), the 14x14x1024 blocks (200 KB) on one thread made the
/// network 0.5-0.7 points faster in three of three trials, the 28x28x512 blocks (400 KB) too
/// made it 0.9-1.5 points slower (docs/benchmarks.md).
const MIN_PARALLEL_INT8_MAP_BYTES: usize = 256 << 10;

/// Whether the op's map (its first input) is int8 and smaller than [`MIN_PARALLEL_INT8_MAP_BYTES`].
fn is_small_int8_map(tensors: &[Tensor]) -> bool {
    matches!(tensors.first().map(|t| t.data), Some(TensorData::I8(map)) if map.len() < MIN_PARALLEL_INT8_MAP_BYTES)
}

unsafe fn run_checked(user_data: *mut c_void, num_inputs: usize, inputs: *const Handle, num_outputs: usize, outputs: *mut Handle) -> Status {
    let start = Instant::now();
    let (state, kernels) = state(user_data);
    let Some(api) = api::loaded() else { return api::ERROR_RUNTIME_FAILURE };
    if num_outputs != 1 {
        kernels.record(format!("{}: expected one output, got {num_outputs}", state.op.name()));
        return OK;
    }
    let inputs = std::slice::from_raw_parts(inputs, num_inputs);
    let output = *outputs;
    let mut out_ptr: *mut c_void = std::ptr::null_mut();
    let mut out_size = 0usize;
    if (api.LiteRtLockTensorBuffer)(output, &mut out_ptr, LOCK_WRITE) != OK || (api.LiteRtGetTensorBufferSize)(output, &mut out_size) != OK {
        kernels.record(format!("{}: cannot lock the output buffer", state.op.name()));
        return OK;
    }
    let mut out_type = api::RankedTensorType::zeroed();
    let mut out = match (api.LiteRtGetTensorBufferTensorType)(output, &mut out_type) {
        OK if out_type.element_type == ELEMENT_INT8 => Output::I8(std::slice::from_raw_parts_mut(out_ptr as *mut i8, out_size)),
        _ => Output::F32(std::slice::from_raw_parts_mut(out_ptr as *mut f32, out_size / 4)),
    };
    let mut locked = Vec::with_capacity(inputs.len());
    let mut zero_point = None;
    let mut compute = (start, start);
    let mut map_shape = Vec::new();
    // Guarded here too, so that the buffers are unlocked after a panic.
    let result = ffi::guard(&format!("{} Run", state.op.name()), || {
        let mut shapes = Vec::with_capacity(inputs.len());
        let mut datas = Vec::with_capacity(inputs.len());
        for (i, &buffer) in inputs.iter().enumerate() {
            let mut tensor_type = api::RankedTensorType::zeroed();
            let (mut ptr, mut size) = (std::ptr::null_mut(), 0usize);
            if (api.LiteRtGetTensorBufferTensorType)(buffer, &mut tensor_type) != OK
                || (api.LiteRtGetTensorBufferSize)(buffer, &mut size) != OK
                || (api.LiteRtLockTensorBuffer)(buffer, &mut ptr, LOCK_READ) != OK
            {
                return Err(format!("{}: input {i}: cannot read the tensor buffer", state.op.name()));
            }
            locked.push(buffer);
            let shape = tensor_type.layout.shape().ok_or_else(|| format!("{}: input {i}: dynamic or invalid shape", state.op.name()))?;
            let count = shape.iter().product::<usize>();
            let data = match tensor_type.element_type {
                ELEMENT_FLOAT32 if size >= 4 * count => TensorData::F32(std::slice::from_raw_parts(ptr as *const f32, count)),
                ELEMENT_INT32 if size >= 4 * count => TensorData::I32(std::slice::from_raw_parts(ptr as *const i32, count)),
                ELEMENT_INT8 if size >= count => TensorData::I8(std::slice::from_raw_parts(ptr as *const i8, count)),
                ELEMENT_FLOAT32 | ELEMENT_INT32 | ELEMENT_INT8 => {
                    return Err(format!("{}: input {i}: buffer of {size} bytes for shape {shape:?}", state.op.name()))
                }
                _ => TensorData::Other("a type other than float32, int32 and int8"),
            };
            shapes.push(shape);
            datas.push(data);
        }
        if let Some(first) = shapes.first() {
            map_shape.clone_from(first);
        }
        let tensors: Vec<Tensor> = shapes.iter().zip(&datas).map(|(shape, &data)| Tensor { shape, data }).collect();
        zero_point = ops::output_zero_point(state.op, &tensors);
        let exec = Exec::new(Level::active(), if is_small_int8_map(&tensors) { Some(1) } else { kernels.threads });
        let out = out.reborrow();
        compute.0 = Instant::now();
        let result = match &kernels.blocks {
            Some(cache) => cache.run(state.op, exec, kernels.gates, &tensors, out),
            None => ops::run(state.op, exec, kernels.gates, &tensors, out),
        };
        compute.1 = Instant::now();
        result
    })
    .and_then(|r| r);
    for buffer in locked {
        (api.LiteRtUnlockTensorBuffer)(buffer);
    }
    if let Err(e) = result {
        out.fill_failed(zero_point);
        kernels.record(e);
    }
    (api.LiteRtUnlockTensorBuffer)(output);
    let compute_time = compute.1.saturating_duration_since(compute.0);
    kernels.add_timing(state.op, map_shape, start.elapsed().saturating_sub(compute_time), compute_time);
    OK
}

unsafe fn destroy_checked(user_data: *mut c_void) -> Status {
    // LiteRT destroys the nodes with the interpreter, before the model's weights may go.
    if let Some(cache) = &state(user_data).1.blocks {
        cache.clear();
    }
    OK
}
