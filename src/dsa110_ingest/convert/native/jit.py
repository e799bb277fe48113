"""pyuvdata's numba kernels, compiled once per machine instead of once per conversion."""

from __future__ import annotations

import importlib

# pyuvdata's baseline-number kernels are ``numba.njit()`` without ``cache=True``: every
# fresh worker process recompiled them (several CPU seconds, more than the whole write of
# a small group). Turning numba's own on-disk cache on for them keeps the compiled code in
# numba's cache directory (``NUMBA_CACHE_DIR``, else beside the module) across processes.
_MODULES = ("pyuvdata.utils.bls_numba",)


def cache_pyuvdata_kernels() -> int:
    """Enable numba's disk cache on pyuvdata's uncached kernels; how many were switched."""
    try:
        from numba.core.caching import NullCache
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return 0
    n = 0
    for name in _MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, NullCache):
                try:
                    obj.enable_caching()
                except RuntimeError:  # no writable cache location: compile as before
                    continue
                n += 1
    return n
