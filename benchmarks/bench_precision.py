"""Error and speed of each inference precision and ``torch.compile`` mode, against float32 eager.

Accuracy: the published zdep network with the golden random weights on the golden 104^3 input
(``../shared/golden``), displacement and velocity, each mode against the reference code's float64
output; the float32 eager row is the floor. Speed: the same network on one input tile of ``--tile``
output cells (input ``tile + 96``), displacement only and with velocity, as a ratio to float32 eager
in the same process. ``--box N`` also times a whole N^3 box (the speed issue's GPU targets are
256^3 on one H100: < 0.25 s displacement only, < 0.5 s with velocities).

First, one convolution of the timing's width on a 16^3 input is timed in every real precision against
float32 (the per-convolution probe). A precision more than ``--max-slowdown`` times slower there has no
hardware support on this device (bf16 and fp16 autocast on a CPU without AVX512-BF16/FP16 or AMX run
oneDNN's reference kernels, hundreds of times slower): its real rows are skipped, with the probe's
ratio printed as the reason, and its emulated round-off rows still run.

Usage::

    python benchmarks/bench_precision.py --device cpu --modes fp32 bf16 fp16 fp32+compile
    python benchmarks/bench_precision.py --device cuda --tile 128 --box 256 \\
        --modes fp32 tf32 bf16 fp16 fp16+reduce-overhead
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from _timing import best_time, smoke_banner

from emu_backend.checkpoints import load_published
from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower, growth_factor
from emu_backend.ics import linear_field, white_noise
from emu_backend.inference import Emulator, ZdepConvention, default_emulator
from emu_backend.inference.acceleration import emulate_precision, precision_context
from emu_backend.inference.emulator import MEMORY_FORMATS
from emu_backend.nn import StyledVNet
from emu_backend.nn.normalisation import velocity_norm

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
CASE = ("zdep", "tile_n104_om0p25_z1p0", 0.25, 1.0)


def parse_mode(text: str) -> tuple[str, str | None]:
    """``"bf16"`` -> ("bf16", None); ``"fp16+reduce-overhead"`` -> ("fp16", "reduce-overhead")."""
    precision, _, compile_mode = text.partition("+")
    return precision, compile_mode or None


#: Time a warm-up call (which also compiles) before the timed ones; off in smoke mode.
WARM_UP = True


def timed(fn, device: torch.device, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up (which also compiles), the GPU synchronised."""
    return best_time(fn, repeat, warm_up=WARM_UP, sync=torch.cuda.synchronize if device.type == "cuda" else None)


def conv_slowdown(precision: str, device: torch.device, width: int, n: int = 16, repeat: int = 2) -> float:
    """Time of one ``width``-channel 3^3 convolution on an ``n``^3 input (channels-last on a CPU) in
    ``precision``, over float32's in the same process (best of ``repeat`` after a warm-up)."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format
    x = torch.randn(1, width, n, n, n, generator=g).to(device).contiguous(memory_format=fmt)
    w = torch.randn(width, width, 3, 3, 3, generator=g).to(device).contiguous(memory_format=fmt)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run(p: str) -> float:
        def call():
            with torch.no_grad(), precision_context(p, device):
                torch.nn.functional.conv3d(x, w)
        return best_time(call, repeat, warm_up=True, sync=sync)

    return run(precision) / run("fp32")


def accuracy(net: StyledVNet, device: str, precision: str, compile_mode: str | None,
             emulated: str | None = None) -> tuple[float, float]:
    """Max |error| / std of the golden float64 reference, (displacement, velocity), normalised units.

    ``emulated``: run float32 under :func:`emulate_precision` of that precision instead.
    """
    name, case, om, z = CASE
    x = np.load(GOLDEN / "input_n104.npy")[0].astype(np.float64) * 6.0  # Mpc/h, (3, 104, 104, 104)
    emu = Emulator(ZdepConvention(net), device=device, precision=precision, compile_mode=compile_mode,
                   allow_extrapolation=True)
    ref_dis = np.load(GOLDEN / name / case / "output_f64.npy")[0]
    ref_vel = np.load(GOLDEN / name / case / "velocity_f64.npy")[0]
    with emulate_precision(emulated) if emulated else contextlib.nullcontext():
        pred = _centre_tile(emu, x, om, z)
    dis = pred[0] / 6.0
    vel = pred[1] / float(velocity_norm(z, om))
    return (float(np.abs(dis - ref_dis).max() / ref_dis.std()), float(np.abs(vel - ref_vel).max() / ref_vel.std()))


def _centre_tile(emu: Emulator, x: np.ndarray, om: float, z: float):
    """The model on exactly the golden 104^3 input (no periodic wrap), in the emulator's precision context."""
    xt = torch.from_numpy(x[None].astype(np.float32)).to(emu.device)  # Mpc/h: the model normalises
    xt = xt.contiguous(memory_format=MEMORY_FORMATS[emu.memory_format])
    with precision_context(emu.precision, emu.device):
        dis, vel = emu.model.predict_tiles(xt, om, z, True)
    return dis[0].float().cpu().numpy(), vel[0].float().cpu().numpy()


def shipped_errors(device: str, precision: str, emulated: str | None, ref=None, n: int = 64):
    """The shipped weights on a 64^3 Quijote-fiducial ICs box (seed 0) at z = 0: max and rms |error| /
    std against float32 eager, (displacement max, rms, velocity max, rms); ``ref``: that float32 run."""
    f = linear_field(white_noise(n, seed=0), EisensteinHuPower(QUIJOTE_FIDUCIAL))
    emu = default_emulator(device=device)
    emu = Emulator(emu.model, device=device, precision=precision)
    with emulate_precision(emulated) if emulated else contextlib.nullcontext():
        pred = emu.predict(f.displacement, QUIJOTE_FIDUCIAL.omega_m, 0.0, tile_size=n)
    if ref is None:
        return pred
    out = []
    for a, b in ((pred.displacement, ref.displacement), (pred.velocity, ref.velocity)):
        d = np.abs(a - b)
        out += [d.max() / b.std(), np.sqrt((d ** 2).mean()) / b.std()]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "fp32+default"],
                   help="precision[+compile mode], e.g. fp32 tf32 bf16 fp16 fp16+reduce-overhead "
                        "(without hardware support a precision is skipped: see --max-slowdown)")
    p.add_argument("--max-slowdown", type=float, default=20.0,
                   help="skip the real rows of a precision whose one-convolution probe is this many times "
                        "slower than float32 (no hardware support here); its emulated rows still run")
    p.add_argument("--emulate", nargs="*", default=["tf32", "bf16", "fp16"],
                   help="precisions whose round-off is also measured by emulation (emulate_precision)")
    p.add_argument("--tile", type=int, default=8, help="output tile side of the timing (input: tile + 96)")
    p.add_argument("--width", type=int, default=64, help="network width of the timing (64: published)")
    p.add_argument("--box", type=int, default=0, help="also time a whole box of this many cells per side")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="smallest sizes, every code path (for CI; numbers mean nothing)")
    args = p.parse_args()
    smoke_banner(args.smoke)
    shipped_n, golden_modes, box_modes = 64, None, None
    if args.smoke:  # every mode kind but torch.compile (fp32, autocast), emulation, box timing; tiny sizes.
        # Compiling the network takes 1-2 minutes per graph on 2 cores, whatever its size, so the smoke run
        # leaves it out; the compiled path is tested in tests/test_acceleration.py (one graph: default tier;
        # equal to eager: slow tier).
        args.modes, args.emulate, args.tile, args.width, args.box, args.repeat = (
            ["fp32", "bf16"], ["bf16"], 8, 4, 8, 1)
        shipped_n, golden_modes, box_modes = 16, 1, 1
        global WARM_UP
        WARM_UP = False
    logging.basicConfig(level=logging.ERROR)  # the shipped-weights notice would repeat per row
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = [parse_mode(m) for m in args.modes]
    cpu = f"CPU, {torch.backends.cpu.get_cpu_capability()}"
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    probe_n = 4 if args.smoke else 16
    print(f"\nper-convolution probe: one {args.width}-channel 3^3 convolution on a {probe_n}^3 input, "
          "time over float32's")
    slow = {}
    for precision in dict.fromkeys(p for p, _ in modes if p != "fp32"):
        ratio = conv_slowdown(precision, device, args.width, n=probe_n)
        skip = not args.smoke and ratio > args.max_slowdown
        print(f"{precision:<28} {ratio:9.1f}x" + (f"  > --max-slowdown {args.max_slowdown:g}: its real rows are "
                                                  "skipped (no hardware support on this device)" if skip else ""),
              flush=True)
        if skip:
            slow[precision] = ratio
    modes = [(p, c) for p, c in modes if p not in slow]

    if GOLDEN.is_dir():
        golden_net = load_published(GOLDEN / "zdep" / "checkpoint.pt")
        print("\naccuracy on the golden zdep tile: max |error| / std of the reference code's float64 output "
              "(the fp32 eager row is the float32 floor)")
        print(f"{'mode':<28} {'displacement':>13} {'velocity':>13}")
        for precision, compile_mode in modes[:golden_modes]:
            e_dis, e_vel = accuracy(golden_net, args.device, precision, compile_mode)
            print(f"{precision + ('+' + compile_mode if compile_mode else ''):<28} {e_dis:13.2e} {e_vel:13.2e}",
                  flush=True)
        for precision in args.emulate:
            e_dis, e_vel = accuracy(golden_net, args.device, "fp32", None, emulated=precision)
            print(f"{precision + ' (emulated)':<28} {e_dis:13.2e} {e_vel:13.2e}", flush=True)
    else:
        print(f"\n(no golden vectors at {GOLDEN}: accuracy rows skipped)")

    print(f"\nshipped weights, {shipped_n}^3 box of Quijote-fiducial ICs at z = 0, against float32 eager "
          "(|error| / std: displacement max, rms; velocity max, rms)", flush=True)
    ref = shipped_errors(args.device, "fp32", None, n=shipped_n)
    rows = [(p, None) for p, c in modes if c is None and p != "fp32"] + [("fp32", e) for e in args.emulate]
    for precision, emulated in rows:
        e = shipped_errors(args.device, precision, emulated, ref, n=shipped_n)
        label = emulated + " (emulated)" if emulated else precision
        print(f"{label:<28} " + " ".join(f"{v:9.2e}" for v in e), flush=True)

    torch.manual_seed(0)
    net = StyledVNet(2, width=args.width)
    n = args.tile + 96
    # a periodic box of one tile: the emulator reads it as one (tile + 96)^3 input
    x = torch.randn(3, args.tile, args.tile, args.tile, generator=torch.Generator().manual_seed(1)).numpy() * 6.0
    om, z = 0.3, 0.0
    print(f"\nspeed, width {args.width}, one {n}^3 input tile ({args.tile}^3 output), best of {args.repeat}")
    print(f"{'mode':<28} {'dis s':>9} {'ratio':>7} {'dis+vel s':>10} {'ratio':>7}")
    base = None
    for i, (precision, compile_mode) in enumerate(modes):
        emu = Emulator(ZdepConvention(net), device=args.device, precision=precision, compile_mode=compile_mode)
        t_d = timed(lambda: emu.predict(x, om, z, velocity=False, tile_size=args.tile), device, args.repeat)
        t_v = timed(lambda: emu.predict(x, om, z, velocity=True, tile_size=args.tile), device, args.repeat)
        base = base or (t_d, t_v)
        label = precision + ("+" + compile_mode if compile_mode else "")
        print(f"{label:<28} {t_d:9.3f} {base[0] / t_d:6.2f}x {t_v:10.3f} {base[1] / t_v:6.2f}x", flush=True)
        if args.box and (box_modes is None or i < box_modes):
            xb = torch.randn(3, args.box, args.box, args.box, generator=torch.Generator().manual_seed(2)).numpy()
            tb_d = timed(lambda: emu.predict(xb, om, z, velocity=False, tile_size=args.tile), device, 1)
            tb_v = timed(lambda: emu.predict(xb, om, z, velocity=True, tile_size=args.tile), device, 1)
            print(f"  {args.box}^3 box, tile {args.tile}: displacement {tb_d:.3f} s, with velocity {tb_v:.3f} s",
                  flush=True)
    print(f"\nmodel at z={z}: growth D = {growth_factor(z, om):.4f}; ratios > 1 are faster than {modes[0][0]} eager")


if __name__ == "__main__":
    main()
