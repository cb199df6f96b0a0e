//! Fused attention blocks as LiteRT custom ops: `KerasAttnCBAM`, `KerasAttnSE`, `KerasAttnBAM`.
//!
//! - [`ops`]: the ops' attributes and inputs, run on slices with the blocks (pure Rust);
//! - [`api`]: the few LiteRT C functions used, loaded at run time from `libLiteRt.so`;
//! - [`kernel`]: the custom-op callbacks and their registration on a `LiteRtOptions`;
//! - [`runtime`]: a compiled model with the kernels registered (used by `keras_attn.edge`);
//! - [`verify`]: the checks of a whole `.tflite` file before LiteRT reads it;
//! - [`ffi`]: the panic guard of every C entry point;
//! - [`c_api`]: `keras_attn_litert_register`, for C and C++ applications.

pub mod api;
pub mod c_api;
pub mod ffi;
pub mod kernel;
pub mod ops;
pub mod runtime;
pub mod verify;
