"""Inference: the published model conventions, periodic tiling and the :class:`Emulator`.

Public names only; the tiling internals live in :mod:`.tiling`, precision options in
:mod:`.acceleration`, the on-disk run in :mod:`.streaming` and :mod:`.distributed`.
"""

from .default import default_emulator, default_weights_path
from .distributed import assemble_parts, check_parts, predict_distributed, read_parts
from .domain import TRAINED_CELL_SIZE_MPC_H, TrainingDomain
from .emulator import MODEL_KINDS, Emulator, Prediction, RunPlan
from .models import EmuConvention, ModelConvention, ZdepConvention
from .streaming import predict_to_file

__all__ = [
    "Emulator",
    "Prediction",
    "RunPlan",
    "MODEL_KINDS",
    "default_emulator",
    "default_weights_path",
    "TrainingDomain",
    "TRAINED_CELL_SIZE_MPC_H",
    "ModelConvention",
    "ZdepConvention",
    "EmuConvention",
    "predict_to_file",
    "predict_distributed",
    "assemble_parts",
    "check_parts",
    "read_parts",
]
