"""Keep JAX's process-wide ``jax_enable_x64`` flag as it was across a third-party import.

Some libraries switch float64 on for the whole process when imported: ``import pmwd`` does, and so does
``mcfit`` (imported by ``nbodykit.lab``) whenever JAX is installed. Torch code is unaffected, but every
later JAX computation (our JaxPM backend, users' own JAX code) would silently change precision and
speed. :func:`restore_jax_x64` puts the flag back after such an import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging

__all__ = ["global_x64", "restore_jax_x64"]

logger = logging.getLogger(__name__)


def global_x64(jax) -> bool:
    """The process-wide (not the thread-local) value of ``jax_enable_x64``."""
    state = jax.enable_x64
    return bool(state.get_global()) if hasattr(state, "get_global") else bool(jax.config.jax_enable_x64)


@contextlib.contextmanager
def restore_jax_x64(what: str):
    """Run the body (an import) and restore ``jax_enable_x64`` if it changed; a no-op without JAX.

    Parameters
    ----------
    what : str
        The import being guarded, for the log message.
    """
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    before = global_x64(jax)
    try:
        yield
    finally:
        if global_x64(jax) != before:
            jax.config.update("jax_enable_x64", before)
            logger.info("importing %s switched jax_enable_x64 to %s for the whole process; restored it to %s",
                        what, not before, before)
