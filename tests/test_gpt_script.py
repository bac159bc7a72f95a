"""A GPT training script in the style of the pure-Python GPT scripts runs on chainrule unchanged.

The model (benchmarks/gpt_style.py: one transformer layer, 4 heads, width 16, context 16,
softmax cross-entropy, Adam, one name per step) is written against no engine in particular.
It is trained for a few steps twice from the same seed: on ``MinimalValue``, the scripts' own
engine design (each node stores its children and their local gradients; backward pushes
``local * grad`` down a topological order), and on ``chainrule.Value``. The losses of every
step, the gradients of the first step and the parameters at the end must agree to 1e-9.

The scripts also add ops by building nodes directly, ``Value(data, children, local_grads)``;
the last tests check that chainrule's ``Value`` accepts that form and backpropagates through it.
"""

import importlib.util
import math
from pathlib import Path

import pytest

import chainrule


def _load_gpt_style():
    # The model lives with the benchmark that times it; load it from there by path.
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpt_style.py"
    spec = importlib.util.spec_from_file_location("gpt_style", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpt = _load_gpt_style()
MinimalValue = gpt.MinimalValue

STEPS = 5
SEED = 42
CHARS = gpt.vocabulary(gpt.NAMES)
VOCAB_SIZE = len(CHARS) + 1  # the letters and the boundary token


def agree(x, y, tol=1e-9):
    return abs(x - y) <= tol * max(1.0, abs(y))


def run(Value):
    """First-step gradients, per-step losses and final parameters of a short training run."""
    params = gpt.init_params(Value, VOCAB_SIZE, SEED)
    first = gpt.name_loss(params, gpt.encode(gpt.NAMES[0], CHARS))
    first.backward()
    first_grads = [p.grad for p in gpt.flat_params(params)]
    for p in gpt.flat_params(params):
        p.grad = 0
    adam = gpt.adam_state(params)
    losses = [
        gpt.step(params, gpt.encode(gpt.NAMES[k], CHARS), adam, gpt.lr_at(k, STEPS)) for k in range(STEPS)
    ]
    return {
        "first_loss": first.data,
        "first_grads": first_grads,
        "losses": losses,
        "params": [p.data for p in gpt.flat_params(params)],
    }


@pytest.fixture(scope="module")
def runs():
    return {"minimal": run(MinimalValue), "chainrule": run(chainrule.Value)}


def test_same_seed_same_initial_parameters():
    ours = gpt.flat_params(gpt.init_params(chainrule.Value, VOCAB_SIZE, SEED))
    theirs = gpt.flat_params(gpt.init_params(MinimalValue, VOCAB_SIZE, SEED))
    assert len(ours) == len(theirs) == (2 * VOCAB_SIZE + gpt.BLOCK_SIZE) * 16 + 4 * 16 * 16 + 2 * 64 * 16
    assert [p.data for p in ours] == [p.data for p in theirs]


def test_first_step_loss_and_gradients_agree(runs):
    ours, theirs = runs["chainrule"], runs["minimal"]
    assert agree(ours["first_loss"], theirs["first_loss"])
    assert any(g != 0 for g in theirs["first_grads"])
    for i, (g_ours, g_theirs) in enumerate(zip(ours["first_grads"], theirs["first_grads"], strict=True)):
        assert agree(g_ours, g_theirs), (i, g_ours, g_theirs)


def test_every_step_loss_agrees(runs):
    ours, theirs = runs["chainrule"]["losses"], runs["minimal"]["losses"]
    assert len(ours) == len(theirs) == STEPS
    for k, (x, y) in enumerate(zip(ours, theirs)):
        assert agree(x, y), (k, x, y)
    # The first step's loss is the first-step loss computed on its own.
    assert ours[0] == runs["chainrule"]["first_loss"]


def test_parameters_after_training_agree(runs):
    ours, theirs = runs["chainrule"]["params"], runs["minimal"]["params"]
    assert all(isinstance(x, float) for x in ours)
    start = [p.data for p in gpt.flat_params(gpt.init_params(MinimalValue, VOCAB_SIZE, SEED))]
    assert theirs != start  # training moved them, so the comparison means something
    for i, (x, y) in enumerate(zip(ours, theirs, strict=True)):
        assert agree(x, y), (i, x, y)


@pytest.mark.parametrize("Value", [MinimalValue, chainrule.Value], ids=["minimal", "chainrule"])
def test_a_model_that_predicts_nothing_has_loss_log_vocabulary(Value):
    """With a zero output layer every logit is 0, so each next token gets probability 1/V."""
    params = gpt.init_params(Value, VOCAB_SIZE, SEED)
    params["lm_head"] = [[Value(0.0) for _ in row] for row in params["lm_head"]]
    loss = gpt.name_loss(params, gpt.encode("olivia", CHARS))
    assert agree(loss.data, math.log(VOCAB_SIZE), 1e-12)


# ---------------------------------------------------------------------------------------------
# Nodes built directly from children and local gradients, as the scripts' ops are


def scripts_tanh(Value, x):
    """tanh added the scripts' way: the node carries d tanh(x)/dx = 1 - tanh(x)^2."""
    t = math.tanh(x.data)
    return Value(t, (x,), (1 - t**2,))


@pytest.mark.parametrize("Value", [MinimalValue, chainrule.Value], ids=["minimal", "chainrule"])
def test_local_gradient_nodes_mixed_with_built_in_ops(Value):
    x, y = Value(0.3), Value(-1.7)
    t = scripts_tanh(Value, x * y + x)
    f = t * y + t
    f.backward()
    # f = t (y + 1) with t = tanh(xy + x): the chain rule by hand
    tt = math.tanh(0.3 * -1.7 + 0.3)
    dt_dh = 1 - tt**2
    assert agree(f.data, tt * (-1.7 + 1), 1e-12)
    assert agree(x.grad, (-1.7 + 1) * dt_dh * (-1.7 + 1), 1e-12)
    assert agree(y.grad, (-1.7 + 1) * dt_dh * 0.3 + tt, 1e-12)


def test_local_gradients_multiply_the_incoming_gradient():
    x, y = chainrule.Value(1.0), chainrule.Value(2.0)
    z = chainrule.Value(5.0, (x, y), (2.0, 3.0))  # a node claiming dz/dx = 2 and dz/dy = 3
    (z * z).backward()  # d(z^2)/dz = 2z = 10
    assert (x.grad, y.grad) == (20.0, 30.0)


def test_local_gradients_by_keyword_and_a_child_listed_twice():
    x = chainrule.Value(4.0)
    doubled = chainrule.Value(8.0, children=(x, x), local_grads=(1.0, 1.0))
    doubled.backward()
    assert doubled.data == 8.0
    assert x.grad == 2.0  # one from each listing, added up
