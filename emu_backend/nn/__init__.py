"""The learnable parts: styled convolutions, blocks and the published StyledVNet."""

from .blocks import ConvStyledBlock, ResStyledBlock, narrow_by
from .styled_conv import Dual, StyledConv3d, foldable_tangent, modulated_weight
from .vnet import CROP, StyledVNet, VNetArch, valid_input_size

__all__ = [
    "CROP",
    "ConvStyledBlock",
    "Dual",
    "ResStyledBlock",
    "StyledConv3d",
    "StyledVNet",
    "VNetArch",
    "foldable_tangent",
    "modulated_weight",
    "narrow_by",
    "valid_input_size",
]
