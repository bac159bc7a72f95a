"""A small character-level GPT, built from ``chainrule.nn``'s blocks, with its loss and sampling.

The model is the one of the pure-Python GPT scripts: token and position embeddings, an
RMSNorm, ``n_layer`` transformer blocks (causal multi-head attention with a key/value cache,
then a ReLU MLP), and a linear head that gives one logit per token. It reads a sequence one
token at a time, as the scripts do: ``model(token, position, caches)`` returns the logits for
the next token and appends this position's keys and values to ``caches``.

Text is tokenized by characters: ``chars`` lists the characters (token ``i`` is ``chars[i]``)
and one more token, ``len(chars)``, marks both ends of a name.

>>> import random; random.seed(0)
>>> chars = "abcdefghijklmnopqrstuvwxyz"
>>> model = GPT(len(chars) + 1, chars=chars)
>>> tokens = encode("emma", chars)
>>> tokens
[26, 4, 12, 12, 0, 26]
>>> abs(sequence_loss(model, tokens).data - math.log(27)) < 0.5     # untrained: almost uniform
True
>>> len(sample(model, 3, seed=1))
3
"""

from __future__ import annotations

import math
import numbers
import operator
import random
import unicodedata
from collections.abc import Iterable
from typing import Any

from . import ops
from ._checks import check_integer
from .engine import Value, logsumexp, no_grad, sum_values, take
from .nn import Block, CausalSelfAttention, Embedding, KVCache, Linear, Module, RMSNorm

__all__ = ["GPT", "decode", "encode", "sample", "sequence_loss"]


class GPT(Module, checkpoint=True):
    """A GPT over ``vocab_size`` tokens with a context of ``block_size`` positions.

    Sizes as in the scripts' default run: ``n_layer=1`` block, ``n_head=4`` heads,
    ``n_embd=16`` numbers per vector. Initial weights are N(0, 0.08^2) draws from the global
    ``random`` module (so ``random.seed`` reproduces a model), in the scripts' order: token
    embeddings, position embeddings, the head, then each block. ``chars``, if given, is the
    character of each token but the last (the boundary); ``sample`` needs it, and a
    checkpoint keeps it.

    >>> random.seed(0)
    >>> model = GPT(27)
    >>> caches = model.new_caches()
    >>> logits = model(26, 0, caches)             # the boundary token at position 0
    >>> len(logits), len(model.parameters())      # 2*27*16 + 16*16 + 12*16*16
    (27, 4192)

    Its parameters are listed in the order its parts are made: token embeddings, position
    embeddings, the head (the RMSNorm has none), then the blocks. A checkpoint keeps its sizes
    and characters:

    >>> GPT(3, n_embd=8, block_size=4, chars="ab").architecture()      # doctest: +NORMALIZE_WHITESPACE
    {'type': 'GPT', 'vocab_size': 3, 'n_layer': 1, 'n_head': 4, 'n_embd': 8, 'block_size': 4,
     'chars': 'ab'}
    """

    arguments = ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "chars")
    optional_arguments = {"chars": None}  # left out when there are none

    def __init__(
        self,
        vocab_size: int,
        n_layer: int = 1,
        n_head: int = 4,
        n_embd: int = 16,
        block_size: int = 16,
        *,
        chars: str | None = None,
    ) -> None:
        self.vocab_size = check_integer("GPT", "vocab_size", vocab_size, low=2)
        self.n_layer = check_integer("GPT", "n_layer", n_layer)
        self.n_head = check_integer("GPT", "n_head", n_head)
        self.n_embd = check_integer("GPT", "n_embd", n_embd)
        self.block_size = check_integer("GPT", "block_size", block_size)
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT: n_embd={n_embd} is not a multiple of n_head={n_head}")
        problem = chars_problem(chars, self.vocab_size)
        if problem:
            raise ValueError(f"GPT: {problem}")
        self.chars = chars
        self.token_embedding = Embedding(self.vocab_size, self.n_embd)
        self.position_embedding = Embedding(self.block_size, self.n_embd)
        self.lm_head = Linear(self.n_embd, self.vocab_size, bias=False)
        self.norm = RMSNorm(self.n_embd)
        self.blocks = [Block(self.n_embd, self.n_head) for _ in range(self.n_layer)]
        self.pack_parameters()

    def new_caches(self) -> list[KVCache]:
        """Empty key/value caches, one per block: start a sequence with these."""
        return [KVCache() for _ in self.blocks]

    def __call__(self, token: int | Value, position: int | Value, caches: list[KVCache]) -> list[Value]:
        """The logits of the token that follows ``token``, which sits at ``position``."""
        if len(caches) != len(self.blocks):
            raise ValueError(f"GPT: expected {len(self.blocks)} caches (one per block), got {len(caches)}")
        # The caches hold one key and value per earlier position, so they say where we are.
        if isinstance(position, int) and len(caches[0]) != position:
            raise ValueError(f"GPT: position {position} does not follow the {len(caches[0])} cached ones")
        x = [t + p for t, p in zip(self.token_embedding(token), self.position_embedding(position))]
        x = self.norm(x)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache)
        return self.lm_head(x)

    def __repr__(self) -> str:
        return (
            f"GPT({self.vocab_size}, n_layer={len(self.blocks)}, n_head={self.n_head}, "
            f"n_embd={self.n_embd}, block_size={self.block_size})"
        )


def chars_problem(chars: object, vocab_size: int) -> str | None:
    """Why ``chars`` cannot name the tokens of a ``vocab_size`` model, or None if it can (or is None)."""
    if chars is None:
        return None
    if not isinstance(chars, str):
        return f"chars must be a string of characters, not {type(chars).__name__}"
    unprintable = next((ch for ch in chars if not ch.isprintable()), None)
    if unprintable is not None:
        # Sampled names are printed: a control character (ESC starts a terminal's escape
        # sequences: a new window title, a cleared screen, a fake line) or an invisible one
        # (a format character, a line separator, half of a surrogate pair) has no place in them.
        return (
            f"chars must be printable characters, but character {chars.index(unprintable)} is "
            f"U+{ord(unprintable):04X}, {_unprintable_kind(unprintable)}"
        )
    if len(set(chars)) != len(chars):
        return f"chars must not repeat a character, got {chars!r}"
    if len(chars) != vocab_size - 1:
        return (
            f"chars has {len(chars)} characters, but {vocab_size} tokens need {vocab_size - 1} "
            "(the last token marks the ends)"
        )
    return None


_UNPRINTABLE_KINDS = {  # Unicode's general categories of the characters str.isprintable refuses
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "half of a surrogate pair",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than ' '",
}


def _unprintable_kind(char: str) -> str:
    category = unicodedata.category(char)
    kind = _UNPRINTABLE_KINDS.get(category, f"of category {category}")
    name = unicodedata.name(char, "")
    return f"{kind} ({name})" if name else kind


# ---------------------------------------------------------------------------------------------
# Tokens


def encode(text: str, chars: str) -> list[int]:
    """``text`` as token ids, with the boundary token ``len(chars)`` before and after it.

    >>> encode("ab", "abc")
    [3, 0, 1, 3]
    """
    boundary = len(chars)
    unknown = sorted(set(text) - set(chars))
    if unknown:
        raise ValueError(f"encode: {text!r} has characters that are not in the vocabulary: {unknown}")
    return [boundary] + [chars.index(ch) for ch in text] + [boundary]


def decode(tokens: Iterable[int], chars: str) -> str:
    """The characters of ``tokens``, leaving out the boundary token.

    >>> decode([3, 0, 1, 3], "abc")
    'ab'
    """
    return "".join(chars[t] for t in tokens if t != len(chars))


# ---------------------------------------------------------------------------------------------
# The loss


def sequence_loss(model: GPT, tokens: Iterable[int | Value]) -> Value:
    """Mean cross-entropy of predicting each token of ``tokens`` from the ones before it.

    ``tokens`` holds 2 to ``block_size + 1`` token ids (ints, or numbers traced by
    ``chainrule.compile``). Each prediction's loss is ``logsumexp(logits) - logits[next]``,
    which stays finite for any logits; the next token's logit is picked with
    ``chainrule.take``, so a compiled loss picks the right one for every sequence.

    >>> import random; random.seed(0)
    >>> model = GPT(3, n_embd=4, n_head=1, block_size=4)
    >>> loss = sequence_loss(model, [2, 0, 1, 2])
    >>> loss.backward()
    >>> loss.data > 0, any(p.grad != 0 for p in model.parameters())
    (True, True)
    """
    tokens = list(tokens)
    n = len(tokens) - 1
    if not 1 <= n <= model.block_size:
        raise ValueError(
            f"sequence_loss: {len(tokens)} tokens give {n} predictions; "
            f"the model takes 1 to {model.block_size} (its block_size)"
        )
    caches = model.new_caches()
    losses = []
    for position in range(n):
        logits = model(tokens[position], position, caches)
        losses.append(logsumexp(logits) - take(logits, tokens[position + 1]))
    return sum_values(losses) / n


# ---------------------------------------------------------------------------------------------
# Sampling


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"sample: temperature must be a number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"sample: temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _probabilities(logits: list[float], temperature: float) -> list[float]:
    """softmax(logits / temperature) on plain floats; subtracting the largest keeps exp finite."""
    scaled = [z / temperature for z in logits]
    largest = max(scaled)
    exps = [math.exp(z - largest) for z in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def sample(model: GPT, n: int, *, temperature: float = 1.0, seed: int | None = None) -> list[str]:
    """``n`` names generated by ``model`` token by token, from the boundary token to the next one.

    Each step feeds the last token (the keys and values of the earlier ones wait in the
    cache) and draws the next one from ``softmax(logits / temperature)``: a temperature
    below 1 sharpens the distribution towards likely names, above 1 flattens it. A name
    stops at the boundary token or at the model's ``block_size``. The draws come from their
    own ``random.Random(seed)``, so a seed gives the same names every time and the global
    ``random`` state is untouched. ``model.chars`` turns tokens into characters.

    >>> import random; random.seed(0)
    >>> model = GPT(4, n_embd=4, n_head=1, chars="abc")
    >>> sample(model, 2, seed=7) == sample(model, 2, seed=7)
    True
    """
    if not isinstance(model, GPT):
        raise TypeError(f"sample: model must be a chainrule GPT, got {type(model).__name__}")
    if model.chars is None:
        raise ValueError(
            "sample: the model has no chars to turn tokens into text; build it with GPT(..., chars=...)"
        )
    n = check_integer("sample", "n", n, low=0)
    temperature = _check_temperature(temperature)
    if seed is not None:
        seed = check_integer("sample", "seed", seed, low=0)
    rng = random.Random(seed)
    boundary = model.vocab_size - 1
    # Either runs the model to floats; each takes caches of its own kind, made by its new_caches.
    forward: Any = _FloatGPT.of(model) or _NoGradForward(model)
    names = []
    for _ in range(n):
        caches, token, tokens = forward.new_caches(), boundary, []
        for position in range(model.block_size):
            weights = _probabilities(forward(token, position, caches), temperature)
            token = rng.choices(range(model.vocab_size), weights=weights)[0]
            if token == boundary:
                break
            tokens.append(token)
        names.append(decode(tokens, model.chars))
    return names


class _NoGradForward:
    """The model's own ``__call__`` under no_grad, giving floats: for a GPT whose parts a user replaced."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.new_caches = model.new_caches

    def __call__(self, token: int, position: int, caches: list[KVCache]) -> list[float]:
        with no_grad():
            return [z.data for z in self.model(token, position, caches)]


class _NotAsBuilt(Exception):
    """A GPT part that is not the one GPT's constructor makes: sample uses the model's own call."""


class _FloatGPT:
    """A GPT's forward pass on plain floats, for sampling: no Value, no graph, just the arithmetic.

    Under ``no_grad`` every op of the Value path still makes a Value, through ``apply``; for a
    long block (attention looks at every earlier position) that bookkeeping, not the
    arithmetic, took most of the time (a name of 2,000 letters: 18 s). Here each step is the
    Value path's arithmetic, op for op and in the same order, using ops.py's forward functions
    where an op is more than one float operation (``_logsumexp``, ``_exp``, ``_pow``), so the
    logits, and so the samples, are the same to the last bit (a test compares them). The
    weights are read once, when sampling starts.
    """

    def __init__(self, model: GPT) -> None:
        n, vocab = model.n_embd, model.vocab_size
        self.token_embedding = _float_matrix(model.token_embedding, Embedding, vocab, n)
        self.position_embedding = _float_matrix(model.position_embedding, Embedding, model.block_size, n)
        self.norm_eps = _norm_eps(model.norm, n)
        self.lm_head = _float_linear(model.lm_head, n, vocab)
        self.blocks = [_FloatBlock(block, n) for block in model.blocks]

    @classmethod
    def of(cls, model: GPT) -> _FloatGPT | None:
        """The float twin of ``model``, or None if its parts are not the ones GPT builds."""
        if type(model) is not GPT:  # a subclass may compute something else
            return None
        try:
            return cls(model)
        except (_NotAsBuilt, AttributeError, TypeError, ValueError):
            return None

    def new_caches(self) -> list[_FloatCache]:
        return [_FloatCache(block.n_head, block.n_embd) for block in self.blocks]

    def __call__(self, token: int, position: int, caches: list[_FloatCache]) -> list[float]:
        x = [t + p for t, p in zip(self.token_embedding[token], self.position_embedding[position])]
        x = _rms_norm(x, self.norm_eps)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache)
        return _apply_linear(self.lm_head, x)


class _FloatCache:
    """The keys of the positions seen so far, by head, and the values as one column per number."""

    def __init__(self, n_head: int, n_embd: int) -> None:
        self.keys: list[list[list[float]]] = [[] for _ in range(n_head)]
        self.value_columns: list[list[float]] = [[] for _ in range(n_embd)]


class _FloatBlock:
    """nn.Block (with its nn.CausalSelfAttention) on floats."""

    def __init__(self, block: Block, n_embd: int) -> None:
        if type(block) is not Block or type(block.attention) is not CausalSelfAttention:
            raise _NotAsBuilt
        attention = block.attention
        if attention.n_embd != n_embd or attention.n_head * attention.head_dim != n_embd:
            raise _NotAsBuilt
        self.n_embd, self.n_head, self.head_dim = n_embd, attention.n_head, attention.head_dim
        self.attention_eps = _norm_eps(block.attention_norm, n_embd)
        self.query, self.key, self.value, self.out = (
            _float_linear(getattr(attention, name), n_embd, n_embd)
            for name in ("query", "key", "value", "out")
        )
        self.mlp_eps = _norm_eps(block.mlp_norm, n_embd)
        self.mlp_up = _float_linear(block.mlp_up, n_embd, 4 * n_embd)
        self.mlp_down = _float_linear(block.mlp_down, 4 * n_embd, n_embd)

    def __call__(self, x: list[float], cache: _FloatCache) -> list[float]:
        attended = self.attend(_rms_norm(x, self.attention_eps), cache)
        x = [a + b for a, b in zip(attended, x)]
        hidden = [0.0 if h <= 0.0 else h for h in _apply_linear(self.mlp_up, _rms_norm(x, self.mlp_eps))]
        return [a + b for a, b in zip(_apply_linear(self.mlp_down, hidden), x)]

    def attend(self, x: list[float], cache: _FloatCache) -> list[float]:
        q, k, v = (_apply_linear(layer, x) for layer in (self.query, self.key, self.value))
        d = self.head_dim
        for h, keys in enumerate(cache.keys):
            keys.append(k[h * d : (h + 1) * d])
        for column, v_j in zip(cache.value_columns, v):
            column.append(v_j)
        scale = 1.0 / math.sqrt(d)
        heads = []
        for h, keys in enumerate(cache.keys):
            q_h = q[h * d : (h + 1) * d]
            scores = [_dot(q_h, k_h, 0.0) * scale for k_h in keys]
            total = ops._logsumexp(*scores)  # nn.softmax: exp(z - logsumexp(z))
            weights = [ops._exp(z - total) for z in scores]
            heads += [_dot(weights, cache.value_columns[j], 0.0) for j in range(h * d, (h + 1) * d)]
        return _apply_linear(self.out, heads)


def _float_matrix(layer: Embedding | Linear, kind: type, rows: int, cols: int) -> list[list[float]]:
    """The weight rows of an Embedding or Linear as floats, if it has the shape GPT gave it."""
    if type(layer) is not kind or len(layer.weight) != rows or any(len(row) != cols for row in layer.weight):
        raise _NotAsBuilt
    return [[float(p.data) for p in row] for row in layer.weight]


def _float_linear(layer: Linear, nin: int, nout: int) -> tuple[list[list[float]], list[float]]:
    weight = _float_matrix(layer, Linear, nout, nin)
    if layer.bias is None:  # Linear adds a 0.0 then
        return weight, [0.0] * nout
    if len(layer.bias) != nout:
        raise _NotAsBuilt
    return weight, [float(b.data) for b in layer.bias]


def _norm_eps(norm: RMSNorm, dim: int) -> float:
    if type(norm) is not RMSNorm or norm.dim != dim:
        raise _NotAsBuilt
    return float(norm.eps)


def _dot(w: list[float], x: list[float], b: float) -> float:
    """ops.DOT's forward (``ops._dot``) on two lists of floats."""
    return ops.add_up(map(operator.mul, w, x)) + b


def _apply_linear(layer: tuple[list[list[float]], list[float]], x: list[float]) -> list[float]:
    weight, biases = layer
    return [_dot(row, x, b) for row, b in zip(weight, biases)]


def _rms_norm(x: list[float], eps: float) -> list[float]:
    """nn.RMSNorm on floats: its ``sum_values`` is ``ops.add_up``, its ``** -0.5`` ops' ``_pow``."""
    mean_square = ops.add_up([x_i * x_i for x_i in x]) / float(len(x))
    scale = ops._pow(mean_square + eps, -0.5)
    return [x_i * scale for x_i in x]
