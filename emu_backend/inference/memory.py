"""Peak memory of the package's jobs, estimated before they start, and the memory a machine has.

Every job that can outgrow a machine (``Emulator.predict`` and the streamed and distributed runs,
``run``, ``train``, ``make-training-set``) adds up the arrays it holds at its peak
(:class:`MemoryEstimate`) and, before the work starts, :func:`check_memory` compares that with the
memory available (:func:`available_memory`) and raises :class:`~emu_backend.errors.ResourceError`
naming both when it does not fit. ``check_memory=False`` in the library, ``--ignore-memory-check``
on the command line, runs anyway.

The per-element constants below were measured on this project's CPU machine (2 cores, torch 2.13
with oneDNN, glibc malloc) as the growth of the peak resident set (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``) of small cases, then rounded up; ``tests/test_memory_estimates.py``
repeats such measurements and checks ``measured <= estimate <= 2 x measured``. An estimate is an
upper bound with that margin, not a prediction: allocator fragmentation, another BLAS or a GPU's
convolution workspaces move the real peak.

* **An emulator tile pass**, per voxel of the input tiles of one batch (``(tile + 96)^3`` each):
  ``4.5 w`` floats of activations for a width-``w`` network (measured 3.4 w channels-last and 4.2 w
  contiguous, widths 8-64), ``9 w`` with the forward-mode velocity of map2map_zdep (measured 7.6 w),
  and 5 copies of the 3-channel input (the read tile, its tensor, the layout copy, ``x / 6``,
  ``x D``); 8-byte floats for float64, which on a CPU also takes an im2col buffer of ``27 w`` floats
  per voxel of one tile (no oneDNN path in float64: measured 2.09 GB at width 8, tile 8). On a CUDA
  device the activations count against the device, the read and written tiles against the host.
* **A box** (``run``), per particle: the ICs (16 B held, 80 B while they are made), a snapshot
  (32 B: float32 positions and velocities, int64 IDs), ZA/2LPT temporaries (120 B, float64), the
  emulator's in-memory outputs (24 B per redshift) and their conversion to particles (120 B), a
  writer's unit conversions (64 B), and the P(k) of the plot (600 B: CIC painting and FFT; measured
  ~450 B).
* **A training crop**: 24 floats per channel and input voxel (autograd keeps every activation and its
  tangent: measured 21), 1.5 times that when a rank runs several crops per step (the allocator's
  reuse: measured 1.34), the model with its gradient and two AdamW moments, and the sample files
  held in memory.
* **A training sample** (``make-training-set``), per particle beside its simulation: the sample's
  arrays (12 B of input, 24 B per redshift) and their assembly (200 B; a 2LPT set at two redshifts
  measured 282 B per particle in all at n = 128, estimated 340 B).
* **A particle-mesh run** (``make-training-set``, ``run`` with an N-body backend): 512 MB of JAX and
  XLA (measured intercept ~0.4 GB) and, per mesh cell, 1.2 kB for JaxPM (one particle per cell:
  measured 1.0 kB at mesh factors 2 and 3, 64^3-96^3 cells) or 0.6 kB for pmwd (particles on the
  ``n^3`` grid; not measured here), for the state, the ODE stages, the painted mesh and its FFT, the
  forces and the stored outputs.

The machine's available memory is ``MemAvailable`` of ``/proc/meminfo``, lowered to what a
container's memory cgroup leaves (its limit less its usage, page cache excepted), or a CUDA device's
free memory (``torch.cuda.mem_get_info``). Address-space limits (``ulimit -v``) are not counted:
allocators reserve far more address space than they touch; an allocation refused by one still
becomes a :class:`~emu_backend.errors.ResourceError` (:func:`~emu_backend.errors.from_system_error`).

Examples
--------
>>> est = MemoryEstimate("a 4096^3 box", host_bytes=4096**3 * 200)
>>> format_bytes(est.host_bytes)
'12.5 TiB'
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ResourceError
from ..nn import StyledVNet

__all__ = [
    "MemoryEstimate",
    "available_memory",
    "check_memory",
    "format_bytes",
    "network_parameters",
    "tile_pass_estimate",
    "box_bytes",
    "training_estimate",
    "pm_bytes",
    "OVERRIDE_HINT",
    "BASE_BYTES",
    "BOX_BASE_BYTES",
]

logger = logging.getLogger(__name__)

#: How a caller runs anyway, named in every refusal.
OVERRIDE_HINT = "pass --ignore-memory-check (check_memory=False) to try anyway"

#: One-off allocations of the libraries in a network job (oneDNN primitives, thread pools): 70-95 MB measured.
BASE_BYTES = 96 * 2**20
#: The same for a job without a network (NumPy, SciPy's FFT plans, h5py).
BOX_BASE_BYTES = 32 * 2**20
#: Floats of a w-channel activation per input voxel at the peak of a network call, without and with
#: the forward-mode tangent of the zdep velocity.
ACTIVATION_COPIES, DUAL_ACTIVATION_COPIES = 4.5, 9.0
#: Copies of the 3-channel input tile held during a network call.
INPUT_COPIES = 5
#: Floats per channel and input voxel of a training crop (forward, tangent and autograd's saved tensors).
TRAINING_COPIES = 24.0
#: Factor on the training activations when a rank runs several crops per optimiser step.
TRAINING_REUSE = 1.5
#: Base of a training job: optimiser, loss painting, library workspaces (intercept measured ~0.4 GB).
TRAINING_BASE_BYTES = 512 * 2**20

#: Bytes per particle of the parts of a box job (see the module docstring).
ICS_BYTES, ICS_PEAK_BYTES = 16, 80
SNAPSHOT_BYTES = 32
LPT_TEMP_BYTES = 120
EMULATOR_OUTPUT_BYTES, EMULATOR_CONVERT_BYTES = 24, 120
WRITE_TEMP_BYTES = 64
POWER_TEMP_BYTES = 600
SAMPLE_BYTES, SAMPLE_TEMP_BYTES = 12, 200  # a training sample: its input, and its assembly
#: Bytes per PM mesh cell: JaxPM runs one particle per cell, pmwd keeps the particles on the n^3 grid.
PM_CELL_BYTES = {"jaxpm": 1200, "pmwd": 600}
#: JAX and XLA's own memory in a PM run (compiled programs, runtime).
PM_BASE_BYTES = 512 * 2**20

_MEMINFO = Path("/proc/meminfo")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_NO_LIMIT = 2**60  # cgroup v1 reports "unlimited" as a number near 2^63


def format_bytes(n: float) -> str:
    """``n`` bytes as MiB, GiB or TiB with 3 significant digits (``'1.5 GiB'``)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 2**20:.3g} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak memory of a job, on the host and on its device.

    Attributes
    ----------
    what : str
        The job, in words (named in the refusal).
    host_bytes : int
        Peak host memory [bytes].
    device_bytes : int
        Peak memory of ``device`` [bytes]; 0 for a CPU job (its arrays are host memory).
    device : str
        The torch device of ``device_bytes``.
    advice : str
        What makes the job smaller (named in the refusal).
    """

    what: str
    host_bytes: int
    device_bytes: int = 0
    device: str = "cpu"
    advice: str = "use a smaller problem or a machine with more memory"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_room() -> int | None:
    """What the memory cgroup of this process still allows (limit - usage + inactive page cache), or None."""
    for limit_file, usage_file, stat_file, cache_key in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current", _CGROUP_V2 / "memory.stat", "inactive_file"),
        (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes", _CGROUP_V1 / "memory.stat",
         "total_inactive_file"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < _NO_LIMIT:
            return max(0, limit - usage + _stat_field(stat_file, cache_key))
    return None


def _host_available() -> tuple[int | None, str]:
    avail = None
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    source = "MemAvailable of /proc/meminfo"
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            source = "free physical pages (sysconf)"
        except (ValueError, OSError):
            avail = None
    room = _cgroup_room()
    if room is not None and (avail is None or room < avail):
        return room, "the container's memory cgroup: its limit less its usage"
    return avail, source


def available_memory(device="cpu") -> tuple[int | None, str]:
    """The memory a job can still use now, and where the number comes from.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"`` (the host) or a CUDA device.

    Returns
    -------
    (int or None, str)
        Bytes available (None where the system does not say) and their source, e.g.
        ``"MemAvailable of /proc/meminfo"`` or ``"free memory of cuda:0"``.

    Examples
    --------
    >>> n, source = available_memory()
    >>> n is None or n > 0
    True
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return int(free), f"free memory of cuda:{index}"
    return _host_available()


def check_memory(estimate: MemoryEstimate) -> None:
    """Refuse a job whose estimated peak does not fit in the available memory.

    Parameters
    ----------
    estimate : MemoryEstimate

    Raises
    ------
    ResourceError
        Naming the job, the estimate, the available memory and its source, what makes the job
        smaller and :data:`OVERRIDE_HINT`.
    """
    checks = [("cpu", estimate.host_bytes)]
    if torch.device(estimate.device).type != "cpu":
        checks.append((estimate.device, estimate.device_bytes))
    for device, need in checks:
        avail, source = available_memory(device)
        if avail is None:
            logger.debug("available memory of %s unknown: %s not checked (%s)", device, estimate.what,
                         format_bytes(need))
            continue
        logger.debug("%s: estimated peak %s on %s, %s available", estimate.what, format_bytes(need), device,
                     format_bytes(avail))
        if need > avail:
            where = "" if device == "cpu" else f" on {device}"
            raise ResourceError(f"{estimate.what} needs about {format_bytes(need)} of memory{where} at its peak "
                                f"(estimated), but {format_bytes(avail)} is available ({source}); "
                                f"{estimate.advice}, or {OVERRIDE_HINT}")


def network_parameters(width: int, style_size: int = 2) -> int:
    """Number of parameters of a ``StyledVNet(style_size, 3, 3, width)``, counted on the meta device."""
    with torch.device("meta"):
        net = StyledVNet(style_size, width=width)
    return sum(p.numel() for p in net.parameters())


def tile_pass_estimate(what: str, *, width: int, input_size, batch: int, velocity_dual: bool = False,
                       n_networks: int = 1, n_params: int = 0, itemsize: int = 4, device="cpu",
                       host_bytes: int = 0) -> MemoryEstimate:
    """Peak memory of one batch of emulator tiles through the network.

    Parameters
    ----------
    what : str
        The job, for the refusal.
    width : int
        Network channel width.
    input_size : sequence of 3 int
        Input tile cells per axis (the largest tile's compute size + 96).
    batch : int
        Tiles per network call (at most the number of tiles).
    velocity_dual : bool
        Velocities by the forward-mode tangent (map2map_zdep): twice the activations.
    n_networks : int
        Networks held (map2map_emu with velocities: 2, run one after the other).
    n_params : int
        Parameters of one network.
    itemsize : int
        Bytes per float of the network's dtype (4 or 8).
    device : str or torch.device
        Where the network runs; on CUDA the activations count against the device.
    host_bytes : int
        Further host memory of the caller (its in-memory outputs, the input scan).

    Returns
    -------
    MemoryEstimate
    """
    voxels = int(math.prod(int(s) for s in input_size))
    copies = DUAL_ACTIVATION_COPIES if velocity_dual else ACTIVATION_COPIES
    activations = batch * voxels * (copies * width + INPUT_COPIES * 3) * itemsize
    weights = n_networks * n_params * itemsize * 2  # the weights and their folded copies
    read_write = 2 * 3 * batch * voxels * 4  # the read input tiles and the written output tiles, float32
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu and itemsize == 8:
        activations += 27 * width * voxels * itemsize  # slow_conv3d's im2col buffer, one tile at a time
    advice = "use a smaller tile_size or batch_size (--tile-size, --batch-size)"
    if on_cpu:
        return MemoryEstimate(what, int(BASE_BYTES + activations + weights + read_write + host_bytes), advice=advice)
    return MemoryEstimate(what, int(BASE_BYTES + read_write + host_bytes),
                          int(BASE_BYTES + activations + weights), str(device), advice)


def box_bytes(n: int, n_outputs: int, *, backend: str = "2lpt", plot: bool = False, baseline: bool = False,
              sample: bool = False, pm: int = 0) -> int:
    """Peak host memory [bytes] of a box job on ``n^3`` particles (``run``, one training simulation).

    The ICs are held throughout; the peak is the largest of making them, running the backend to the
    ``n_outputs`` snapshots (all held), writing one, and the plot's P(k) (with a baseline's
    snapshots held too). ``backend``: ``"emulator"`` (in-memory outputs, then particles),
    ``"za"``/``"2lpt"`` and other backends (LPT-like temporaries, plus ``pm`` bytes of a PM run, see
    :func:`pm_bytes`). ``sample``: a training sample is assembled from the snapshots and written. The
    emulator's tile pass is not included (see :func:`tile_pass_estimate`).

    Examples
    --------
    >>> format_bytes(box_bytes(1024, 2, backend="2lpt", plot=True, baseline=True))
    '744 GiB'
    """
    particles = n**3
    if backend == "emulator":
        running = n_outputs * (EMULATOR_OUTPUT_BYTES + SNAPSHOT_BYTES) + EMULATOR_CONVERT_BYTES
    else:
        running = n_outputs * SNAPSHOT_BYTES + LPT_TEMP_BYTES
    phases = [ICS_PEAK_BYTES - ICS_BYTES, running, n_outputs * SNAPSHOT_BYTES + WRITE_TEMP_BYTES]
    if plot:
        phases.append(n_outputs * SNAPSHOT_BYTES * (2 if baseline else 1) + POWER_TEMP_BYTES)
    if sample:
        phases.append(n_outputs * (SNAPSHOT_BYTES + EMULATOR_OUTPUT_BYTES) + SAMPLE_BYTES + SAMPLE_TEMP_BYTES)
    return int(BOX_BASE_BYTES + particles * (ICS_BYTES + max(phases)) + pm)


def pm_bytes(n: int, mesh_factor: int, backend: str) -> int:
    """Peak memory [bytes] of a particle-mesh run of ``n^3`` particles on a ``(mesh_factor n)^3`` mesh.

    ``backend``: ``"jaxpm"`` or ``"pmwd"``; another name is costed as JaxPM (one particle per cell).

    Examples
    --------
    >>> format_bytes(pm_bytes(4096, 3, "jaxpm"))
    '2.03e+03 TiB'
    """
    return int(PM_BASE_BYTES + (mesh_factor * n) ** 3 * PM_CELL_BYTES.get(backend, PM_CELL_BYTES["jaxpm"]))


def training_estimate(what: str, *, width: int, crop: int, crops_per_rank: int, data_bytes: int = 0,
                      device="cpu") -> MemoryEstimate:
    """Peak memory of a training run: one crop's forward, tangent and backward pass, the model and its
    optimiser state, and the training data held in memory.

    Parameters
    ----------
    what : str
        The job, for the refusal.
    width : int
        Network channel width.
    crop : int
        Output crop size [cells]; the input is ``crop + 96``.
    crops_per_rank : int
        Crops this rank runs per optimiser step (one after the other).
    data_bytes : int
        Sample-file arrays held in memory [bytes].
    device : str or torch.device
        On CUDA the pass and the model count against the device.

    Returns
    -------
    MemoryEstimate
    """
    voxels = (crop + 96) ** 3
    reuse = TRAINING_REUSE if crops_per_rank > 1 else 1.0
    activations = reuse * TRAINING_COPIES * width * voxels * 4
    model = 4 * network_parameters(width) * 4  # weights, gradients, two AdamW moments (float32)
    crop_arrays = 3 * (voxels + 2 * crop**3) * 4 * 2  # a drawn crop and its tensors
    advice = "use a smaller crop or width (--crop, --width)"
    if torch.device(device).type == "cpu":
        return MemoryEstimate(what, int(TRAINING_BASE_BYTES + activations + model + crop_arrays + data_bytes),
                              advice=advice)
    return MemoryEstimate(what, int(BASE_BYTES + crop_arrays + data_bytes),
                          int(TRAINING_BASE_BYTES + activations + model), str(device), advice)
