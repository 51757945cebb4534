"""Checkpoints: the authors' PyTorch files, the JAX port's parameter file, and our own format.

Public names only; the state-dict checks and architecture inference used by
:meth:`emu_backend.Emulator.from_checkpoint` stay in :mod:`.published`.
"""

from .jax_port import flax_from_state_dict, read_jax_npz, state_dict_from_flax, write_jax_npz
from .native import ModelFile, is_model_file, load_model_file, save_model_file
from .published import load_published, read_torch_file

__all__ = [
    "ModelFile",
    "flax_from_state_dict",
    "is_model_file",
    "load_model_file",
    "load_published",
    "read_jax_npz",
    "read_torch_file",
    "save_model_file",
    "state_dict_from_flax",
    "write_jax_npz",
]
