"""Optimizers: they move each parameter's ``data`` a little against its ``grad``.

The training loop is the same as in PyTorch::

    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(100):
        optimizer.zero_grad()
        loss = ...            # build the loss from the model's outputs
        loss.backward()
        optimizer.step()

``SGD`` and ``Adam`` follow the algorithms written out in PyTorch's documentation (and the
tests check them step by step against ``torch.optim`` when it is installed). When numpy is
installed they update all parameters in one vectorized pass (gather every ``data`` and
``grad`` into arrays, update, write back), with the same numbers as the loop over parameters
that runs without it; a model of thousands of parameters then spends microseconds, not
milliseconds, in ``step()``. The learning
rate may be a number or a schedule: a function of the 0-based step index, such as
``linear_decay(1.0, 0.1, 100)``, the schedule of micrograd's demo.

>>> from chainrule import Value
>>> from chainrule.optim import SGD
>>> x = Value(3.0)
>>> optimizer = SGD([x], lr=0.25)
>>> for _ in range(3):
...     optimizer.zero_grad()
...     (x * x).backward()        # gradient 2x, so each step halves x
...     optimizer.step()
>>> x.data
0.375
"""

from __future__ import annotations

import array
import collections
import itertools
import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import engine
from ._checks import check_integer, check_number
from .engine import Value, _read_data, _read_grad

if TYPE_CHECKING:
    import numpy

__all__ = ["SGD", "Adam", "Optimizer", "linear_decay"]

LearningRate = float | Callable[[int], float]


class Optimizer:
    """The shared part of every optimizer: the parameter list, the learning rate, the step count.

    A subclass writes the update over arrays in ``_arrays`` (numpy, or jax.numpy inside
    ``chainrule.on_device``) and one parameter at a time in ``_update_one_by_one`` (without
    numpy), or the whole step in ``_update(lr)``; ``step()`` works out the learning rate for
    this step, runs the update and counts the step. ``lr`` is a number or a function
    that maps the 0-based step index ``k`` to the learning rate of step ``k``.

    >>> from chainrule import Value
    >>> optimizer = SGD([Value(1.0)], lr=lambda k: 0.1 / (k + 1))
    >>> optimizer.current_lr(), optimizer.step_count
    (0.1, 0)
    >>> optimizer.step()
    >>> optimizer.current_lr(), optimizer.step_count
    (0.05, 1)
    """

    def __init__(self, params: Iterable[Value], lr: LearningRate) -> None:
        name = type(self).__name__
        if isinstance(params, Value) or not isinstance(params, Iterable):
            raise TypeError(f"{name}: params must be a list of Values, such as model.parameters()")
        self.params: tuple[Value, ...] = tuple(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty list of parameters, so there is nothing to optimize")
        seen = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Value):
                raise TypeError(f"{name}: params[{i}] must be a Value, not {type(p).__name__}")
            if p in seen:  # it would be updated twice per step
                raise ValueError(f"{name}: params[{i}] appears more than once in the list")
            seen.add(p)
        if not callable(lr):
            check_number(name, "lr", lr)
        self.lr = lr
        self.step_count = 0

    # Set by chainrule.on_device while this optimizer's parameters live on a device: what
    # zero_grad and step hand their work to there (see compiler/devices.py).
    _device: Any = None

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0; call it before each ``backward``."""
        if self._device is not None and self._device.zero_grad(self):
            return
        engine.zero_grads(self.params)

    def current_lr(self) -> float:
        """The learning rate the next ``step()`` will use."""
        if not callable(self.lr):
            return float(self.lr)
        lr = self.lr(self.step_count)
        try:
            return check_number(type(self).__name__, f"lr({self.step_count})", lr)
        except TypeError as error:
            raise TypeError(f"{error} (the schedule must return a number)") from None

    def _next_lr_if_known(self) -> float | None:
        """The learning rate of the next step, if working it out runs no code of the user's:
        for a number, or a schedule of this module (``_PURE_SCHEDULES``); else None."""
        if callable(self.lr) and self.lr not in _PURE_SCHEDULES:
            return None
        try:
            return self.current_lr()
        except (TypeError, ValueError):
            return None  # (the step will raise it)

    def step(self) -> None:
        """Update every parameter from its current gradient."""
        engine._reading_numbers(f"{type(self).__name__}.step()")
        lr = self.current_lr()  # checked before any parameter changes
        if self._device is None or not self._device.step(self, lr):
            self._update(lr)
        self.step_count += 1

    def _update(self, lr: float) -> None:
        """The step: with numpy, every parameter at once through ``_arrays``; else one by one."""
        np = _numpy()
        if np is None:
            return self._update_one_by_one(lr)
        data, g, has_grad = _gathered(self, np)
        state = {name: _view(np, self._state[name]) for name in self._state_in_use()}
        with np.errstate(all="ignore"):  # overflow gives inf, as Python's float arithmetic does
            new, state = self._arrays(np, data, g, state, lr, has_grad)
        for name, updated in state.items():
            _update_state(np, self._state[name], updated, has_grad)
        _write_data(self, new, has_grad)

    # A subclass gives its update twice: over arrays, in ``_arrays`` (numpy here, jax.numpy on a
    # device), and one parameter at a time, in ``_update_one_by_one`` (without numpy); and its
    # per-parameter state, in ``_state``.
    _state: dict[str, array.array] = {}

    def _arrays(
        self, np: ModuleType, data: Any, g: Any, state: dict[str, Any], lr: Any, has_grad: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(new data, new state)`` from the parameters' ``data``, their gradients ``g`` and the
        state's arrays; ``has_grad`` as ``_gathered`` gives it (None: every parameter has one)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define _update(lr), or _arrays and _update_one_by_one"
        )

    def _update_one_by_one(self, lr: float) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must define _update(lr), or _arrays and _update_one_by_one"
        )

    def _state_at_home(self) -> None:
        """Bring the state back from the device (chainrule.on_device), where it may be newer."""
        if self._device is not None:
            self._device.state_home(self)

    def _on_device_too(self) -> bool:
        """Whether ``_arrays`` can run on a device (traced by JAX, with no error to raise)."""
        return True

    def _state_in_use(self) -> list[str]:
        """The names of the state ``_arrays`` reads and changes with these settings."""
        return list(self._state)


def _gradient_number(optimizer: str, i: int, p: Value) -> float | None:
    """The gradient of ``params[i]`` as a float; None when its ``grad`` is None (PyTorch skips those).

    After ``backward(create_graph=True)`` a gradient is a Value: the step uses the number in it,
    so ``p.data`` stays a float.
    """
    g = p.grad
    if g is None or type(g) is float:
        return g
    if isinstance(g, Value):
        return g.data
    if isinstance(g, numbers.Real) and not isinstance(g, bool):
        return float(g)
    raise TypeError(f"{optimizer}: params[{i}].grad must be a number, a Value or None, got {g!r}")


def _numpy() -> ModuleType | None:
    """numpy, or None when it is not installed (then the optimizers loop over the parameters)."""
    global _NUMPY
    if _NUMPY is False:
        try:
            import numpy as _NUMPY
        except ImportError:
            _NUMPY = None
    return _NUMPY


_NUMPY: Any = False  # not looked for yet; then numpy, or None


def _gathered(
    optimizer: Optimizer, np: ModuleType
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray | None]:
    """``(data, g, has_grad)``: every parameter's data and gradient as float64 arrays.

    ``has_grad`` marks the parameters whose grad is not None, or is None when all of them have
    one (the common case, which then reads the grads without a Python call per parameter).
    A grad that is not a number raises here, before anything moves.
    """
    params, in_c = optimizer.params, engine._loops_in_c()
    g, data, has_grad = np.empty(len(params)), np.empty(len(params)), None
    if not (in_c and in_c.read_grads(params, g)):  # it reads them when all are floats
        grads = list(map(_read_grad, params))
        if set(map(type, grads)) != {float}:  # a None, an int, a Value, or something wrong
            name = type(optimizer).__name__
            grads = [_gradient_number(name, i, p) for i, p in enumerate(params)]
            has_grad = np.array([g is not None for g in grads])
            grads = [0.0 if g is None else g for g in grads]
        g = np.array(grads, dtype=np.float64)
    if not (in_c and in_c.read_data(params, data)):
        data = np.array(list(map(_read_data, params)), dtype=np.float64)
    return data, g, has_grad


# An optimizer's state (a momentum, Adam's running means and step counts) has one number per
# parameter, kept in an ``array`` like the parameters' own: the scalar loop indexes it, and
# numpy updates it in place, through a view, a whole array at a time.


def _state(typecode: str, n: int) -> array.array:
    return array.array(typecode, bytes(array.array(typecode).itemsize * n))


def _view(np: ModuleType, state: array.array) -> numpy.ndarray:
    return np.frombuffer(state, dtype={"d": np.float64, "q": np.int64, "b": np.int8}[state.typecode])


def _update_state(
    np: ModuleType, state: array.array, new: numpy.ndarray, has_grad: numpy.ndarray | None
) -> None:
    """state = new, but where a parameter had no grad (has_grad False) it keeps its entry."""
    view = _view(np, state)
    if has_grad is None:
        view[:] = new
    else:
        view[has_grad] = new[has_grad]


def _write_data(optimizer: Optimizer, new: numpy.ndarray, has_grad: numpy.ndarray | None) -> None:
    """Store the new numbers in the parameters that had a gradient, in one C-level loop."""
    params: Sequence[Value] = optimizer.params
    if has_grad is not None:
        params = list(itertools.compress(params, has_grad.tolist()))
        new = new[has_grad]
    in_c = engine._loops_in_c()
    if not (in_c and in_c.write_data(params, new)):  # the same loop, in C
        collections.deque(map(setattr, params, itertools.repeat("data"), new.tolist()), maxlen=0)


def _decayed_gradients(optimizer: Optimizer, weight_decay: float) -> list[float | None]:
    """Every parameter's gradient, checked before any parameter moves, with weight decay added.

    PyTorch's weight_decay is L2 regularisation folded into the gradient: the gradient of
    (weight_decay / 2) * p**2 is weight_decay * p.
    """
    name = type(optimizer).__name__
    grads = [_gradient_number(name, i, p) for i, p in enumerate(optimizer.params)]
    return [None if g is None else g + weight_decay * p.data for p, g in zip(optimizer.params, grads)]


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum and weight decay.

    Each step, for every parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        if momentum:  b = g on the first step, then b = momentum * b + g;  g = b
        p = p - lr * g

    This is PyTorch's ``SGD`` with ``dampening=0`` and ``nesterov=False``.

    >>> from chainrule import Value
    >>> p = Value(1.0)
    >>> p.grad = 2.0
    >>> SGD([p], lr=0.1).step()
    >>> p.data                       # 1 - 0.1 * 2
    0.8
    """

    def __init__(
        self,
        params: Iterable[Value],
        lr: LearningRate,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = check_number("SGD", "momentum", momentum)
        self.weight_decay = check_number("SGD", "weight_decay", weight_decay)
        # The momentum of each parameter, and whether it has one yet (from its first gradient).
        self._momenta, self._started = _state("d", len(self.params)), _state("b", len(self.params))
        self._state = {"momenta": self._momenta, "started": self._started}

    @property
    def buffers(self) -> list[float | None]:
        """The momentum of each parameter; None until the parameter's first gradient."""
        self._state_at_home()
        return [b if started else None for b, started in zip(self._momenta, self._started)]

    def _state_in_use(self) -> list[str]:
        return list(self._state) if self.momentum else []

    def _arrays(
        self, np: ModuleType, data: Any, g: Any, state: dict[str, Any], lr: Any, has_grad: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        g = g + self.weight_decay * data
        if self.momentum:
            # a parameter's first gradient starts its momentum: b = g, then b = momentum * b + g
            g = np.where(state["started"] != 0, self.momentum * state["momenta"] + g, g)
            state = {"momenta": g, "started": np.ones_like(state["started"])}
        return data - lr * g, state

    def _update_one_by_one(self, lr: float) -> None:
        grads = _decayed_gradients(self, self.weight_decay)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:  # no gradient: PyTorch leaves the parameter and its momentum alone
                continue
            if self.momentum:
                g = self.momentum * self._momenta[i] + g if self._started[i] else g
                self._momenta[i], self._started[i] = g, 1
            p.data -= lr * g


class Adam(Optimizer):
    """Adam: a step along a running mean of the gradient, scaled by a running mean of its square.

    Each step ``t = 1, 2, ...``, for every parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g          # m and v start at 0
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)               # undo the pull towards the zero start
        v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    This is PyTorch's ``Adam`` (with ``amsgrad=False``); ``weight_decay`` is L2 regularisation,
    not AdamW's decoupled decay.

    >>> from chainrule import Value
    >>> p = Value(1.0)
    >>> p.grad = 0.5
    >>> Adam([p], lr=0.1).step()     # the first step moves by about lr, whatever the gradient's size
    >>> round(p.data, 6)
    0.9
    """

    def __init__(
        self,
        params: Iterable[Value],
        lr: LearningRate = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Iterable):
            raise TypeError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        betas = tuple(betas)
        if len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (beta1, beta2), got {len(betas)} numbers")
        beta1, beta2 = (check_number("Adam", f"betas[{i}]", b) for i, b in enumerate(betas))
        for i, beta in enumerate((beta1, beta2)):
            if not beta < 1.0:
                raise ValueError(f"Adam: betas[{i}] must be in [0, 1), got {beta!r}")
        self.betas = (beta1, beta2)
        self.eps = check_number("Adam", "eps", eps)
        self.weight_decay = check_number("Adam", "weight_decay", weight_decay)
        n = len(self.params)
        self._m, self._v = _state("d", n), _state("d", n)  # running means of g and of g * g
        # Steps taken by each parameter: one whose grad is None skips a step, as in PyTorch.
        self._t = _state("q", n)
        self._state = {"m": self._m, "v": self._v, "t": self._t}

    @property
    def m(self) -> list[float]:
        """The running mean of each parameter's gradient."""
        self._state_at_home()
        return self._m.tolist()

    @property
    def v(self) -> list[float]:
        """The running mean of each parameter's squared gradient."""
        self._state_at_home()
        return self._v.tolist()

    @property
    def t(self) -> list[int]:
        """The steps each parameter has taken."""
        self._state_at_home()
        return self._t.tolist()

    def _arrays(
        self, np: ModuleType, data: Any, g: Any, state: dict[str, Any], lr: Any, has_grad: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        beta1, beta2 = self.betas
        g = g + self.weight_decay * data
        t = state["t"] + 1
        m = beta1 * state["m"] + (1.0 - beta1) * g
        v = beta2 * state["v"] + (1.0 - beta2) * g * g
        m_hat = m / (1.0 - beta1**t)  # undo the pull towards the zero start
        v_hat = v / (1.0 - beta2**t)
        denominator = np.sqrt(v_hat) + self.eps
        if self.eps <= 0.0 and not denominator.all():  # a zero gradient so far: the scalar loop's error
            zero = np.flatnonzero(denominator == 0.0 if has_grad is None else (denominator == 0.0) & has_grad)
            if len(zero):
                raise ZeroDivisionError(
                    f"Adam: params[{zero[0]}] has had only zero gradients and eps is 0, "
                    "so its step would divide by zero"
                )
        return data - lr * m_hat / denominator, {"m": m, "v": v, "t": t}

    def _on_device_too(self) -> bool:
        return self.eps > 0.0  # (else a step may have to raise, which the host checks)

    def _update_one_by_one(self, lr: float) -> None:
        beta1, beta2 = self.betas
        for i, (p, g) in enumerate(zip(self.params, _decayed_gradients(self, self.weight_decay))):
            if g is None:
                continue
            self._t[i] += 1
            self._m[i] = beta1 * self._m[i] + (1.0 - beta1) * g
            self._v[i] = beta2 * self._v[i] + (1.0 - beta2) * g * g
            m_hat = self._m[i] / (1.0 - beta1 ** self._t[i])  # undo the pull towards the zero start
            v_hat = self._v[i] / (1.0 - beta2 ** self._t[i])
            p.data -= lr * m_hat / (math.sqrt(v_hat) + self.eps)


def linear_decay(start: float, end: float, steps: int) -> Callable[[int], float]:
    """A learning-rate schedule that goes in a straight line from ``start`` (step 0) towards ``end``.

    Step ``k`` gets ``start + (end - start) * k / steps``; from step ``steps`` on it stays at
    ``end``. micrograd's demo uses ``lr = 1.0 - 0.9 * k / 100``, which is
    ``linear_decay(1.0, 0.1, 100)``.

    >>> schedule = linear_decay(1.0, 0.1, 100)
    >>> schedule(0), schedule(50), schedule(100), schedule(500)
    (1.0, 0.55, 0.1, 0.1)
    """
    start = check_number("linear_decay", "start", start)
    end = check_number("linear_decay", "end", end)
    steps = check_integer("linear_decay", "steps", steps)

    def schedule(k: int) -> float:
        if k >= steps:
            return end
        return start + (end - start) * k / steps

    _PURE_SCHEDULES.add(schedule)
    return schedule


# The schedules made here: functions of k alone, which chainrule.on_device may call ahead of a
# step (see Optimizer._next_lr_if_known).
_PURE_SCHEDULES: weakref.WeakSet = weakref.WeakSet()
