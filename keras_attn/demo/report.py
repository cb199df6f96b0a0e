"""The demo's printed tables."""


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    def cells(line):  # first column left-aligned, numbers right-aligned
        return [str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(line, widths))]

    return "\n".join("  ".join(cells(line)) for line in lines)


def training_table(results):
    """Keras: accuracy, parameters and training step time per model."""
    rows = [
        [m["label"], f"{m['params']:,}", f"{100 * m['accuracy']:.1f}%",
         f"{m['train_step_ms']:.1f}", f"{m['keras_reload_max_abs_diff']:.1e}"]
        for m in results["models"].values()
    ]
    header = ["model", "params", "test accuracy", "train step (ms)", ".keras reload diff"]
    return "\nKeras (TensorFlow backend)\n" + _table(header, rows)


def litert_table(results):
    """LiteRT: accuracy, agreement with Keras, size and speed per model and format."""
    rows = []
    for m in results["models"].values():
        for quantization in ("float32", "int8"):
            r = m[f"litert_{quantization}"]
            rows.append([
                m["label"], quantization, f"{r['size_bytes'] / 1024:.1f}",
                f"{100 * r['accuracy']:.1f}%", f"{100 * r['agreement']:.1f}%",
                f"{r['cosine']:.4f}", f"{r['max_abs_diff']:.1e}", f"{r['ms_per_image']:.3f}",
                "whole" if r["fully_delegated"] else f"{r['xnnpack_partitions']} parts",
            ])
    header = ["model", "format", "KiB", "accuracy", "top-1 agrees w/ Keras", "cosine w/ Keras",
              "max |d logit|", "ms/image (1 thread)", "XNNPACK"]
    return "\nLiteRT (ai_edge_litert interpreter, XNNPACK)\n" + _table(header, rows)
