"""Training the z-dependent emulator on N-body runs: data, loss, augmentation, the training loop.

Submodules are imported on demand (``emu_backend.io.training_sample`` etc.); nothing here is loaded by
``import emu_backend``.
"""
