"""Loading the authors' PyTorch checkpoints (map2map_emu d2d/v2v, map2map_zdep), strictly.

A published file is ``torch.save({'model': state_dict, ...})`` or a bare state dict; key names are
those of :class:`~emu_backend.nn.StyledVNet` (SPEC 5.1). A missing, extra or mis-shaped tensor is a
:class:`~emu_backend.errors.CheckpointError` that names it.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError, FileFormatError, InputError
from ..nn import StyledVNet, VNetArch

__all__ = ["read_torch_file", "extract_state_dict", "infer_arch", "check_state_dict", "load_published"]

log = logging.getLogger(__name__)


def read_torch_file(path, allow_pickle: bool = False):
    """Read a ``torch.save`` file onto the CPU.

    Parameters
    ----------
    path : str or Path
    allow_pickle : bool
        Allow arbitrary pickled objects (only for files you trust). By default only tensors and
        plain containers are unpickled (``weights_only=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"checkpoint file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{str(path)!r} holds objects other than tensors and plain containers; if you trust the "
            f"file, load it with allow_pickle=True ({exc})"
        ) from exc
    except Exception as exc:  # torch.load raises many types for damaged archives (IndexError, struct.error, ...)
        raise FileFormatError(
            f"{str(path)!r} is not a readable torch checkpoint (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc


def extract_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network's state dict from ``{'model': sd, ...}`` or a bare ``sd``.

    A uniform ``'module.'`` prefix (a DDP wrapper's) is stripped with a log message.
    """
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{source}: expected {{'model': state_dict}} or a bare state dict, found {keys}")
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        log.info("%s: stripping the 'module.' prefix of a DistributedDataParallel state dict", source)
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries {bad[:5]} are not tensors")
    return sd


def infer_arch(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> VNetArch:
    """Architecture arguments read off the tensor shapes of a state dict."""
    try:
        first = sd["conv_l00.convs.0.style_weight"]
        # the skip convolution maps in_chan -> width; convs.0 has max(in_chan, width) outputs
        in_w = sd["conv_l00.skip.weight"]
        out_b = sd["conv_r01.skip.bias"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: not a StyledVNet state dict, tensor {exc.args[0]!r} is missing") from None
    if first.dim() != 2 or in_w.dim() != 5 or out_b.dim() != 1:
        raise CheckpointError(
            f"{source}: not a StyledVNet state dict, tensor shapes {tuple(first.shape)}, {tuple(in_w.shape)}, "
            f"{tuple(out_b.shape)} of conv_l00.convs.0.style_weight, conv_l00.skip.weight, conv_r01.skip.bias "
            "should have 2, 5 and 1 dimensions"
        )
    try:
        return VNetArch(style_size=int(first.shape[1]), in_chan=int(in_w.shape[1]), out_chan=int(out_b.shape[0]),
                        width=int(in_w.shape[0]))
    except InputError as exc:
        raise CheckpointError(f"{source}: cannot infer the StyledVNet architecture: {exc}") from exc


def check_state_dict(net: StyledVNet, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every missing, extra or mis-shaped tensor."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(sd[k].shape)}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    nonfloat = [f"{k}: {sd[k].dtype}" for k in expected if k in sd and not sd[k].is_floating_point()]
    nonfinite = [k for k in expected if k in sd and sd[k].is_floating_point() and not torch.isfinite(sd[k]).all()]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    if shapes:
        problems.append("wrong shapes " + "; ".join(shapes))
    if nonfloat:
        problems.append("non-floating tensors " + "; ".join(nonfloat))
    if nonfinite:
        problems.append(f"tensors with NaN or inf values {nonfinite}")
    if problems:
        raise CheckpointError(f"{source} does not match StyledVNet{net.arch.to_dict()}: " + " | ".join(problems))


def load_published(path, arch: VNetArch | None = None, allow_pickle: bool = False) -> StyledVNet:
    """Build a :class:`StyledVNet` from a published ``.pt`` file (strict).

    Parameters
    ----------
    path : str or Path
        ``d2d_params.pt``, ``v2v_params.pt``, ``zdep_d2d.pt`` or any file of that layout.
    arch : VNetArch, optional
        Expected architecture; read off the tensor shapes when not given.
    allow_pickle : bool
        See :func:`read_torch_file`.

    Returns
    -------
    StyledVNet
        In float32, on the CPU, in eval mode.
    """
    source = str(path)
    sd = extract_state_dict(read_torch_file(path, allow_pickle), source)
    arch = arch or infer_arch(sd, source)
    net = StyledVNet.from_arch(arch)
    check_state_dict(net, sd, source)
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return net.eval()
