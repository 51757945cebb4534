"""The published map2map StyledVNet (SPEC 2.2): a 3-level V-net of styled convolutions.

Both published emulators (map2map_emu d2d/v2v, style size 1; map2map_zdep, style size 2) share this
architecture. Output size = input size - 96 per axis; input sizes must be ``8 c + 64`` with c >= 5
(104, 112, 120, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checks import check_int
from ..errors import InputError
from .blocks import ConvStyledBlock, ResStyledBlock, add, cat_channels, narrow_by
from .styled_conv import Dual

__all__ = ["VNetArch", "StyledVNet", "CROP", "valid_input_size"]

#: Cells lost on each side of every axis: output = input - 2 * CROP.
CROP = 48


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

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Run the network.

        Parameters
        ----------
        x : Tensor
            (N, in_chan, n, n, n) in normalised units, n = 8 c + 64, c >= 5 (axes independent).
        style : Tensor
            (S,) shared by the batch, or (N, S) one per sample.
            Forward mode: pass ``x`` and ``style`` as :class:`Dual` pairs (value, tangent) with a
            style (S,) shared by the batch; the result is then ``Dual(output, output tangent)``.

        Returns
        -------
        Tensor
            (N, out_chan, n - 96, n - 96, n - 96).
        """
        dual = isinstance(x, Dual)
        xp, sp = (x.primal, style.primal) if dual else (x, style)
        if xp.dim() != 5 or xp.shape[1] != self.arch.in_chan:
            raise InputError(f"input must be (N, {self.arch.in_chan}, D, H, W), got {tuple(xp.shape)}")
        bad = [n for n in xp.shape[2:] if not valid_input_size(n)]
        if bad:
            raise InputError(f"spatial input sizes must be multiples of 8 and >= 104, got {tuple(xp.shape[2:])}")
        if sp.shape[-1] != self.arch.style_size or sp.dim() not in ((1,) if dual else (1, 2)):
            raise InputError(f"style must be (S,) or (N, S) with S = {self.arch.style_size} "
                             f"((S,) in forward mode), got {tuple(sp.shape)}")
        x0 = narrow_by(x, CROP) if self.bypass else None

        x = self.conv_l00(x, style)
        y0 = self.conv_l01(x, style)
        x = self.down_l0(y0, style)
        y1 = self.conv_l1(x, style)
        x = self.down_l1(y1, style)
        y2 = self.conv_l2(x, style)
        x = self.down_l2(y2, style)
        x = self.conv_c(x, style)

        x = self.up_r2(x, style)
        x = self.conv_r2(cat_channels(narrow_by(y2, 4), x), style)
        x = self.up_r1(x, style)
        x = self.conv_r1(cat_channels(narrow_by(y1, 16), x), style)
        x = self.up_r0(x, style)
        x = self.conv_r00(cat_channels(narrow_by(y0, 40), x), style)
        x = self.conv_r01(x, style)
        return add(x, x0, inplace=True) if self.bypass else x  # x: conv_r01's temporary output
