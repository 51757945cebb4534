"""The learnable parts (styled convolutions, blocks, the published StyledVNet) and the units the published
networks work in (:mod:`.normalisation`, :mod:`.lag2eul`)."""

from .lag2eul import lag2eul_scale, lagrangian_to_eulerian
from .normalisation import DIS_STD_MPC_H, NORMALISATION, V2V_REF_OMEGA_M, displacement_norm, velocity_norm
from .styled_conv import Dual, StyledConv3d
from .vnet import CROP, PERIOD_MULTIPLE, StyledVNet, VNetArch, valid_input_size

__all__ = [
    "CROP",
    "DIS_STD_MPC_H",
    "NORMALISATION",
    "PERIOD_MULTIPLE",
    "V2V_REF_OMEGA_M",
    "Dual",
    "StyledConv3d",
    "StyledVNet",
    "VNetArch",
    "displacement_norm",
    "lag2eul_scale",
    "lagrangian_to_eulerian",
    "valid_input_size",
    "velocity_norm",
]
