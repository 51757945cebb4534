"""Conversion between the JAX/Flax port's parameter tree (jax_nbody_emulator) and our state dict.

The port's ``nbody_emulator_params.npz`` holds under key ``'params'`` a pickled Flax tree
``{block: {sub: {'style_weight', 'style_bias', 'weight', 'bias'}}}`` with block names as ours
(``conv_l00`` ... ``conv_r01``) and sub-module names ``conv_0``, ``conv_1`` (our ``convs.0``,
``convs.2``), ``skip``. A top-level ``{'params': tree}`` wrapper may be present.

Its up-sampling layers are dilated convolutions (input dilation 2, padding 1) with weights stored
(out, in, k, k, k); our transposed convolution stores (in, out, k, k, k). With kernel 2 / stride 2,
``out[2i + a] = x[i] * W_t[:, :, a] = x[i] * W_jax[:, :, 1 - a]``: the conversion swaps the first
two axes and flips the three kernel axes. Modulation (over input channels) and demodulation (per
output channel over fan-in) are the same in both layouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, FileFormatError
from ..io.atomic import atomic_path

__all__ = ["state_dict_from_flax", "flax_from_state_dict", "read_jax_npz", "write_jax_npz"]

log = logging.getLogger(__name__)

_UP_BLOCKS = ("up_r0", "up_r1", "up_r2")
_SUB_TO_TORCH = {"conv_0": "convs.0", "conv_1": "convs.2", "skip": "skip"}
_SUB_FROM_TORCH = {v: k for k, v in _SUB_TO_TORCH.items()}
_LEAVES = ("style_weight", "style_bias", "weight", "bias")


def _flip_up(w: np.ndarray) -> np.ndarray:
    """(a, b, k, k, k) -> (b, a, k, k, k) with the kernel axes reversed (its own inverse)."""
    return np.ascontiguousarray(np.flip(np.swapaxes(w, 0, 1), axis=(2, 3, 4)))


def state_dict_from_flax(tree: Mapping) -> dict[str, torch.Tensor]:
    """Our state dict (float32 tensors) from the port's parameter tree."""
    if "params" in tree and isinstance(tree["params"], Mapping) and len(tree) == 1:
        tree = tree["params"]
    sd = {}
    for block, subs in tree.items():
        if not isinstance(subs, Mapping):
            raise CheckpointError(f"JAX parameter tree: entry {block!r} is not a sub-tree")
        for sub, leaves in subs.items():
            if sub not in _SUB_TO_TORCH:
                raise CheckpointError(f"JAX parameter tree: unknown sub-module {block}.{sub}; expected {sorted(_SUB_TO_TORCH)}")
            for leaf in _LEAVES:
                if leaf not in leaves:
                    raise CheckpointError(f"JAX parameter tree: {block}.{sub}.{leaf} is missing")
                arr = np.asarray(leaves[leaf], dtype=np.float32)
                if block in _UP_BLOCKS and leaf == "weight":
                    arr = _flip_up(arr)
                sd[f"{block}.{_SUB_TO_TORCH[sub]}.{leaf}"] = torch.from_numpy(np.array(arr))
            extra = set(leaves) - set(_LEAVES)
            if extra:
                raise CheckpointError(f"JAX parameter tree: unexpected leaves {sorted(extra)} in {block}.{sub}")
    return sd


def flax_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """The port's parameter tree (nested dicts of float32 NumPy arrays) from our state dict."""
    tree: dict = {}
    for key, value in sd.items():
        block, rest = key.split(".", 1)
        sub, leaf = rest.rsplit(".", 1)
        arr = value.detach().cpu().float().numpy()
        if block in _UP_BLOCKS and leaf == "weight":
            arr = _flip_up(arr)
        tree.setdefault(block, {}).setdefault(_SUB_FROM_TORCH[sub], {})[leaf] = np.array(arr)
    return tree


def read_jax_npz(path) -> dict[str, torch.Tensor]:
    """Read the port's ``.npz`` parameter file into our state dict.

    The file is a pickle (``allow_pickle=True`` is required by its format): open only files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"JAX parameter file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=True) as f:
            if "params" not in f.files:
                raise CheckpointError(f"{str(path)!r}: no 'params' entry (found {f.files})")
            tree = f["params"].item()
    except CheckpointError:
        raise
    except Exception as exc:  # numpy raises many types for corrupt archives
        raise FileFormatError(f"{str(path)!r} is not a readable .npz parameter file: {exc}") from exc
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{str(path)!r}: 'params' holds {type(tree).__name__}, expected a parameter tree")
    return state_dict_from_flax(tree)


def write_jax_npz(sd: Mapping[str, torch.Tensor], path, overwrite: bool = False) -> Path:
    """Write our state dict as a port-style ``.npz`` (key ``'params'``, a pickled tree)."""
    tree = flax_from_state_dict(sd)
    obj = np.empty((), dtype=object)
    obj[()] = tree
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, params=obj)
    return Path(path)
