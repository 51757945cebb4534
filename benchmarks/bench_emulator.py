"""Emulator throughput on this machine, as ratios against reference runs in the same process.

Prints, for one tile size:
- the network's FLOPs per output voxel;
- achieved GFLOP/s of the emulator forward pass next to the machine's plain ``conv3d`` throughput
  (64 -> 64 channels, 3^3 kernel, same spatial size: the practical limit), as a ratio;
- the speed ratio against a straightforward implementation (per-sample modulated weights applied as a
  grouped convolution, batch 1, float32 - the way the published code runs), same input;
- displacement + velocity time over displacement-only time, for the folded forward-mode path
  (default) and for torch.func.jvp through the network;
- the same with channels-last (NDHWC) activations and weights (``Emulator(memory_format="channels_last")``),
  against the better of the two plain-conv3d layouts;
- the largest speed-up over the straightforward implementation that this machine allows at all: its
  time over the network's FLOPs at the best plain-conv3d throughput;
- the same again after :func:`~emu_backend.inference.cpu_allocator.keep_freed_memory` (an opt-in for
  dedicated CPU inference processes), for ours and the straightforward implementation;
- the emulator's time against the pmwd N-body backend on one box (``bench_vs_nbody.py``; ``--nbody-grid 0``
  skips it).

Usage: python benchmarks/bench_emulator.py [--tile 32] [--width 64] [--threads N] [--repeat 2] [--nbody-grid 64]
       [--pmwd-steps 32] [--smoke]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import best_time, smoke_banner

from emu_backend.inference import ZdepConvention
from emu_backend.nn import StyledConv3d, StyledVNet, blocks
from emu_backend.nn.flops import network_flops


class Straightforward:
    """The published code's way: every styled conv computes per-sample weights and runs a grouped
    convolution over the batch folded into channels (batch 1 here); activations and residual sums
    make new tensors (``nn.LeakyReLU()`` and ``x + y``), not our in-place inference reuse."""

    def __init__(self, net: StyledVNet):
        self.net = net

    def __enter__(self):
        self._orig = StyledConv3d.forward
        # the published code's activations and residual sums allocate new tensors: no in-place reuse
        self._orig_overwrite = blocks._may_overwrite
        blocks._may_overwrite = lambda inplace: False

        def forward(layer, x, style):
            s = style.reshape(1, -1)
            w = layer.folded_weight(s)  # (1, ...) per-sample weights
            op = F.conv_transpose3d if layer.transposed else F.conv3d
            y = op(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *w.shape[2:]), layer.bias, stride=layer.stride, groups=1)
            return y

        StyledConv3d.forward = forward
        return self

    def __exit__(self, *exc):
        StyledConv3d.forward = self._orig
        blocks._may_overwrite = self._orig_overwrite


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tile", type=int, default=32, help="output tile size (input = tile + 96)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--nbody-grid", type=int, default=64, help="box of the N-body comparison (0: skip)")
    p.add_argument("--pmwd-steps", type=int, default=32, help="pmwd steps of the N-body comparison")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]: the network's device")
    p.add_argument("--smoke", action="store_true", help="smallest sizes, every code path (for CI; numbers mean nothing)")
    args = p.parse_args()
    smoke_banner(args.smoke)
    if args.smoke:
        args.tile, args.width, args.repeat, args.nbody_grid, args.pmwd_steps = 8, 4, 1, 16, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.tile + 96
    device = torch.device(args.device)

    def timed(fn, repeat):  # the GPU synchronised before the clock is read
        return best_time(fn, repeat, sync=torch.cuda.synchronize if device.type == "cuda" else None)

    torch.manual_seed(0)
    net = StyledVNet(2, width=args.width).eval().to(device)
    model = ZdepConvention(net)
    x = torch.randn(1, 3, n, n, n, device=device)
    flops = network_flops(net, n)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}{gpu}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {device}")
    print(f"tile: input {n}^3 -> output {args.tile}^3, width {args.width}: {flops / 1e9:.1f} GFLOP per tile, "
          f"{flops / args.tile**3 / 1e6:.2f} MFLOP per output voxel")

    with torch.no_grad():
        # the practical limit: one plain 64->64 3^3 convolution at the tile's full resolution
        xc = torch.randn(1, args.width, n - 4, n - 4, n - 4, device=device)
        wc = torch.randn(args.width, args.width, 3, 3, 3, device=device)
        t_conv = timed(lambda: F.conv3d(xc, wc), args.repeat)
        cl = torch.channels_last_3d
        xcl, wcl = xc.contiguous(memory_format=cl), wc.contiguous(memory_format=cl)
        t_conv_cl = timed(lambda: F.conv3d(xcl, wcl), args.repeat)
        conv_gflops = 2 * args.width**2 * 27 * (n - 6) ** 3 / t_conv / 1e9
        conv_cl_gflops = 2 * args.width**2 * 27 * (n - 6) ** 3 / t_conv_cl / 1e9
        best_conv = max(conv_gflops, conv_cl_gflops)

        t_dis = timed(lambda: model.predict_tiles(x, 0.3, 0.5, velocity=False), args.repeat)
        t_vel = timed(lambda: model.predict_tiles(x, 0.3, 0.5, velocity=True), args.repeat)
        model_jvp = ZdepConvention(net, velocity_method="jvp")
        t_jvp = timed(lambda: model_jvp.predict_tiles(x, 0.3, 0.5, velocity=True), args.repeat)
        net_cl = StyledVNet(2, width=args.width).eval().to(device)
        net_cl.load_state_dict(net.state_dict())
        net_cl.to(memory_format=cl)
        model_cl = ZdepConvention(net_cl)
        x_cl = x.contiguous(memory_format=cl)
        t_dis_cl = timed(lambda: model_cl.predict_tiles(x_cl, 0.3, 0.5, velocity=False), args.repeat)
        t_vel_cl = timed(lambda: model_cl.predict_tiles(x_cl, 0.3, 0.5, velocity=True), args.repeat)
        with Straightforward(net):
            t_ref = timed(lambda: model.predict_tiles(x, 0.3, 0.5, velocity=False), args.repeat)

    emu_gflops = flops / t_dis / 1e9
    print(f"plain conv3d throughput (NCDHW):   {conv_gflops:8.1f} GFLOP/s  (reference, same run)")
    print(f"plain conv3d throughput (NDHWC):   {conv_cl_gflops:8.1f} GFLOP/s  (reference, same run)")
    print(f"emulator forward throughput:       {emu_gflops:8.1f} GFLOP/s  ratio {emu_gflops / conv_gflops:.2f}")
    print(f"emulator displacement only:        {t_dis:8.2f} s per tile  ({t_dis / args.tile**3 * 1e6:.2f} us per voxel)")
    print(f"straightforward implementation:    {t_ref:8.2f} s per tile  speed-up {t_ref / t_dis:.2f}x")
    print(f"displacement + velocity (folded):  {t_vel:8.2f} s per tile  ratio to displacement only {t_vel / t_dis:.2f}")
    print(f"displacement + velocity (jvp):     {t_jvp:8.2f} s per tile  ratio to displacement only {t_jvp / t_dis:.2f}")
    cl_gflops = flops / t_dis_cl / 1e9
    print(f"channels-last forward throughput:  {cl_gflops:8.1f} GFLOP/s  ratio to the best plain conv3d "
          f"{cl_gflops / best_conv:.2f}")
    print(f"channels-last displacement only:   {t_dis_cl:8.2f} s per tile  speed-up over straightforward "
          f"{t_ref / t_dis_cl:.2f}x")
    print(f"channels-last disp. + velocity:    {t_vel_cl:8.2f} s per tile  ratio to channels-last displacement only "
          f"{t_vel_cl / t_dis_cl:.2f}")
    bound = t_ref / (flops / (best_conv * 1e9))
    print(f"largest speed-up over straightforward this machine allows (network FLOPs at the best plain conv3d "
          f"rate): {bound:.2f}x")

    if args.nbody_grid:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_vs_nbody import compare

        print()
        compare(args.nbody_grid, args.width, args.pmwd_steps, jaxpm=False)
        print()

    # last: the allocator setting is process-wide and cannot be undone
    from emu_backend.inference.cpu_allocator import keep_freed_memory

    if device.type != "cpu":
        print("keep_freed_memory is a CPU allocator setting: not measured on", device)
    elif keep_freed_memory():
        with torch.no_grad():
            t_dis_a = timed(lambda: model_cl.predict_tiles(x_cl, 0.3, 0.5, velocity=False), args.repeat)
            t_vel_a = timed(lambda: model_cl.predict_tiles(x_cl, 0.3, 0.5, velocity=True), args.repeat)
            with Straightforward(net):
                t_ref_a = timed(lambda: model.predict_tiles(x, 0.3, 0.5, velocity=False), args.repeat)
        print(f"with keep_freed_memory (opt-in), channels-last: displacement {t_dis_a:.2f} s "
              f"({t_dis_cl / t_dis_a:.2f}x the default allocator; {flops / t_dis_a / 1e9 / best_conv:.2f} of the best "
              f"plain conv3d), + velocity {t_vel_a:.2f} s (ratio {t_vel_a / t_dis_a:.2f}); straightforward "
              f"{t_ref_a:.2f} s: speed-up {t_ref_a / t_dis_a:.2f}x (vs the straightforward one on the default "
              f"allocator: {t_ref / t_dis_a:.2f}x)")
    else:
        print("not glibc: keep_freed_memory does not apply")


if __name__ == "__main__":
    main()
