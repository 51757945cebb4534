"""The glibc allocator setting used by the CLI on CPU changes speed only, never results."""

import platform
import subprocess
import sys

import pytest

SCRIPT = r"""
import torch
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.inference.cpu_allocator import keep_freed_memory
from emu_backend.nn import StyledVNet

torch.manual_seed(0)
emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
lin = torch.randn(3, 16, 16, 16).numpy() * 3.0
before = emu.predict(lin, 0.3, 0.5, velocity=True)
applied = keep_freed_memory()
after = emu.predict(lin, 0.3, 0.5, velocity=True)
big = torch.empty(64 * 2**20, dtype=torch.uint8)  # > glibc's largest mmap threshold: served by the heap now
big.fill_(1)
same = (before.displacement == after.displacement).all() and (before.velocity == after.velocity).all()
print(applied, bool(same), int(big.sum()) == big.numel())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's (a no-op elsewhere)")
def test_keep_freed_memory_is_applied_and_bit_identical():
    # a fresh process: the setting is process-wide. Exact equality: the allocator cannot change arithmetic.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stdout + out.stderr
