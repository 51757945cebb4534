"""Probe: can a Winograd F(2x2x2, 3x3x3) convolution beat oneDNN's conv3d on this CPU?

The speed issue asks for 2x the straightforward implementation at width 64, which on this machine is
beyond the plain conv3d rate (docs/performance.md). Only fewer arithmetic operations could get
there; Winograd F(2,3) needs 64 products per 8 outputs instead of 216 (3.4x fewer). This script
measures one 64 -> 64 valid 3^3 convolution both ways, in the same process, on the input sizes of the
network's level-0 layers, and prints the time split of the Winograd version (input transform,
batched GEMM, output transform). Not used by the package: the result (docs/performance.md) is why.

Layout: channels-last activations; the transforms are sums of strided slices compiled by
``torch.compile`` (one fused loop each), the 64 GEMMs one ``torch.bmm``; the grid of 2^3 output
tiles is processed in chunks of ``--chunk`` tiles so the transformed data stays in cache.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _timing import best_time, smoke_banner

# F(2, 3): y = A^T [(G g) * (B^T d)], per axis (Lavin & Gray 2016)
BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def weight_transform(w: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3, 3) -> (64, Cin, Cout), transform points ordered (a, b, c) over (D, H, W)."""
    u = torch.einsum("ai,bj,ck,oxijk->abcxo", G, G, G, w.double())
    return u.reshape(64, w.shape[1], w.shape[0]).float().contiguous()


def _combine(terms, rows):
    """Signed sums: for each output index tuple, sum of terms[idx] * prod(row coefficients)."""
    out = []
    for ra in rows:
        for rb in rows:
            for rc in rows:
                acc = None
                for i, ca in enumerate(ra):
                    for j, cb in enumerate(rb):
                        for k, cc in enumerate(rc):
                            if ca * cb * cc:
                                t = terms(i, j, k)
                                acc = (t if ca * cb * cc > 0 else -t) if acc is None else \
                                    (acc + t if ca * cb * cc > 0 else acc - t)
                out.append(acc)
    return out


def input_transform(xs: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """(4, 2 nh + 2, 2 nw + 2, C) slab -> (64, nh * nw, C)."""
    vs = _combine(lambda i, j, k: xs[i, j:j + 2 * nh - 1:2, k:k + 2 * nw - 1:2], BT)
    return torch.stack(vs).reshape(64, nh * nw, xs.shape[-1])


def output_transform(m: torch.Tensor, nh: int, nw: int, bias: torch.Tensor) -> torch.Tensor:
    """(64, nh * nw, Co) -> (2, 2 nh, 2 nw, Co) with the bias added."""
    m = m.view(4, 4, 4, nh, nw, -1)
    ys = [y + bias for y in _combine(lambda a, b, c: m[a, b, c], AT)]
    return torch.stack(ys).view(2, 2, 2, nh, nw, -1).permute(0, 3, 1, 4, 2, 5).reshape(2, 2 * nh, 2 * nw, -1)


def winograd_conv3d(x, u, bias, chunk, tin, tout, split):
    """Valid 3^3 convolution of channels-last (1, C, D, H, W), D, H, W even; returns (D-2, H-2, W-2, Co)."""
    _, _, d, h, w = x.shape
    nd, nh, nw = (d - 2) // 2, (h - 2) // 2, (w - 2) // 2
    xl = x[0].permute(1, 2, 3, 0)
    out = torch.empty(2 * nd, 2 * nh, 2 * nw, u.shape[-1])
    hc = max(1, min(nh, chunk // nw))
    mbuf = torch.empty(64, hc * nw, u.shape[-1])
    for i in range(nd):
        for h0 in range(0, nh, hc):
            n = min(hc, nh - h0)
            t0 = time.perf_counter()
            v = tin(xl[2 * i:2 * i + 4, 2 * h0:2 * (h0 + n) + 2], n, nw)
            t1 = time.perf_counter()
            m = torch.bmm(v, u, out=mbuf[:, :n * nw])
            t2 = time.perf_counter()
            out[2 * i:2 * i + 2, 2 * h0:2 * (h0 + n)] = tout(m, n, nw, bias)
            t3 = time.perf_counter()
            split[0] += t1 - t0
            split[1] += t2 - t1
            split[2] += t3 - t2
    return out


def f43_round_off(n: int = 22, c: int = 64) -> tuple[float, float]:
    """Max error / max |output| of float32 Winograd F(4x4x4, 3x3x3) and of float32 direct conv3d,
    both against float64 (points 0, +-1, +-2, inf)."""
    bt = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
    g = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
    at = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                      dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, n, n, n, dtype=torch.float64, generator=gen)
    w = torch.randn(c, c, 3, 3, 3, dtype=torch.float64, generator=gen) / (27 * c) ** 0.5
    ref = F.conv3d(x, w)
    t = (n - 2) // 4
    f32 = torch.float32
    u = torch.einsum("ai,bj,ck,oxijk->abcxo", g, g, g, w).to(f32)
    d = x[0].unfold(1, 6, 4).unfold(2, 6, 4).unfold(3, 6, 4).to(f32)
    v = torch.einsum("ai,bj,ck,xdhwijk->abcdhwx", bt.to(f32), bt.to(f32), bt.to(f32), d)
    m = torch.einsum("abcdhwx,abcxo->abcdhwo", v, u)
    y = torch.einsum("pa,qb,rc,abcdhwo->odphqwr", at.to(f32), at.to(f32), at.to(f32), m).reshape(c, 4 * t, 4 * t, 4 * t)
    scale = ref.abs().max().item()
    wino = (y.double() - ref[0, :, :4 * t, :4 * t, :4 * t]).abs().max().item() / scale
    direct = (F.conv3d(x.to(f32), w.to(f32)).double() - ref).abs().max().item() / scale
    return wino, direct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[34, 66, 126], help="input sides (even)")
    p.add_argument("--chunk", type=int, default=512, help="2^3 output tiles per GEMM")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="one 10^3 input, width 8, transforms not compiled (for CI; numbers mean nothing)")
    args = p.parse_args()
    smoke_banner(args.smoke)
    if args.smoke:
        args.sizes, args.chunk, args.width = [10], 8, 8
    # smoke: the transforms eagerly (the same code; compiling them takes ~2.5 minutes on 2 cores)
    tin = input_transform if args.smoke else torch.compile(input_transform, dynamic=True)
    tout = output_transform if args.smoke else torch.compile(output_transform, dynamic=True)
    torch.manual_seed(0)
    c = args.width
    w = torch.randn(c, c, 3, 3, 3) / (27 * c) ** 0.5
    b = torch.randn(c)
    u = weight_transform(w)
    print(f"{torch.get_num_threads()} threads; 64 -> 64 valid 3^3 convolution, channels-last, best of 2")
    print(f"{'input':>6} {'conv3d s':>9} {'winograd s':>11} {'speed-up':>9} {'in / gemm / out share':>24} {'max err':>9}")
    with torch.no_grad():
        for n in args.sizes:
            x = torch.randn(1, c, n, n, n).contiguous(memory_format=torch.channels_last_3d)
            ref = F.conv3d(x, w, b)
            times = {name: best_time(fn, 2) for name, fn in (
                ("conv", lambda: F.conv3d(x, w, b)),
                ("wino", lambda: winograd_conv3d(x, u, b, args.chunk, tin, tout, [0, 0, 0])))}
            split = [0.0, 0.0, 0.0]
            y = winograd_conv3d(x, u, b, args.chunk, tin, tout, split)
            err = (y.permute(3, 0, 1, 2)[None] - ref).abs().max().item() / ref.abs().max().item()
            share = " / ".join(f"{s / sum(split):.2f}" for s in split)
            print(f"{n:>6} {times['conv']:9.3f} {times['wino']:11.3f} {times['conv'] / times['wino']:8.2f}x "
                  f"{share:>24} {err:9.1e}", flush=True)
    wino, direct = f43_round_off()
    print(f"F(4x4x4, 3x3x3) in float32, one layer: error {wino:.1e} of the output's maximum, "
          f"{wino / direct:.0f}x that of the direct float32 conv3d ({direct:.1e})")


if __name__ == "__main__":
    main()
