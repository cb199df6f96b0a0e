"""How much a second thread speeds up a compiled block: `keras_attn.cpu.compile(layer,
threads=1)` against `threads=2` on the same map, called in a loop as a Python caller does.

    python examples/benchmark_compiled_threads.py [--shape 1 56 56 256] [--calls 300]

Prints, for CBAM, SqueezeExcite and BAM, the median time per call of each thread count and their
ratio. The two alternate in groups of `--group` consecutive calls (10), as a caller that calls one
block in a loop does: the workers of a 2-thread block wait 200 µs for the next call before they
sleep, so with `--group 1` every 2-thread call follows a 1-thread call of about that length and
often finds them asleep. Each call includes the new output array.
"""

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 56, 56, 256])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--group", type=int, default=10,
        help="consecutive calls of one thread count before switching to the other (1: call by call)",
    )
    args = parser.parse_args(argv)
    from keras_attn import logs

    logs.quiet()  # before TensorFlow is imported
    import keras_attn
    from keras_attn import cpu

    x = np.random.default_rng(0).normal(size=args.shape).astype("float32")
    print(f"map {tuple(args.shape)}, median of {args.calls} calls, interleaved {args.group} by {args.group}\n")
    print("| block | 1 thread (µs) | 2 threads (µs) | speed-up |")
    print("|---|---|---|---|")
    for name in ("CBAM", "SqueezeExcite", "BAM"):
        layer = getattr(keras_attn, name)()
        reference = np.asarray(layer(x, training=False))
        blocks = {threads: cpu.compile(layer, threads=threads) for threads in (1, 2)}
        for block in blocks.values():
            np.testing.assert_allclose(block(x), reference, atol=1e-4)
        times = {threads: [] for threads in blocks}
        for _ in range(args.calls // args.group):
            for threads, block in blocks.items():
                for _ in range(args.group):
                    start = time.perf_counter()
                    block(x)
                    times[threads].append(time.perf_counter() - start)
        one, two = (1e6 * float(np.median(times[t])) for t in (1, 2))
        print(f"| {name} | {one:.0f} | {two:.0f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
