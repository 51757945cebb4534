"""The published map2map StyledVNet (SPEC 2.2): a 3-level V-net of styled convolutions.

Both published emulators (map2map_emu d2d/v2v, style size 1; map2map_zdep, style size 2) share this
architecture. Output size = input size - 96 per axis; input sizes must be ``8 c + 64`` with c >= 5
(104, 112, 120, ...).

Periodic mode (``forward(..., periodic=True)``): the input is one period of a periodic box, n^3 with n a
multiple of 8, and the output is the network's output on that periodic box, n^3. Every layer is
translation-equivariant on its grid, and the tiled evaluation of a periodic box (tiles anchored on multiples
of 8, input ``tile + 96``, :mod:`emu_backend.inference.tiling`) aligns every down-sampling pair and every
skip crop with the box's own grid at each level (checked by hand in the docstring of
:meth:`StyledVNet.forward`), so every activation of that evaluation is periodic with the box's period at
its level. Periodic mode computes each activation once per period: each residual block reads its input
padded periodically by the block's crop (2 cells: one per 3^3 convolution) and crops back to one period,
the skip crops and the bypass crop fall away. The same numbers as the tiled evaluation up to float
round-off, at (n + 4)^3 cells per level-0 layer instead of ``(n / tile)^3 (tile + 96)^3`` (64x fewer at
n = tile = 32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checks import check_int
from ..errors import InputError
from .blocks import ConvStyledBlock, ResStyledBlock, add, cat_channels, narrow_by, periodic_pad
from .styled_conv import Dual

__all__ = ["VNetArch", "StyledVNet", "CROP", "PERIOD_MULTIPLE", "valid_input_size"]

#: Cells lost on each side of every axis: output = input - 2 * CROP.
CROP = 48
#: A periodic box's side must be a multiple of this (three factor-2 down-samplings) in periodic mode.
PERIOD_MULTIPLE = 8


def valid_input_size(n: int) -> bool:
    """Whether a spatial input size is accepted: a multiple of 8 and at least 104."""
    return n >= 104 and n % 8 == 0


@dataclass(frozen=True)
class VNetArch:
    """Architecture arguments of :class:`StyledVNet`.

    Parameters
    ----------
    style_size : int
        1 for map2map_emu (d2d, v2v), 2 for map2map_zdep.
    in_chan, out_chan : int
        3 and 3 for the emulators (displacement vectors).
    width : int
        Channel width (64 in the published models; 128 after concatenations).
    """

    style_size: int = 2
    in_chan: int = 3
    out_chan: int = 3
    width: int = 64

    def __post_init__(self):
        for key in ("style_size", "in_chan", "out_chan", "width"):
            value = check_int(getattr(self, key), f"VNetArch.{key}", 1, what="a positive integer")
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict:
        return asdict(self)


class StyledVNet(nn.Module):
    """The published StyledVNet.

    Parameters
    ----------
    style_size, in_chan, out_chan, width : int
        See :class:`VNetArch`.

    Examples
    --------
    >>> net = StyledVNet(style_size=1)
    >>> sum(p.numel() for p in net.parameters())
    3352210
    >>> x = torch.zeros(1, 3, 104, 104, 104)
    >>> net(x, torch.zeros(1)).shape
    torch.Size([1, 3, 8, 8, 8])
    """

    def __init__(self, style_size: int = 2, in_chan: int = 3, out_chan: int = 3, width: int = 64):
        super().__init__()
        self.arch = VNetArch(style_size, in_chan, out_chan, width)
        s, w = style_size, width
        self.conv_l00 = ResStyledBlock(s, in_chan, w, "CACA")
        self.conv_l01 = ResStyledBlock(s, w, w, "CACA")
        self.down_l0 = ConvStyledBlock(s, w, w, "DA")
        self.conv_l1 = ResStyledBlock(s, w, w, "CACA")
        self.down_l1 = ConvStyledBlock(s, w, w, "DA")
        self.conv_l2 = ResStyledBlock(s, w, w, "CACA")
        self.down_l2 = ConvStyledBlock(s, w, w, "DA")
        self.conv_c = ResStyledBlock(s, w, w, "CACA")
        self.up_r2 = ConvStyledBlock(s, w, w, "UA")
        self.conv_r2 = ResStyledBlock(s, 2 * w, w, "CACA")
        self.up_r1 = ConvStyledBlock(s, w, w, "UA")
        self.conv_r1 = ResStyledBlock(s, 2 * w, w, "CACA")
        self.up_r0 = ConvStyledBlock(s, w, w, "UA")
        self.conv_r00 = ResStyledBlock(s, 2 * w, w, "CACA")
        self.conv_r01 = ResStyledBlock(s, w, out_chan, "CAC")
        self.bypass = in_chan == out_chan

    @classmethod
    def from_arch(cls, arch: VNetArch) -> "StyledVNet":
        """Build from a :class:`VNetArch`."""
        return cls(arch.style_size, arch.in_chan, arch.out_chan, arch.width)

    def forward(self, x: torch.Tensor, style: torch.Tensor, periodic: bool = False) -> torch.Tensor:
        """Run the network.

        Parameters
        ----------
        x : Tensor
            (N, in_chan, n, n, n) in normalised units, n = 8 c + 64, c >= 5 (axes independent); in
            periodic mode one period of a periodic box, n a multiple of 8 (n >= 8).
        style : Tensor
            (S,) shared by the batch, or (N, S) one per sample.
            Forward mode: pass ``x`` and ``style`` as :class:`Dual` pairs (value, tangent) with a
            style (S,) shared by the batch; the result is then ``Dual(output, output tangent)``.
        periodic : bool
            Periodic mode (module docstring): the output on the periodic box of period ``x``.

        Returns
        -------
        Tensor
            (N, out_chan, n - 96, n - 96, n - 96); in periodic mode (N, out_chan, n, n, n).

        Notes
        -----
        Why periodic mode is the tiled evaluation. A tile anchored at ``a`` (a multiple of 8) reads from
        ``a - 48``; in level-0 cells the two residual blocks start ``y0`` at ``a - 44`` (even: the
        down-sampling pairs cells ``(2i, 2i + 1)`` of the box), level 1 starts at ``a/2 - 22``, ``y1`` at
        ``a/2 - 20`` (even), level 2 at ``a/4 - 10``, ``y2`` at ``a/4 - 8`` (even), level 3 at ``a/8 - 4``
        and its block ends at ``a/8 - 2``; the up-samplings put level 2 at ``a/4 - 4`` = ``y2`` cropped by
        4, level 1 at ``a/2 - 4`` = ``y1`` cropped by 16, level 0 at ``a - 4`` = ``y0`` cropped by 40, and
        the last two blocks end at ``a``, the bypass crop's start. Every pairing and crop is therefore the
        box's own, cell for cell, which periodic mode reproduces with index 0 at the box's cell 0.
        """
        dual = isinstance(x, Dual)
        xp, sp = (x.primal, style.primal) if dual else (x, style)
        if xp.dim() != 5 or xp.shape[1] != self.arch.in_chan:
            raise InputError(f"input must be (N, {self.arch.in_chan}, D, H, W), got {tuple(xp.shape)}")
        if periodic:
            if any(n < PERIOD_MULTIPLE or n % PERIOD_MULTIPLE for n in xp.shape[2:]):
                raise InputError(f"periodic mode needs spatial sizes that are multiples of {PERIOD_MULTIPLE} "
                                 f"(>= {PERIOD_MULTIPLE}), got {tuple(xp.shape[2:])}")
        elif any(not valid_input_size(n) for n in xp.shape[2:]):
            raise InputError(f"spatial input sizes must be multiples of 8 and >= 104, got {tuple(xp.shape[2:])}")
        if sp.shape[-1] != self.arch.style_size or sp.dim() not in ((1,) if dual else (1, 2)):
            raise InputError(f"style must be (S,) or (N, S) with S = {self.arch.style_size} "
                             f"((S,) in forward mode), got {tuple(sp.shape)}")
        if periodic:
            def res(block, x):  # a residual block on a periodic input: padded by its crop, one period out
                return block(periodic_pad(x, block.crop), style)

            def crop(x, n):
                return x
        else:
            def res(block, x):
                return block(x, style)

            crop = narrow_by
        x0 = crop(x, CROP) if self.bypass else None

        x = res(self.conv_l00, x)
        y0 = res(self.conv_l01, x)
        x = self.down_l0(y0, style)
        y1 = res(self.conv_l1, x)
        x = self.down_l1(y1, style)
        y2 = res(self.conv_l2, x)
        x = self.down_l2(y2, style)
        x = res(self.conv_c, x)

        x = self.up_r2(x, style)
        x = res(self.conv_r2, cat_channels(crop(y2, 4), x))
        x = self.up_r1(x, style)
        x = res(self.conv_r1, cat_channels(crop(y1, 16), x))
        x = self.up_r0(x, style)
        x = res(self.conv_r00, cat_channels(crop(y0, 40), x))
        x = res(self.conv_r01, x)
        # x: conv_r01's temporary output; in periodic mode x0 is the caller's input, never overwritten
        return add(x, x0, inplace=True) if self.bypass else x
