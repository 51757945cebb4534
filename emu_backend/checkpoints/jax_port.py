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

The ``'params'`` entry is a pickle, and unpickling runs code named by the file. By default
:func:`read_jax_npz` therefore never calls :mod:`numpy`'s or :mod:`pickle`'s general loader: it opens
the archive with :mod:`zipfile`, reads the ``params.npy`` header with :mod:`numpy.lib.format` and
unpickles the payload with a restricted unpickler that resolves only the globals a nested dict of
numeric arrays needs (NumPy's array reconstruction, ``ndarray``, ``dtype``, and Flax's
``FrozenDict``, rebuilt as a plain dict without importing Flax); any other global is refused with a
:class:`~emu_backend.errors.CheckpointError` naming it, before it is imported. ``allow_pickle=True``
opts into full unpickling, as for published ``.pt`` files (:func:`~.published.read_torch_file`).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

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


#: NumPy's array reconstruction function (``numpy.core.multiarray._reconstruct`` before NumPy 2,
#: ``numpy._core.multiarray._reconstruct`` since): the callable of an ndarray's pickle reduction.
_NP_RECONSTRUCT = np.empty(0).__reduce__()[0]
_LEAF_KINDS = "fiu"  # numeric leaves: float, signed and unsigned integer
_MAX_DEPTH = 6  # {'params': {block: {sub: {leaf: array}}}} is 4 deep


class _NdarrayMark:
    """What the restricted unpickler gives for the global ``numpy.ndarray``: a marker that only
    :func:`_reconstruct` accepts (calling it, or building it, fails)."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise CheckpointError("numpy.ndarray called directly is not part of a parameter tree (arrays are "
                              "rebuilt by numpy's _reconstruct)")


_NDARRAY = _NdarrayMark()


class _TreeArray(np.ndarray):
    """An array built by the restricted unpickler: its state's dtype is checked before NumPy reads
    the payload (a plain numeric dtype, or ``object`` for the 0-d wrapper of ``np.savez``)."""

    def __setstate__(self, state):
        dtype = state[-3] if isinstance(state, tuple) and len(state) in (4, 5) else None
        if not _plain_dtype(dtype, allow_object=True):
            raise CheckpointError(f"array state with dtype {dtype!r} is not part of a parameter tree "
                                  f"(expected a numeric dtype, kinds {list(_LEAF_KINDS)})")
        super().__setstate__(state)


def _plain_dtype(dtype, allow_object: bool = False) -> bool:
    kinds = _LEAF_KINDS + ("O" if allow_object else "")
    return isinstance(dtype, np.dtype) and dtype.fields is None and dtype.subdtype is None and dtype.kind in kinds


def _reconstruct(subtype, shape, typecode):
    """``_reconstruct`` limited to plain arrays; the shape comes from the checked state, not from here."""
    if subtype is not _NDARRAY:
        raise CheckpointError(f"array reconstruction of {type(subtype).__name__}, expected numpy.ndarray")
    return _NP_RECONSTRUCT(_TreeArray, (0,), b"b")


def _dtype(spec, align=False, copy=True):  # the arguments of numpy.dtype's pickle
    """``numpy.dtype`` limited to numeric and object dtypes; always a copy (its state is set next,
    which must not change NumPy's shared instances)."""
    dtype = np.dtype(spec, align=bool(align), copy=True) if isinstance(spec, str) else None
    if not _plain_dtype(dtype, allow_object=True):
        raise CheckpointError(f"dtype {spec!r} is not part of a parameter tree (expected a numeric dtype)")
    return dtype


def _frozen_dict(mapping=None):
    """Flax's ``FrozenDict`` pickles as ``FrozenDict(dict)``: rebuilt as a plain dict, Flax not imported."""
    if not isinstance(mapping, dict):
        raise CheckpointError(f"FrozenDict of {type(mapping).__name__}, expected a dict")
    return dict(mapping)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("flax.core.frozen_dict", "FrozenDict"): _frozen_dict,
}


class _TreeUnpickler(pickle.Unpickler):
    """Unpickles a nested dict of numeric arrays and nothing else: any other global is refused
    before its module is imported."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"the 'params' pickle names the global {module}.{name}, which is not part of a "
                f"parameter tree (allowed: {sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)}); refused without "
                "importing it. Load with allow_pickle=True only if you trust the file"
            ) from None


def _checked_tree(obj, source: str, where: str = "params", depth: int = 0) -> dict:
    """A plain copy of a nested mapping (str keys) whose leaves are numeric arrays, or CheckpointError."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source!r}: {where} holds {type(obj).__name__}, expected a parameter tree")
    if depth >= _MAX_DEPTH:
        raise CheckpointError(f"{source!r}: {where} is nested deeper than {_MAX_DEPTH} levels")
    tree = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source!r}: {where} has a key {key!r} of type {type(key).__name__}, expected str")
        if isinstance(value, Mapping):
            tree[key] = _checked_tree(value, source, f"{where}.{key}", depth + 1)
        elif isinstance(value, np.ndarray) and _plain_dtype(value.dtype):
            tree[key] = np.array(value, copy=True).view(np.ndarray)
        else:
            what = f"an array of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise CheckpointError(f"{source!r}: {where}.{key} holds {what}, expected a numeric array")
    return tree


def _read_params_restricted(path: Path):
    """The ``params`` object of an ``.npz`` archive, unpickled by :class:`_TreeUnpickler`."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        member = "params.npy"
        if member not in names:
            found = [n.removesuffix(".npy") for n in names]
            raise CheckpointError(f"{str(path)!r}: no 'params' entry (found {found})")
        with zf.open(member) as fp:
            version = npy_format.read_magic(fp)
            if version == (1, 0):
                _, _, dtype = npy_format.read_array_header_1_0(fp)
            elif version == (2, 0):
                _, _, dtype = npy_format.read_array_header_2_0(fp)
            else:
                raise FileFormatError(f"{str(path)!r}: 'params' is a .npy of format version {version}, expected 1.0 or 2.0")
            if not dtype.hasobject:
                raise CheckpointError(f"{str(path)!r}: 'params' holds an array of dtype {dtype}, expected a pickled "
                                      "parameter tree")
            try:
                obj = _TreeUnpickler(fp).load()
            except CheckpointError as exc:
                raise CheckpointError(f"{str(path)!r}: {exc}") from None
    if not (isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object):
        raise CheckpointError(f"{str(path)!r}: 'params' holds {type(obj).__name__}, expected a 0-d object array")
    return obj[()]


def read_jax_npz(path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the port's ``.npz`` parameter file into our state dict.

    Parameters
    ----------
    path : str or Path
        ``nbody_emulator_params.npz`` or a file written by :func:`write_jax_npz`.
    allow_pickle : bool
        Unpickle arbitrary objects (only for files you trust). By default the ``'params'`` pickle
        is read by a restricted unpickler that builds only a nested dict (or Flax ``FrozenDict``) of
        numeric arrays and refuses any other global without importing it.

    Returns
    -------
    dict of str to torch.Tensor
        Our state dict, float32.

    Raises
    ------
    FileFormatError
        A missing or unreadable archive.
    CheckpointError
        No ``'params'`` entry, a pickle naming any other global, or a tree that is not a nested
        mapping of numeric arrays of the port's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"JAX parameter file {str(path)!r} does not exist")
    try:
        if allow_pickle:
            with np.load(path, allow_pickle=True) as f:
                if "params" not in f.files:
                    raise CheckpointError(f"{str(path)!r}: no 'params' entry (found {f.files})")
                tree = f["params"].item()
        else:
            tree = _read_params_restricted(path)
    except FileFormatError:  # CheckpointError included
        raise
    except Exception as exc:  # zipfile, numpy and pickle raise many types for corrupt archives
        raise FileFormatError(f"{str(path)!r} is not a readable .npz parameter file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{str(path)!r}: 'params' holds {type(tree).__name__}, expected a parameter tree")
    return state_dict_from_flax(tree if allow_pickle else _checked_tree(tree, str(path)))


def write_jax_npz(sd: Mapping[str, torch.Tensor], path, overwrite: bool = False) -> Path:
    """Write our state dict as a port-style ``.npz`` (key ``'params'``, a pickled tree).

    The tree is plain dicts of float32 ndarrays, which :func:`read_jax_npz` reads without
    ``allow_pickle``.
    """
    tree = flax_from_state_dict(sd)
    obj = np.empty((), dtype=object)
    obj[()] = tree
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, params=obj)
    return Path(path)
