"""The emulator: linear displacement of a periodic box in, nonlinear displacement and velocity out."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoints.jax_port import read_jax_npz
from ..checkpoints.native import is_model_file, load_model_file, save_model_file
from ..checkpoints.published import check_state_dict, extract_state_dict, infer_arch, read_torch_file
from ..checks import check_bool, check_choice, check_int, check_positive, check_real, check_reals
from ..errors import CheckpointError, InputError
from ..nn import StyledVNet
from .acceleration import check_run_options, precision_context
from .domain import TrainingDomain
from .memory import MemoryEstimate, check_memory, tile_pass_estimate
from .models import EmuConvention, ModelConvention, ZdepConvention
from .run_arrays import (
    SCAN_ROWS,
    as_field,
    check_destinations,
    check_field,
    check_finite_field,
    check_finite_tiles,
)
from .tiling import PAD, Tile, TilePlan, periodic_read

__all__ = ["Emulator", "Prediction", "RunPlan", "MODEL_KINDS"]

log = logging.getLogger(__name__)

MODEL_KINDS = ("auto", "native", "zdep", "emu", "jax")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Prediction:
    """Emulated fields at one redshift.

    Attributes
    ----------
    displacement : ndarray
        (3, N0, N1, N2) nonlinear displacement from the Lagrangian grid [Mpc/h].
    velocity : ndarray or None
        (3, N0, N1, N2) peculiar velocity [km/s].
    z : float
    omega_m : float
    """

    displacement: np.ndarray
    velocity: np.ndarray | None
    z: float
    omega_m: float
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """The checked arguments of one emulation run.

    Made by :meth:`Emulator.plan`, which checks every argument once; :meth:`Emulator.run_plan` and the
    network calls trust it.

    Attributes
    ----------
    shape : tuple of 4 int
        ``(3, N0, N1, N2)``, the input (and output) field shape.
    zs : tuple of float
        Output redshifts.
    omega_m : float
    tiles : TilePlan
        The tiling of the box.
    velocity : bool
    batch_size : int
    """

    shape: tuple
    zs: tuple
    omega_m: float
    tiles: TilePlan
    velocity: bool
    batch_size: int


#: Activation layouts of :class:`Emulator` (``memory_format``).
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last_3d}


class Emulator:
    """A trained StyledVNet emulator with its conventions, domain and device.

    Parameters
    ----------
    model : ModelConvention
        :class:`ZdepConvention` or :class:`EmuConvention`.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ...
    dtype : {"float32", "float64"} or torch.dtype
    allow_extrapolation : bool
        Run outside the training domain (with a logged warning) instead of refusing.
    checksum : str, optional
        Checksum of the weights, recorded in outputs.
    memory_format : {"auto", "contiguous", "channels_last"}
        Activation layout. ``"contiguous"`` (NCDHW, the reference's layout; bit-identical to the
        golden vectors) or ``"channels_last"`` (NDHWC: several times faster convolutions on CPU with
        oneDNN; float32 results differ from the reference by round-off, ~2e-7 relative, see
        docs/performance.md). ``"auto"`` (default): channels-last on CPU, contiguous elsewhere (not
        measured on GPUs).
    precision : {"fp32", "tf32", "bf16", "fp16"}
        Arithmetic of the network calls (:mod:`emu_backend.inference.acceleration`): ``"fp32"``
        (default; on CUDA it also turns off the TF32 convolutions PyTorch allows by default),
        ``"tf32"`` (CUDA only), ``"bf16"``/``"fp16"`` autocast. Their errors against float32 are
        measured in docs/performance.md.
    compile_mode : str, optional
        A ``torch.compile`` mode for the networks (``"default"``, ``"reduce-overhead"`` = CUDA
        graphs, ...); None (default) runs eagerly.
    check_memory : bool
        Before a run, estimate its peak memory (:meth:`memory_estimate`) and refuse one that does not
        fit in the available memory with :class:`~emu_backend.errors.ResourceError` (default); False
        runs anyway.

    Examples
    --------
    >>> from emu_backend.nn import StyledVNet
    >>> emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    >>> pred = emu.predict(np.zeros((3, 8, 8, 8), np.float32), omega_m=0.3, z=0.5, tile_size=8)
    >>> pred.displacement.shape, pred.velocity.shape
    ((3, 8, 8, 8), (3, 8, 8, 8))
    """

    def __init__(self, model: ModelConvention, *, device="cpu", dtype="float32",
                 allow_extrapolation: bool = False, checksum: str = "", source: str = "",
                 memory_format: str = "auto", precision: str = "fp32", compile_mode: str | None = None,
                 check_memory: bool = True):
        check_choice(memory_format, "memory_format", ["auto", *sorted(MEMORY_FORMATS)])
        if isinstance(dtype, str):
            dtype = _DTYPES[check_choice(dtype, "dtype", sorted(_DTYPES))]
        if dtype not in _DTYPES.values():
            raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"unknown device {device!r}") from exc
        if self.device.type == "meta":
            raise InputError(f"device {device!r} holds shapes but no values and cannot run the emulator; use 'cpu' "
                             f"or 'cuda'")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available")
        self.dtype = dtype
        check_run_options(precision, compile_mode, self.device, dtype)
        self.precision, self.compile_mode = precision, compile_mode
        if memory_format == "auto":
            memory_format = "channels_last" if self.device.type == "cpu" else "contiguous"
        self.memory_format = memory_format
        self.model = model.to(self.device, dtype)
        for net in self.model.networks.values():
            net.to(memory_format=MEMORY_FORMATS[memory_format])
        self.model.compile(compile_mode)
        self.allow_extrapolation = allow_extrapolation
        self.check_memory = check_bool(check_memory, "check_memory")
        self.checksum = checksum
        self.source = source
        self.untrained = False  # True for the random stand-in of default_emulator()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, model: str = "auto", *, velocity_checkpoint=None, device="cpu",
                        dtype="float32", allow_extrapolation: bool = False, allow_pickle: bool = False,
                        memory_format: str = "auto", precision: str = "fp32",
                        compile_mode: str | None = None, check_memory: bool = True) -> "Emulator":
        """Load an emulator from a file.

        Parameters
        ----------
        path : str or Path
            Our model file, a published ``.pt`` (``{'model': sd}`` or bare), or the JAX port's ``.npz``.
        model : {"auto", "native", "zdep", "emu", "jax"}
            The file's kind. ``"auto"``: ours if it says so, ``.npz`` -> JAX port (zdep), else a
            published ``.pt`` whose style size picks zdep (2) or emu (1).
        velocity_checkpoint : str or Path, optional
            For ``emu``: the v2v network's file (velocities are unavailable without it).
        device, dtype, allow_extrapolation, memory_format, precision, compile_mode, check_memory
            See :class:`Emulator`.
        allow_pickle : bool
            Unpickle arbitrary objects in published ``.pt`` and JAX-port ``.npz`` files (only for files you trust).
        """
        if model not in MODEL_KINDS:
            raise InputError(f"model must be one of {MODEL_KINDS}, got {model!r}")
        path = Path(path)
        kw = dict(device=device, dtype=dtype, allow_extrapolation=allow_extrapolation, source=str(path),
                  memory_format=memory_format, precision=precision, compile_mode=compile_mode,
                  check_memory=check_memory)
        if model == "jax" or (model == "auto" and path.suffix == ".npz"):
            sd = read_jax_npz(path, allow_pickle)
            return cls(ZdepConvention(cls._strict_net(sd, str(path), style_size=2)), **kw)
        obj = read_torch_file(path, allow_pickle)
        if is_model_file(obj) or model == "native":
            mf = load_model_file(path, obj)
            domain = TrainingDomain.from_dict(mf.domain)
            if mf.kind == "zdep":
                m = ZdepConvention(mf.networks["displacement"], domain)
            else:
                m = EmuConvention(mf.networks["displacement"], mf.networks.get("velocity"), domain)
            return cls(m, checksum=mf.checksum, **kw)
        sd = extract_state_dict(obj, str(path))
        style_size = infer_arch(sd, str(path)).style_size
        kind = model if model != "auto" else {1: "emu", 2: "zdep"}.get(style_size)
        if kind == "zdep":
            return cls(ZdepConvention(cls._strict_net(sd, str(path), style_size=2)), **kw)
        if kind == "emu":
            d2d = cls._strict_net(sd, str(path), style_size=1)
            v2v = None
            if velocity_checkpoint is not None:
                vsd = extract_state_dict(read_torch_file(velocity_checkpoint, allow_pickle), str(velocity_checkpoint))
                v2v = cls._strict_net(vsd, str(velocity_checkpoint), style_size=1)
            return cls(EmuConvention(d2d, v2v), **kw)
        raise CheckpointError(f"{str(path)!r}: style size {style_size} matches no published model (1: emu, 2: zdep)")

    @staticmethod
    def _strict_net(sd, source: str, style_size: int) -> StyledVNet:
        arch = infer_arch(sd, source)
        if arch.style_size != style_size:
            raise CheckpointError(f"{source!r}: style size {arch.style_size}, this model kind needs {style_size}")
        net = StyledVNet.from_arch(arch)
        check_state_dict(net, sd, source)
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        return net.eval()

    def save(self, path, *, provenance=None, storage_dtype="float32", overwrite=False) -> str:
        """Write this emulator's networks, kind and domain as our model file; returns the checksum."""
        nets = {k: v.float().cpu() for k, v in self.model.networks.items()}
        try:
            return save_model_file(path, self.model.kind, nets, self.model.domain.to_dict(),
                                   provenance=provenance, storage_dtype=storage_dtype, overwrite=overwrite)
        finally:
            self.model.to(self.device, self.dtype)

    # -- prediction -----------------------------------------------------------------------
    def predict(self, linear_displacement, omega_m: float, z, *, velocity: bool = True,
                tile_size: int = 128, batch_size: int = 1, box_size: float | None = None,
                out=None, progress: bool = False):
        """Emulate the nonlinear displacement (and velocity) of a periodic box.

        Parameters
        ----------
        linear_displacement : array-like or Tensor
            (3, N0, N1, N2) linear Zel'dovich displacement at z = 0 [Mpc/h] on the trained grid
            (1000/512 Mpc/h per cell); ndarray, memory map or h5py dataset (read tile by tile), or a
            CPU or CUDA tensor (its values are copied to the host).
        omega_m : float
            Matter density of the cosmology.
        z : float or sequence of float
            Output redshift(s). The input tiles are read once for all of them.
        velocity : bool
            Also predict the peculiar velocity [km/s].
        tile_size : int
            Output cells per tile side, a multiple of 8 (input tiles are ``tile_size + 96``).
            Peak memory grows with the tile size, not the box size.
        batch_size : int
            Tiles per network call.
        box_size : float, optional
            Box side [Mpc/h]; checked against the trained cell size when given.
        out : list of (array-like, array-like or None), optional
            Per redshift, destinations (3, N0, N1, N2) for displacement and velocity (memory maps
            or h5py datasets for boxes larger than memory): floating point, writable, and sharing
            memory neither with each other nor with the input.
        progress : bool
            Show a progress bar (only on a terminal).

        Returns
        -------
        Prediction or list of Prediction
            One per redshift (a list when ``z`` is a sequence).

        Raises
        ------
        InputError, DomainError
            A bad argument, or one outside the training domain without ``allow_extrapolation``.
        ResourceError
            The estimated peak memory (the tile pass, and the outputs when ``out`` is None) does not
            fit in the available memory, unless the emulator was made with ``check_memory=False``.
        ComputationError
            The network returned NaN or inf for a tile (finite but absurd input); names the tile.
        """
        linear_displacement = as_field(linear_displacement)
        shape = tuple(getattr(linear_displacement, "shape", ()))
        try:
            n_out = int(np.size(z)) * (2 if velocity else 1)
        except (TypeError, ValueError):  # plan names what is wrong with z
            n_out = 0
        output_bytes = n_out * math.prod(shape) * 4 if out is None and len(shape) == 4 else 0
        rp = self.plan(linear_displacement, omega_m, z, velocity=velocity, tile_size=tile_size,
                       batch_size=batch_size, box_size=box_size, output_bytes=output_bytes)
        out = self._check_out(rp, out, source=linear_displacement)
        single = np.ndim(z) == 0

        bar = tqdm(total=len(rp.tiles), desc="tiles", unit="tile", disable=not (progress and sys.stderr.isatty()))
        for batch in self._run_batches(linear_displacement, rp, out, 0, len(rp.tiles), 0):
            bar.update(len(batch))
        bar.close()
        meta = {"omega_m": rp.omega_m, "tile_size": rp.tiles.tile, "model_kind": self.model.kind,
                "memory_format": self.memory_format, "untrained": self.untrained,
                "checksum": self.checksum, "source": self.source, "dtype": str(self.dtype),
                "precision": self.precision, "compile_mode": self.compile_mode}
        preds = [Prediction(d, v, zi, rp.omega_m, dict(meta)) for (d, v), zi in zip(out, rp.zs)]
        return preds[0] if single else preds

    def predict_batches(self, linear_displacement, omega_m: float, z, out, *, velocity: bool = True,
                        tile_size: int = 128, batch_size: int = 1, box_size: float | None = None,
                        start_tile: int = 0, stop_tile: int | None = None,
                        out_offset: int = 0) -> Iterator[list[Tile]]:
        """Emulate tile batch by tile batch into ``out``, tiles ``start_tile`` to ``stop_tile``.

        The arguments are those of :meth:`predict` (checked by :meth:`plan`, before the first batch,
        then run by :meth:`run_plan`); ``out`` is required. Tiles are those of
        ``TilePlan(shape, tile_size)``, grouped by ``TilePlan.batches(batch_size, start_tile, stop_tile)``.
        The returned iterator computes one batch per step, writes it into ``out`` for every redshift,
        then yields the batch's tiles, so a caller can flush or record progress between batches (see
        :mod:`emu_backend.inference.streaming`). Starting at a batch boundary of a full run gives the
        same batches, hence the same values.

        Parameters
        ----------
        start_tile, stop_tile : int
            Tile index range ``[start_tile, stop_tile)`` (default: to the last tile).
        out_offset : int
            Box cell of ``out``'s first row along axis 0: ``out`` may be a slab
            ``(3, M, N1, N2)`` holding rows ``[out_offset, out_offset + M)`` of the box, which must
            contain every computed tile (used by :mod:`emu_backend.inference.distributed`).

        Returns
        -------
        iterator of list of Tile
        """
        linear_displacement = as_field(linear_displacement)
        rp = self.plan(linear_displacement, omega_m, z, velocity=velocity, tile_size=tile_size,
                       batch_size=batch_size, box_size=box_size)
        return self.run_plan(linear_displacement, rp, out, start_tile=start_tile, stop_tile=stop_tile,
                             out_offset=out_offset)

    def run_plan(self, linear_displacement, plan: RunPlan, out, *, start_tile: int = 0,
                 stop_tile: int | None = None, out_offset: int = 0) -> Iterator[list[Tile]]:
        """:meth:`predict_batches` of a plan already made by :meth:`plan`, which is trusted, not re-checked.

        A caller that plans first (to size its outputs or check the arguments before touching files)
        runs the plan with this, so the field is not scanned twice; ``plan`` may be narrowed to some of
        its redshifts with ``dataclasses.replace(plan, zs=...)``. Only the field's shape is compared with
        the plan's. The other arguments are those of :meth:`predict_batches`.

        Returns
        -------
        iterator of list of Tile
        """
        if not isinstance(plan, RunPlan):
            raise InputError(f"plan must be a RunPlan from Emulator.plan, got {type(plan).__name__}")
        if out is None:
            raise InputError("out is required: one (displacement, velocity) pair per redshift")
        linear_displacement = as_field(linear_displacement)
        shape = tuple(getattr(linear_displacement, "shape", ()))
        if shape != plan.shape:
            raise InputError(f"linear displacement of shape {shape} does not match the plan's {plan.shape}")
        n = len(plan.tiles)
        stop_tile = check_int(n if stop_tile is None else stop_tile, "stop_tile", 0, n)
        start_tile = check_int(start_tile, "start_tile", 0, stop_tile)
        out_offset = check_int(out_offset, "out_offset", 0)
        rows = plan.tiles.rows(start_tile, stop_tile) if start_tile < stop_tile else (out_offset, out_offset)
        out = self._check_out(plan, out, rows, out_offset, source=linear_displacement)
        return self._run_batches(linear_displacement, plan, out, start_tile, stop_tile, out_offset)

    def plan(self, linear_displacement, omega_m: float, z, *, velocity: bool = True, tile_size: int = 128,
             batch_size: int = 1, box_size: float | None = None, output_bytes: int = 0) -> RunPlan:
        """Check the arguments of :meth:`predict` and return the run's plan; computes nothing.

        Only the field's shape and dtype are read, and its values (block by block) for finiteness.
        Raises the errors :meth:`predict` would raise for these arguments (:class:`InputError`,
        :class:`~emu_backend.errors.DomainError`), and, unless the emulator was made with
        ``check_memory=False``, :class:`~emu_backend.errors.ResourceError` when the estimated peak
        memory of the run (:meth:`memory_estimate`, plus ``output_bytes`` of the caller's in-memory
        outputs [bytes]) does not fit in the available memory; the check comes before the input is
        scanned.

        Examples
        --------
        >>> from emu_backend.nn import StyledVNet
        >>> emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
        >>> rp = emu.plan(np.zeros((3, 16, 16, 16), np.float32), 0.3, [0.0, 1.0], tile_size=8)
        >>> rp.zs, len(rp.tiles)
        ((0.0, 1.0), 8)
        """
        linear_displacement = as_field(linear_displacement)
        shape = check_field(linear_displacement)
        zs = check_reals(z, "z", -1.0, lo_open=True, item="redshift")
        omega_m = check_real(omega_m, "omega_m", 0.0, 1.0, lo_open=True, what="finite and in (0, 1]")
        if box_size is not None:
            box_size = check_positive(box_size, "box_size", what="positive and finite")
        batch_size = check_int(batch_size, "batch_size", 1, what="a positive integer")
        if velocity and not self.model.has_velocity:
            raise InputError("this emulator has no velocity network (load it with velocity_checkpoint=...) ; pass velocity=False")
        if box_size is not None and len(set(shape[1:])) != 1:
            raise InputError(f"box_size needs a cubic grid, got {shape[1:]}")
        self.model.domain.check(omega_m, zs, box_size, shape[1] if box_size is not None else None,
                                self.allow_extrapolation)
        tiles = TilePlan(shape[1:], tile_size)
        if self.check_memory:
            check_memory(self.memory_estimate(shape, tiles.tile, batch_size, velocity, host_bytes=output_bytes))
        check_finite_field(linear_displacement, shape)
        log.info("emulating %s box at z=%s, Om=%.4f: %d tiles of %d^3 on %s (%s)", shape[1:], zs, omega_m,
                 len(tiles), tiles.tile, self.device, str(self.dtype).replace("torch.", ""))
        return RunPlan(shape, tuple(zs), omega_m, tiles, bool(velocity), batch_size)

    def memory_estimate(self, shape, tile_size: int, batch_size: int = 1, velocity: bool = True, *,
                        host_bytes: int = 0) -> MemoryEstimate:
        """The peak memory of emulating a box of ``shape`` (3, N0, N1, N2) tile by tile.

        One batch of the largest input tiles (``min(tile_size, N)`` rounded up to 8, plus 96 cells per
        axis) through the network, with the model's width, velocity mode, dtype and device
        (:func:`~emu_backend.inference.memory.tile_pass_estimate`), plus one block of the input's
        finiteness scan and ``host_bytes`` [bytes] the caller holds. The box itself is not counted:
        the input and the outputs may be memory maps or files.

        Examples
        --------
        >>> from emu_backend.nn import StyledVNet
        >>> from emu_backend.inference.memory import format_bytes
        >>> emu = Emulator(ZdepConvention(StyledVNet(2, width=8)))
        >>> format_bytes(emu.memory_estimate((3, 512, 512, 512), 128, 27).host_bytes)
        '105 GiB'
        """
        tiles = TilePlan(tuple(shape[1:]), tile_size)
        net = self.model.networks["displacement"]
        itemsize = 8 if self.dtype == torch.float64 else 4
        scan = 3 * min(SCAN_ROWS, tiles.shape[0]) * tiles.shape[1] * tiles.shape[2] * (itemsize + 1)
        batch = min(int(batch_size), len(tiles))
        size = tuple(-(-min(tiles.tile, n) // 8) * 8 + 2 * PAD for n in tiles.shape)  # the first, largest tile
        what = (f"emulating a {'x'.join(map(str, tiles.shape))} box in batches of {batch} tile(s) of "
                f"{'x'.join(map(str, size))} input cells (width {net.arch.width}"
                f"{', with velocities' if velocity else ''}) on {self.device}")
        return tile_pass_estimate(what, width=net.arch.width, input_size=size, batch=batch,
                                  velocity_dual=bool(velocity) and self.model.kind == "zdep",
                                  n_networks=len(self.model.networks),
                                  n_params=sum(p.numel() for p in net.parameters()), itemsize=itemsize,
                                  device=self.device, host_bytes=scan + int(host_bytes))

    @staticmethod
    def _check_out(rp: RunPlan, out, rows=None, offset: int = 0, source=None):
        """Destinations ``out`` checked against the plan (allocated in memory when None); see
        :func:`~emu_backend.inference.run_arrays.check_destinations`."""
        if out is None:
            shape = rp.shape
            return [(np.empty(shape, np.float32), np.empty(shape, np.float32) if rp.velocity else None) for _ in rp.zs]
        return check_destinations(rp.shape, len(rp.zs), rp.velocity, out, source, rows, offset)

    def _run_batches(self, linear_displacement, rp: RunPlan, out, start: int, stop: int, offset: int):
        for batch in rp.tiles.batches(rp.batch_size, start, stop):
            x = np.stack([periodic_read(linear_displacement, t.input_origin, t.input_size) for t in batch])
            xt = torch.from_numpy(x).to(device=self.device, dtype=self.dtype)  # Mpc/h: the model normalises
            xt = xt.contiguous(memory_format=MEMORY_FORMATS[self.memory_format])
            for (dis_out, vel_out), zi in zip(out, rp.zs):
                with precision_context(self.precision, self.device):
                    dis, vel = self.model.predict_tiles(xt, rp.omega_m, zi, rp.velocity)
                check_finite_tiles(batch, zi, x, (("displacement", dis), ("velocity", vel)))
                self._write(dis_out, dis, batch, offset)
                if rp.velocity:
                    self._write(vel_out, vel, batch, offset)
            yield batch

    @staticmethod
    def _write(dst, tiles: torch.Tensor, batch, offset: int = 0) -> None:
        arr = tiles.detach().to("cpu", torch.float32).numpy()
        for t, a in zip(batch, arr):
            (a0, a1, a2), (s0, s1, s2) = t.anchor, t.size
            a0 -= offset
            dst[:, a0:a0 + s0, a1:a1 + s1, a2:a2 + s2] = a[:, :s0, :s1, :s2]
