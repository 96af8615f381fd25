"""Telling whether a buffer is still referenced elsewhere.

The stream and the Zarr write blocks reuse their buffers once nothing else
holds them (a backend, tensorstore until it has copied the data, a live
view). `sys.getrefcount` counts its own argument, and whether it counts the
local variable passed to it depends on the interpreter (CPython 3.14 may
pass a local without a new reference), so the count of an object held by
one local variable only is measured here, once, the same way the callers
check theirs: `sys.getrefcount(local) <= LOCAL_ONLY + containers`.
"""

from __future__ import annotations

import sys


def _count_of_a_local() -> int:
    probe = [None]  # a fresh object held by this local only
    return sys.getrefcount(probe)


LOCAL_ONLY = _count_of_a_local()
