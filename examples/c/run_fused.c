/* Runs a .tflite model with keras-attn's fused attention kernels in LiteRT's CompiledModel API.
 *
 *   run_fused model.tflite [threads] [int8-gates]
 *
 * Reads the file once, verifies its bytes (LiteRT does not verify a flatbuffer, and a corrupted
 * one can crash it) and gives LiteRT those very bytes. Fills the (float32) input with
 * x[i] = sin(0.1 i), runs the model and prints every output value, one per line. With
 * "int8-gates", a float32 model's fused ops compute their gate MLPs with int8 weights
 * (KERAS_ATTN_INT8_GATE_WEIGHTS). LiteRT's C headers are not in the ai-edge-litert wheel, so the few functions used
 * are declared here from litert/c/ (LiteRT 2.x). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keras_attn_litert.h"

typedef int LiteRtStatus;
typedef void* Handle;
typedef struct {
  uint32_t rank_and_flags; /* rank:7, has_strides:1 */
  int32_t dimensions[8];
  uint32_t strides[8];
} LiteRtLayout;
typedef struct {
  int element_type;
  LiteRtLayout layout;
} LiteRtRankedTensorType;

LiteRtStatus LiteRtCreateEnvironment(int, const void*, Handle*);
void LiteRtDestroyEnvironment(Handle);
/* The buffer must outlive the model. */
LiteRtStatus LiteRtCreateModelFromBuffer(Handle, const void*, size_t, Handle*);
void LiteRtDestroyModel(Handle);
LiteRtStatus LiteRtCreateOptions(Handle*);
void LiteRtDestroyOptions(Handle);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(Handle, int);
LiteRtStatus LiteRtCreateCompiledModel(Handle, Handle, Handle, Handle*);
void LiteRtDestroyCompiledModel(Handle);
LiteRtStatus LiteRtGetModelSignature(Handle, size_t, Handle*);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(Handle, size_t, Handle*);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(Handle, size_t, Handle*);
LiteRtStatus LiteRtGetRankedTensorType(Handle, LiteRtRankedTensorType*);
LiteRtStatus LiteRtGetCompiledModelInputBufferRequirements(Handle, size_t, size_t, Handle*);
LiteRtStatus LiteRtGetCompiledModelOutputBufferRequirements(Handle, size_t, size_t, Handle*);
LiteRtStatus LiteRtCreateManagedTensorBufferFromRequirements(Handle, const LiteRtRankedTensorType*,
                                                             Handle, Handle*);
void LiteRtDestroyTensorBuffer(Handle);
LiteRtStatus LiteRtGetTensorBufferSize(Handle, size_t*);
LiteRtStatus LiteRtLockTensorBuffer(Handle, void**, int);
LiteRtStatus LiteRtUnlockTensorBuffer(Handle);
LiteRtStatus LiteRtRunCompiledModel(Handle, size_t, size_t, Handle*, size_t, Handle*);

#define CHECK(call)                                              \
  do {                                                           \
    if ((call) != 0) {                                           \
      fprintf(stderr, "failed: %s\n", #call);                    \
      return 1;                                                  \
    }                                                            \
  } while (0)

/* The bytes of the file at `path` in a 64-byte aligned buffer (LiteRT reads the weights in place,
 * and the exporter aligns them to 64 bytes in the file), or NULL. */
static void* read_model(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  void* data = NULL;
  long end = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (end > 0 && fseek(f, 0, SEEK_SET) == 0) {
    *size = (size_t)end;
    data = aligned_alloc(64, (*size + 63) / 64 * 64);
    if (data && fread(data, 1, *size, f) != *size) {
      free(data);
      data = NULL;
    }
  }
  fclose(f);
  return data;
}

static int make_buffer(Handle env, Handle compiled, Handle signature, int is_input, Handle* buffer) {
  Handle tensor = NULL, requirements = NULL;
  LiteRtRankedTensorType type;
  memset(&type, 0, sizeof type);
  if (is_input) {
    CHECK(LiteRtGetSignatureInputTensorByIndex(signature, 0, &tensor));
    CHECK(LiteRtGetCompiledModelInputBufferRequirements(compiled, 0, 0, &requirements));
  } else {
    CHECK(LiteRtGetSignatureOutputTensorByIndex(signature, 0, &tensor));
    CHECK(LiteRtGetCompiledModelOutputBufferRequirements(compiled, 0, 0, &requirements));
  }
  CHECK(LiteRtGetRankedTensorType(tensor, &type));
  CHECK(LiteRtCreateManagedTensorBufferFromRequirements(env, &type, requirements, buffer));
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s model.tflite [threads] [int8-gates]\n", argv[0]);
    return 2;
  }
  Handle env = NULL, model = NULL, options = NULL, compiled = NULL, signature = NULL;
  Handle input = NULL, output = NULL;
  char errors[4096];
  size_t model_size = 0;
  void* model_bytes = read_model(argv[1], &model_size);
  if (!model_bytes) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  if (!keras_attn_litert_verify(model_bytes, model_size, errors, sizeof errors)) {
    fprintf(stderr, "%s is not a valid .tflite model: %s\n", argv[1], errors);
    return 1;
  }
  CHECK(LiteRtCreateEnvironment(0, NULL, &env));
  CHECK(LiteRtCreateModelFromBuffer(env, model_bytes, model_size, &model));
  CHECK(LiteRtCreateOptions(&options));
  CHECK(LiteRtSetOptionsHardwareAccelerators(options, 1 /* CPU */));
  unsigned int flags = argc > 3 && strcmp(argv[3], "int8-gates") == 0 ? KERAS_ATTN_INT8_GATE_WEIGHTS : 0;
  void* kernels = keras_attn_litert_register_with_flags(options, model, argc > 2 ? atoi(argv[2]) : 0, flags);
  if (!kernels) return 1;
  CHECK(LiteRtCreateCompiledModel(env, model, options, &compiled));
  CHECK(LiteRtGetModelSignature(model, 0, &signature));
  if (make_buffer(env, compiled, signature, 1, &input) || make_buffer(env, compiled, signature, 0, &output)) return 1;

  size_t size = 0;
  float* data = NULL;
  CHECK(LiteRtGetTensorBufferSize(input, &size));
  CHECK(LiteRtLockTensorBuffer(input, (void**)&data, 1 /* write */));
  for (size_t i = 0; i < size / sizeof(float); ++i) data[i] = sinf(0.1f * (float)i);
  CHECK(LiteRtUnlockTensorBuffer(input));
  CHECK(LiteRtRunCompiledModel(compiled, 0, 1, &input, 1, &output));
  if (keras_attn_litert_take_errors(kernels, errors, sizeof errors) > 0) {
    fprintf(stderr, "keras-attn kernels: %s\n", errors);
    return 1;
  }
  CHECK(LiteRtGetTensorBufferSize(output, &size));
  CHECK(LiteRtLockTensorBuffer(output, (void**)&data, 0 /* read */));
  for (size_t i = 0; i < size / sizeof(float); ++i) printf("%.9g\n", data[i]);
  CHECK(LiteRtUnlockTensorBuffer(output));

  LiteRtDestroyTensorBuffer(input);
  LiteRtDestroyTensorBuffer(output);
  LiteRtDestroyCompiledModel(compiled);
  keras_attn_litert_release(kernels);
  LiteRtDestroyOptions(options);
  LiteRtDestroyModel(model);
  LiteRtDestroyEnvironment(env);
  free(model_bytes);
  return 0;
}
