"""Inference: the published model conventions, periodic tiling and the :class:`Emulator`."""

from .default import UNTRAINED_WARNING, default_emulator, default_weights_path
from .domain import TRAINED_CELL_SIZE_MPC_H, TrainingDomain
from .distributed import assemble_parts, check_parts, predict_distributed, read_parts
from .emulator import MODEL_KINDS, Emulator, Prediction, RunPlan
from .models import EmulatorModel, EmuModel, ZdepModel, emu_style, zdep_style
from .streaming import predict_to_file
from .tiling import PAD, Tile, TilePlan, periodic_read

__all__ = [
    "UNTRAINED_WARNING",
    "default_emulator",
    "default_weights_path",
    "MODEL_KINDS",
    "PAD",
    "TRAINED_CELL_SIZE_MPC_H",
    "EmuModel",
    "Emulator",
    "EmulatorModel",
    "Prediction",
    "RunPlan",
    "assemble_parts",
    "check_parts",
    "predict_distributed",
    "read_parts",
    "Tile",
    "TilePlan",
    "TrainingDomain",
    "ZdepModel",
    "emu_style",
    "periodic_read",
    "predict_to_file",
    "zdep_style",
]
