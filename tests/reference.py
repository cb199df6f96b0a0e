"""Independent NumPy reference of the attention blocks, written from the papers and the authors'
PyTorch code (Jongchan/attention-module: MODELS/cbam.py, MODELS/bam.py), not from our layers.

Conventions follow PyTorch, so that a test also checks the weight layouts: tensors are NCHW (NCL
for 1D, NCDHW for 3D: every function takes any number of spatial axes after N and C); `Linear`
weights are (out, in); `Conv1d/2d/3d` weights are (out, in // groups, *kernel); a BatchNorm is a
dict with `gamma`, `beta`, `mean`, `var` (inference mode, running statistics). Everything is
computed in float64.
"""

import itertools

import numpy as np

BN_EPS = 1e-5  # PyTorch's default, and the authors' explicit `eps=1e-5`


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def linear(x, weight, bias=None):
    """torch.nn.Linear: x @ weight.T + bias, x of shape (N, in)."""
    y = np.asarray(x, np.float64) @ np.asarray(weight, np.float64).T
    return y if bias is None else y + bias


def spatial_axes(x):
    """The axes after N and C."""
    return tuple(range(2, np.ndim(x)))


def per_channel(v, ndim):
    """An (N, C) array as (N, C, 1, ...), to broadcast over a map of `ndim` axes."""
    return np.reshape(v, np.shape(v) + (1,) * (ndim - 2))


def conv(x, weight, bias=None, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d/2d/3d with stride 1 and symmetric zero padding."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    out_channels, group_in, *kernel = weight.shape
    group_out = out_channels // groups
    sizes = [s + 2 * padding - dilation * (k - 1) for s, k in zip(x.shape[2:], kernel)]
    padded = np.pad(x, ((0, 0), (0, 0)) + ((padding, padding),) * len(kernel))
    y = np.zeros((x.shape[0], out_channels, *sizes))
    for g in range(groups):
        x_g = padded[:, g * group_in : (g + 1) * group_in]
        w_g = weight[g * group_out : (g + 1) * group_out]
        for offset in itertools.product(*(range(k) for k in kernel)):
            window = tuple(slice(o * dilation, o * dilation + s) for o, s in zip(offset, sizes))
            patch = x_g[(slice(None), slice(None), *window)]
            y[:, g * group_out : (g + 1) * group_out] += np.tensordot(
                w_g[(slice(None), slice(None), *offset)], patch, axes=([1], [1])
            ).swapaxes(0, 1)
    if bias is not None:
        y += per_channel(np.asarray(bias, np.float64)[None], y.ndim)
    return y


def batch_norm(x, bn, eps=BN_EPS):
    """BatchNorm1d/2d/3d in eval mode over axis 1 of an (N, C, ...) array."""
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    scale = np.asarray(bn["gamma"], np.float64) / np.sqrt(np.asarray(bn["var"], np.float64) + eps)
    shift = np.asarray(bn["beta"], np.float64) - np.asarray(bn["mean"], np.float64) * scale
    return x * scale.reshape(shape) + shift.reshape(shape)


# ---------------------------------------------------------------------------------------------
# CBAM (MODELS/cbam.py)


def logsumexp_2d(x):
    """The authors' `logsumexp_2d`: s + log(sum(exp(x - s))), s the max over the spatial axes."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    peak = flat.max(axis=2)
    return peak + np.log(np.exp(flat - peak[:, :, None]).sum(axis=2))


def spatial_pool(x, pool_type):
    """The descriptors of ChannelGate.forward, flattened to (N, C)."""
    x = np.asarray(x, np.float64)
    axes = spatial_axes(x)
    if pool_type == "avg":  # F.avg_pool2d over the whole (H, W)
        return x.mean(axis=axes)
    if pool_type == "max":  # F.max_pool2d over the whole (H, W)
        return x.max(axis=axes)
    if pool_type == "lp":  # F.lp_pool2d(x, 2, (H, W)) = (sum x^2)^(1/2)
        return np.sqrt((x**2).sum(axis=axes))
    if pool_type == "lse":
        return logsumexp_2d(x)
    raise ValueError(pool_type)


def cbam_channel_gate(x, mlp, pool_types=("avg", "max")):
    """ChannelGate: shared MLP (Linear, ReLU, Linear) over each pooled descriptor, summed, sigmoid.

    `mlp` = dict(w1, b1, w2, b2) in Linear layout. Returns (refined x, scale of shape (N, C)).
    """
    logits = 0.0
    for pool_type in pool_types:
        hidden = relu(linear(spatial_pool(x, pool_type), mlp["w1"], mlp["b1"]))
        logits = logits + linear(hidden, mlp["w2"], mlp["b2"])
    scale = sigmoid(logits)
    return x * per_channel(scale, np.ndim(x)), scale


def channel_pool(x):
    """ChannelPool: cat(max over C, mean over C), the max first."""
    return np.concatenate([x.max(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)], axis=1)


def cbam_spatial_gate(x, conv_weight, bn=None):
    """SpatialGate: BasicConv(2, 1, k, padding=(k-1)//2, bias=False, BN, no ReLU), sigmoid.

    `bn` None gives the plain convolution. Returns (refined x, scale of shape (N, 1, H, W)).
    """
    kernel_size = np.shape(conv_weight)[-1]
    pooled = channel_pool(np.asarray(x, np.float64))
    logits = conv(pooled, conv_weight, padding=(kernel_size - 1) // 2)
    if bn is not None:
        logits = batch_norm(logits, bn)
    scale = sigmoid(logits)
    return x * scale, scale


def cbam(x, mlp, conv_weight=None, bn=None, pool_types=("avg", "max"), no_spatial=False):
    """CBAM: ChannelGate, then (unless no_spatial) SpatialGate."""
    out, _ = cbam_channel_gate(x, mlp, pool_types)
    if not no_spatial:
        out, _ = cbam_spatial_gate(out, conv_weight, bn)
    return out


# ---------------------------------------------------------------------------------------------
# BAM (MODELS/bam.py)


def bam_channel_gate(x, hidden, output):
    """ChannelGate: pool, [Linear, BatchNorm1d, ReLU] per hidden stage, final Linear -> (N, C).

    `hidden` is a list of (dict(w, b), bn); `output` is dict(w, b). The authors pool with
    avg_pool2d(x, H, stride=H), which is the global mean only when H == W; this is the global mean.
    """
    h = np.asarray(x, np.float64).mean(axis=spatial_axes(x))
    for fc, bn in hidden:
        h = relu(batch_norm(linear(h, fc["w"], fc["b"]), bn))
    return linear(h, output["w"], output["b"])


def bam_spatial_gate(x, reduce, reduce_bn, dilated, output, dilation=4):
    """SpatialGate: 1x1 conv, BN, ReLU; [3x3 conv (dilation, padding=dilation), BN, ReLU] per
    dilated stage; 1x1 conv to one channel -> (N, 1, H, W). All convs have biases.

    `reduce` and `output` are dict(w, b); `dilated` is a list of (dict(w, b), bn).
    """
    h = relu(batch_norm(conv(x, reduce["w"], reduce["b"]), reduce_bn))
    for params, bn in dilated:
        h = conv(h, params["w"], params["b"], padding=dilation, dilation=dilation)
        h = relu(batch_norm(h, bn))
    return conv(h, output["w"], output["b"])


def bam(x, channel_logits, spatial_logits, fusion):
    """BAM: x * (1 + sigmoid(fuse)), "product" as the released code, "sum" as the paper."""
    c = per_channel(channel_logits, np.ndim(x))
    fused = c * spatial_logits if fusion == "product" else c + spatial_logits
    return x * (1.0 + sigmoid(fused))


# ---------------------------------------------------------------------------------------------
# SENet, SKNet, ECA-Net (from the papers)


def squeeze_excite(x, w1, b1, w2, b2):
    """SE: s = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2); y = x * s."""
    squeezed = np.asarray(x, np.float64).mean(axis=spatial_axes(x))
    scale = sigmoid(linear(relu(linear(squeezed, w1, b1)), w2, b2))
    return x * per_channel(scale, np.ndim(x))


def eca(x, weight):
    """ECA: Conv1d(1, 1, k, padding=(k-1)//2, bias=False) across the pooled channel vector."""
    pooled = np.asarray(x, np.float64).mean(axis=spatial_axes(x))
    k = len(weight)
    padded = np.pad(pooled, ((0, 0), ((k - 1) // 2, (k - 1) // 2)))
    logits = sum(weight[j] * padded[:, j : j + pooled.shape[1]] for j in range(k))
    return x * per_channel(sigmoid(logits), np.ndim(x))


def selective_kernel(x, branches, fuse_w, fuse_bn, select, groups=1):
    """SK convolution with branches 3x3 (dilation 1) and 3x3 (dilation 2).

    `branches` is a list of (conv weight, bn) with no conv bias; `fuse_w` the bias-free Linear to d;
    `select` a list of dict(w, b), one Linear d -> C per branch. Returns (V, weights (N, M, C)).
    """
    outs = [
        relu(batch_norm(conv(x, w, padding=d, dilation=d, groups=groups), bn))
        for (w, bn), d in zip(branches, (1, 2))
    ]
    s = sum(outs).mean(axis=(2, 3))
    z = relu(batch_norm(linear(s, fuse_w), fuse_bn))
    logits = np.stack([linear(z, fc["w"], fc["b"]) for fc in select], axis=1)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return sum(weights[:, m, :, None, None] * u for m, u in enumerate(outs)), weights
