"""CPU benchmark of keras-attn's Rust core against NumPy, TensorFlow and LiteRT/XNNPACK.

The benchmark lives in the package (`keras_attn.bench`, also `keras-attn bench`); this script is
its example entry point:

    python examples/benchmark_cpu.py --out bench_cpu [--quick] [--threads 1,2]
"""

import sys

from keras_attn.bench import main

if __name__ == "__main__":
    sys.exit(main())
