"""A character-level GPT on scalar Values, written the way the pure-Python GPT scripts write it.

This is the workload that tests/test_gpt_script.py checks and benchmarks/bench_gpt.py times:
one transformer layer (4 heads, width 16, context 16), token and position embeddings as lists
of lists of Values, RMSNorm, causal self-attention with a per-token key/value cache, a ReLU
MLP, a language-model head, softmax cross-entropy written with ``exp`` and ``log``, and Adam
written out over a flat list of parameters. It is trained on one name per step.

Every function takes or returns plain lists of Values and never names an engine: the engine is
whatever ``Value`` class ``init_params`` was given, so the same model code runs on chainrule's
``Value`` and on ``MinimalValue`` below (the scripts' own engine design) and the two can be
compared number for number and timed side by side.

>>> chars = vocabulary(NAMES)
>>> params = init_params(MinimalValue, len(chars) + 1, seed=0)
>>> adam = adam_state(params)
>>> loss = step(params, encode("emma", chars), adam, lr=0.01)
>>> abs(loss - math.log(len(chars) + 1)) < 0.5   # the untrained model guesses almost uniformly
True
"""

from __future__ import annotations

import math
import random

# The model's shape, as in the scripts' default run.
N_LAYER = 1
N_HEAD = 4
N_EMBD = 16
BLOCK_SIZE = 16  # the longest context: positions 0..15
HEAD_DIM = N_EMBD // N_HEAD

# Adam's settings in the scripts.
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8
INIT_STD = 0.08

# A fixed training set, so nothing has to be downloaded: 228 common first names, lower case.
NAMES = """
emma olivia ava isabella sophia mia charlotte amelia harper evelyn abigail emily elizabeth sofia
ella madison scarlett victoria aria grace chloe camila penelope riley layla lillian nora zoey
mila aubrey hannah lily addison eleanor natalie luna savannah brooklyn leah zoe stella hazel
ellie paisley audrey skylar violet claire bella aurora lucy anna samantha caroline genesis
aaliyah kennedy kinsley allison maya sarah madelyn adeline alexa ariana elena gabriella naomi
alice sadie hailey eva emilia autumn quinn nevaeh piper ruby serenity willow everly cora kaylee
lydia aubree arianna eliana peyton melanie gianna isabelle julia valentina nova clara vivian
reagan mackenzie madeline liam noah william james oliver benjamin elijah lucas mason logan
alexander ethan jacob michael daniel henry jackson sebastian aiden matthew samuel david joseph
carter owen wyatt john jack luke jayden dylan grayson levi isaac gabriel julian mateo anthony
jaxon lincoln joshua christopher andrew theodore caleb ryan asher nathan thomas leo isaiah
charles josiah hudson christian hunter connor eli ezra aaron landon adrian jonathan nolan
jeremiah easton elias colton cameron carson robert angel maverick nicholas dominic jaxson
greyson adam ian austin santiago jordan cooper brayden roman evan ezekiel xavier jose jace
jameson leonardo bryson axel everett parker kayden miles sawyer jason declan weston micah
ayden wesley luca vincent damian zachary silas gavin chase kai emmett harrison nathaniel
kingston cole tyler bennett bentley ryker tristan brandon kevin luis george ashton rowan
""".split()


def vocabulary(names: list[str]) -> list[str]:
    """The characters that occur in ``names``, sorted; token ``len(chars)`` marks a name's ends."""
    return sorted(set("".join(names)))


def encode(name: str, chars: list[str]) -> list[int]:
    """A name as token ids, with the boundary token before and after it."""
    boundary = len(chars)
    return [boundary] + [chars.index(ch) for ch in name] + [boundary]


# ---------------------------------------------------------------------------------------------
# The scripts' engine design: every node stores its children and the local derivative of its
# value with respect to each child, computed during the forward pass. Backward is then one
# loop: sort the graph, and push ``local gradient * incoming gradient`` into each child.


class MinimalValue:
    """A scalar that remembers its children and their local gradients (the scripts' engine)."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        other = other if isinstance(other, MinimalValue) else MinimalValue(other)
        return MinimalValue(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, MinimalValue) else MinimalValue(other)
        # d(xy)/dx = y and d(xy)/dy = x
        return MinimalValue(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, exponent):  # a number exponent only
        return MinimalValue(self.data**exponent, (self,), (exponent * self.data ** (exponent - 1),))

    def exp(self):
        e = math.exp(self.data)
        return MinimalValue(e, (self,), (e,))

    def log(self):
        return MinimalValue(math.log(self.data), (self,), (1 / self.data,))

    def relu(self):
        return MinimalValue(max(0, self.data), (self,), (float(self.data > 0),))

    # Everything else is made of the ops above, as in the scripts.
    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def backward(self):
        # Recursive depth-first sort, as the scripts do; the model's graphs are a few hundred deep.
        order, visited = [], set()

        def visit(node):
            if node not in visited:
                visited.add(node)
                for child in node._children:
                    visit(child)
                order.append(node)

        visit(self)
        self.grad = 1
        for node in reversed(order):
            for child, local in zip(node._children, node._local_grads):
                child.grad += local * node.grad


# ---------------------------------------------------------------------------------------------
# Parameters


def init_params(Value, vocab_size: int, seed: int) -> dict[str, list[list]]:
    """The model's weight matrices (lists of rows of ``Value``), drawn from N(0, 0.08^2).

    The same seed gives the same numbers whatever the engine, so two engines can be compared.
    """
    rng = random.Random(seed)

    def matrix(rows, cols):
        return [[Value(rng.gauss(0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]

    params = {
        "token_embedding": matrix(vocab_size, N_EMBD),
        "position_embedding": matrix(BLOCK_SIZE, N_EMBD),
        "lm_head": matrix(vocab_size, N_EMBD),
    }
    for layer in range(N_LAYER):
        params[f"layer{layer}.query"] = matrix(N_EMBD, N_EMBD)
        params[f"layer{layer}.key"] = matrix(N_EMBD, N_EMBD)
        params[f"layer{layer}.value"] = matrix(N_EMBD, N_EMBD)
        params[f"layer{layer}.attn_out"] = matrix(N_EMBD, N_EMBD)
        params[f"layer{layer}.mlp_up"] = matrix(4 * N_EMBD, N_EMBD)
        params[f"layer{layer}.mlp_down"] = matrix(N_EMBD, 4 * N_EMBD)
    return params


def flat_params(params: dict[str, list[list]]) -> list:
    """Every parameter Value in one list, in a fixed order (the order Adam's state follows)."""
    return [p for rows in params.values() for row in rows for p in row]


# ---------------------------------------------------------------------------------------------
# The model, one token at a time


def linear(x: list, w: list[list]) -> list:
    """``w @ x`` with ``w`` as a list of rows: one weighted sum per row."""
    return [sum(w_i * x_i for w_i, x_i in zip(row, x)) for row in w]


def rmsnorm(x: list) -> list:
    """Scale ``x`` to unit root-mean-square (no learned gain, as in the scripts)."""
    mean_square = sum(x_i * x_i for x_i in x) / len(x)
    scale = (mean_square + 1e-5) ** -0.5
    return [x_i * scale for x_i in x]


def softmax(logits: list) -> list:
    # Subtracting the largest logit (a plain number, so no gradient flows through it) keeps
    # exp from overflowing and does not change the result.
    largest = max(logit.data for logit in logits)
    exps = [(logit - largest).exp() for logit in logits]
    total = sum(exps)
    return [e / total for e in exps]


def attention(q: list, keys: list[list], values: list[list]) -> list:
    """Multi-head causal attention of one query over the cached keys and values so far."""
    out = []
    for head in range(N_HEAD):
        lo, hi = head * HEAD_DIM, (head + 1) * HEAD_DIM
        q_head = q[lo:hi]
        scores = [sum(q_j * k_j for q_j, k_j in zip(q_head, k[lo:hi])) / HEAD_DIM**0.5 for k in keys]
        weights = softmax(scores)
        out.extend(sum(w_t * v[j] for w_t, v in zip(weights, values)) for j in range(lo, hi))
    return out


def forward_token(params: dict, token: int, position: int, keys: list, values: list) -> list:
    """The logits for the token after ``token``; appends this position's key and value to the caches.

    ``keys[layer]`` and ``values[layer]`` hold one vector per earlier position, so attention
    sees only the past: causality comes from the cache, not from a mask.
    """
    x = [t + p for t, p in zip(params["token_embedding"][token], params["position_embedding"][position])]
    x = rmsnorm(x)
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = linear(x, params[f"layer{layer}.query"])
        keys[layer].append(linear(x, params[f"layer{layer}.key"]))
        values[layer].append(linear(x, params[f"layer{layer}.value"]))
        x = linear(attention(q, keys[layer], values[layer]), params[f"layer{layer}.attn_out"])
        x = [a + b for a, b in zip(x, residual)]
        residual = x
        x = rmsnorm(x)
        x = [h.relu() for h in linear(x, params[f"layer{layer}.mlp_up"])]
        x = linear(x, params[f"layer{layer}.mlp_down"])
        x = [a + b for a, b in zip(x, residual)]
    return linear(x, params["lm_head"])


def name_loss(params: dict, tokens: list[int]):
    """Mean cross-entropy of predicting each next token of one name (at most BLOCK_SIZE of them)."""
    n = min(BLOCK_SIZE, len(tokens) - 1)
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    losses = []
    for position in range(n):
        logits = forward_token(params, tokens[position], position, keys, values)
        probs = softmax(logits)
        losses.append(-probs[tokens[position + 1]].log())
    return (1 / n) * sum(losses)


# ---------------------------------------------------------------------------------------------
# Training


def adam_state(params: dict) -> dict:
    """Adam's first and second moments (one number per parameter) and its step count."""
    count = len(flat_params(params))
    return {"m": [0.0] * count, "v": [0.0] * count, "t": 0}


def step(params: dict, tokens: list[int], adam: dict, lr: float) -> float:
    """One training step on one name: loss, backward, Adam update, gradients reset. Returns the loss."""
    loss = name_loss(params, tokens)
    loss.backward()
    adam["t"] += 1
    t, m, v = adam["t"], adam["m"], adam["v"]
    for i, p in enumerate(flat_params(params)):
        m[i] = BETA1 * m[i] + (1 - BETA1) * p.grad
        v[i] = BETA2 * v[i] + (1 - BETA2) * p.grad**2
        m_hat = m[i] / (1 - BETA1**t)
        v_hat = v[i] / (1 - BETA2**t)
        p.data -= lr * m_hat / (v_hat**0.5 + ADAM_EPS)
        p.grad = 0
    return loss.data


def lr_at(k: int, total_steps: int, base_lr: float = 0.01) -> float:
    """The scripts' schedule: the learning rate falls linearly from ``base_lr`` to zero."""
    return base_lr * (1 - k / total_steps)
