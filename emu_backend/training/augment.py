"""The 48 symmetries of the cube (axis permutations x axis flips) acting on training crops.

A transform ``g = (perm, flips)`` maps a field ``A`` with spatial axes in its last three dimensions
to ``B``: first new spatial axis ``j`` is old axis ``perm[j]``, then new axis ``j`` is reversed
where ``flips[j]``. A vector field (components along its channel axis, component ``c`` along
spatial axis ``c``, as every displacement and velocity here) also has its components permuted the
same way and component ``j`` negated where axis ``j`` is flipped::

    B_j(x') = (-1)^flips[j] * A_perm[j](x),   x'_j = (n - 1 - x_perm[j]) if flips[j] else x_perm[j]

Flipping index ``i -> n - 1 - i`` is a reflection of the lattice (about its centre), so a crop and
its centred, padded input stay aligned, and particle positions ``q + d`` of a Lagrangian crop map
exactly to the transformed positions. The transforms act on NumPy arrays and torch tensors.

Examples
--------
>>> import numpy as np
>>> len(TRANSFORMS), TRANSFORMS[0].is_identity
(48, True)
>>> v = np.arange(3 * 8).reshape(3, 2, 2, 2).astype(float)
>>> g = TRANSFORMS[17]
>>> bool(np.array_equal(g.inverse().apply_vector(g.apply_vector(v)), v))
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

__all__ = ["CubicTransform", "TRANSFORMS", "N_TRANSFORMS"]


def _transpose(x, axes):
    if isinstance(x, np.ndarray):
        return np.transpose(x, axes)
    return x.permute(*axes)


def _flip(x, axes):
    if not axes:
        return x
    if isinstance(x, np.ndarray):
        return np.flip(x, axis=tuple(axes))
    return x.flip(dims=tuple(axes))


@dataclass(frozen=True)
class CubicTransform:
    """One of the 48 cubic symmetries.

    Parameters
    ----------
    perm : tuple of 3 int
        A permutation of (0, 1, 2): new spatial axis ``j`` is old axis ``perm[j]``.
    flips : tuple of 3 bool
        Reverse new axis ``j`` (and negate vector component ``j``) where true.
    """

    perm: tuple = (0, 1, 2)
    flips: tuple = (False, False, False)

    def __post_init__(self):
        perm = tuple(int(p) for p in self.perm)
        if sorted(perm) != [0, 1, 2]:
            raise InputError(f"perm must be a permutation of (0, 1, 2), got {self.perm!r}")
        flips = tuple(bool(f) for f in self.flips)
        if len(flips) != 3:
            raise InputError(f"flips must have 3 entries, got {self.flips!r}")
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "flips", flips)

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)

    def matrix(self) -> np.ndarray:
        """The 3x3 signed permutation matrix ``M`` with ``x' = M x`` (about the crop centre)."""
        m = np.zeros((3, 3), dtype=np.int64)
        for j, (p, f) in enumerate(zip(self.perm, self.flips)):
            m[j, p] = -1 if f else 1
        return m

    def compose(self, first: "CubicTransform") -> "CubicTransform":
        """The transform ``self o first``: apply ``first``, then ``self``."""
        perm = tuple(first.perm[self.perm[k]] for k in range(3))
        flips = tuple(self.flips[k] != first.flips[self.perm[k]] for k in range(3))
        return CubicTransform(perm, flips)

    def inverse(self) -> "CubicTransform":
        """The transform undoing this one."""
        inv = [0, 0, 0]
        for j, p in enumerate(self.perm):
            inv[p] = j
        return CubicTransform(tuple(inv), tuple(self.flips[inv[k]] for k in range(3)))

    def _spatial(self, x):
        nd = x.ndim if isinstance(x, np.ndarray) else x.dim()
        if nd < 3:
            raise InputError(f"fields need 3 spatial dimensions (last three), got {nd} dimensions")
        lead = list(range(nd - 3))
        x = _transpose(x, lead + [nd - 3 + p for p in self.perm])
        return _flip(x, [nd - 3 + j for j in range(3) if self.flips[j]])

    def apply_scalar(self, x):
        """Transform a scalar field of shape (..., n, n, n) (ndarray or Tensor; a view where possible)."""
        return self._spatial(x)

    def apply_vector(self, v):
        """Transform a vector field of shape (..., 3, n, n, n): positions and components together."""
        nd = v.ndim if isinstance(v, np.ndarray) else v.dim()
        if nd < 4 or v.shape[-4] != 3:
            raise InputError(f"vector fields must have shape (..., 3, n0, n1, n2), got {tuple(v.shape)}")
        v = self._spatial(v)
        sign = np.array([-1.0 if f else 1.0 for f in self.flips]).reshape(3, 1, 1, 1)
        idx = list(self.perm)
        if isinstance(v, np.ndarray):
            return v[..., idx, :, :, :] * sign.astype(v.dtype)

        return v[..., idx, :, :, :] * torch.as_tensor(sign, dtype=v.dtype, device=v.device)


#: All 48 transforms; index 0 is the identity. Ordered by permutation, then flips (x fastest).
TRANSFORMS: tuple = tuple(
    CubicTransform(perm, (bool(b & 1), bool(b & 2), bool(b & 4)))
    for perm in itertools.permutations(range(3))
    for b in range(8)
)
N_TRANSFORMS = len(TRANSFORMS)
