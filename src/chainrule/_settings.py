"""The environment variables chainrule reads, all of them, in one place.

Every other module asks here instead of reading ``os.environ`` itself, so this table is the
whole list. Each is read when it is needed, not once at import, so a test (or a program) that
sets one before the call it concerns is heard; only ``CHAINRULE_PURE_PYTHON`` matters at
import too, when engine.py decides whether to load its C loops.

=========================  ==================================================================
variable                   what it does
=========================  ==================================================================
``CHAINRULE_PURE_PYTHON``  set and not ``0``: no C at all. The engine runs its Python loops
                           (engine.py), chainrule.compile builds and loads no C (native.py).
``CHAINRULE_BACKEND``      chainrule.compile's backend when ``compile(fn)`` names none
                           (``auto``, ``numpy``, ``c``); empty or unset: ``auto``.
``CHAINRULE_SCALAR_REPLAY``  ``0``: never replay a thin tape node by node
                           (compiler/backends/scalar.py); the test suite sets it to test the
                           group-by-group replay on them.
``CHAINRULE_CACHE``        the folder for the C backend's built programs (under ``c/``).
``XDG_CACHE_HOME``         the same when ``CHAINRULE_CACHE`` is unset (under ``chainrule/c/``);
                           with neither, ``~/.cache/chainrule/c``.
``CC``                     the C compiler (with flags) for ``backend="c"``; unset: the first of
                           ``cc``, ``gcc``, ``clang`` on the PATH.
=========================  ==================================================================

>>> import os
>>> saved = os.environ.pop("CHAINRULE_BACKEND", None)
>>> backend() is None
True
>>> os.environ["CHAINRULE_BACKEND"] = "numpy"
>>> backend()
'numpy'
>>> del os.environ["CHAINRULE_BACKEND"]
>>> if saved is not None:  # as it was
...     os.environ["CHAINRULE_BACKEND"] = saved
"""

from __future__ import annotations

import os


def _get(name: str) -> str | None:
    """The variable's value, None when it is unset or empty (an empty one means unset)."""
    return os.environ.get(name) or None


def pure_python() -> bool:
    """``CHAINRULE_PURE_PYTHON`` set to anything but ``0``: run on Python alone, no C."""
    return _get("CHAINRULE_PURE_PYTHON") not in (None, "0")


def backend() -> str | None:
    """``CHAINRULE_BACKEND``: chainrule.compile's default backend, None when unset."""
    return _get("CHAINRULE_BACKEND")


def scalar_replay() -> bool:
    """False when ``CHAINRULE_SCALAR_REPLAY=0`` forbids replaying thin tapes node by node."""
    return _get("CHAINRULE_SCALAR_REPLAY") != "0"


def cache_folder() -> str | None:
    """``CHAINRULE_CACHE``: the folder the user names for built programs, None when unset."""
    return _get("CHAINRULE_CACHE")


def xdg_cache_home() -> str | None:
    """``XDG_CACHE_HOME``: the user's cache folder, None when unset."""
    return _get("XDG_CACHE_HOME")


def c_compiler() -> str | None:
    """``CC``: the C compiler's command line as the user wrote it, None when unset."""
    return _get("CC")
