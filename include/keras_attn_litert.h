/* keras-attn's fused attention kernels (CBAM, SE, BAM) for LiteRT's CompiledModel C API.
 *
 * Register them on the LiteRtOptions used to compile a model exported with
 * keras_attn.export.to_tflite(..., fused_attention=True); link libkeras_attn_core.so
 * (`cargo build --release -p keras-attn-core`) and LiteRT's libLiteRt.so. */
#ifndef KERAS_ATTN_LITERT_H_
#define KERAS_ATTN_LITERT_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Adds the KerasAttnCBAM, KerasAttnSE and KerasAttnBAM kernels to `options` (a LiteRtOptions)
 * that will compile `model` (a LiteRtModel; these options compile no other), running on
 * `threads` threads (0: every core). When the fused ops' weights in `model` are constants (as
 * keras_attn.export writes them), each node's block is built on its first run and kept until the
 * compiled model is destroyed; with `model` NULL every run rebuilds it from the weights. Returns
 * a handle to release after the compiled model is destroyed, or NULL on failure (the reason goes
 * to stderr). */
void* keras_attn_litert_register(void* options, void* model, int threads);

/* keras_attn_litert_register with `flags`: 0, or KERAS_ATTN_INT8_GATE_WEIGHTS to have a
 * float32 model's fused ops compute their gate MLPs (CBAM's channel gate, SE, BAM's channel
 * branch) with int8 weights, quantized per output channel when the model loads, as the int8
 * models' fused ops always do: a quarter of the bytes to read at every run, at an error of about
 * 1e-4 of a ResNet-50's logits (keras_attn.edge.Runtime's gate_weights="int8"). Other bits make
 * it fail (NULL, the reason on stderr). */
#define KERAS_ATTN_INT8_GATE_WEIGHTS 1u
void* keras_attn_litert_register_with_flags(void* options, void* model, int threads,
                                            unsigned int flags);

/* The problems the kernels met since the last call (malformed attributes, wrong inputs: LiteRT
 * ignores custom-op status codes, so check this after compiling and after each run). Writes
 * them, one per line, NUL-terminated, into `buffer` (may be NULL); returns their count. A run
 * with errors filled the affected outputs with NaN. */
int keras_attn_litert_take_errors(void* handle, char* buffer, size_t size);

/* Checks the `size` bytes at `data`, a whole .tflite file, before LiteRT reads them: LiteRT does
 * not verify the flatbuffer, and a corrupted file can crash it. Checks that every offset, vector
 * and string lies within the file, that indices of tensors, buffers, operator codes and
 * subgraphs are in range, that constant tensors hold the bytes their shapes need, and that the
 * int8 fused ops' scales and zero points are valid and agree. Give LiteRT the bytes you verified
 * (LiteRtCreateModelFromBuffer, the buffer kept for the model's life), not the file again.
 * Returns 1 for a sound model, else 0 with the reason written into `error` (NUL-terminated,
 * truncated to `error_size`; may be NULL). */
int keras_attn_litert_verify(const void* data, size_t size, char* error, size_t error_size);

/* Releases a handle from keras_attn_litert_register (NULL is ignored). */
void keras_attn_litert_release(void* handle);

/* The library version, e.g. "0.1.0". */
const char* keras_attn_litert_version(void);

#ifdef __cplusplus
}
#endif

#endif /* KERAS_ATTN_LITERT_H_ */
