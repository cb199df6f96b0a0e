//! The C entry point (declared in `include/keras_attn_litert.h`): adds every fused kernel to a
//! `LiteRtOptions`, resolving LiteRT's functions from the process (the application links
//! `libLiteRt.so`).

use super::api;
use super::kernel::{fused_weights_are_constant, Kernels};
use std::ffi::{c_char, c_int, c_void, CStr};

/// Registers the fused kernels on `options`, for compiling `model` (a `LiteRtModel`, or NULL),
/// running them on `threads` threads (0: every core). With `model` given and the weights of its
/// fused ops all constant, each node's block is built once and kept until the compiled model is
/// destroyed; with NULL, every run rebuilds it. Returns a handle to release with
/// `keras_attn_litert_release` after the compiled model is destroyed, or NULL on failure (the
/// reason is printed to stderr).
///
/// # Safety
/// `options` must be a live `LiteRtOptions`, `model` a live `LiteRtModel` or NULL; the options
/// then compile that model only.
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_register(options: *mut c_void, model: *mut c_void, threads: c_int) -> *mut c_void {
    let threads = usize::try_from(threads).ok().filter(|&t| t > 0);
    let result = api::api(None).and_then(|api| {
        let cache_blocks = !model.is_null() && fused_weights_are_constant(api, model);
        Kernels::register(api, options, threads, cache_blocks)
    });
    match result {
        Ok(kernels) => Box::into_raw(kernels) as *mut c_void,
        Err(e) => {
            eprintln!("keras_attn_litert_register: {e}");
            std::ptr::null_mut()
        }
    }
}

/// The errors the kernels recorded since the last call (malformed attributes, wrong inputs), one
/// per line, written into `buffer` (NUL-terminated, truncated to `size`); returns their count.
///
/// # Safety
/// `handle` comes from `keras_attn_litert_register`; `buffer` holds `size` bytes (or is NULL).
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_take_errors(handle: *mut c_void, buffer: *mut c_char, size: usize) -> c_int {
    if handle.is_null() {
        return 0;
    }
    let errors = (*(handle as *const Kernels)).take_errors();
    if !buffer.is_null() && size > 0 {
        let text = errors.join("\n");
        let n = text.len().min(size - 1);
        std::ptr::copy_nonoverlapping(text.as_ptr(), buffer as *mut u8, n);
        *buffer.add(n) = 0;
    }
    errors.len() as c_int
}

/// Releases a handle from `keras_attn_litert_register` (NULL is ignored).
///
/// # Safety
/// `handle` comes from `keras_attn_litert_register`, and no compiled model uses it any more.
#[no_mangle]
pub unsafe extern "C" fn keras_attn_litert_release(handle: *mut c_void) {
    if !handle.is_null() {
        drop(Box::from_raw(handle as *mut Kernels));
    }
}

/// The crate version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn keras_attn_litert_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("version has a NUL"),
    };
    VERSION.as_ptr()
}
