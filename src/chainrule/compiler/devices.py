"""Parameters that stay on a device between steps: ``chainrule.on_device``.

A call compiled with ``backend="jax"`` reads every parameter's number, and its ``backward()``
adds into every ``.grad``; an optimizer's step reads both and writes the numbers back. Each
of those is a Python float per parameter: at 66,817 parameters (an MLP 2-256-256-1) that is
several milliseconds a step, more than XLA's own work. Inside ::

    with chainrule.on_device(model, optimizer):
        for step in range(steps):
            optimizer.zero_grad()
            loss = fast(X, y)              # compiled with backend="jax"
            loss.backward()
            optimizer.step()

the parameters' numbers and gradients live in two arrays on JAX's device instead: the compiled
call reads them there, ``backward()`` adds into them there and the optimizer updates them there
(its ``_arrays`` with jax.numpy, compiled by ``jax.jit``), and nothing comes back to the host
unless something asks for it. For the usual loop above the call even works out the step ahead
of it, in the same XLA program (see _Plan): a step is then one XLA call.

Asking stays as it was. For the block, each parameter changes class to a twin of its own
(``Value`` or ``Parameter``), made with the engine's ``numbers_elsewhere``: its ``data`` and
``grad`` (and the slots' own names, ``_data`` and ``_grad``) are properties. Reading one copies
the numbers to the host once, until the device changes them again; writing one changes the
host's copy, and the device's is made again from it when next needed. Everything that reads a
Value's number does it by those names (the C loops leave such objects to the Python), so eager
code in the block, a printed weight, a checkpoint saved half way, all see the current numbers.
When the block ends, the numbers go back into the slots and the parameters back to their class.

What the device cannot hold (a gradient that is None, or a Value after
``backward(create_graph=True)``) sends the parameters home for the rest of the block, with a
warning: it then runs as it would without ``on_device``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from ..engine import Value
from ..parameters import Parameter
from .backends import jax as jax_backend


@contextlib.contextmanager
def on_device(*holders: Any, device: Any = None) -> Iterator[None]:
    """Keep the parameters of ``holders`` on a JAX device inside the block (see above).

    Each holder is a module (anything with ``parameters()``), an optimizer (its parameters
    then, and its steps, run on the device) or a list of Values. ``device`` is a jax device
    (JAX's default when None).

    >>> import pytest; jax = pytest.importorskip("jax")   # (the example needs jax)
    >>> import chainrule
    >>> from chainrule import nn
    >>> from chainrule.optim import SGD
    >>> model = nn.MLP(2, [4, 1])
    >>> optimizer = SGD(model.parameters(), lr=0.1)
    >>> fast = chainrule.compile(lambda x: model(x), backend="jax")
    >>> bias = model.layers[-1].neurons[0].b      # the output's own: its gradient is 1
    >>> before = bias.data
    >>> with chainrule.on_device(model, optimizer):
    ...     optimizer.zero_grad()
    ...     fast([1.0, 2.0]).backward()
    ...     optimizer.step()
    >>> round(bias.data - before, 12)
    -0.1
    """
    jax = jax_backend.load()
    values, optimizers = _collect(holders)
    placement = _Placement(jax, values, device, optimizers)
    try:
        yield
    finally:
        placement.go_home()


def _collect(holders: Iterable[Any]) -> tuple[list[Value], list[Any]]:
    """The parameters of the holders, in the order first met, and the optimizers among them."""
    values: dict[int, Value] = {}
    optimizers = []
    for holder in holders:
        if hasattr(holder, "params") and hasattr(holder, "_arrays"):  # an optimizer
            optimizers.append(holder)
            found = list(holder.params)
        elif hasattr(holder, "parameters"):
            found = list(holder.parameters())
        elif isinstance(holder, Iterable) and not isinstance(holder, (str, bytes, Value)):
            found = list(holder)
        else:
            raise TypeError(
                f"on_device: expected modules, optimizers or lists of Values, got {type(holder).__name__}"
            )
        for v in found:
            if id(v) in _where:
                raise ValueError(f"on_device: {v!r} is on a device already (on_device blocks do not nest)")
            if type(v) not in _TWINS:
                raise TypeError(
                    f"on_device: a parameter must be a Value or a Parameter, got {type(v).__name__}: {v!r}"
                )
            if v.children:
                raise ValueError(f"on_device: {v!r} is a computed Value, not a parameter (a leaf)")
            values.setdefault(id(v), v)
    if not values:
        raise ValueError("on_device: no parameters to put on the device")
    for optimizer in optimizers:
        if optimizer._device is not None:
            raise ValueError(f"on_device: this {type(optimizer).__name__} is on a device already")
    return list(values.values()), optimizers


# id(parameter) -> (its placement, its place there), for every parameter on a device now.
_where: dict[int, tuple[_Placement, int]] = {}


class _Placement:
    """The numbers and gradients of some parameters, each kept on the device, the host or both.

    On the host they are one array each, in the placement's order (``values``); on the device, a
    tuple of arrays each, that array split at ``bounds``: the pieces a compiled call takes (see
    backends/jax.py, _external_pieces), each layer's weights and bias an array of their own. The
    first call that reads all of them in another order or other pieces rearranges them so (see
    ``placed``). An array is None on the side that does not hold the newest numbers.
    """

    def __init__(self, jax: Any, values: list[Value], device: Any, optimizers: list[Any]) -> None:
        import numpy as np

        self.jax, self.np, self.values, self.n = jax, np, values, len(values)
        self.device = device if device is not None else jax.devices()[0]
        self.lock = threading.RLock()
        self.home = False
        self.bounds = np.zeros(0, dtype=np.intp)  # (one piece, until a call asks for others)
        self.version = 0  # (one more each time the order or the pieces change)
        self.tiny = False  # whether the numbers last put on the device hold a subnormal one
        self.zeros: Any = None  # zeros in the pieces there (jax arrays never change: they serve all)
        grads = [v._grad for v in values]
        self.host: dict[str, Any] = {
            "data": np.array([v._data for v in values], dtype=np.float64),
            "grad": None,
        }
        self.on_device: dict[str, Any] = {"data": None, "grad": None}
        self.optimizers = optimizers
        self.state: dict[int, dict[str, Any]] = {}  # id(optimizer) -> its state's arrays on the device
        self.steps: dict[Any, Any] = {}  # the optimizers' updates, compiled
        self.places_of: dict[int, Any] = {}  # id(optimizer) -> the places of its parameters here
        self.plan: _Plan | None = None  # the next step, as the last call worked it out (see ahead)
        self.stepped_on: Any = None  # the gradients the last step read, as they were there
        if not all(type(g) in (float, int) for g in grads):
            warnings.warn(
                "on_device: a parameter's grad is None or a Value, which the device does not hold; "
                "the block runs with the parameters on the host",
                RuntimeWarning,
                stacklevel=4,
            )
            self.home = True
            return
        self.host["grad"] = np.array(grads, dtype=np.float64)
        with self.lock:
            for i, v in enumerate(values):
                _where[id(v)] = (self, i)
                v.__class__ = _TWINS[type(v)]
            for optimizer in optimizers:
                optimizer._device = self
            self._optimizers_placed()

    # -- where the numbers are --

    def places(self, values: Iterable[Value]) -> Any:
        """The places of these parameters here (an index array); a ValueError when one is not here."""
        np = self.np
        found = [_where.get(id(v)) for v in values]
        if any(f is None or f[0] is not self for f in found):
            raise ValueError("on_device: a parameter is not among these")
        return np.array([f[1] for f in found], dtype=np.intp)  # type: ignore[index]

    def _optimizers_placed(self) -> None:
        for optimizer in self.optimizers:
            self.places_of[id(optimizer)] = self.places(optimizer.params)

    def covers(self, optimizer: Any) -> bool:
        """Whether the optimizer's parameters are all of these (in any order)."""
        return len(self.places_of[id(optimizer)]) == self.n

    def arrange(self, order: Any, bounds: Any) -> None:
        """Put the parameters in ``order`` (their places now, in the new order; None: as they
        are) and the device's arrays in pieces split at ``bounds``."""
        with self.lock:
            np = self.np
            data, grad = self.on_the_host("data"), self.on_the_host("grad")
            for optimizer in self.optimizers:
                self.state_home(optimizer)
            self.state.clear()
            if order is not None:
                self.host = {"data": data[order], "grad": grad[order]}
                self.values = [self.values[i] for i in order.tolist()]
                for i, v in enumerate(self.values):
                    _where[id(v)] = (self, i)
                self._optimizers_placed()
            self.bounds = np.asarray(bounds, dtype=np.intp)
            self.on_device = {"data": None, "grad": None}
            self.zeros = None
            self.steps.clear()
            self.plan = None
            self.version += 1

    def on_the_host(self, which: str) -> Any:
        """The numbers (``which``: "data" or "grad") as one numpy array on the host, current."""
        with self.lock:
            if self.host[which] is None:
                self.host[which] = jax_backend.concatenated(self.np, self.there(which))
            return self.host[which]

    def there(self, which: str) -> Any:
        """The numbers as a tuple of jax arrays (the pieces) on the device, current."""
        with self.lock:
            if self.on_device[which] is None:
                host = self.host[which]
                if which == "data":
                    self.tiny = jax_backend.has_subnormal(self.np, host)
                with self.jax.enable_x64(True):
                    self.on_device[which] = self.put(host)
            found = self.on_device[which]
            return found.get() if isinstance(found, _Later) else found

    def put(self, numbers: Any) -> tuple:
        """Numbers in this order onto the device, in the pieces."""
        return tuple(self.jax.device_put(piece, self.device) for piece in self.np.split(numbers, self.bounds))

    def changed_there(self, which: str, numbers: Any) -> None:
        """The device computed new numbers: the host's copy is old."""
        self.on_device[which], self.host[which] = numbers, None

    def read(self, which: str, i: int) -> float:
        return float(self.on_the_host(which)[i])

    def write(self, which: str, i: int, number: Any) -> None:
        with self.lock:
            self.on_the_host(which)[i] = number
            self.on_device[which] = None

    # -- what the compiled call, backward and the optimizers do here --

    def zero_grad(self, optimizer: Any) -> bool:
        with self.lock:
            if self.home:
                return False
            if not self.covers(optimizer):  # (some of them: on the host, sent when next needed)
                self.on_the_host("grad")[self.places_of[id(optimizer)]] = 0.0
                self.on_device["grad"] = None
                return True
            if self.zeros is None:
                with self.jax.enable_x64(True):
                    self.zeros = self.put(self.np.zeros(self.n))
            self.changed_there("grad", self.zeros)
            return True

    def store_sum(self, summed: Any) -> bool:
        """``summed``: (the gradients there, those plus a call's), as the call computed them.
        The sum becomes the gradients, if they are still those: whether they were."""
        with self.lock:
            current = self.on_device["grad"]
            if (current.value if isinstance(current, _Later) else current) is not summed[0]:
                return False
            self.changed_there("grad", summed[1])
            return True

    def add_grad(self, grads: Any, index: Any = None) -> None:
        """``.grad += grads``: ``grads`` the pieces here (``index`` None), or one array for the
        parameters at ``index``."""
        with self.lock:
            if index is None:
                with self.jax.enable_x64(True):
                    return self.changed_there("grad", _add(self.jax)(self.there("grad"), tuple(grads)))
            host = self.on_the_host("grad")
            host[index] += self.np.asarray(grads)
            self.on_device["grad"] = None

    def step(self, optimizer: Any, lr: float) -> bool:
        """The optimizer's step on the device: False (the host then steps) once home, or for
        an update that cannot run there."""
        with self.lock:
            plan, self.plan = self.plan, None
            if self.home or not optimizer._on_device_too():
                return False
            key = (id(optimizer), _settings_of(optimizer))
            self.stepped_on = self.on_device["grad"]
            if plan is not None and plan.fits(self, key, lr):  # (the last call took this step)
                self.changed_there("data", plan.new_data)
                self.state[id(optimizer)] = plan.new_state
                return True
            jax = self.jax
            places = None if self.covers(optimizer) else self.places_of[id(optimizer)]
            if key not in self.steps:
                self.steps[key] = jax.jit(_update(jax, optimizer, places, self.bounds))
            with jax.enable_x64(True):
                data, state = self.steps[key](
                    self.there("data"), self.there("grad"), self.state_for(optimizer), lr
                )
            self.changed_there("data", data)
            self.state[id(optimizer)] = state
            self.stepped_on = self.on_device["grad"]  # (there("grad") may have made them)
            return True

    def ahead(self) -> _Plan | None:
        """The next step, for a compiled call to work out along with its gradients (see
        _Plan), when it can be known now: one optimizer, of all these parameters, whose
        learning rate is a number or one of chainrule's schedules (a function of the user's is
        called only by the step). Else None.

        The plan says what ``.grad`` will be when the call's backward adds to it: zero_grad's
        zeros if it is those now, or if it still holds the gradients the last step read (a loop
        zeroes them before the next backward, micrograd's demo after the call); else what it
        is now. A guess that proves wrong costs time, not numbers: backward then finds another
        ``.grad`` than the plan's and adds its gradients to it as usual."""
        with self.lock:
            if self.home or len(self.optimizers) != 1:
                return None
            optimizer = self.optimizers[0]
            if not (self.covers(optimizer) and optimizer._on_device_too()):
                return None
            lr = optimizer._next_lr_if_known()
            if lr is None:
                return None
            key = (id(optimizer), _settings_of(optimizer))
            grad = self.on_device["grad"]
            zeroed = (
                self.zeros is not None
                and grad is not None
                and (grad is self.zeros or grad is self.stepped_on)
            )
            with self.jax.enable_x64(True):
                before = self.zeros if zeroed else self.there("grad")
                return _Plan(
                    optimizer, key, lr, self.there("data"), self.state_for(optimizer), before, zeroed
                )

    def planned(self, plan: _Plan) -> None:
        """A call worked out ``plan``'s step, and its gradients are ``plan.later``."""
        with self.lock:
            self.plan = plan

    def state_for(self, optimizer: Any) -> dict[str, Any]:
        """The optimizer's state on the device (put there if it is not yet, or again if the
        settings now use other state)."""
        kept = self.state.get(id(optimizer))
        if kept is not None and sorted(kept) != sorted(optimizer._state_in_use()):  # (new settings)
            self.state_home(optimizer)
            del self.state[id(optimizer)]
        if id(optimizer) not in self.state:
            with self.jax.enable_x64(True):
                self.state[id(optimizer)] = self._state_there(optimizer)
        return self.state[id(optimizer)]

    def _state_there(self, optimizer: Any) -> dict[str, Any]:
        """The optimizer's state on the device: in the pieces, in this order, for an optimizer
        of all these parameters; else one array each, in its own order."""
        state = {}
        for name in optimizer._state_in_use():
            kept = optimizer._state[name]
            numbers = self.np.frombuffer(kept, dtype=_DTYPES[kept.typecode])
            if self.covers(optimizer):
                here = self.np.empty_like(numbers)
                here[self.places_of[id(optimizer)]] = numbers
                state[name] = self.put(here)
            else:
                state[name] = self.jax.device_put(numbers.copy(), self.device)
        return state

    def state_home(self, optimizer: Any) -> None:
        """The optimizer's state, as the device has it, into its own arrays on the host."""
        with self.lock:
            for name, numbers in self.state.get(id(optimizer), {}).items():
                kept = optimizer._state[name]
                if self.covers(optimizer):
                    numbers = jax_backend.concatenated(self.np, numbers)[self.places_of[id(optimizer)]]
                self.np.frombuffer(kept, dtype=_DTYPES[kept.typecode])[:] = self.np.asarray(numbers)

    def go_home(self, reason: str = "") -> None:
        """Every number back into its parameter's slots, every parameter back to its class,
        every optimizer's state back to the host: as without ``on_device``."""
        with self.lock:
            if reason and not self.home:
                warnings.warn(
                    f"on_device: {reason}; the parameters are back on the host", RuntimeWarning, stacklevel=4
                )
            if not self.home:
                data, grad = self.on_the_host("data").tolist(), self.on_the_host("grad").tolist()
                for v, x, g in zip(self.values, data, grad):
                    v.__class__ = _HOME[type(v)]
                    v._data, v._grad = x, g
                    del _where[id(v)]
            for optimizer in self.optimizers:
                self.state_home(optimizer)
                optimizer._device = None
            self.home, self.plan = True, None


_DTYPES = {"d": "float64", "q": "int64", "b": "int8"}


def _settings_of(optimizer: Any) -> tuple:
    """The numbers an optimizer's update reads besides the learning rate (its momentum, its
    betas): the compiled update is made again if one changes."""
    return tuple(
        (name, x)
        for name, x in sorted(vars(optimizer).items())
        if not name.startswith("_")
        and name not in ("lr", "step_count", "params")
        and (
            isinstance(x, (int, float))
            or (isinstance(x, tuple) and all(isinstance(y, (int, float)) for y in x))
        )
    )


def _update(jax: Any, optimizer: Any, places: Any, bounds: Any) -> Any:
    """The optimizer's ``_arrays`` on jax.numpy, for jax.jit: (data, grad, state, lr) -> (data,
    state), data and grad in pieces. For an optimizer of all the parameters (``places`` None)
    the update runs piece by piece (it works number by number), its state in the same pieces;
    else on the numbers at ``places``, its state one array each."""
    jnp = jax.numpy

    def update(data, grad, state, lr):
        if places is None:
            new = [
                optimizer._arrays(jnp, d, g, {k: s[i] for k, s in state.items()}, lr)
                for i, (d, g) in enumerate(zip(data, grad))
            ]
            return tuple(d for d, _ in new), {k: tuple(s[k] for _, s in new) for k in state}
        flat = jnp.concatenate(data)
        changed, state = optimizer._arrays(jnp, flat[places], jnp.concatenate(grad)[places], state, lr)
        return tuple(jnp.split(flat.at[places].set(changed), bounds)), state

    return update


class _Plan:
    """The next step of an optimizer, worked out by a compiled call ahead of it.

    A training step's call (backend="jax") computes the gradients, backward adds them into
    ``.grad``, and the optimizer's step reads both: two XLA calls, the second a pass over every
    parameter that XLA could have fused into the first. Instead the call, given a plan by
    ``_Placement.ahead``, also computes the step, with the gradients ``.grad`` will hold after
    its backward, and returns the new numbers and state, not the gradients themselves:
    ``later`` computes those (another call) only if something reads them. The step takes the
    plan's numbers when nothing it read has changed since (``fits``); else it steps as usual.
    """

    __slots__ = (
        "optimizer",
        "key",
        "lr",
        "data",
        "state",
        "before",
        "zeroed",
        "new_data",
        "new_state",
        "later",
    )

    def __init__(
        self, optimizer: Any, key: tuple, lr: float, data: tuple, state: dict, before: Any, zeroed: bool
    ) -> None:
        self.optimizer, self.key, self.lr, self.data, self.state = optimizer, key, lr, data, state
        # .grad when the call's backward adds to it, as ahead expects it; whether that is
        # zero_grad's zeros (then the call need not read them)
        self.before, self.zeroed = before, zeroed
        self.new_data: Any = None
        self.new_state: Any = None
        self.later: _Later | None = None

    def gradients_from(self, compute: Any) -> _Later:
        """The gradients the call computed into the step, as ``compute`` will give them."""
        self.later = _Later(compute)
        return self.later

    def update(self, jax: Any) -> Any:
        """The optimizer's update, for the call to compile into its own program."""
        return _update(jax, self.optimizer, None, None)

    def fits(self, placement: _Placement, key: tuple, lr: float) -> bool:
        """Whether the step about to run is the one planned: the same optimizer, settings and
        learning rate, on the numbers and state the call read and the gradients it computed."""
        return (
            self.later is not None
            and key == self.key
            and lr == self.lr
            and placement.on_device["data"] is self.data
            and placement.on_device["grad"] is self.later
            and placement.state.get(id(self.optimizer)) is self.state
        )


class _Later:
    """Gradients on the device that are computed when first asked for (see _Plan)."""

    __slots__ = ("compute", "value")

    def __init__(self, compute: Any) -> None:
        self.compute, self.value = compute, None

    def get(self) -> Any:
        if self.value is None:
            self.value, self.compute = self.compute(), None
        return self.value


_JITTED: dict[str, Any] = {}


def _add(jax: Any) -> Any:
    if "add" not in _JITTED:
        _JITTED["add"] = jax.jit(lambda grad, grads: tuple(a + b for a, b in zip(grad, grads)))
    return _JITTED["add"]


# ---------------------------------------------------------------------------------------------
# What a compiled call on the jax backend asks (backends/jax.py): are these externals on a
# device, and where.


class _Placed:
    """A compiled call's externals, all on one device: their numbers there, in the call's
    pieces, and their gradients added there."""

    __slots__ = ("placement", "index", "bounds", "same_pieces")

    def __init__(self, placement: _Placement, index: Any, bounds: Any) -> None:
        self.placement, self.index, self.bounds = placement, index, bounds
        # Whether the call's pieces are the placement's own (else they are made from the host).
        self.same_pieces = index is None and placement.np.array_equal(placement.bounds, bounds)

    def externals(self) -> Any:
        if self.same_pieces:
            return self.placement.there("data")
        return tuple(self.placement.np.split(self.on_the_host(), self.bounds))

    def has_tiny(self) -> bool:
        if not self.same_pieces:
            return jax_backend.has_subnormal(self.placement.np, self.on_the_host())
        self.placement.there("data")
        return self.placement.tiny

    def on_the_host(self) -> Any:
        """The numbers, in the call's order, as one array on the host."""
        numbers = self.placement.on_the_host("data")
        return numbers.copy() if self.index is None else numbers[self.index]

    def grad(self) -> Any:
        """The gradients there, in the same pieces (only if ``same_pieces``)."""
        return self.placement.there("grad")

    def store_sum(self, summed: Any) -> bool:
        return self.same_pieces and self.placement.store_sum(summed)

    def ahead(self) -> _Plan | None:
        return self.placement.ahead() if self.same_pieces else None

    def planned(self, plan: _Plan) -> None:
        self.placement.planned(plan)

    def add_grad(self, grads: Any) -> None:
        if self.same_pieces:
            return self.placement.add_grad(grads)
        index = self.index if self.index is not None else self.placement.np.arange(self.placement.n)
        self.placement.add_grad(jax_backend.concatenated(self.placement.np, grads), index)


def placed(externals: Any, cache: dict, bounds: Any) -> _Placed | None:
    """Where these Values are (a _Placed), when they are all on one device and it is not going
    home; else None. A call that reads all of them, in another order or other pieces
    (``bounds``), first rearranges them so. ``cache`` keeps the answer for the last placement
    asked about, while it stays as it was."""
    found = _where.get(id(externals[0]))
    if found is None or found[0].home:
        return None
    placement = found[0]
    if cache.get("placement") is not placement or cache.get("version") != placement.version:
        try:
            index = placement.places(externals)
        except ValueError:
            return None  # (some are not there: the call reads them all on the host)
        if len(index) == placement.n:
            in_order = placement.np.array_equal(index, placement.np.arange(placement.n))
            if not (in_order and placement.np.array_equal(placement.bounds, bounds)):
                placement.arrange(None if in_order else index, bounds)
            index = None
        cache.clear()
        cache.update(placement=placement, version=placement.version, placed=_Placed(placement, index, bounds))
    return cache["placed"]


# ---------------------------------------------------------------------------------------------
# The twins: Value and Parameter, with their numbers on a device.


def _number_property(which: str) -> property:
    slot = Value.__dict__["_" + which]  # (the slot's own descriptor, for a parameter back home)

    def get(self: Value) -> Any:
        found = _where.get(id(self))
        if found is None:  # home already (another thread's block ended between two steps)
            return slot.__get__(self)
        placement, i = found
        return placement.read(which, i)

    def set(self: Value, number: Any) -> None:
        found = _where.get(id(self))
        if found is None:
            return slot.__set__(self, number)
        placement, i = found
        if type(number) in (float, int):
            return placement.write(which, i, number)
        placement.go_home(f"a {which} of {type(number).__name__} is not a number the device holds")
        setattr(self, which, number)

    return property(get, set, doc=f"The {which}, kept on a device (see chainrule.on_device)")


class _ValueOnDevice(Value, numbers_elsewhere=True):
    __slots__ = ()
    data = _data = _number_property("data")
    grad = _grad = _number_property("grad")


class _ParameterOnDevice(Parameter, numbers_elsewhere=True):
    __slots__ = ()
    data = _data = _number_property("data")
    grad = _grad = _number_property("grad")


_ValueOnDevice.__name__ = _ValueOnDevice.__qualname__ = "Value"
_ParameterOnDevice.__name__ = _ParameterOnDevice.__qualname__ = "Parameter"
_TWINS = {Value: _ValueOnDevice, Parameter: _ParameterOnDevice}
_HOME = {twin: home for home, twin in _TWINS.items()}
