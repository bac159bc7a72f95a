"""The sequence-model blocks in chainrule.nn and the GPT of chainrule.gpt.

The oracle for the model is benchmarks/gpt_style.py (the ``gpt_style`` fixture): the GPT of
the pure-Python scripts, written with plain list indexing (``wte[token]``) on the scripts'
own minimal engine. Copied onto the same weights, chainrule's GPT (which picks rows with
``chainrule.take``) must give the same loss and the same gradients. Gradients are also
checked against central differences on a tiny model.
"""

import math
import random
import warnings

import pytest

import chainrule
from chainrule import CheckpointError, Value, serialize
from chainrule.gpt import GPT, decode, encode, sample, sequence_loss
from chainrule.nn import Block, CausalSelfAttention, Embedding, KVCache, Linear, RMSNorm, softmax

CHARS = "abcdefghijklmnopqrstuvwxyz"  # the letters of the scripts' names (checked below)
VOCAB_SIZE = len(CHARS) + 1


def close(x, y, tol=1e-9):
    return abs(x - y) <= tol * max(1.0, abs(y))


# The script's weight matrices and the GPT's, name for name.
MATRICES = {
    "token_embedding": lambda m: m.token_embedding.weight,
    "position_embedding": lambda m: m.position_embedding.weight,
    "lm_head": lambda m: m.lm_head.weight,
    "layer0.query": lambda m: m.blocks[0].attention.query.weight,
    "layer0.key": lambda m: m.blocks[0].attention.key.weight,
    "layer0.value": lambda m: m.blocks[0].attention.value.weight,
    "layer0.attn_out": lambda m: m.blocks[0].attention.out.weight,
    "layer0.mlp_up": lambda m: m.blocks[0].mlp_up.weight,
    "layer0.mlp_down": lambda m: m.blocks[0].mlp_down.weight,
}


def copied_pair(script, seed):
    """The script's parameters on its minimal engine, and a GPT with the same numbers copied in."""
    params = script.init_params(script.MinimalValue, VOCAB_SIZE, seed)
    random.seed(seed + 1)  # different weights to start with, so the copy is what makes them agree
    model = GPT(VOCAB_SIZE, chars=CHARS)
    for name, rows_of in MATRICES.items():
        ours = rows_of(model)
        assert len(ours) == len(params[name]) and len(ours[0]) == len(params[name][0]), name
        for our_row, their_row in zip(ours, params[name]):
            for v, w in zip(our_row, their_row):
                v.data = w.data
    assert len(model.parameters()) == len(script.flat_params(params))
    return params, model


@pytest.mark.parametrize("seed", [0, 7])
def test_the_loss_and_gradients_equal_the_list_indexing_scripts(gpt_style, seed):
    script = gpt_style
    assert "".join(script.vocabulary(script.NAMES)) == CHARS
    params, model = copied_pair(script, seed)
    for name in ["emma", "christopher", "al", "a" * 15]:  # every length class, up to a full context
        tokens = script.encode(name, list(CHARS))
        theirs = script.name_loss(params, tokens)
        ours = sequence_loss(model, tokens)
        assert close(ours.data, theirs.data), name
        theirs.backward()
        ours.backward()
        for rows_name, rows_of in MATRICES.items():
            for our_row, their_row in zip(rows_of(model), params[rows_name]):
                for v, w in zip(our_row, their_row):
                    assert close(v.grad, w.grad), (name, rows_name)
        model.zero_grad()
        for p in script.flat_params(params):
            p.grad = 0


def test_a_seed_builds_the_scripts_initial_weights(gpt_style):
    # Same draws in the same order as the scripts: N(0, 0.08^2), embeddings, head, then blocks.
    params = gpt_style.init_params(Value, VOCAB_SIZE, seed=3)
    random.seed(3)
    model = GPT(VOCAB_SIZE)
    for name, rows_of in MATRICES.items():
        assert [[v.data for v in row] for row in rows_of(model)] == [
            [w.data for w in row] for row in params[name]
        ]


def test_gradients_match_central_differences_on_a_tiny_model():
    random.seed(11)
    model = GPT(4, n_layer=2, n_head=2, n_embd=4, block_size=3)
    tokens = [3, 0, 2, 3]
    loss = sequence_loss(model, tokens)
    loss.backward()
    parameters = model.parameters()
    eps = 1e-6
    for p in parameters:
        analytic, saved = p.grad, p.data
        p.data = saved + eps
        up = sequence_loss(model, tokens).data
        p.data = saved - eps
        down = sequence_loss(model, tokens).data
        p.data = saved
        assert abs(analytic - (up - down) / (2 * eps)) <= 1e-6 + 1e-5 * abs(analytic)


def test_a_gpt_is_built_only_from_scalar_ops_and_picks_rows_with_take():
    random.seed(0)
    model = GPT(5, n_embd=4, n_head=2, block_size=4)
    loss = sequence_loss(model, [4, 1, 4])
    ops = {node.op for node in chainrule.topological_order(loss)}
    assert ops <= {"", "+", "*", "**", "exp", "relu", "dot", "sum", "logsumexp", "-", "/"}, ops


# ---------------------------------------------------------------------------------------------
# The blocks


def test_linear_is_one_dot_per_output_with_or_without_bias():
    random.seed(0)
    layer = Linear(3, 2)
    for b in layer.bias:
        b.data = 0.5
    x = [1.0, -2.0, 3.0]
    out = layer(x)
    for row, b, y in zip(layer.weight, layer.bias, out):
        assert close(y.data, sum(w.data * xi for w, xi in zip(row, x)) + b.data)
    assert len(layer.parameters()) == 8 and len(Linear(3, 2, bias=False).parameters()) == 6
    with pytest.raises(ValueError, match="Linear: expected a vector of 3 numbers, got 2"):
        layer([1.0, 2.0])
    with pytest.raises(TypeError, match="Linear: bias must be True or False"):
        Linear(3, 2, bias="no")


def test_linear_state_round_trip_names_bias():
    random.seed(0)
    a, b = Linear(2, 3), Linear(2, 3)
    assert list(a.state_dict()) == ["weight.0", "weight.1", "weight.2", "bias"]
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()


def test_embedding_picks_a_row_and_refuses_a_bad_index():
    random.seed(0)
    table = Embedding(3, 2)
    assert table(1) is table.weight[1]
    with pytest.raises(IndexError, match="out of range for 3 rows"):
        table(3)
    with pytest.raises(TypeError, match="index must be an integer"):
        table(1.5)


def test_rmsnorm_gives_unit_root_mean_square_and_checks_its_size():
    out = RMSNorm(3, eps=1e-12)([Value(1.0), Value(-2.0), Value(4.0)])
    assert close(sum(v.data**2 for v in out) / 3, 1.0)
    assert RMSNorm(3).parameters() == []
    with pytest.raises(ValueError, match="RMSNorm: expected a vector of 3 numbers, got 2"):
        RMSNorm(3)([1.0, 2.0])


def test_softmax_sums_to_one_and_survives_huge_logits():
    probs = softmax([Value(1000.0), Value(999.0), Value(-1000.0)])
    assert close(sum(p.data for p in probs), 1.0)
    assert close(probs[0].data / probs[1].data, math.e)


def test_attention_is_causal_through_its_cache():
    # The output at position t depends only on positions 0..t: changing a later input leaves it.
    random.seed(2)
    attention = CausalSelfAttention(4, n_head=2)
    xs = [[Value(random.gauss(0, 1)) for _ in range(4)] for _ in range(3)]

    def outputs(inputs):
        cache = KVCache()
        return [[v.data for v in attention(x, cache)] for x in inputs]

    first = outputs(xs)
    changed = outputs(xs[:2] + [[Value(5.0)] * 4])
    assert first[:2] == changed[:2] and first[2] != changed[2]
    with pytest.raises(ValueError, match="n_embd=6 is not a multiple of n_head=4"):
        CausalSelfAttention(6, n_head=4)


def test_block_keeps_the_vector_size_and_feeds_its_cache():
    random.seed(0)
    block, cache = Block(8, n_head=2), KVCache()
    for _ in range(3):
        assert len(block([Value(0.3)] * 8, cache)) == 8
    assert len(cache) == 3 and len(cache.values) == 3


# ---------------------------------------------------------------------------------------------
# The model's arguments and checks


def test_the_loss_refuses_sequences_that_do_not_fit_the_context():
    random.seed(0)
    model = GPT(3, n_embd=4, n_head=1, block_size=3)
    with pytest.raises(ValueError, match="5 tokens give 4 predictions; the model takes 1 to 3"):
        sequence_loss(model, [2, 0, 1, 0, 2])
    with pytest.raises(ValueError, match="1 tokens give 0 predictions"):
        sequence_loss(model, [2])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"vocab_size": 1}, ValueError, "vocab_size must be at least 2"),
        ({"vocab_size": 5, "n_embd": 6}, ValueError, "n_embd=6 is not a multiple of n_head=4"),
        ({"vocab_size": 3, "chars": "abc"}, ValueError, "chars has 3 characters, but 3 tokens need 2"),
        ({"vocab_size": 3, "chars": "aa"}, ValueError, "must not repeat a character"),
        ({"vocab_size": 3, "chars": ["a", "b"]}, ValueError, "chars must be a string"),
        ({"vocab_size": 3.0}, TypeError, "vocab_size must be an integer"),
    ],
)
def test_gpt_checks_its_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        GPT(**kwargs)


def test_encode_and_decode():
    assert encode("cab", "abc") == [3, 2, 0, 1, 3]
    assert decode([3, 2, 0, 1, 3], "abc") == "cab"
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['z'\]"):
        encode("za", "abc")


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_save_and_load_round_trip(tmp_path):
    random.seed(4)
    model = GPT(VOCAB_SIZE, n_layer=2, n_head=2, n_embd=8, block_size=6, chars=CHARS)
    path = tmp_path / "gpt.json"
    chainrule.save(model, path)
    loaded = chainrule.load(path)
    assert type(loaded) is GPT and loaded.chars == CHARS
    assert loaded.architecture() == model.architecture()
    assert loaded.state_dict() == model.state_dict()
    tokens = encode("ava", CHARS)
    assert sequence_loss(loaded, tokens).data == sequence_loss(model, tokens).data
    assert sample(loaded, 5, seed=3) == sample(model, 5, seed=3)


def test_a_gpt_without_chars_round_trips_too(tmp_path):
    random.seed(0)
    model = GPT(5, n_embd=4, n_head=2)
    chainrule.save(model, tmp_path / "gpt.json")
    assert "chars" not in model.architecture()
    assert chainrule.load(tmp_path / "gpt.json").state_dict() == model.state_dict()


def test_a_changed_gpt_cannot_be_described():
    random.seed(0)
    model = GPT(5, n_embd=4, n_head=2)
    model.blocks.append(Block(8, n_head=2))
    with pytest.raises(NotImplementedError, match=r"blocks\.1, a Block, is not what GPT\(vocab_size=5, "):
        model.architecture()

    class MyGPT(GPT):
        pass

    with pytest.raises(NotImplementedError, match="MyGPT cannot describe its architecture"):
        MyGPT(5, n_embd=4, n_head=2).architecture()


GOOD = {"type": "GPT", "vocab_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 4, "block_size": 3}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_embd": 5}, "n_embd=5 is not a multiple of n_head=2"),
        ({"vocab_size": 1}, "vocab_size must be at least 2"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"block_size": 2.5}, "block_size must be an integer, got 2.5"),
        ({"chars": "ab"}, "chars has 2 characters, but 4 tokens need 3"),
        ({"chars": 7}, "chars must be a string of characters, not int"),
        ({"heads": 2}, "unexpected 'heads'"),
    ],
)
def test_a_bad_gpt_architecture_is_a_checkpoint_error(changes, message):
    with pytest.raises(CheckpointError, match=message):
        serialize.from_architecture({**GOOD, **changes})


def test_the_gpt_shapes_from_an_architecture_are_the_built_models():
    for architecture in [GOOD, {**GOOD, "n_layer": 2, "chars": "xyz"}]:
        module = serialize.from_architecture(architecture)
        built = {name: len(e) for name, e in module.state_entries()}
        assert list(serialize.architecture_shapes(architecture).items()) == list(built.items())
        assert serialize._parameter_count(architecture) == len(module.parameters())


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.fixture(scope="module")
def small_model():
    random.seed(5)
    return GPT(VOCAB_SIZE, n_embd=8, n_head=2, block_size=8, chars=CHARS)


def test_sampling_is_deterministic_for_a_seed_and_leaves_the_global_random_alone(small_model):
    random.seed(99)
    expected_next = random.random()
    random.seed(99)
    first = sample(small_model, 8, temperature=0.7, seed=1)
    assert random.random() == expected_next
    assert sample(small_model, 8, temperature=0.7, seed=1) == first
    assert sample(small_model, 8, temperature=0.7, seed=2) != first
    assert len(first) == 8 and all(set(name) <= set(CHARS) for name in first)
    assert all(len(name) <= small_model.block_size for name in first)


def test_a_low_temperature_picks_the_most_likely_token(small_model):
    # At a tiny temperature, sampling is greedy decoding: follow the largest logit every time.
    tokens, token, caches = [], VOCAB_SIZE - 1, small_model.new_caches()
    for position in range(small_model.block_size):
        logits = [z.data for z in small_model(token, position, caches)]
        token = max(range(VOCAB_SIZE), key=logits.__getitem__)
        if token == VOCAB_SIZE - 1:
            break
        tokens.append(token)
    greedy = decode(tokens, CHARS)
    assert sample(small_model, 3, temperature=1e-6, seed=0) == [greedy] * 3


@pytest.mark.parametrize(
    "temperature, error",
    [
        (0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_the_temperature_is_checked(small_model, temperature, error):
    with pytest.raises(error, match="sample: temperature must be a"):
        sample(small_model, 1, temperature=temperature)


def test_sample_checks_its_other_arguments(small_model):
    assert sample(small_model, 0) == []
    with pytest.raises(ValueError, match="sample: n must be at least 0"):
        sample(small_model, -1)
    with pytest.raises(TypeError, match="sample: seed must be an integer"):
        sample(small_model, 1, seed=1.5)
    with pytest.raises(TypeError, match="sample: model must be a chainrule GPT"):
        sample("model.json", 1)
    random.seed(0)
    with pytest.raises(ValueError, match="the model has no chars"):
        sample(GPT(4, n_embd=4, n_head=1), 1)


# ---------------------------------------------------------------------------------------------
# Compiled against eager


def test_compiled_and_eager_agree_on_every_step():
    pytest.importorskip("numpy")
    random.seed(8)
    model = GPT(VOCAB_SIZE, chars=CHARS)
    compiled = chainrule.compile(lambda tokens: sequence_loss(model, tokens))
    names = ["emma", "liam", "ava", "noah", "isabella", "mia", "emma", "a" * 15]  # lengths repeat
    for name in names:
        tokens = encode(name, CHARS)
        eager = sequence_loss(model, tokens)
        eager.backward()
        eager_grads = [p.grad for p in model.parameters()]
        model.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a TraceWarning would mean a frozen index
            fast = compiled(tokens)
        fast.backward()
        assert close(fast.data, eager.data), name
        assert all(close(p.grad, g) for p, g in zip(model.parameters(), eager_grads)), name
        model.zero_grad()
