"""``numba.njit`` with an on-disk cache that never stops an import.

numba keeps compiled kernels beside their source (``__pycache__``), in ``$NUMBA_CACHE_DIR`` or in
the user's cache folder, and raises "no locator available" at import where it can write none of
them: a ``--read-only`` container, a ``--user`` uid that owns nothing in the image, a cache
volume mounted read-only. Then the kernels cache under the temporary directory (a tmpfs ``/tmp``
in a read-only container), and where even that is read-only they compile at every start
(a few seconds) instead of failing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numba

log = logging.getLogger(__name__)
_NO_LOCATOR = "no locator available"


def _fallback_dir() -> Path | None:
    """A cache folder of this uid's under the temporary directory, or None where none is writable."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    path = Path(tempfile.gettempdir()) / f"sononet-numba-{uid}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # numba's own test of a cache folder
    except OSError:
        return None
    return path


def njit(**options: object) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, falling back to a temporary cache folder, then to none."""

    def compile_(fn: Callable) -> Callable:
        global _uncached
        if not _uncached:
            try:
                return numba.njit(cache=True, **options)(fn)
            except RuntimeError as e:
                if _NO_LOCATOR not in str(e):
                    raise
            fallback = _fallback_dir()
            if fallback is not None:
                where = numba.config.CACHE_DIR or "beside the package or in the home folder"
                log.info("numba cannot write its cache (%s); caching compiled kernels in %s", where, fallback)
                os.environ["NUMBA_CACHE_DIR"] = str(fallback)  # spawned workers inherit it
                numba.config.CACHE_DIR = str(fallback)
                return numba.njit(cache=True, **options)(fn)
            log.warning("numba can write no cache folder (not even under %s): kernels compile at every start",
                        tempfile.gettempdir())  # fmt: skip
            _uncached = True
        return numba.njit(cache=False, **options)(fn)

    return compile_


_uncached = False  # set once no folder is writable: the other kernels compile without trying again
