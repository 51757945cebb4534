"""The project's own model file: one self-describing, checksummed file.

Content (a ``torch.save`` zip holding plain containers and tensors only, so it loads with
``weights_only=True``)::

    format         "emu_backend.model"
    format_version 1
    kind           "zdep" (style [(Om-0.3)*5, D-1], velocity from d/dD) or
                   "emu"  (style (Om-0.3)*5, z = 0, separate velocity network)
    arch           StyledVNet arguments {style_size, in_chan, out_chan, width}
    style          human-readable style convention
    normalisation  emu_backend.nn.NORMALISATION, checked on load
    domain         {omega_m: [lo, hi], z: [lo, hi], cell_size_mpc_h}
    provenance     free dict (training data, steps, git revision, ...)
    versions       {emu_backend, torch, numpy}
    storage_dtype  "float32" or "float16" (weights are cast back to float32 on load)
    networks       {"displacement": state_dict[, "velocity": state_dict]}
    checksum       sha256 over the canonical JSON of the metadata and every tensor's bytes

Saving is atomic; loading verifies the checksum and rebuilds networks strictly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .._version import __version__
from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..nn import NORMALISATION, StyledVNet, VNetArch
from .published import check_state_dict, read_torch_file

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFile", "save_model_file", "load_model_file", "is_model_file"]

log = logging.getLogger(__name__)

FORMAT = "emu_backend.model"
FORMAT_VERSION = 1
_META_KEYS = ("format", "format_version", "kind", "arch", "style", "normalisation", "domain",
              "provenance", "versions", "storage_dtype")
STYLE_CONVENTIONS = {
    "zdep": "style = [(Omega_m - 0.3) * 5, D(z) - 1] (float32); input * D(z) inside; velocity = d(output)/dD * 6 D H f / (1+z)",
    "emu": "style = (Omega_m - 0.3) * 5 (float32); z = 0; velocity network input * f(0,Om)/f(0,0.31), output * 600 f(0,0.31) km/s",
}
_NETS = {"zdep": ("displacement",), "emu": ("displacement", "velocity")}


@dataclass(frozen=True)
class ModelFile:
    """Content of a model file, with networks rebuilt.

    Attributes
    ----------
    kind : str
        ``"zdep"`` or ``"emu"``.
    networks : dict[str, StyledVNet]
        ``"displacement"`` and, for ``emu``, optionally ``"velocity"``.
    domain : dict
        ``{"omega_m": [lo, hi], "z": [lo, hi], "cell_size_mpc_h": float}``.
    normalisation, provenance, versions : dict
    checksum : str
    storage_dtype : str
    """

    kind: str
    networks: dict
    domain: dict
    normalisation: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    checksum: str = ""
    storage_dtype: str = "float32"


def _checksum(meta: Mapping, networks: Mapping[str, Mapping[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: meta[k] for k in _META_KEYS}, sort_keys=True, default=str).encode())
    for name in sorted(networks):
        for key, t in networks[name].items():
            h.update(f"{name}/{key}/{t.dtype}/{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: stride 1 even for size-1 dims of channels-last weights
    return h.hexdigest()


def _versions() -> dict:
    return {"emu_backend": str(__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def save_model_file(
    path,
    kind: str,
    networks: Mapping[str, StyledVNet],
    domain: Mapping,
    *,
    provenance: Mapping | None = None,
    storage_dtype: str = "float32",
    overwrite: bool = False,
) -> str:
    """Write a model file atomically.

    Parameters
    ----------
    path : str or Path
    kind : {"zdep", "emu"}
    networks : mapping
        ``{"displacement": net}`` (+ ``"velocity": net`` for ``emu``).
    domain : mapping
        Training domain ``{"omega_m": [lo, hi], "z": [lo, hi], "cell_size_mpc_h": float}``.
    provenance : mapping, optional
        JSON-serialisable description of how the weights were made.
    storage_dtype : {"float32", "float16"}
        float16 halves the file; the weights are cast back to float32 on load.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        The checksum written.
    """
    if kind not in _NETS:
        raise CheckpointError(f"kind must be one of {sorted(_NETS)}, got {kind!r}")
    if storage_dtype not in ("float32", "float16"):
        raise CheckpointError(f"storage_dtype must be 'float32' or 'float16', got {storage_dtype!r}")
    names = set(networks)
    if "displacement" not in names or not names <= set(_NETS[kind]):
        raise CheckpointError(f"kind {kind!r} takes networks {_NETS[kind]}, got {sorted(names)}")
    archs = {n: net.arch.to_dict() for n, net in networks.items()}
    if len({json.dumps(a, sort_keys=True) for a in archs.values()}) != 1:
        raise CheckpointError(f"all networks of one file must share an architecture, got {archs}")
    dt = getattr(torch, storage_dtype)
    sds = {n: {k: v.detach().cpu().to(dt).contiguous() for k, v in net.state_dict().items()} for n, net in networks.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "arch": archs["displacement"],
        "style": STYLE_CONVENTIONS[kind],
        "normalisation": dict(NORMALISATION),
        "domain": {"omega_m": [float(x) for x in domain["omega_m"]], "z": [float(x) for x in domain["z"]],
                   "cell_size_mpc_h": float(domain["cell_size_mpc_h"])},
        "provenance": json.loads(json.dumps(dict(provenance or {}), default=str)),
        "versions": _versions(),
        "storage_dtype": storage_dtype,
    }
    checksum = _checksum(meta, sds)
    with atomic_path(path, overwrite) as tmp:
        torch.save({**meta, "networks": sds, "checksum": checksum}, tmp)
    log.info("wrote model file %s (kind %s, sha256 %s)", path, kind, checksum[:12])
    return checksum


def is_model_file(obj) -> bool:
    """Whether an unpickled object is one of our model files."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def load_model_file(path, obj=None) -> ModelFile:
    """Read and verify a model file; rebuild its networks (float32, CPU, eval mode).

    Parameters
    ----------
    path : str or Path
    obj : dict, optional
        The already unpickled content (avoids reading twice).
    """
    source = str(path)
    obj = read_torch_file(path) if obj is None else obj
    if not is_model_file(obj):
        raise CheckpointError(f"{source!r} is not an emu_backend model file (no format={FORMAT!r} entry)")
    missing = [k for k in (*_META_KEYS, "networks", "checksum") if k not in obj]
    if missing:
        raise CheckpointError(f"{source!r}: model file lacks entries {missing}")
    if obj["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{source!r}: format_version {obj['format_version']} is newer than this emu_backend reads ({FORMAT_VERSION})")
    if obj["kind"] not in _NETS:
        raise CheckpointError(f"{source!r}: unknown kind {obj['kind']!r}; expected one of {sorted(_NETS)}")
    nets_sd = obj["networks"]
    actual = _checksum(obj, nets_sd)
    if actual != obj["checksum"]:
        raise CheckpointError(f"{source!r}: checksum mismatch (stored {obj['checksum'][:16]}..., computed {actual[:16]}...): the file is corrupt or was modified")
    if dict(obj["normalisation"]) != NORMALISATION:
        raise CheckpointError(f"{source!r}: normalisation {obj['normalisation']!r} differs from the published "
                              f"models' {NORMALISATION!r}, the only one this emu_backend runs")
    try:
        arch = VNetArch(**obj["arch"])
    except TypeError as exc:
        raise CheckpointError(f"{source!r}: bad architecture arguments {obj['arch']!r}") from exc
    networks = {}
    for name, sd in nets_sd.items():
        net = StyledVNet.from_arch(arch)
        check_state_dict(net, sd, f"{source} [{name}]")
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        networks[name] = net.eval()
    return ModelFile(kind=obj["kind"], networks=networks, domain=dict(obj["domain"]),
                     normalisation=dict(obj["normalisation"]), provenance=dict(obj["provenance"]),
                     versions=dict(obj["versions"]), checksum=obj["checksum"], storage_dtype=obj["storage_dtype"])
