"""chainrule: a scalar reverse-mode autograd engine whose gradients add up, with a small nn library.

>>> from chainrule import Value
>>> a = Value(3.0)
>>> b = a + a
>>> b.backward()
>>> a.grad
2.0
"""

from typing import TYPE_CHECKING, Any

from . import autograd
from .engine import (
    AnomalyError,
    Value,
    backward,
    detect_anomaly,
    dot,
    enable_grad,
    is_grad_enabled,
    logsumexp,
    map_rows,
    no_grad,
    sum_values,
    take,
    topological_order,
)
from .functional import grad, hessian, hvp
from .gradcheck import GradcheckError, gradcheck
from .parameters import Parameter, Parameters, pack_parameters

__version__ = "0.2.0"  # the one place: pyproject.toml and chainrule --version read it

if TYPE_CHECKING:  # what a type checker sees of the names below, which load on first use
    from .compiler import TraceWarning, compile, on_device
    from .draw import draw_dot
    from .explorer import explore
    from .serialize import CheckpointError, load, save

# Features with optional dependencies load on first use, so `import chainrule` stays light.
_LAZY = {
    "save": "serialize",
    "load": "serialize",
    "CheckpointError": "serialize",
    "draw_dot": "draw",
    "explore": "explorer",
    "compile": "compiler",
    "TraceWarning": "compiler",
    "on_device": "compiler",
}


def __getattr__(name: str) -> Any:  # one of the _LAZY names: a function, a class or an error type
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'chainrule' has no attribute {name!r}")


__all__ = [
    "AnomalyError",
    "CheckpointError",
    "GradcheckError",
    "Parameter",
    "Parameters",
    "TraceWarning",
    "Value",
    "autograd",
    "backward",
    "compile",
    "detect_anomaly",
    "dot",
    "draw_dot",
    "enable_grad",
    "explore",
    "grad",
    "gradcheck",
    "hessian",
    "hvp",
    "is_grad_enabled",
    "load",
    "logsumexp",
    "no_grad",
    "on_device",
    "pack_parameters",
    "save",
    "sum_values",
    "take",
    "map_rows",
    "topological_order",
]
