"""chainrule: a scalar reverse-mode autograd engine whose gradients add up, with a small nn library.

>>> from chainrule import Value
>>> a = Value(3.0)
>>> b = a + a
>>> b.backward()
>>> a.grad
2.0
"""

from .engine import (
    AnomalyError,
    Value,
    backward,
    detect_anomaly,
    dot,
    enable_grad,
    is_grad_enabled,
    no_grad,
    sum_values,
    topological_order,
)
from .gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "GradcheckError",
    "Value",
    "backward",
    "detect_anomaly",
    "dot",
    "enable_grad",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "sum_values",
    "topological_order",
]
