"""Bounded work on hostile files and commands (issue 20, items 11-15).

A checkpoint's characters never reach the terminal raw; sampling costs its arithmetic, not a
graph; Graphviz gets a time limit; a checkpoint's size limit holds for the cheapest numbers;
one atomic writer serves checkpoints, drawings and explorer pages, through symlinks; and an
interrupted ``train`` leaves no empty output folder behind.
"""

import json
import os
import random
import shutil
import stat
import time

import pytest

from chainrule import CheckpointError, Value, _files, cli, draw, engine, explorer, gpt, load, save, serialize
from chainrule.gpt import GPT, sample
from chainrule.nn import MLP, Block

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file system semantics")


def small_gpt(chars="abc", **sizes):
    random.seed(5)
    return GPT(len(chars) + 1, n_embd=8, n_head=2, block_size=6, chars=chars, **sizes)


# ---------------------------------------------------------------------------------------------
# Item 11: control characters in a checkpoint's chars


UNPRINTABLE = [
    "\x1b",  # ESC: the start of every terminal escape sequence
    "\x07",  # BEL
    "\r",  # carriage return: a fake line over the real one
    "\n",
    "\t",
    "\x7f",  # DEL
    "\x85",  # NEL, a C1 control
    "\x9b",  # CSI, the one-character escape sequence start of C1
    "\u200b",  # zero width space (Cf)
    "\u202e",  # right-to-left override (Cf): text shown backwards
    "\u2028",  # line separator (Zl)
    "\ud800",  # half of a surrogate pair, which JSON's \\ud800 can spell
]


@pytest.mark.parametrize("char", UNPRINTABLE, ids=lambda c: f"U+{ord(c):04X}")
def test_a_checkpoint_with_an_unprintable_char_is_refused_at_load(tmp_path, char):
    path = tmp_path / "model.json"
    save(small_gpt(), path)
    document = json.loads(path.read_text())
    document["architecture"]["chars"] = "a" + char + "c"
    path.write_text(json.dumps(document))  # json.dumps spells every one of them as an escape
    with pytest.raises(CheckpointError) as raised:
        load(path)
    message = str(raised.value)
    assert str(path) in message and f"U+{ord(char):04X}" in message and "printable" in message
    assert all(c.isprintable() for c in message)  # the message itself shows no raw control character


@pytest.mark.parametrize("char", UNPRINTABLE[:3], ids=lambda c: f"U+{ord(c):04X}")
def test_the_model_itself_refuses_unprintable_chars(char):
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X}"):
        GPT(4, chars="a" + char + "c")


def test_printable_chars_of_any_script_are_kept(tmp_path):
    chars = "aé ñßж中"  # a space, accents, Cyrillic, CJK: characters of real names
    path = tmp_path / "model.json"
    save(small_gpt(chars), path)
    assert load(path).chars == chars


def test_sample_never_prints_a_control_character(monkeypatch, capsys):
    # A model whose chars were changed after it was built (the constructor and load refuse
    # such chars): the command still escapes them.
    model = small_gpt()
    model.chars = "\x1b\x07\u202e"
    monkeypatch.setattr(serialize, "load", lambda path: model)
    assert cli.main(["sample", "model.json", "--n", "30", "--seed", "1", "--temperature", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sample(model, 30, temperature=2.0, seed=1)
    assert len(lines) == 30 and any(names)
    for line, name in zip(lines, names, strict=True):
        assert all(c.isprintable() for c in line), repr(line)
        # Each character shown as its escape, which spells the character's code.
        assert line == "".join(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in name)


# ---------------------------------------------------------------------------------------------
# Item 13: a time limit for Graphviz, shared by --draw and explore


@pytest.fixture
def slow_dot(tmp_path, monkeypatch):
    """A `dot` on PATH that never finishes (it records its process id), and a 1 s limit."""
    if os.name != "posix":
        pytest.skip("a shell script stands in for dot")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    fake = bin_folder / "dot"
    pid_file = tmp_path / "dot.pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nsleep 60 &\nwait\n")  # a child of its own, too
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(draw, "DOT_TIMEOUT_SECONDS", 1)
    return pid_file


def assert_no_process(pid_file):
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the stopped dot (pid {pid}) is still running")


def test_grad_draw_stops_a_slow_dot_with_one_line(slow_dot, tmp_path, capsys):
    pytest.importorskip("graphviz")
    target = tmp_path / "g.svg"
    start = time.monotonic()
    status = cli.main(["grad", "b = a + a", "a=3", "--draw", str(target)])
    elapsed = time.monotonic() - start
    assert status == 1 and elapsed < 10
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "b = 6"  # the numbers come first, and stay
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: cannot draw the graph in")
    assert "after 1 s" in lines[0] and "--draw graph.dot" in lines[0]
    assert not target.exists() and sorted(os.listdir(tmp_path)) == ["bin", "dot.pid"]
    assert_no_process(slow_dot)


def test_save_graph_raises_the_timeout_error(slow_dot, tmp_path):
    pytest.importorskip("graphviz")
    with pytest.raises(draw.GraphvizTimeoutError) as raised:
        draw.save_graph(Value(2.0) * 3, tmp_path / "g.png")
    assert raised.value.seconds == 1


def test_explore_falls_back_to_its_own_layout_after_the_same_limit(slow_dot):
    a = Value(2.0, label="a")
    start = time.monotonic()
    page = explorer.explore(a * a + a, layout="auto")
    assert page.layout == "layered" and time.monotonic() - start < 10
    assert_no_process(slow_dot)


def test_a_real_dot_still_draws(tmp_path):
    pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    path = draw.save_graph(Value(2.0, label="x").tanh(), tmp_path / "g.svg")
    assert path.read_text().lstrip().startswith("<?xml") and "tanh" in path.read_text()


# ---------------------------------------------------------------------------------------------
# Item 14: the checkpoint limit holds for the cheapest numbers


def zeros_checkpoint(path, architecture):
    """A checkpoint of ``architecture`` whose every number is the 2-byte ``0,``."""
    shapes = serialize.architecture_shapes(architecture)
    entries = (
        json.dumps(k) + ":" + ("0" if n is None else "[" + ",".join(["0"] * n) + "]")
        for k, n in shapes.items()
    )
    header = '{"format":"chainrule-checkpoint","version":1,"architecture":' + json.dumps(architecture)
    path.write_text(header + ',"state":{' + ",".join(entries) + "}}")
    return path


def gpt_architecture(block_size, n_embd=16):
    return {
        "type": "GPT",
        "vocab_size": 3,
        "n_layer": 1,
        "n_head": 1,
        "n_embd": n_embd,
        "block_size": block_size,
    }


def test_a_file_of_cheap_numbers_is_refused_before_parsing(tmp_path, monkeypatch):
    # The file: 4 million parameters of "0," in 7.7 MiB, under the byte limit, which
    # took 44 s and 1.2 GB to load. Now it is refused before the parser makes a single number.
    path = zeros_checkpoint(tmp_path / "model.json", gpt_architecture(250_000))
    assert path.stat().st_size < serialize.MAX_CHECKPOINT_BYTES
    monkeypatch.setattr(serialize.json, "loads", lambda *a, **k: pytest.fail("the file was parsed"))
    start = time.monotonic()
    with pytest.raises(CheckpointError) as raised:
        load(path)
    assert time.monotonic() - start < 2
    message = str(raised.value)
    assert str(path) in message and "MAX_CHECKPOINT_PARAMETERS" in message


def test_the_parameter_limit_is_checked_from_the_architecture(tmp_path, monkeypatch):
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_PARAMETERS", 1000)
    architecture = {"type": "MLP", "nin": 10, "nouts": [100], "activation": "relu"}  # 1,100 parameters
    path = zeros_checkpoint(tmp_path / "model.json", architecture)
    with pytest.raises(CheckpointError, match="has 1100 parameters, more than the limit of 1000"):
        load(path)
    architecture["nouts"] = [90]  # 990 parameters: under the limit, it loads
    model = load(zeros_checkpoint(tmp_path / "model.json", architecture))
    assert len(model.parameters()) == 990 and all(p.data == 0.0 for p in model.parameters())


def test_the_value_count_bound_never_refuses_a_real_checkpoint_at_the_limit(tmp_path, monkeypatch):
    # The worst real checkpoints for the bound: a GPT of width 1 (a list per parameter) and an
    # MLP of one input (a list and a bias per neuron), each exactly at the parameter limit.
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_PARAMETERS", 2000)
    gpt = gpt_architecture(2000 - 18, n_embd=1)  # 2*3 + block_size + 12 = 2000
    mlp = {"type": "MLP", "nin": 1, "nouts": [1000], "activation": "relu"}  # 1000 * 2 = 2000
    for architecture in (gpt, mlp):
        assert serialize._parameter_count(architecture) == 2000
        random.seed(0)
        model = serialize.from_architecture(architecture)
        save(model, tmp_path / "model.json")  # long floats, and zeros: both load
        assert load(tmp_path / "model.json").state_dict() == model.state_dict()
        assert len(load(zeros_checkpoint(tmp_path / "zeros.json", architecture)).parameters()) == 2000


def test_save_refuses_a_model_load_would_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(serialize, "MAX_CHECKPOINT_PARAMETERS", 10)
    with pytest.raises(CheckpointError, match="has 13 parameters, more than the limit of 10"):
        save(MLP(2, [3, 1]), tmp_path / "model.json")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Item 15: one atomic writer, through symlinks, for checkpoints, drawings and pages


def write_checkpoint(path):
    random.seed(1)
    save(MLP(2, [3, 1]), path)


def write_drawing(path):
    draw.save_graph(Value(2.0, label="x") * 3, path)


def write_page(path):
    explorer.explore(Value(2.0, label="x") * 3, layout="layered").save(path)


WRITERS = {"checkpoint": write_checkpoint, "drawing": write_drawing, "page": write_page}
SUFFIX = {"checkpoint": ".json", "drawing": ".dot", "page": ".html"}


@pytest.fixture(params=list(WRITERS))
def writer(request):
    if request.param == "drawing":
        pytest.importorskip("graphviz")
    return WRITERS[request.param], SUFFIX[request.param]


@posix_only
def test_every_writer_writes_through_a_symlink(writer, tmp_path):
    write, suffix = writer
    (tmp_path / "keep").mkdir()
    target = tmp_path / "keep" / f"real{suffix}"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / f"link{suffix}"
    link.symlink_to(os.path.join("keep", f"real{suffix}"))  # relative, as people make them
    write(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("keep", f"real{suffix}")
    assert target.read_text() != "old" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["keep", f"link{suffix}"]
    assert os.listdir(tmp_path / "keep") == [f"real{suffix}"]


@posix_only
def test_every_writer_refuses_a_fifo(writer, tmp_path):
    write, suffix = writer
    fifo = tmp_path / f"out{suffix}"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="named pipe"):
        write(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == [f"out{suffix}"]


def test_every_writer_leaves_the_old_file_when_the_rename_fails(writer, tmp_path, monkeypatch):
    write, suffix = writer
    path = tmp_path / f"out{suffix}"
    path.write_text("old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(path)
    assert path.read_text() == "old" and os.listdir(tmp_path) == [f"out{suffix}"]


def test_cli_draw_and_explore_write_through_symlinks(tmp_path, capsys):
    pytest.importorskip("graphviz")
    if os.name != "posix":
        pytest.skip("symlinks")
    for command, suffix in (("grad", ".dot"), ("explore", ".html")):
        target = tmp_path / f"target{suffix}"
        link = tmp_path / f"link{suffix}"
        link.symlink_to(target.name)
        option = "--draw" if command == "grad" else "--out"
        assert cli.main([command, "b = a + a", "a=3", option, str(link)]) == 0
        assert link.is_symlink() and target.stat().st_size > 0
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# Item 15: an interrupted or failed train leaves no empty output folder


@pytest.fixture
def interrupted_training(monkeypatch):
    from chainrule import training

    monkeypatch.setattr(cli, "_require_demo_libraries", lambda dataset: None)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)


def test_ctrl_c_during_train_removes_the_folders_it_made(interrupted_training, tmp_path):
    out = tmp_path / "runs" / "moons"
    assert cli.main(["train", "moons", "--out", str(out)]) == cli.EXIT_INTERRUPTED
    assert os.listdir(tmp_path) == []


def test_ctrl_c_keeps_a_folder_that_was_there_before(interrupted_training, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "mine").mkdir()
    assert cli.main(["train", "moons", "--out", str(tmp_path / "runs" / "new")]) == cli.EXIT_INTERRUPTED
    assert cli.main(["train", "moons", "--out", str(tmp_path / "mine")]) == cli.EXIT_INTERRUPTED
    assert sorted(os.listdir(tmp_path)) == ["mine", "runs"] and os.listdir(tmp_path / "runs") == []


def test_a_failed_train_removes_the_folder_too(monkeypatch, tmp_path, capsys):
    from chainrule import training

    monkeypatch.setattr(cli, "_require_demo_libraries", lambda dataset: None)

    def diverged(*args, **kwargs):
        raise training.DivergedError("boom")

    monkeypatch.setattr(training, "train", diverged)
    assert cli.main(["train", "moons", "--out", str(tmp_path / "a" / "b")]) == cli.EXIT_ERROR
    assert os.listdir(tmp_path) == [] and "boom" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Item 12: sampling runs on floats, and gives the graph-building path's samples


def sample_through_the_graph(model, n, temperature, seed):
    """``sample`` as it was: every step through the model's Value graph (recorded, as in training)."""
    rng = random.Random(seed)
    boundary = model.vocab_size - 1
    names = []
    for _ in range(n):
        caches, token, tokens = model.new_caches(), boundary, []
        for position in range(model.block_size):
            logits = [z.data for z in model(token, position, caches)]
            token = rng.choices(range(model.vocab_size), weights=gpt._probabilities(logits, temperature))[0]
            if token == boundary:
                break
            tokens.append(token)
        names.append(gpt.decode(tokens, model.chars))
    return names


def varied_gpt(seed, n_layer=2, n_head=2, n_embd=8, block_size=12, std=0.3):
    """A GPT with weights large enough that attention and the MLP matter to the logits."""
    random.seed(seed)
    model = GPT(6, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, chars="abcde")
    for p in model.parameters():
        p.data = random.gauss(0.0, std)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float_logits_are_the_value_paths_to_the_last_bit(seed):
    model = varied_gpt(seed, n_layer=2, n_head=4 if seed else 2)
    twin = gpt._FloatGPT.of(model)
    assert twin is not None
    caches, float_caches = model.new_caches(), twin.new_caches()
    tokens = [5, *random.Random(seed).choices(range(5), k=model.block_size - 1)]
    for position, token in enumerate(tokens):
        expected = [z.data for z in model(token, position, caches)]
        assert twin(token, position, float_caches) == expected  # floats compared exactly


@pytest.mark.parametrize("seed, temperature", [(0, 1.0), (1, 0.5), (2, 2.0)])
def test_samples_are_the_graph_paths(seed, temperature):
    model = varied_gpt(seed)
    names = sample(model, 25, temperature=temperature, seed=seed + 10)
    assert names == sample_through_the_graph(model, 25, temperature, seed + 10)
    assert len(set(names)) > 1  # a model that says something, not one name again and again


def test_sampling_builds_no_values(monkeypatch):
    # Under no_grad every op still made a Value through apply: that, not the arithmetic, was
    # the cost of a long block. Sampling a GPT as built makes none.
    model = varied_gpt(3)
    expected = sample_through_the_graph(model, 5, 1.0, 4)

    def no_values(*args, **kwargs):
        raise AssertionError("sampling made a Value")

    monkeypatch.setattr(engine, "apply", no_values)
    monkeypatch.setattr(engine, "_node", no_values)
    assert sample(model, 5, seed=4) == expected


def test_a_gpt_with_a_replaced_part_samples_through_its_own_call():
    class LoudBlock(Block):
        def __call__(self, x, cache):
            return [y * 2.0 for y in super().__call__(x, cache)]

    model = varied_gpt(4, n_layer=1)
    random.seed(0)
    model.blocks[0] = LoudBlock(model.n_embd, model.n_head)
    assert gpt._FloatGPT.of(model) is None
    assert sample(model, 10, seed=1) == sample_through_the_graph(model, 10, 1.0, 1)
