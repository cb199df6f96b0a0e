//! The few functions and types of LiteRT's C API (`litert/c/*.h`, LiteRT 2.x) that the custom
//! ops and the runtime use, loaded at run time from `libLiteRt.so` so that the crate builds and
//! tests without LiteRT.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

pub type Status = c_int;
pub const OK: Status = 0;
pub const ERROR_RUNTIME_FAILURE: Status = 2;
pub const HW_ACCELERATOR_CPU: c_int = 1;
pub const LOCK_READ: c_int = 0;
pub const LOCK_WRITE: c_int = 1;
pub const ELEMENT_FLOAT32: c_int = 1;
pub const ELEMENT_INT32: c_int = 2;
/// `kLiteRtElementTypeInt8` = `kTfLiteInt8`.
pub const ELEMENT_INT8: c_int = 9;

pub type Handle = *mut c_void;

/// `LiteRtLayout` (litert_layout.h): `rank:7` and `has_strides:1` share the first 32-bit word.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub rank_and_flags: u32,
    pub dimensions: [i32; 8],
    pub strides: [u32; 8],
}

impl Layout {
    pub fn rank(&self) -> usize {
        (self.rank_and_flags & 0x7f) as usize
    }

    pub fn has_strides(&self) -> bool {
        self.rank_and_flags & 0x80 != 0
    }

    /// The dimensions, `None` when one is dynamic (negative) or the rank is out of range.
    pub fn shape(&self) -> Option<Vec<usize>> {
        let rank = self.rank();
        (rank <= 8).then(|| self.dimensions[..rank].iter().map(|&d| usize::try_from(d).ok()).collect()).flatten()
    }
}

/// `LiteRtRankedTensorType` (litert_model_types.h), 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RankedTensorType {
    pub element_type: c_int,
    pub layout: Layout,
}

const _: () = assert!(std::mem::size_of::<RankedTensorType>() == 72);

impl RankedTensorType {
    pub fn zeroed() -> Self {
        RankedTensorType { element_type: 0, layout: Layout { rank_and_flags: 0, dimensions: [0; 8], strides: [0; 8] } }
    }
}

/// `LiteRtCustomOpKernel` (litert_custom_op_kernel.h).
#[repr(C)]
pub struct CustomOpKernel {
    pub init: unsafe extern "C" fn(user_data: *mut c_void, init_data: *const c_void, size: usize) -> Status,
    pub get_output_layouts: unsafe extern "C" fn(
        user_data: *mut c_void,
        num_inputs: usize,
        input_layouts: *const Layout,
        num_outputs: usize,
        output_layouts: *mut Layout,
    ) -> Status,
    pub run: unsafe extern "C" fn(
        user_data: *mut c_void,
        num_inputs: usize,
        inputs: *const Handle,
        num_outputs: usize,
        outputs: *mut Handle,
    ) -> Status,
    pub destroy: unsafe extern "C" fn(user_data: *mut c_void) -> Status,
}

macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// Function pointers into a loaded `libLiteRt.so`.
        #[allow(non_snake_case)]
        pub struct Api {
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            /// Resolves every function in `library`.
            fn resolve(library: &libloading::Library) -> Result<Api, String> {
                Ok(Api {
                    // SAFETY: each symbol is declared with the signature of LiteRT's C header.
                    $($name: unsafe {
                        *library
                            .get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(concat!(stringify!($name), "\0").as_bytes())
                            .map_err(|e| format!("libLiteRt.so lacks {}: {e}", stringify!($name)))?
                    },)*
                })
            }
        }
    };
}

api! {
    LiteRtCreateEnvironment: fn(c_int, *const c_void, *mut Handle) -> Status;
    LiteRtDestroyEnvironment: fn(Handle);
    LiteRtCreateModelFromBuffer: fn(Handle, *const c_void, usize, *mut Handle) -> Status;
    LiteRtDestroyModel: fn(Handle);
    LiteRtCreateOptions: fn(*mut Handle) -> Status;
    LiteRtDestroyOptions: fn(Handle);
    LiteRtSetOptionsHardwareAccelerators: fn(Handle, c_int) -> Status;
    LiteRtCreateOpaqueOptions: fn(*const c_char, *mut c_void, unsafe extern "C" fn(*mut c_void), *mut Handle) -> Status;
    LiteRtAddOpaqueOptions: fn(Handle, Handle) -> Status;
    LiteRtAddCustomOpKernelOption: fn(Handle, *const c_char, c_int, *const CustomOpKernel, *mut c_void) -> Status;
    LiteRtCreateCompiledModel: fn(Handle, Handle, Handle, *mut Handle) -> Status;
    LiteRtDestroyCompiledModel: fn(Handle);
    LiteRtRunCompiledModel: fn(Handle, usize, usize, *mut Handle, usize, *mut Handle) -> Status;
    LiteRtGetModelSignature: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetNumSignatureInputs: fn(Handle, *mut usize) -> Status;
    LiteRtGetNumSignatureOutputs: fn(Handle, *mut usize) -> Status;
    LiteRtGetSignatureInputTensorByIndex: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetSignatureOutputTensorByIndex: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetRankedTensorType: fn(Handle, *mut RankedTensorType) -> Status;
    LiteRtGetCompiledModelInputBufferRequirements: fn(Handle, usize, usize, *mut Handle) -> Status;
    LiteRtGetCompiledModelOutputBufferRequirements: fn(Handle, usize, usize, *mut Handle) -> Status;
    LiteRtCreateManagedTensorBufferFromRequirements: fn(Handle, *const RankedTensorType, Handle, *mut Handle) -> Status;
    LiteRtDestroyTensorBuffer: fn(Handle);
    LiteRtGetTensorBufferTensorType: fn(Handle, *mut RankedTensorType) -> Status;
    LiteRtGetTensorBufferSize: fn(Handle, *mut usize) -> Status;
    LiteRtLockTensorBuffer: fn(Handle, *mut *mut c_void, c_int) -> Status;
    LiteRtUnlockTensorBuffer: fn(Handle) -> Status;
    LiteRtGetNumModelSubgraphs: fn(Handle, *mut usize) -> Status;
    LiteRtGetModelSubgraph: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetNumSubgraphOps: fn(Handle, *mut usize) -> Status;
    LiteRtGetSubgraphOp: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetCustomCode: fn(Handle, *mut *const c_char) -> Status;
    LiteRtGetNumOpInputs: fn(Handle, *mut usize) -> Status;
    LiteRtGetOpInput: fn(Handle, usize, *mut Handle) -> Status;
    LiteRtGetTensorWeights: fn(Handle, *mut Handle) -> Status;
    LiteRtGetWeightsBytes: fn(Handle, *mut *const c_void, *mut usize) -> Status;
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// The API, loading `library` (a path to `libLiteRt.so`) on first use, or — with `None` — the
/// copy already linked into the process (a C program linked against LiteRT).
pub fn api(library: Option<&str>) -> Result<&'static Api, String> {
    API.get_or_init(|| {
        // SAFETY: loading LiteRT runs its initialisers, which have no preconditions.
        let lib = unsafe {
            match library {
                Some(path) => libloading::Library::new(path).map_err(|e| format!("cannot load {path}: {e}"))?,
                None => libloading::Library::from(libloading::os::unix::Library::this()),
            }
        };
        let api = Api::resolve(&lib)?;
        // The library stays loaded for the life of the process: the pointers above point into it.
        std::mem::forget(lib);
        Ok(api)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The API if it has been loaded (the kernels run only after a runtime loaded it).
pub fn loaded() -> Option<&'static Api> {
    API.get().and_then(|a| a.as_ref().ok())
}
