"""The ``emu-backend`` command line: a thin layer over library calls (see :mod:`emu_backend.cli.main`)."""
