"""Type stubs of the compiled Rust core (`rust_core/src/python.rs`).

Maps are C-contiguous float32 NumPy arrays (the wrappers in `keras_attn.kernels` and
`keras_attn.cpu` convert other input); `data_format` is "channels_last" or "channels_first";
`threads=None` uses every core; `simd` forces an instruction-set level ("scalar", "avx2",
"avx512", "neon"), a ValueError if this CPU lacks it.
"""

from typing import Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
DataFormat = Literal["channels_last", "channels_first"]

__version__: str

def version() -> str: ...
def simd_levels() -> list[str]: ...
def simd_level() -> str: ...
def cpu_count() -> int: ...
def verify_tflite(data: bytes) -> None:
    """Raises ValueError saying what is wrong with the bytes of a `.tflite` file."""

def channel_pool(
    x: F32, data_format: DataFormat, threads: int | None = None, simd: str | None = None
) -> tuple[F32, F32]:
    """(mean, max) over H and W, each (N, C)."""

def spatial_pool(
    x: F32, data_format: DataFormat, threads: int | None = None, simd: str | None = None
) -> F32:
    """Max then mean over C: (N, H, W, 2) or (N, 2, H, W)."""

def apply_gates(
    x: F32,
    data_format: DataFormat,
    channel: F32 | None = None,
    spatial: F32 | None = None,
    threads: int | None = None,
    simd: str | None = None,
) -> F32:
    """x * channel[n, c] * spatial[n, h, w]; channel (N, C), spatial (N, H, W)."""

def apply_bam(
    x: F32,
    data_format: DataFormat,
    channel_logits: F32,
    spatial_logits: F32,
    fusion: Literal["sum", "product"],
    threads: int | None = None,
    simd: str | None = None,
) -> F32:
    """x * (1 + sigmoid(fuse(channel_logits[n, c], spatial_logits[n, h, w])))."""

def read_probe(x: F32, threads: int | None = None) -> float:
    """Sums a 1-D float32 array once (the benchmark's streaming-read bandwidth probe)."""

class Block:
    """A whole attention block with folded weights (built by `keras_attn.cpu.compile`)."""

    @staticmethod
    def cbam(
        channels: int,
        hidden_kernel: F32 | None = None,
        hidden_bias: F32 | None = None,
        output_kernel: F32 | None = None,
        output_bias: F32 | None = None,
        pool_avg: bool = True,
        pool_max: bool = True,
        conv_kernel: F32 | None = None,
        conv_bias: float = 0.0,
    ) -> Block: ...
    @staticmethod
    def squeeze_excite(
        reduce_kernel: F32, reduce_bias: F32, expand_kernel: F32, expand_bias: F32
    ) -> Block: ...
    @staticmethod
    def bam(
        dense_kernels: list[F32],
        dense_biases: list[F32],
        conv_kernels: list[F32],
        conv_biases: list[F32],
        dilation: int,
        fusion: Literal["sum", "product"],
    ) -> Block: ...
    @property
    def channels(self) -> int: ...
    def __call__(
        self, x: F32, data_format: DataFormat, threads: int | None = None, simd: str | None = None
    ) -> F32: ...

class LiteRtRuntime:
    """A `.tflite` model in LiteRT's CompiledModel API with the fused kernels registered; built
    by `keras_attn.edge.Runtime`."""

    def __init__(
        self,
        library: str,
        model: bytes,
        name: str,
        threads: int | None = None,
        int8_gate_weights: bool = False,
    ) -> None: ...
    @property
    def input_shapes(self) -> list[list[int]]: ...
    @property
    def output_shapes(self) -> list[list[int]]: ...
    @property
    def input_dtypes(self) -> list[str]: ...
    @property
    def output_dtypes(self) -> list[str]: ...
    @property
    def cached_blocks(self) -> int: ...
    def take_timings(self) -> tuple[float, list[tuple[str, list[int], int, float, float]]]: ...
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...
