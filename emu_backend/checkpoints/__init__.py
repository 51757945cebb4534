"""Checkpoints: the authors' PyTorch files, the JAX port's parameter file, and our own format."""

from .jax_port import flax_from_state_dict, read_jax_npz, state_dict_from_flax, write_jax_npz
from .native import ModelFile, is_model_file, load_model_file, save_model_file
from .published import check_state_dict, extract_state_dict, infer_arch, load_published, read_torch_file

__all__ = [
    "ModelFile",
    "check_state_dict",
    "extract_state_dict",
    "flax_from_state_dict",
    "infer_arch",
    "is_model_file",
    "load_model_file",
    "load_published",
    "read_jax_npz",
    "read_torch_file",
    "save_model_file",
    "state_dict_from_flax",
    "write_jax_npz",
]
