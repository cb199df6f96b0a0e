"""Start-up time and memory of `keras_attn.edge.Runtime` on one fused `.tflite` model.

    python scripts/edge_footprint.py MODEL.tflite [--threads N] [--runs N]

Prints, step by step, the wall time and the process's resident memory (current and peak):
importing `keras_attn.edge`, loading the model (`Runtime(path)`: LiteRT compiles it and runs it
once on zeros to check the fused ops), the first call and the median of later calls. Needs only
NumPy, ai-edge-litert and keras-attn, so it runs on a device without TensorFlow.
"""

import argparse
import resource
import sys
import time


def _memory_mib():
    """(current, peak) resident memory of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    current = pages * resource.getpagesize() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return current, peak


def _report(step, seconds):
    current, peak = _memory_mib()
    print(f"{step:<28} {seconds * 1e3:9.1f} ms  {current:7.1f} MiB  {peak:7.1f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tflite file (fused or not)")
    parser.add_argument("--threads", type=int, default=1, help="threads (default: 1)")
    parser.add_argument("--runs", type=int, default=20, help="calls after the first (default: 20)")
    args = parser.parse_args(argv)

    print(f"{'step':<28} {'time':>12}  {'RSS':>11}  {'peak RSS':>11}")
    _report("python started", 0.0)
    start = time.perf_counter()
    import numpy as np

    _report("import numpy", time.perf_counter() - start)
    start = time.perf_counter()
    from keras_attn import edge

    _report("import keras_attn.edge", time.perf_counter() - start)
    start = time.perf_counter()
    run = edge.Runtime(args.model, threads=args.threads)
    _report("Runtime(path)", time.perf_counter() - start)
    x = [np.zeros(s, d) for s, d in zip(run.input_shapes, run.input_dtypes)]
    start = time.perf_counter()
    run(x)
    _report("first call", time.perf_counter() - start)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    _report(f"median of {args.runs} calls", float(np.median(times)))
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras"})
    print(f"TensorFlow or Keras imported: {heavy or 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
