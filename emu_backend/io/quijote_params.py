"""The small text files of a Quijote simulation: cosmological parameters, IC seed, linear P(k).

``latin_hypercube_params.txt`` (rows ``Omega_m Omega_b h n_s sigma_8``, row i = simulation i), each
latin-hypercube simulation's ``Cosmo_params.dat`` (the same values on one line), the ``Seed`` of
``ICs/2LPT.param`` and ``ICs/Pk_mm_z=0.000.txt``. Where they are is
:class:`~emu_backend.io.quijote_layout.QuijoteLayout`'s business; these functions read one file each.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..checks import check_int
from ..cosmology.linear_power import TabulatedPower
from ..cosmology.params import Cosmology
from ..errors import FileFormatError, InputError

__all__ = ["PK_FILE", "read_latin_hypercube", "latin_hypercube_cosmology", "read_cosmo_params", "read_seed",
           "read_linear_power"]

PK_FILE = "Pk_mm_z=0.000.txt"
_LH_COLUMNS = ("omega_m", "omega_b", "h", "n_s", "sigma8")


def read_latin_hypercube(path) -> np.ndarray:
    """The rows of ``latin_hypercube_params.txt``: shape (n_sims, 5), columns Omega_m Omega_b h n_s sigma_8."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"latin-hypercube parameter file {str(path)!r} does not exist")
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{str(path)!r}: not numeric text with 5 columns (Omega_m Omega_b h n_s sigma_8): "
                              f"{exc}") from exc
    if table.ndim != 2 or table.shape[1] != 5 or table.shape[0] == 0:
        raise FileFormatError(f"{str(path)!r}: expected rows of 5 columns (Omega_m Omega_b h n_s sigma_8), got "
                              f"shape {table.shape}")
    if not np.all(np.isfinite(table)):
        raise FileFormatError(f"{str(path)!r}: contains non-finite values")
    return table


def latin_hypercube_cosmology(path, sim: int) -> Cosmology:
    """The cosmology of simulation ``sim`` (row ``sim``) of a latin-hypercube parameter file.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "latin_hypercube_params.txt")
    >>> _ = open(p, "w").write("#Omega_m Omega_b h n_s sigma_8\\n0.1755 0.06681 0.7737 0.8849 0.6641\\n")
    >>> latin_hypercube_cosmology(p, 0).omega_m
    0.1755
    """
    table = read_latin_hypercube(path)
    sim = check_int(sim, f"simulation index into the {table.shape[0]} rows of {str(path)!r}", 0, table.shape[0] - 1)
    row = dict(zip(_LH_COLUMNS, (float(v) for v in table[sim])))
    try:
        return Cosmology(**row, name=f"quijote_lh_{int(sim)}")
    except InputError as exc:
        raise FileFormatError(f"{str(path)!r} row {int(sim)}: {exc}") from exc


def read_seed(param_file) -> int:
    """The ``Seed`` of a 2LPTic / N-GenIC parameter file (``Seed  <int>``)."""
    path = Path(param_file)
    if not path.is_file():
        raise FileFormatError(f"IC parameter file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read: {exc}") from exc
    match = re.search(r"^\s*Seed\s+(\d+)", text, flags=re.MULTILINE)
    if match is None:
        raise FileFormatError(f"{str(path)!r}: no 'Seed <integer>' line")
    return int(match.group(1))


def read_linear_power(path, cosmology: Cosmology | None = None):
    """Quijote's ``Pk_mm_z=0.000.txt``: linear matter P(k) at z = 0 as a :class:`TabulatedPower`.

    Columns k [h/Mpc], P(k) [(Mpc/h)^3], read as is (no renormalisation).
    """
    return TabulatedPower.from_file(path, cosmology=cosmology)


def read_cosmo_params(path, name: str = "quijote") -> Cosmology:
    """A latin-hypercube simulation's ``Cosmo_params.dat``: ``Omega_m Omega_b h n_s sigma_8 [...]`` on one line.

    Further columns (M_nu, w of other hypercubes) are ignored.
    """
    path = Path(path)
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1, comments="#")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{str(path)!r}: not a line of numbers Omega_m Omega_b h n_s sigma_8: {exc}") from exc
    if values.ndim != 1 or values.size < 5 or not np.all(np.isfinite(values[:5])):
        raise FileFormatError(f"{str(path)!r}: expected one line Omega_m Omega_b h n_s sigma_8, got shape "
                              f"{values.shape}")
    try:
        return Cosmology(**dict(zip(_LH_COLUMNS, (float(v) for v in values[:5]))), name=name)
    except InputError as exc:
        raise FileFormatError(f"{str(path)!r}: {exc}") from exc
