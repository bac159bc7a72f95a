"""The real ``chainrule`` command, run in a subprocess as a user would run it."""

import os
import signal
import subprocess
import sys
import time

import pytest

import chainrule
from chainrule.datasets import moons
from chainrule.training import accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args, cwd=None, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "chainrule", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(result, status=None):
    """A failure reported as the single line 'chainrule: error: ...', without a traceback."""
    assert result.returncode != 0
    if status is not None:
        assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chainrule: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# chainrule train


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """``chainrule train moons`` with every default; only the output folder is chosen."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    out = tmp_path_factory.mktemp("moons")
    return run("train", "moons", "--out", str(out)), out


def test_train_moons_with_defaults_reaches_100_percent(moons_run):
    result, _ = moons_run
    assert result.returncode == 0, result.stderr
    assert "train accuracy: 100.0% (100 of 100)" in result.stdout
    assert "100/100" in result.stderr  # the progress bar went through all 100 steps
    assert "loss=" in result.stderr and "acc=" in result.stderr


def test_train_moons_writes_the_plot_and_a_checkpoint_of_the_trained_model(moons_run):
    result, out = moons_run
    assert result.returncode == 0, result.stderr
    assert (out / "moons.png").read_bytes()[:8] == PNG_MAGIC
    model = chainrule.load(out / "model.json")
    assert repr(model) == "MLP(2, [16, 16, 1], activation='relu')"
    # The checkpoint is the trained model: it classifies the demo data perfectly.
    data = moons(n_samples=100, noise=0.1, seed=1337)
    assert accuracy(model, data.X_train, data.y_train, n_classes=2) == 1.0


def test_train_digits_on_a_subset_into_the_default_folder(tmp_path):
    pytest.importorskip("sklearn")
    result = run("train", "digits", "--samples", "30", "--steps", "3", "--batch-size", "10", "--hidden", "4",
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "train accuracy: " in result.stdout and " of 30)" in result.stdout
    assert "test accuracy: " in result.stdout and " of 360)" in result.stdout  # the whole held-out split
    out = tmp_path / "runs" / "digits"  # the default --out
    assert (out / "digits.png").read_bytes()[:8] == PNG_MAGIC
    assert repr(chainrule.load(out / "model.json")) == "MLP(64, [4, 10], activation='relu')"


def test_train_compiles_by_default_and_eager_turns_it_off(tmp_path, moons_run):
    default, _ = moons_run
    assert "(compiled; tracing took" in default.stdout
    eager = run("train", "moons", "--steps", "3", "--hidden", "4", "--eager", "--out", str(tmp_path))
    assert eager.returncode == 0, eager.stderr
    assert "3 steps in" in eager.stdout and "(eager)" in eager.stdout


def test_output_folder_under_a_regular_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = assert_one_line_error(run("train", "moons", "--out", str(blocker / "out")))
    assert "cannot create output folder" in line and "Not a directory" in line
    line = assert_one_line_error(run("train", "moons", "--out", str(blocker)))
    assert "it is a file" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_output_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = assert_one_line_error(run("train", "moons", "--out", str(locked)))
    assert "permission denied" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "mnist"], "invalid choice: 'mnist'"),
        (["train", "moons", "--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
        (["train", "moons", "--lr", "-1"], "argument --lr: expected a positive number"),
        (["train", "moons", "--lr", "nan"], "argument --lr: expected a positive number"),
        (["train", "moons", "--hidden", "16,x"], "argument --hidden: expected layer sizes"),
        (["train", "moons", "--seed", "-3"], "argument --seed"),
        (["train", "moons", "--activation", "gelu"], "argument --activation: invalid choice"),
        (["train", "moons", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        ([], "choose a command, train or grad"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_command_lines_are_one_line_with_status_2(args, expected):
    line = assert_one_line_error(run(*args), status=2)
    assert expected in line


def test_ctrl_c_stops_quietly_with_status_130(tmp_path):
    pytest.importorskip("sklearn")
    process = subprocess.Popen(
        [sys.executable, "-m", "chainrule", "train", "digits", "--samples", "200", "--steps", "100000",
         "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # Wait until training runs (the progress bar has started), then press Ctrl-C.
        deadline = time.monotonic() + 120
        seen = ""
        while "step" not in seen and time.monotonic() < deadline:
            chunk = os.read(process.stderr.fileno(), 4096).decode()
            if not chunk:  # the command ended early; the assertions below say how
                break
            seen += chunk
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in seen + rest
    assert "KeyboardInterrupt" not in seen + rest


# ---------------------------------------------------------------------------------------------
# chainrule grad


def test_grad_of_a_plus_a():
    # b = a + a = 2a: db/da = 2
    result = run("grad", "b = a + a", "a=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b = 6", "gradient of b with respect to each input:", "  a: 2"]


def test_grad_of_the_lecture_example():
    # f = d*e with d = a*b, e = a + b, so f = a^2 b + a b^2.
    # At a=2, b=-3: f = (-6)(-1) = 6; df/da = 2ab + b^2 = -12 + 9 = -3; df/db = a^2 + 2ab = 4 - 12 = -8
    result = run("grad", "d = a*b; e = a + b; f = d*e", "a=2", "b=-3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "f = 6",
        "gradient of f with respect to each input:",
        "  a: -3",
        "  b: -8",
    ]


def test_grad_prints_floats_exactly():
    # y = x * 0.1 at x = 3: y = 0.30000000000000004 in floating point; dy/dx = 0.1
    result = run("grad", "x * 0.1", "x=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "value: 0.30000000000000004",
        "gradient of the value with respect to each input:",
        "  x: 0.1",
    ]


def test_grad_expression_starting_with_minus_after_double_dash():
    # y = -a*b: dy/da = -b = -2, dy/db = -a = -1
    result = run("grad", "--", "-a*b", "a=1", "b=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == ["  a: -2", "  b: -1"]
    line = assert_one_line_error(run("grad", "-a*b", "a=1", "b=2"), status=2)
    assert "goes after '--'" in line


def test_grad_draws_the_graph(tmp_path):
    pytest.importorskip("graphviz")
    target = tmp_path / "graph.svg"
    result = run("grad", "d = a*b; e = a + b; f = d*e", "a=2", "b=-3", "--draw", str(target))
    assert result.returncode == 0, result.stderr
    assert f"drew the graph in {target}" in result.stdout
    svg = target.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "grad &#45;8.0000" in svg  # b's box shows df/db = -8


def test_grad_draw_without_graphviz_is_one_line(tmp_path):
    pytest.importorskip("graphviz")
    env = dict(os.environ, PATH=str(tmp_path))  # no `dot` program on this PATH
    line = assert_one_line_error(
        run("grad", "a*a", "a=1", "--draw", str(tmp_path / "g.svg"), env=env), status=1
    )
    assert "dot" in line and "apt-get install graphviz" in line
    assert not (tmp_path / "g.svg").exists()


def test_grad_injection_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    for expression in (
        f"__import__('os').system('touch {target}')",
        f"open('{target}', 'w').write('x')",
        f"a = 1; exec(\"open('{target}', 'w')\")",
    ):
        line = assert_one_line_error(run("grad", expression), status=2)
        assert "col " in line
        assert not target.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["a + open(b)", "a=1", "b=2"], "col 5: unknown function 'open'"),
        (["a * b", "a=1"], "col 5: missing value for 'b'"),
        (["a * 2", "a=1", "x=2"], "name 'x' given but not used"),
        (["a * 2", "a=one"], "bad value in 'a=one': 'one' is not a number"),
        (["a * 2", "a"], "expected NAME=VALUE"),
        (["a * 2", "a=inf"], "must be a finite number"),
        (["a +* 2", "a=1"], "col 4: invalid syntax"),
        (["a.real", "a=1"], "col 1: attribute access"),
        (["log(a)", "a=0"], "col 1: log of Value(data=0.0, label='a')"),
        (["", "a=1"], "the expression is empty"),
    ],
)
def test_grad_errors_are_one_line_with_status_2(args, expected):
    line = assert_one_line_error(run("grad", *args), status=2)
    assert expected in line


def test_console_script_is_installed():
    import shutil

    script = shutil.which("chainrule")
    if script is None:
        pytest.skip("the chainrule console script is not on PATH")
    result = subprocess.run([script, "grad", "b = a + a", "a=3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "  a: 2" in result.stdout
