"""The demo's figure: CBAM's spatial attention maps over sample digits."""

import numpy as np


def save_attention_maps(path, images, maps, labels, title):
    """Writes a PNG: each column a digit, the image above, its attention map over it below.

    Args:
        path: the PNG to write.
        images: `(N, H, W, 1)` inputs in [0, 1].
        maps: `(N, h, w, 1)` spatial attention maps in [0, 1] (any resolution).
        labels: N strings under the columns.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    fig, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2), squeeze=False)
    size = images.shape[1:3]
    for i in range(count):
        axes[0, i].imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        # Nearest-neighbour upscaling of the map to the image size: shows its true resolution.
        scale = (size[0] // maps.shape[1], size[1] // maps.shape[2])
        overlay = np.kron(maps[i, ..., 0], np.ones(scale))
        axes[1, i].imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(overlay, cmap="jet", alpha=0.55, vmin=0, vmax=1)
        axes[1, i].set_xlabel(labels[i], fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("spatial\nattention")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
