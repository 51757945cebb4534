"""Linear P(k, z), growth and transfer function from the Boltzmann code CLASS (``classy``).

:class:`ClassPower` implements the :class:`~emu_backend.cosmology.LinearPower` protocol on top of a
computed ``classy.Class``. CLASS works in 1/Mpc and Mpc^3; this module is the only place where those
units meet ours: ``k [1/Mpc] = k [h/Mpc] * h`` and ``P [(Mpc/h)^3] = P [Mpc^3] * h^3``.

``classy`` is imported only when a provider is built (extra ``class``); importing this module never
imports it. Errors raised by CLASS are re-raised ``from`` the original, with CLASS's message:
errors of CLASS's input module (an unread or unparsable parameter, a value CLASS refuses) as
:class:`~emu_backend.errors.InputError`, every other failure as
:class:`~emu_backend.errors.ComputationError`.
A runnable example (executed by the tests) is in ``docs/adapters/classy.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy.interpolate import CubicSpline

from ..checks import check_positive, check_real
from ..cosmology.params import Cosmology
from ..errors import ComputationError, InputError, require

__all__ = ["ClassPower", "DEFAULT_K_MAX_H_MPC", "DEFAULT_Z_MAX"]

logger = logging.getLogger(__name__)

#: Default largest wavenumber [h/Mpc] CLASS tabulates P(k) to (covers a 512^3 grid of 1000 Mpc/h).
DEFAULT_K_MAX_H_MPC = 10.0
#: Default largest redshift CLASS tabulates P(k, z) to.
DEFAULT_Z_MAX = 10.0
#: Outputs a provider needs from CLASS: linear P(k) ("mPk") and density transfer functions ("mTk").
_OUTPUTS = ("mPk", "mTk")
#: Relative slack at the ends of ``k_range`` for rounding (e.g. ``exp(log(k))``); such k are clipped.
_K_RTOL = 1e-9
#: Fragments of CLASS error messages that come from reading the input parameters.
_INPUT_ERROR_MARKERS = ("did not read input parameter", "input_read_parameters", "parser_read")


def _classy():
    return require("classy", "class")


def _reraise(exc: Exception, what: str):
    """Re-raise a classy exception as InputError (bad parameters) or ComputationError."""
    message = " ".join(str(exc).split())
    cls = InputError if any(m in message for m in _INPUT_ERROR_MARKERS) else ComputationError
    raise cls(f"CLASS failed in {what}: {message}") from exc


def _class_errors(classy) -> tuple[type, ...]:
    return (classy.CosmoSevereError, classy.CosmoComputationError)


class ClassPower:
    """Linear matter power spectrum P(k, z), growth and transfer function computed by CLASS.

    Build it with :meth:`from_cosmology`, :meth:`from_params` or :meth:`from_class`. The instance
    holds the computed ``classy.Class``; do not ``empty()`` or recompute that object afterwards.

    Attributes
    ----------
    cosmology : Cosmology
        Rebuilt from CLASS's values: ``omega_m = Omega_m()`` (baryons + CDM + massive neutrinos),
        ``omega_b``, ``h``, ``n_s`` and the computed ``sigma8``. Our Cosmology is flat matter +
        Lambda, whereas CLASS keeps radiation (``Omega_Lambda = 1 - Omega_m - Omega_r``).
    k_range : (float, float)
        Wavenumbers [h/Mpc] CLASS tabulated P(k) on; calls outside raise InputError.
    z_max : float
        Largest redshift of CLASS's P(k, z) table.

    Examples
    --------
    >>> p = ClassPower.from_cosmology(QUIJOTE_FIDUCIAL)  # doctest: +SKIP
    >>> p(np.array([0.1]), z=1.0), p.growth_factor(1.0), p.sigma8()  # doctest: +SKIP
    """

    def __init__(self, cls_instance, *, name: str = "class"):
        """Wrap a computed ``classy.Class``; prefer the ``from_*`` constructors."""
        classy = _classy()
        if not isinstance(cls_instance, classy.Class):
            raise InputError(f"expected a computed classy.Class, got {type(cls_instance).__name__}")
        self._class = cls_instance
        self._errors = _class_errors(classy)
        try:
            self._h = float(cls_instance.h())
            _, k_mpc, z = cls_instance.get_pk_and_k_and_z(nonlinear=False)
            self._sigma8 = float(cls_instance.sigma8())
            cosmo = dict(omega_m=float(cls_instance.Omega_m()), omega_b=float(cls_instance.Omega_b()),
                         n_s=float(cls_instance.n_s()))
        except self._errors as exc:  # the instance does not carry what we need: the caller's to fix
            message = " ".join(str(exc).split())
            raise InputError(f"cannot read P(k) from this classy.Class (compute it with 'mPk' in output): "
                             f"{message}") from exc
        # CLASS's table [1/Mpc]; its bound check uses exp(ln k_max), which may round below k_mpc[-1]
        self._k_mpc = (float(k_mpc[0]), float(k_mpc[-1]) * (1 - 1e-12))
        self._k_range = (self._k_mpc[0] / self._h, self._k_mpc[1] / self._h)
        self._z_max = float(np.max(z))
        self.cosmology = Cosmology(h=self._h, sigma8=self._sigma8, name=name, **cosmo)
        logger.debug("ClassPower %s: k in %s h/Mpc, z <= %g", name, self._k_range, self._z_max)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_class(cls, cls_instance, *, name: str = "class") -> "ClassPower":
        """Wrap an already computed ``classy.Class`` (its output must include ``mPk``).

        ``mTk`` is needed only for :meth:`transfer`. The instance is held, not copied.
        """
        return cls(cls_instance, name=name)

    @classmethod
    def from_params(cls, params: Mapping, *, name: str = "class") -> "ClassPower":
        """Run CLASS on a parameter dict (CLASS names and units) and wrap the result.

        ``mPk`` and ``mTk`` are added to ``params['output']`` when missing, and ``z_max_pk`` is set
        to :data:`DEFAULT_Z_MAX` when neither ``z_max_pk`` nor ``z_pk`` is given (classy returns its
        P(k, z) table only for a non-zero z range). Nothing else is changed, so CLASS's defaults
        apply otherwise (e.g. a P(k) table to k = 1/Mpc only: pass ``P_k_max_h/Mpc`` for ICs).

        Raises
        ------
        InputError
            ``params`` is not a mapping of str to str/number, or CLASS refuses a parameter.
        ComputationError
            CLASS failed on accepted input.
        """
        if not isinstance(params, Mapping):
            raise InputError(f"CLASS parameters must be a dict, got {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(key, str):
                raise InputError(f"CLASS parameter names must be str, got {key!r}")
            if not isinstance(value, str):
                check_real(value, f"CLASS parameter {key!r}", what="a str or a number (finite)")
        pars = dict(params)
        outputs = [s.strip() for s in str(pars.get("output", "")).replace(",", " ").split() if s.strip()]
        pars["output"] = ",".join(outputs + [o for o in _OUTPUTS if o not in outputs])
        if "z_max_pk" not in pars and "z_pk" not in pars:
            pars["z_max_pk"] = DEFAULT_Z_MAX
        classy = _classy()
        instance = classy.Class()
        try:
            instance.set(pars)
            instance.compute()
        except _class_errors(classy) as exc:
            _reraise(exc, "compute()")
        return cls(instance, name=name)

    @classmethod
    def from_cosmology(
        cls,
        cosmology: Cosmology,
        *,
        extra_params: Mapping | None = None,
        k_max_h_mpc: float = DEFAULT_K_MAX_H_MPC,
        z_max: float = DEFAULT_Z_MAX,
    ) -> "ClassPower":
        """Run CLASS for one of our cosmologies.

        Mapping: ``h``, ``Omega_b = omega_b``, ``Omega_cdm = omega_m - omega_b``, ``n_s``, and
        ``sigma8`` or ``A_s`` (whichever the cosmology carries; CLASS's pivot 0.05/Mpc). CLASS's
        defaults fill the rest: spatially flat (``Omega_k = 0``, Lambda closes the budget, so
        ``Omega_Lambda = 1 - omega_m - Omega_r``), T_cmb = 2.7255 K, and neutrinos massless
        (``N_ur = 3.044``, ``N_ncdm = 0``, set explicitly). ``P_k_max_h/Mpc = k_max_h_mpc`` and
        ``z_max_pk = z_max``. ``extra_params`` (CLASS names) override any of these, e.g.
        ``{"N_ur": 2.0328, "N_ncdm": 1, "m_ncdm": 0.06}`` for one massive neutrino.

        Parameters
        ----------
        cosmology : Cosmology
            Our flat LambdaCDM parameters.
        extra_params : dict or None
            Further CLASS parameters, applied last.
        k_max_h_mpc : float
            Largest wavenumber [h/Mpc] of the P(k) table, > 0.
        z_max : float
            Largest redshift of the P(k, z) table, > 0 (classy gives no table for z = 0 alone).
        """
        if not isinstance(cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
        k_max_h_mpc = check_positive(k_max_h_mpc, "k_max_h_mpc")
        z_max = check_positive(z_max, "z_max")
        if extra_params is not None and not isinstance(extra_params, Mapping):
            raise InputError(f"extra_params must be a dict or None, got {type(extra_params).__name__}")
        pars = {
            "h": cosmology.h,
            "Omega_b": cosmology.omega_b,
            "Omega_cdm": cosmology.omega_cdm,
            "n_s": cosmology.n_s,
            "N_ur": 3.044,
            "N_ncdm": 0,
            "P_k_max_h/Mpc": float(k_max_h_mpc),
            "z_max_pk": float(z_max),
            "output": ",".join(_OUTPUTS),
        }
        pars.update({"sigma8": cosmology.sigma8} if cosmology.sigma8 is not None else {"A_s": cosmology.A_s})
        pars.update(extra_params or {})
        return cls.from_params(pars, name=cosmology.name)

    # -- LinearPower protocol -----------------------------------------------------------------
    @property
    def k_range(self) -> tuple[float, float]:
        """``(k_min, k_max)`` [h/Mpc] of CLASS's P(k) table."""
        return self._k_range

    @property
    def z_max(self) -> float:
        """Largest redshift of CLASS's P(k, z) table (CLASS pads the requested ``z_max_pk``)."""
        return self._z_max

    @property
    def h(self) -> float:
        """H0 / (100 km/s/Mpc) of the CLASS run."""
        return self._h

    def _check_z(self, z, upper: float | None) -> np.ndarray:
        zz = np.asarray(z, dtype=np.float64)
        if not np.all(np.isfinite(zz)) or np.any(zz < 0) or (upper is not None and np.any(zz > upper)):
            top = f", {upper!r}]; raise z_max (CLASS's z_max_pk) to go further" if upper is not None else ", inf)"
            raise InputError(f"redshift z = {z!r} is outside CLASS's range [0{top}")
        return zz

    def _scalar_z(self, z) -> float:
        zz = self._check_z(z, self._z_max)
        if zz.ndim != 0:
            raise InputError(f"z must be a single redshift here, got shape {zz.shape}")
        return float(zz)

    def _check_k(self, k_h_mpc) -> np.ndarray:
        k = np.asarray(k_h_mpc, dtype=np.float64)
        lo, hi = self._k_range[0] * (1 - _K_RTOL), self._k_range[1] * (1 + _K_RTOL)
        if k.size and (not np.all(np.isfinite(k)) or k.min() < lo or k.max() > hi):
            bad = k[~np.isfinite(k) | (k < lo) | (k > hi)].ravel()[0]
            hint = "; raise k_max_h_mpc (CLASS parameter P_k_max_h/Mpc)" if bad > hi else ""
            raise InputError(f"k = {bad!r} h/Mpc is outside CLASS's P(k) table [{lo:.6g}, {hi:.6g}] h/Mpc{hint}")
        return k

    def __call__(self, k_h_mpc, z: float = 0.0) -> np.ndarray:
        """Linear total-matter P(k, z) [(Mpc/h)^3] at ``k_h_mpc`` [h/Mpc], any shape.

        ``P = pk_lin(k h, z) h^3`` with classy's ``pk_lin`` [Mpc^3] at ``k h`` [1/Mpc].
        """
        k = self._check_k(k_h_mpc)
        zf = self._scalar_z(z)
        h = self._h
        out = np.empty(k.shape, dtype=np.float64)
        flat = out.reshape(-1)
        k_mpc = np.clip(k.reshape(-1) * h, *self._k_mpc)  # only rounding-level moves, see _check_k
        try:
            for i, kk in enumerate(k_mpc):
                flat[i] = self._class.pk_lin(float(kk), zf)
        except self._errors as exc:
            _reraise(exc, "pk_lin")
        return out * h**3

    # -- further quantities -------------------------------------------------------------------
    def _scalar_map(self, func, z, what: str) -> np.ndarray | float:
        zz = self._check_z(z, None)
        try:
            out = np.array([func(float(v)) for v in zz.reshape(-1)], dtype=np.float64).reshape(zz.shape)
        except self._errors as exc:
            _reraise(exc, what)
        return float(out) if out.ndim == 0 else out

    def growth_factor(self, z):
        """Scale-independent linear growth ``D(z) / D(0)`` from CLASS, float or array like ``z``.

        CLASS integrates ``D'' + aH D' = 3/2 a^2 rho_M D`` with baryons + CDM in rho_M (massive
        neutrinos excluded: the small-scale limit) and radiation in H.
        """
        d = self._scalar_map(self._class.scale_independent_growth_factor, z, "growth factor")
        return d / self._class.scale_independent_growth_factor(0.0)

    def growth_rate(self, z):
        """Scale-independent growth rate ``f(z) = dlnD/dlna`` from CLASS, float or array like ``z``."""
        return self._scalar_map(self._class.scale_independent_growth_factor_f, z, "growth rate")

    def sigma8(self) -> float:
        """rms linear density contrast in 8 Mpc/h top-hat spheres at z = 0, as computed by CLASS."""
        return self._sigma8

    def transfer(self, k_h_mpc, z: float = 0.0) -> np.ndarray:
        """Total-matter transfer function T(k, z), dimensionless, T -> 1 as k -> 0.

        ``T = (d_m / k^2) / (d_m / k^2)|_{k_min}`` with ``d_m`` the total-matter (baryons + CDM +
        massive neutrinos) density transfer function of classy's ``get_transfer(z)`` (synchronous
        gauge, primordial curvature R = 1), ``k_min`` CLASS's first tabulated wavenumber, and a
        cubic spline in ln k between CLASS's points. ``d_m`` is what CLASS's P(k) is built from, so
        ``P(k, z) = A(z) k^n_s T(k, z)^2`` exactly at those points; ``d_tot`` would add the
        radiation perturbations (a 3e-4 change of shape at z = 0). The growth is not in T (see
        :meth:`growth_factor`). Needs ``mTk`` in CLASS's output.

        Parameters
        ----------
        k_h_mpc : array_like
            Wavenumbers [h/Mpc], any shape, inside ``k_range``.
        z : float
            Redshift in ``[0, z_max]``.

        Returns
        -------
        ndarray
            T(k, z), same shape as ``k_h_mpc``.
        """
        k = self._check_k(k_h_mpc)
        zf = self._scalar_z(z)
        try:
            table = self._class.get_transfer(zf)
        except self._errors as exc:
            _reraise(exc, "get_transfer")
        if "d_m" not in table:
            raise InputError("CLASS has no transfer functions: compute it with 'mTk' in its output")
        kt = np.asarray(table["k (h/Mpc)"], dtype=np.float64)
        if k.size and k.max() > kt[-1]:
            raise InputError(f"k = {k.max()!r} h/Mpc is above CLASS's transfer table (k <= {kt[-1]:.6g} h/Mpc)")
        shape = np.asarray(table["d_m"], dtype=np.float64) / kt**2
        spline = CubicSpline(np.log(kt), shape / shape[0])
        # below the first tabulated k, T is 1 (the table is flat there to ~1e-6)
        return np.where(k <= kt[0], 1.0, spline(np.log(np.maximum(k, kt[0]))))

    def nonlinear(self, k_h_mpc, z: float = 0.0) -> np.ndarray:
        """CLASS's nonlinear total-matter P(k, z) [(Mpc/h)^3] (``pk(k h, z) h^3``), any shape of ``k_h_mpc``.

        Needs a nonlinear method in CLASS's parameters, e.g.
        ``ClassPower.from_cosmology(c, extra_params={"non_linear": "halofit"})``.
        """
        k = self._check_k(k_h_mpc)
        zf = self._scalar_z(z)
        h = self._h
        k_mpc = np.clip(k.reshape(-1) * h, *self._k_mpc)
        try:
            out = np.array([self._class.pk(float(kk), zf) for kk in k_mpc], dtype=np.float64)
        except self._errors as exc:
            _reraise(exc, "pk")
        return out.reshape(k.shape) * h**3

    def __repr__(self) -> str:
        c = self.cosmology
        return (f"ClassPower({c.name!r}, omega_m={c.omega_m:.5g}, h={c.h:.5g}, sigma8={c.sigma8:.5g}, "
                f"k <= {self._k_range[1]:.4g} h/Mpc, z <= {self._z_max:.4g})")
