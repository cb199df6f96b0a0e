"""The demo's figure: what one CBAM block attends to, on sample digits."""

import textwrap

import numpy as np

TOP_CHANNELS = 5


def save_attention_maps(path, images, spatial, channel, labels, title, caption):
    """Writes a PNG with a column per digit: the input; CBAM's spatial attention over it, with a
    colorbar; and the channel gate's strongest channels.

    Args:
        path: the PNG to write.
        images: `(N, H, W, 1)` inputs in [0, 1].
        spatial: `(N, h, w, 1)` spatial attention maps in [0, 1] (h and w divide H and W).
        channel: `(N, C)` channel gate values in [0, 1].
        labels: N strings under the columns.
        title: the figure's title.
        caption: a line or two under the figure that says what is shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    fig, axes = plt.subplots(3, count, figsize=(1.5 * count + 1.2, 5.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1, 0.8]})
    size = images.shape[1:3]
    scale = (size[0] // spatial.shape[1], size[1] // spatial.shape[2])
    top = min(TOP_CHANNELS, channel.shape[1])
    for i in range(count):
        axes[0, i].imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(labels[i], fontsize=8)
        # Nearest-neighbour upscaling of the map to the image size: shows its true resolution.
        overlay = np.kron(spatial[i, ..., 0], np.ones(scale))
        axes[1, i].imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        heat = axes[1, i].imshow(overlay, cmap="jet", alpha=0.55, vmin=0, vmax=1)
        for ax in axes[:2, i]:
            ax.set_xticks([])
            ax.set_yticks([])
        strongest = np.argsort(channel[i])[::-1][:top]
        bars = axes[2, i]
        bars.bar(range(top), channel[i, strongest], color="tab:orange")
        bars.set_xticks(range(top), [str(c) for c in strongest], fontsize=6)
        bars.set_ylim(0, 1)
        bars.tick_params(axis="y", labelsize=6)
        if i:
            bars.set_yticklabels([])
    axes[0, 0].set_ylabel("input\n(label -> prediction)", fontsize=8)
    axes[1, 0].set_ylabel("spatial\nattention", fontsize=8)
    axes[2, 0].set_ylabel(f"channel gate,\ntop {top} channels", fontsize=8)
    fig.colorbar(heat, ax=axes[1, :].tolist(), fraction=0.02, pad=0.02,
                 label="spatial gate (0: suppressed, 1: kept)")
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, textwrap.fill(caption, 25 * count), ha="center", va="bottom", fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.86, top=0.9, bottom=0.16, hspace=0.35)
    fig.savefig(path, dpi=110)
    plt.close(fig)
