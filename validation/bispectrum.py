"""FFT bispectrum estimator (Scoccimarro-style) of a real field on a periodic cubic mesh, and triangle presets.

Convention, consistent with :mod:`.power`: numpy's unnormalised DFT ``d_k = sum_x delta(x) e^{-ik.x}`` of an
(N, N, N) field in a box of volume ``V = L^3`` [(Mpc/h)^3]. A shell ``i`` with centre ``k_i`` and width ``w``
[h/Mpc] holds the modes of the full FFT grid with ``k_i - w/2 <= |k| < k_i + w/2`` (k = 0 excluded). With the
normalised inverse DFT (``numpy``/``scipy`` ``irfftn``, factor ``1/N^3``)::

    I_i(x) = IDFT[d_k 1_i(k)],   N_i(x) = IDFT[1_i(k)]
    sum_x I_1 I_2 I_3 = N^-6 sum_{k1+k2+k3 = 0 (mod N k_f)} d_k1 d_k2 d_k3
    T = N^6 sum_x N_1 N_2 N_3                   (ordered triplets, k_i in shell i, integer)
    B = V^2 / N^9 * sum_x I_1 I_2 I_3 / sum_x N_1 N_2 N_3 = V^2 / N^3 * sum_x I_1 I_2 I_3 / T   [(Mpc/h)^6]
    P_i = V / N^6 * sum_x I_i^2 / sum_x N_i^2 = V / N^3 * sum_x I_i^2 / n_modes_i               [(Mpc/h)^3]

so ``B`` is the mean of ``V^2/N^9 d_k1 d_k2 d_k3`` over the closed triplets of the bin (for white noise of
variance s2 and third moment m3 per cell: ``P = s2 V/N^3``, ``B = m3 (V/N^3)^2``) and ``P_i`` is exactly the
shell average of :func:`.power.power_spectrum` (``sum_x I_i^2`` and ``sum_x N_i^2`` are evaluated as their
Parseval equivalents ``N^-3 sum_shell |d_k|^2`` and ``n_modes / N^3``). Shell membership is decided on the
integer ``|k / k_f|^2``, so it is exactly symmetric; an edge falling exactly on a mode's ``|k|`` is decided by
floating point (as in :mod:`.power`). The triplet condition is modulo the grid: triplets whose
vector sum is a non-zero multiple of ``N k_f`` (aliases) count too, which can only happen when the three upper
shell edges add up to at least ``2 k_Nyquist = N k_f``.

Cost and memory: one forward FFT, one inverse real FFT per unique shell (each filtered field is computed once
and shared by every triangle that uses it), one (N/2+1)^3 DCT per unique shell for the counts (the count fields
are even in every axis, so they are kept on the folded octant only, in float64, which keeps ``T`` exact), then
one chunked product-and-dot over the mesh per triangle. The filtered fields of all unique shells are cached
when they fit in ``cache_gib``; otherwise the triangles are processed in groups whose shells fit, and a shell
shared by two groups is recomputed. Peak memory is about ``(n_cached + 5) N^3 itemsize`` plus the count fields
``n_shells (N/2+1)^3 8`` bytes: for a 256^3 float64 mesh and 20 shells, about 3.4 GB.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..checks import check_float_dtype, check_positive
from ..errors import InputError
from .power import check_cubic_field

__all__ = [
    "BispectrumResult",
    "bispectrum",
    "triangle_bins",
    "equilateral_triangles",
    "squeezed_triangles",
    "isosceles_triangles",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16  # elements per chunk of the product-and-dot loops (0.5 MB in float64: stays in cache)
_REL = 1e-9  # relative slack on k_Nyquist and on preset grids built by repeated addition


@dataclass(frozen=True, eq=False)
class BispectrumResult:
    """Binned bispectrum of one field for M triangle bins, in the order they were given.

    Attributes
    ----------
    k1, k2, k3 : ndarray, shape (M,)
        Shell centres of the triangle bins [h/Mpc], as given.
    B : ndarray, shape (M,)
        Bin-averaged bispectrum [(Mpc/h)^6]; NaN where the bin holds no closed triplet.
    Q : ndarray, shape (M,)
        Reduced bispectrum ``B / (P1 P2 + P2 P3 + P3 P1)``, dimensionless; NaN where undefined.
    n_triangles : ndarray, shape (M,), int64
        Number of ordered triplets ``(k1, k2, k3)`` of grid modes, ``k_i`` in shell i and
        ``k1 + k2 + k3 = 0`` (mod the grid), counting ``k`` and ``-k`` separately; 0 for a bin that
        violates the triangle inequality (``k_i - w/2 >= k_j + k_l + w`` for some i).
    P1, P2, P3 : ndarray, shape (M,)
        Shell-averaged power spectrum of the field in each shell [(Mpc/h)^3]; NaN for an empty shell.
    k_width : float
        Shell width [h/Mpc].
    box_size : float
        Box side [Mpc/h].
    """

    k1: np.ndarray
    k2: np.ndarray
    k3: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    n_triangles: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    k_width: float
    box_size: float


def _check_triangles(triangles, k_nyq: float) -> np.ndarray:
    try:
        tri = np.asarray(triangles, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"triangles must be a numeric (M, 3) array of k [h/Mpc], got {triangles!r}") from exc
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
        raise InputError(f"triangles must have shape (M, 3) with M >= 1, got shape {tri.shape}")
    bad = ~np.isfinite(tri) | (tri <= 0) | (tri > k_nyq * (1 + _REL))
    if np.any(bad):
        row = int(np.argwhere(bad)[0][0])
        raise InputError(
            f"triangle {row} = {tri[row].tolist()} [h/Mpc] has a k outside (0, k_Nyquist = {k_nyq:.6g}]"
        )
    return tri


def _int_grids(n: int):
    """Integer |n|^2 on the rfft half-space grid, on the folded octant [0, n//2]^3, and octant weights."""
    i = np.fft.fftfreq(n, d=1.0 / n).astype(np.int64)
    h = np.arange(n // 2 + 1, dtype=np.int64)
    n2_half = (i[:, None, None] ** 2 + i[None, :, None] ** 2 + h[None, None, :] ** 2).astype(np.int32)
    n2_fold = h[:, None, None] ** 2 + h[None, :, None] ** 2 + h[None, None, :] ** 2
    mult = np.full(h.size, 2.0)  # x and N - x fold onto one point ...
    mult[0] = 1.0  # ... except 0 and, for even N, N/2, which are their own images
    if n % 2 == 0:
        mult[-1] = 1.0
    weight = (mult[:, None, None] * mult[None, :, None] * mult[None, None, :]).ravel()
    return n2_half, n2_fold, weight


def _count_fields(keys: np.ndarray, n: int, n2_half, n2_fold, workers) -> tuple[np.ndarray, np.ndarray]:
    """N_i(x) on the folded octant (float64, shape (n_shells, (n//2+1)^3)) and the mode count per shell.

    ``N_i`` is even in every axis, so for even N its values on the octant are a type-I DCT of the folded
    shell indicator (``x[0] + (-1)^k x[N/2] + 2 sum cos(2 pi k n / N) x[n]`` per axis, the same sum as the
    inverse DFT); for odd N the full inverse FFT is taken and cut to the octant.
    """
    m = n // 2 + 1
    fields = np.empty((len(keys), m**3))
    n_modes = np.empty(len(keys), dtype=np.int64)
    for s, (a, b) in enumerate(keys):
        fold = ((n2_fold >= a) & (n2_fold < b)).astype(np.float64)
        if n % 2 == 0:
            f = scipy.fft.dctn(fold, type=1, workers=workers) / float(n) ** 3
        else:
            half = ((n2_half >= a) & (n2_half < b)).astype(np.float64)
            f = scipy.fft.irfftn(half, s=(n, n, n), workers=workers)[:m, :m, :m]
        fields[s] = f.ravel()
        n_modes[s] = int(round(f[0, 0, 0] * float(n) ** 3))  # N_i(0) = n_modes / N^3
    return fields, n_modes


def _triple_sums(fields, triples: np.ndarray, weight=None) -> np.ndarray:
    """``sum_x w f_a f_b f_c`` for each row (a, b, c) of ``triples``; fields maps shell -> flat array.

    Rows sharing (a, b) share the product ``f_a f_b``, formed chunk by chunk so that it stays in cache
    while it is dotted with every ``f_c``; the dots accumulate in float64.
    """
    out = np.zeros(len(triples))
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for row, (a, b, c) in enumerate(triples):
        pairs.setdefault((int(a), int(b)), []).append((row, int(c)))
    any_field = next(iter(fields.values()))
    size = any_field.size
    buf = np.empty(min(_CHUNK, size), dtype=any_field.dtype)
    for (a, b), rows in pairs.items():
        fa, fb = fields[a], fields[b]
        acc = np.zeros(len(rows))
        for start in range(0, size, _CHUNK):
            stop = min(start + _CHUNK, size)
            prod = buf[: stop - start]
            np.multiply(fa[start:stop], fb[start:stop], out=prod)
            if weight is not None:
                prod *= weight[start:stop]
            for j, (_, c) in enumerate(rows):
                # einsum, not BLAS dot: no threading overhead on short vectors, float64 accumulation
                acc[j] += float(np.einsum("i,i->", prod, fields[c][start:stop], dtype=np.float64))
        out[[r for r, _ in rows]] = acc
    return out


def _plan_groups(triples: np.ndarray, cap: int) -> list[np.ndarray]:
    """Split the (sorted) unique triples into consecutive groups using at most ``cap`` distinct shells."""
    groups, current, shells = [], [], set()
    for row, t in enumerate(triples):
        union = shells | set(int(s) for s in t)
        if len(union) > cap:
            groups.append(np.array(current))
            current, union = [], set(int(s) for s in t)
        current.append(row)
        shells = union
    if current:
        groups.append(np.array(current))
    return groups


def _shell_power(fk, keys, n_modes, n2_half, n: int, box: float) -> np.ndarray:
    """Shell-averaged power ``V/N^3 sum_x I_i^2 / n_modes_i`` [(Mpc/h)^3], NaN for an empty shell.

    ``sum_x I_i^2 = N^-3 sum_{k in shell} |d_k|^2`` (Parseval), evaluated on the rfft half-space with the
    weights of :func:`.power.power_spectrum` (planes k_z = 0 and Nyquist once, the others twice).
    """
    w_half = np.full(n // 2 + 1, 2.0)
    w_half[0] = 1.0
    if n % 2 == 0:
        w_half[-1] = 1.0
    pk = (fk.real.astype(np.float64) ** 2 + fk.imag.astype(np.float64) ** 2) * w_half
    power = np.full(len(keys), np.nan)
    for s, (a, b) in enumerate(keys):
        if n_modes[s] > 0:
            sum_sq = float(np.sum(pk[(n2_half >= a) & (n2_half < b)])) / float(n) ** 3
            power[s] = box**3 / float(n) ** 3 * sum_sq / n_modes[s]
    return power


def bispectrum(
    field,
    box_size: float,
    triangles,
    *,
    k_width: float | None = None,
    dtype=np.float64,
    cache_gib: float = 4.0,
    workers: int = -1,
) -> BispectrumResult:
    """Binned bispectrum ``B(k1, k2, k3)`` and reduced bispectrum ``Q`` of a real field (FFT estimator).

    Parameters
    ----------
    field : ndarray, shape (N, N, N)
        Real field on a periodic mesh (e.g. a density contrast), dimensionless.
    box_size : float
        Box side [Mpc/h].
    triangles : array_like, shape (M, 3)
        Shell centres ``(k1, k2, k3)`` of the triangle bins [h/Mpc], each in ``(0, k_Nyquist]`` with
        ``k_Nyquist = pi N / box_size``; any order (``B`` is symmetric). See :func:`triangle_bins` and the
        other presets.
    k_width : float or None
        Width of every shell [h/Mpc]; default the fundamental ``k_f = 2 pi / box_size``. A bin that cannot
        close (``k_i - w/2 >= k_j + k_l + w``) is flagged: ``n_triangles = 0``, ``B = Q = NaN``.
    dtype : numpy.float64 or numpy.float32
        Precision of the FFTs and of the cached filtered fields (float32 halves memory; ``B`` then carries a
        relative round-off of order 1e-5). Counts are always computed in float64 and are exact.
    cache_gib : float
        Memory budget for the cached filtered fields [GiB]; must hold at least three of them.
    workers : int
        Threads for :mod:`scipy.fft` (-1: all cores).

    Returns
    -------
    BispectrumResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> g = rng.standard_normal((32, 32, 32))
    >>> tri = equilateral_triangles(0.6, 0.9, 0.15)  # k = 0.6, 0.75, 0.9 h/Mpc; k_Nyquist = 1.005 h/Mpc
    >>> res = bispectrum(g + 0.5 * (g**2 - 1), 100.0, tri, k_width=0.15)
    >>> res.n_triangles.tolist()
    [898704, 2469120, 6076176]
    >>> bool(np.all(np.abs(res.Q - 0.59) < 0.1))  # i.i.d. cells: Q = (6f + 8f^3) / (3 (1 + 2f^2)^2), f = 0.5
    True
    """
    arr = check_cubic_field(field)
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = arr.shape[0]
    kf, k_nyq = 2.0 * np.pi / box, np.pi * n / box
    dt = check_float_dtype(dtype)
    tri = _check_triangles(triangles, k_nyq)
    width = kf if k_width is None else check_positive(k_width, "k_width [h/Mpc]")
    budget = check_positive(cache_gib, "cache_gib [GiB]")
    cap = int(budget * 2**30 // (n**3 * dt.itemsize))
    if cap < 3:
        need = 3 * n**3 * dt.itemsize / 2**30
        raise InputError(f"cache_gib = {cache_gib!r} GiB is too small for N = {n}: at least {need:.3g} GiB needed")

    # shells as integer |n|^2 ranges [a, b): the key identifies the modes, so equal shells merge exactly
    lo, hi = tri - width / 2, tri + width / 2
    a = np.where(lo > 0, np.ceil((np.maximum(lo, 0) / kf) ** 2), 1.0)
    b = np.ceil((hi / kf) ** 2)
    bounds = np.stack([a, b], axis=-1).reshape(-1, 2).astype(np.int64)
    keys, shell_of = np.unique(bounds, axis=0, return_inverse=True)
    shell_of = shell_of.reshape(-1, 3)
    closable = np.all(lo < hi.sum(axis=1, keepdims=True) - hi, axis=1)
    triples, which = np.unique(np.sort(shell_of[closable], axis=1), axis=0, return_inverse=True)

    n2_half, n2_fold, weight = _int_grids(n)
    counts, n_modes = _count_fields(keys, n, n2_half, n2_fold, workers)
    t_counts = np.rint(float(n) ** 6 * _triple_sums(dict(enumerate(counts)), triples, weight))

    # filtered fields I_i, cached within the budget, processed in groups of triangles
    fk = scipy.fft.rfftn(arr.astype(dt, copy=False), workers=workers)
    power = _shell_power(fk, keys, n_modes, n2_half, n, box)
    buf = np.empty_like(fk)
    sums = np.empty(len(triples))
    resident: dict[int, np.ndarray] = {}
    n_computed = 0
    groups = _plan_groups(triples, cap) if len(triples) else []
    for rows in groups:
        need = {int(s) for s in triples[rows].ravel()}
        for s in [s for s in resident if s not in need]:
            del resident[s]
        for s in sorted(need - resident.keys()):
            np.multiply(fk, (n2_half >= keys[s, 0]) & (n2_half < keys[s, 1]), out=buf)
            resident[s] = scipy.fft.irfftn(buf, s=(n, n, n), workers=workers, overwrite_x=True).ravel()
            n_computed += 1
        sums[rows] = _triple_sums(resident, triples[rows])
    del resident, buf, fk
    logger.debug(
        "bispectrum N=%d L=%g: %d triangles, %d closable unique, %d shells, %d shell fields computed in %d groups",
        n,
        box, len(tri), len(triples), len(keys), n_computed, len(groups),
    )

    n_tri = np.zeros(len(tri), dtype=np.int64)
    bis = np.full(len(tri), np.nan)
    t_rows = t_counts[which]
    n_tri[closable] = t_rows.astype(np.int64)
    good = np.zeros(len(tri), dtype=bool)
    good[closable] = t_rows > 0
    b_closable = np.full(len(t_rows), np.nan)
    np.divide(box**6 / float(n) ** 3 * sums[which], t_rows, out=b_closable, where=t_rows > 0)
    bis[closable] = b_closable
    p1, p2, p3 = (power[shell_of[:, j]] for j in range(3))
    denom = p1 * p2 + p2 * p3 + p3 * p1
    q = np.full(len(tri), np.nan)
    fine = good & np.isfinite(denom) & (denom != 0)
    q[fine] = bis[fine] / denom[fine]
    return BispectrumResult(
        k1=tri[:, 0].copy(), k2=tri[:, 1].copy(), k3=tri[:, 2].copy(), B=bis, Q=q, n_triangles=n_tri,
        P1=p1, P2=p2, P3=p3, k_width=width, box_size=box,
    )


def _grid(k_min: float, k_max: float, dk: float) -> np.ndarray:
    """``k_min, k_min + dk, ...`` up to ``k_max`` (inclusive within a relative 1e-9)."""
    count = int(math.floor((k_max - k_min) / dk * (1 + _REL) + _REL)) + 1
    return k_min + dk * np.arange(count)


def triangle_bins(k_max: float, dk: float, k_min: float | None = None) -> np.ndarray:
    """All triangle bins ``k1 <= k2 <= k3 <= k1 + k2`` with centres on the grid ``k_min, k_min + dk, ...``.

    Parameters
    ----------
    k_max : float
        Largest centre [h/Mpc] (inclusive).
    dk : float
        Spacing of the centres [h/Mpc]; pass it as ``k_width`` to :func:`bispectrum` for contiguous shells.
    k_min : float or None
        Smallest centre [h/Mpc]; default ``dk``.

    Returns
    -------
    ndarray, shape (M, 3)
        Bin centres [h/Mpc], sorted by k1, then k2, then k3; degenerate (flattened) triangles
        ``k3 = k1 + k2`` are included.

    Examples
    --------
    >>> triangle_bins(0.2, 0.1).round(2).tolist()
    [[0.1, 0.1, 0.1], [0.1, 0.1, 0.2], [0.1, 0.2, 0.2], [0.2, 0.2, 0.2]]
    >>> len(triangle_bins(0.9, 0.1))
    115
    """
    step = check_positive(dk, "dk [h/Mpc]")
    start = step if k_min is None else check_positive(k_min, "k_min [h/Mpc]")
    stop = check_positive(k_max, "k_max [h/Mpc]")
    if stop < start:
        raise InputError(f"k_max = {k_max!r} h/Mpc must be >= k_min = {start!r} h/Mpc")
    n = _grid(start, stop, step).size
    i1, i2, i3 = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    # triangle inequality on the centres, in exact integer steps: k1 + k2 - k3 = k_min + (i1 + i2 - i3) dk
    keep = (i1 <= i2) & (i2 <= i3) & (step * (i1 + i2 - i3) + start >= -_REL * step)
    idx = np.stack([i1[keep], i2[keep], i3[keep]], axis=-1)
    return start + step * idx.astype(np.float64)


def equilateral_triangles(k_min: float, k_max: float, dk: float) -> np.ndarray:
    """Equilateral bins ``(k, k, k)`` for ``k = k_min, k_min + dk, ... <= k_max`` [h/Mpc]; shape (M, 3)."""
    start = check_positive(k_min, "k_min [h/Mpc]")
    stop = check_positive(k_max, "k_max [h/Mpc]")
    step = check_positive(dk, "dk [h/Mpc]")
    if stop < start:
        raise InputError(f"k_max = {k_max!r} h/Mpc must be >= k_min = {k_min!r} h/Mpc")
    k = _grid(start, stop, step)
    return np.repeat(k[:, None], 3, axis=1)


def squeezed_triangles(k_long: float, k_short_values) -> np.ndarray:
    """Squeezed bins ``(k_short, k_short, k_long)`` [h/Mpc]; shape (M, 3).

    Parameters
    ----------
    k_long : float
        The long-wavelength (small) side [h/Mpc].
    k_short_values : array_like, shape (M,)
        The two equal short-wavelength sides [h/Mpc], each ``>= k_long``.
    """
    k_l = check_positive(k_long, "k_long [h/Mpc]")
    k_s = np.atleast_1d(np.asarray(k_short_values, dtype=np.float64))
    if k_s.ndim != 1 or k_s.size == 0 or not np.all(np.isfinite(k_s)) or np.any(k_s < k_l):
        raise InputError(
            f"k_short_values must be a non-empty 1-d array of finite k >= k_long = {k_l!r} h/Mpc, "
            f"got {k_short_values!r}"
        )
    return np.stack([k_s, k_s, np.full_like(k_s, k_l)], axis=-1)


def isosceles_triangles(k1: float, ratios=None, angles=None) -> np.ndarray:
    """Isosceles bins ``(k1, k1, k3)`` [h/Mpc] from ratios ``k3 / k1`` or opening angles; shape (M, 3).

    Parameters
    ----------
    k1 : float
        The two equal sides [h/Mpc].
    ratios : array_like, shape (M,), optional
        ``k3 / k1`` in (0, 2] (1: equilateral, -> 0: squeezed, 2: folded).
    angles : array_like, shape (M,), optional
        Angle theta between the vectors k1 and k2 [rad] in [0, pi), so that
        ``k3 = |k1 + k2| = k1 sqrt(2 + 2 cos theta)`` (2 pi / 3: equilateral). Give exactly one of
        ``ratios`` and ``angles``.
    """
    k = check_positive(k1, "k1 [h/Mpc]")
    if (ratios is None) == (angles is None):
        raise InputError("give exactly one of ratios and angles")
    if ratios is not None:
        r = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
        if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(r > 2):
            raise InputError(f"ratios k3/k1 must be a non-empty 1-d array in (0, 2], got {ratios!r}")
    else:
        t = np.atleast_1d(np.asarray(angles, dtype=np.float64))
        if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t >= np.pi):
            raise InputError(f"angles [rad] must be a non-empty 1-d array in [0, pi), got {angles!r}")
        r = np.sqrt(2.0 + 2.0 * np.cos(t))
    return np.stack([np.full_like(r, k), np.full_like(r, k), k * r], axis=-1)
