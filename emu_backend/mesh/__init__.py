"""Particle-mesh operations: mass assignment (NGP/CIC/TSC) and the Fourier-space assignment window.

The published models' Lagrangian-to-Eulerian painting is :mod:`emu_backend.nn.lag2eul`."""

from .paint import (
    WINDOW_ORDER,
    check_window,
    deconvolve_window,
    paint,
    paint_cells,
    window_fourier,
)

__all__ = [
    "WINDOW_ORDER",
    "check_window",
    "deconvolve_window",
    "paint",
    "paint_cells",
    "window_fourier",
]
