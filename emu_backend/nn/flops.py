"""Counting the network's floating-point operations from its layer shapes (no arithmetic done)."""

from __future__ import annotations

import torch

from .styled_conv import StyledConv3d
from .vnet import StyledVNet

__all__ = ["conv_flops", "network_flops"]


def conv_flops(layer: StyledConv3d, x_shape, y_shape) -> int:
    """Multiply-adds x 2 of one styled convolution (the modulation/demodulation is negligible).

    Parameters
    ----------
    layer : StyledConv3d
    x_shape, y_shape : tuple
        Input and output shapes (N, C, D, H, W).
    """
    k3 = layer.weight[0, 0].numel()
    vox = y_shape[2] * y_shape[3] * y_shape[4] if not layer.transposed else x_shape[2] * x_shape[3] * x_shape[4]
    return 2 * x_shape[0] * layer.in_chan * layer.out_chan * k3 * vox


def network_flops(net: StyledVNet, input_size: int) -> int:
    """FLOPs of one forward pass on a (1, C, n, n, n) tile, counted on the meta device.

    Returns
    -------
    int
        Total FLOPs (2 per multiply-add) of all convolutions.
    """
    meta = StyledVNet.from_arch(net.arch).to("meta")
    total = 0

    def hook(mod, args, out):
        nonlocal total
        total += conv_flops(mod, tuple(args[0].shape), tuple(out.shape))

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, StyledConv3d)]
    try:
        x = torch.empty(1, net.arch.in_chan, input_size, input_size, input_size, device="meta")
        meta(x, torch.empty(net.arch.style_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total
