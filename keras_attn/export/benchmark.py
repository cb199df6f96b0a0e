"""LiteRT (XNNPACK) inference time of plain, CBAM and BAM ResNets, float32 and int8.

    python -m keras_attn.export.benchmark --depth 50 --threads 1 2 --runs 20 --out bench_out

Builds the three ResNets (`keras_attn.models.resnet`, logits out), converts each with
`to_tflite` (int8 calibrated on random images: the timing does not depend on the weights'
values), then times batch-1 inference round-robin over the models, so that a change in the
machine's load hits all of them alike, and prints median milliseconds and the overhead of the
attention models over the plain one.
"""

import argparse
import os
import time

import numpy as np

VARIANTS = (None, "cbam", "bam")


def _convert(depth, size, out, calibration):
    from keras_attn.export import to_tflite
    from keras_attn.models import resnet

    paths = {}
    for attention in VARIANTS:
        model = resnet(
            depth, attention=attention, input_shape=(size, size, 3), classifier_activation=None
        )
        for quantization in (None, "int8"):
            name = f"{attention or 'plain'}_resnet{depth}_{quantization or 'float32'}"
            report = to_tflite(
                model,
                os.path.join(out, f"{name}.tflite"),
                quantization,
                representative_data=calibration if quantization else None,
            )
            paths[(attention, quantization or "float32")] = report
    return paths


def run_benchmark(depth=50, size=224, threads=(1, 2), runs=20, out="bench_out", print_fn=print):
    """Converts, times and prints; returns `{(attention, format, threads): median ms}`."""
    from keras_attn.export import LiteRTModel

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 1, (8, size, size, 3)).astype("float32")
    reports = _convert(depth, size, out, calibration)
    image = calibration[:1]
    medians, partitions = {}, {}
    for count in threads:
        runners = {key: LiteRTModel(r.path, num_threads=count) for key, r in reports.items()}
        seconds = {key: [] for key in runners}
        for runner in runners.values():
            runner(image)  # warm-up: XNNPACK packs the weights on the first run
        for _ in range(runs):
            for key, runner in runners.items():
                start = time.perf_counter()
                runner(image)
                seconds[key].append(time.perf_counter() - start)
        for key, values in seconds.items():
            medians[key + (count,)] = 1000 * float(np.median(values))
            partitions[key] = runners[key].delegate_partitions
    header = f"{'model':<22}{'format':>8}{'MB':>8}{'XNNPACK':>9}" + "".join(
        f"{f'{n} thr ms':>11}{'overhead':>10}" for n in threads
    )
    lines = [f"ResNet-{depth}, {size}x{size}, batch 1, LiteRT interpreter + XNNPACK, "
             f"median of {runs} runs", header, "-" * len(header)]
    for fmt in ("float32", "int8"):
        for attention in VARIANTS:
            key = (attention, fmt)
            parts = "whole" if partitions[key] == 1 else f"{partitions[key]} parts"
            line = (f"{(attention or 'plain').upper() + f' ResNet-{depth}':<22}{fmt:>8}"
                    f"{reports[key].size_bytes / 2**20:>8.1f}{parts:>9}")
            for n in threads:
                ms = medians[key + (n,)]
                base = medians[(None, fmt, n)]
                overhead = "" if attention is None else f"{100 * (ms / base - 1):+.1f}%"
                line += f"{ms:>11.1f}{overhead:>10}"
            lines.append(line)
    print_fn("\n".join(lines))
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="bench_out", help="where the .tflite files go")
    args = parser.parse_args(argv)
    run_benchmark(args.depth, args.size, tuple(args.threads), args.runs, args.out)


if __name__ == "__main__":
    main()
