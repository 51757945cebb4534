"""Particle-mesh operations: mass assignment (NGP/CIC/TSC), Lagrangian-to-Eulerian painting and
the Fourier-space assignment window."""

from .paint import (
    WINDOW_ORDER,
    deconvolve_window,
    lag2eul_scale,
    lagrangian_to_eulerian,
    paint,
    paint_cells,
    window_fourier,
)

__all__ = [
    "WINDOW_ORDER",
    "deconvolve_window",
    "lag2eul_scale",
    "lagrangian_to_eulerian",
    "paint",
    "paint_cells",
    "window_fourier",
]
