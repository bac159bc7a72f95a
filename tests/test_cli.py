"""The real ``chainrule`` command, run in a subprocess as a user would run it."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    assert "cannot create output folder" in line and "not a directory" in line
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
        ([], "choose a command: train, grad, sample, explore or info"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_command_lines_are_one_line_with_status_2(args, expected):
    line = assert_one_line_error(run(*args), status=2)
    assert expected in line


def test_the_bare_command_names_every_command_there_is():
    from chainrule.cli import build_parser

    line = assert_one_line_error(run(), status=2)
    listed = line.split("choose a command: ")[1].split(" (see")[0].replace(" or ", ", ").split(", ")
    # The oracle: the commands --help lists, one per line under "positional arguments".
    help_text = run("--help").stdout
    in_help = re.findall(r"^    (\w+) +\S", help_text, re.MULTILINE)
    assert sorted(listed) == sorted(in_help) == sorted(build_parser().commands)
    assert {"train", "grad", "sample", "explore", "info"} <= set(listed)


def test_train_into_a_folder_with_an_earlier_run_says_so_in_one_line_first(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    first = run("train", "moons", "--steps", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "note:" not in first.stderr
    before = (out / "model.json").read_bytes()
    second = run("train", "moons", "--steps", "2", "--seed", "9", "--out", str(out))
    assert second.returncode == 0, second.stderr
    lines = second.stderr.splitlines()
    notes = [line for line in lines if "earlier run" in line]
    assert notes == [
        f"chainrule: note: {out} holds an earlier run (moons.png, model.json); "
        "this run replaces it when it finishes"
    ]
    assert lines[0] == notes[0]  # before the progress bar
    assert (out / "model.json").read_bytes() != before  # and it did replace it


def test_train_into_a_folder_of_other_files_says_nothing(tmp_path):
    pytest.importorskip("sklearn")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "circles.png").write_bytes(b"")  # another data set's picture: not replaced
    result = run("train", "moons", "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ctrl_c_stops_quietly_with_status_130(tmp_path):
    pytest.importorskip("sklearn")
    # (Ctrl-C's own handler first: a child inherits an ignored SIGINT, as the tests have when
    # a shell starts them in the background, and would then train on through the signal)
    start = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'chainrule'; runpy.run_module('chainrule', run_name='__main__', alter_sys=True)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", start, "train", "digits", "--samples", "200", "--steps", "100000",
         "--out", str(tmp_path / "runs" / "digits")],
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
    assert os.listdir(tmp_path) == []  # the output folders it made, empty, are gone


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


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
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
    script = shutil.which("chainrule")
    if script is None:
        pytest.skip("the chainrule console script is not on PATH")
    result = subprocess.run([script, "grad", "b = a + a", "a=3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "  a: 2" in result.stdout


def test_the_version_is_written_once_and_read_by_the_metadata_and_the_command():
    import importlib.metadata

    assert importlib.metadata.version("chainrule") == chainrule.__version__
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"chainrule {chainrule.__version__}\n"
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("run from an installed chainrule, without its source tree")
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is new in Python 3.11")
    import tomllib

    project = tomllib.loads(pyproject.read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "chainrule.__version__"}


# ---------------------------------------------------------------------------------------------
# Divergence, and a learning rate that makes things worse


def _last_line(text):
    """The last line of stderr: tqdm's progress bar comes before it."""
    return text.replace("\r", "\n").strip().splitlines()[-1]


@pytest.mark.parametrize("eager", [[], ["--eager"]])
def test_a_divergence_in_the_last_update_fails_and_writes_nothing(tmp_path, eager):
    pytest.importorskip("sklearn")
    # One step of lr 1e308: the loss of that step is fine (it is measured before the update),
    # but the model it leaves behind outputs inf. That is a failure, not an accuracy.
    result = run("train", "moons", "--lr", "1e308", "--steps", "1", "--out", str(tmp_path), *eager)
    assert result.returncode == 1, result.stdout
    assert _last_line(result.stderr).startswith("chainrule: error: training diverged after the last step")
    assert "Traceback" not in result.stderr
    assert "accuracy" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no picture


def test_a_loss_that_rises_is_a_one_line_warning(tmp_path):
    pytest.importorskip("sklearn")
    result = run("train", "moons", "--lr", "50", "--steps", "10", "--hidden", "4,4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.replace("\r", "\n").splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("chainrule: warning: train: the loss rose from ")
    assert "learning rate (50) is probably too large" in warnings[0]
    assert "warnings.warn" not in result.stderr and "result = train(" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Unknown options: the hint fits the command


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["train", "moons", "--frobnicate"],
            "unrecognized arguments: --frobnicate (see chainrule train --help)",
        ),
        (["train", "moons", "--stesp", "3"], "did you mean --steps?"),
        (["train", "moons", "extra"], "unrecognized arguments: extra (see chainrule train --help)"),
        (
            ["grad", "a", "a=1", "--frobnicate"],
            "unrecognized arguments: --frobnicate (see chainrule grad --help)",
        ),
        (["grad", "a", "a=1", "--darw", "g.svg"], "did you mean --draw?"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate (see chainrule --help)"),
    ],
)
def test_an_unknown_option_gets_the_hint_of_its_command(args, expected):
    line = assert_one_line_error(run(*args), status=2)
    assert expected in line
    if args[0] != "grad":
        assert "EXPR" not in line and "chainrule grad" not in line


def test_only_grad_suggests_the_double_dash_for_an_expression():
    line = assert_one_line_error(run("grad", "-a*b", "a=1", "b=2"), status=2)
    assert "goes after '--'" in line and "chainrule grad --help" in line


# ---------------------------------------------------------------------------------------------
# grad --draw: the numbers first, then the drawing; a failure is one line about the user's path

LECTURE = ["d = a*b; e = a + b; f = d*e", "a=2", "b=-3"]
LECTURE_OUTPUT = ["f = 6", "gradient of f with respect to each input:", "  a: -3", "  b: -8"]
INTERNAL_WORDS = ("save_graph", "draw_dot", ".tmp", "graphviz.", "Traceback", "max_nodes")


def assert_drawing_failed(result, path, reason):
    assert result.stdout.splitlines() == LECTURE_OUTPUT  # the answer was printed before drawing
    line = assert_one_line_error(result, status=1)
    assert f"cannot draw the graph in {path}: {reason}" in line, line
    for word in INTERNAL_WORDS:
        assert word not in line, line


def test_grad_draw_into_a_missing_folder(tmp_path):
    pytest.importorskip("graphviz")
    target = tmp_path / "missing" / "g.svg"
    assert_drawing_failed(run("grad", *LECTURE, "--draw", str(target)), target, "folder does not exist")


@pytest.mark.parametrize(
    "name, reason", [("g", "no suffix tells the format"), ("g.xyz", "Graphviz cannot write '.xyz' files")]
)
def test_grad_draw_with_a_bad_suffix(tmp_path, name, reason):
    pytest.importorskip("graphviz")
    target = tmp_path / name
    assert_drawing_failed(run("grad", *LECTURE, "--draw", str(target)), target, reason)
    assert list(tmp_path.iterdir()) == []


def test_grad_draw_onto_a_folder_names_the_folder_not_a_temporary_file(tmp_path):
    pytest.importorskip("graphviz")
    target = tmp_path / "taken.dot"
    target.mkdir()
    result = run("grad", *LECTURE, "--draw", str(target))
    assert_drawing_failed(result, target, "is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.dot"]  # no temporary file left behind


def test_grad_draw_of_a_graph_too_large_to_draw(tmp_path):
    pytest.importorskip("graphviz")
    target = tmp_path / "g.dot"
    # 1200 uses of a: 1199 additions and a itself, 1200 Values, over the limit of 1000.
    result = run("grad", "+".join(["a"] * 1200), "a=1", "--draw", str(target))
    assert result.stdout.splitlines()[::2] == ["value: 1200", "  a: 1200"]
    line = assert_one_line_error(result, status=1)
    assert f"cannot draw the graph in {target}: it has 1200 values, more than 1000" in line
    for word in INTERNAL_WORDS:
        assert word not in line, line


def test_grad_draw_when_dot_fails_is_one_line_without_its_stderr(tmp_path):
    pytest.importorskip("graphviz")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_dot = fake_bin / "dot"
    fake_dot.write_text("#!/bin/sh\necho 'Error: something broke' >&2\necho 'second line' >&2\nexit 3\n")
    fake_dot.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "g.svg"
    result = run("grad", *LECTURE, "--draw", str(target), env=env)
    assert_drawing_failed(result, target, "Graphviz's dot failed (exit status 3): Error: something broke")
    assert "second line" not in result.stderr
    assert not target.exists()


def test_grad_draw_without_dot_names_the_path_and_the_dot_alternative(tmp_path):
    pytest.importorskip("graphviz")
    env = dict(os.environ, PATH=str(tmp_path))  # no `dot` program on this PATH
    target = tmp_path / "g.svg"
    result = run("grad", *LECTURE, "--draw", str(target), env=env)
    assert_drawing_failed(result, target, "Graphviz's `dot` program was not found")
    assert "--draw graph.dot" in result.stderr and ".source" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Output closed versus other errors of the operating system


def test_a_closed_stdout_stops_quietly():
    process = subprocess.Popen(
        [sys.executable, "-m", "chainrule", "grad", "b = a + a", "a=3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader went away before reading anything, like `| head -0`
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr == b""


def run_with_fault(tmp_path, patch, *args):
    """``python -m chainrule ARGS`` with ``patch`` (Python code) run first, to inject a fault."""
    code = "\n".join(
        [
            "import runpy, sys",
            patch,
            f"sys.argv = ['chainrule', *{list(args)!r}]",
            "runpy.run_module('chainrule', run_name='__main__')",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_a_broken_pipe_that_is_not_stdout_is_reported(tmp_path):
    pytest.importorskip("graphviz")
    patch = (
        "import errno, chainrule.draw\n"
        "def broken(*args, **kwargs): raise BrokenPipeError(errno.EPIPE, 'Broken pipe')\n"
        "chainrule.draw.save_graph = broken"
    )
    result = run_with_fault(tmp_path, patch, "grad", *LECTURE, "--draw", "g.svg")
    assert_drawing_failed(result, "g.svg", "broken pipe")


def _read_only_folder_command(folder, *args):
    """A command that runs chainrule with ``folder`` mounted read-only (in a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount a read-only file system")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare cannot make a mount namespace here")
    chainrule_command = shlex.join([sys.executable, "-m", "chainrule", *args])
    script = f"mount -t tmpfs -o ro none {shlex.quote(str(folder))} && exec {chainrule_command}"
    return ["unshare", "-rm", "sh", "-c", script]


def test_a_read_only_file_system_is_reported_as_such(tmp_path):
    pytest.importorskip("sklearn")
    folder = tmp_path / "ro"
    folder.mkdir()
    for out, expected in (
        (folder, f"cannot write into output folder {str(folder)!r}: read-only file system"),
        (folder / "sub", f"cannot create output folder {str(folder / 'sub')!r}: read-only file system"),
    ):
        command = _read_only_folder_command(folder, "train", "moons", "--steps", "1", "--out", str(out))
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        line = assert_one_line_error(result, status=1)
        assert expected in line


def test_a_drawing_on_a_read_only_file_system_is_reported_as_such(tmp_path):
    pytest.importorskip("graphviz")
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "g.dot"
    command = _read_only_folder_command(folder, "grad", *LECTURE, "--draw", str(target))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert_drawing_failed(result, target, "read-only file system")


# ---------------------------------------------------------------------------------------------
# Long expressions, and results that are not finite numbers


@pytest.mark.parametrize("terms", [5000, 50000])
@pytest.mark.parametrize("op", ["+", "*"])
def test_an_expression_with_thousands_of_terms(terms, op):
    # a+a+...+a = terms*a, so the value is terms and d/da = terms; a*a*...*a at a=1 is 1 and
    # d/da = terms * a**(terms-1) = terms.
    value = terms if op == "+" else 1
    result = run("grad", op.join(["a"] * terms), "a=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"value: {value}",
        "gradient of the value with respect to each input:",
        f"  a: {terms}",
    ]


def test_a_sum_of_thousands_of_products_and_assignments():
    # b = (a*a + a*a + ...) with 5000 products = 5000 a^2; c = b - a: at a=2, c = 19998, dc/da = 10000*2 - 1
    source = "b = " + " + ".join(["a*a"] * 5000) + "; c = b - a"
    result = run("grad", source, "a=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "c = 19998",
        "gradient of c with respect to each input:",
        "  a: 19999",
    ]


def test_an_expression_nested_too_deeply_is_one_line():
    line = assert_one_line_error(run("grad", "(" * 5000 + "a" + ")" * 5000, "a=1"), status=2)
    assert "nested" in line


INF = "inf (infinite: too large for a float)"
NAN = "nan (not a number: the result is undefined, as inf - inf is)"


@pytest.mark.parametrize(
    "args, lines",
    [
        # exp(1000) overflows a float, and so does its derivative exp(1000).
        (["f = exp(a)", "a=1000"], [f"f = {INF}", f"  a: {INF}"]),
        (["f = -exp(a)", "a=1000"], [f"f = -{INF}", f"  a: -{INF}"]),
        # inf - inf has no value: nan, and d/da = exp(a) - exp(a) is nan as well.
        (["f = exp(a) - exp(a)", "a=1000"], [f"f = {NAN}", f"  a: {NAN}"]),
        # a*a at 1e200 overflows, but its derivative 2a = 2e200 does not.
        (["f = a*a", "a=1e200"], [f"f = {INF}", "  a: 2e+200"]),
    ],
)
def test_a_result_that_is_not_a_finite_number_says_so(args, lines):
    result = run("grad", *args)
    assert result.returncode == 0, result.stderr
    output = result.stdout.splitlines()
    assert [output[0], output[2]] == lines


# ---------------------------------------------------------------------------------------------
# Empty options, the help text, and numpy absent


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--hidden", ""],
            "argument --hidden: expected layer sizes separated by commas, such as 16,16, got ''",
        ),
        (["--hidden", " "], "argument --hidden: expected layer sizes"),
        (["--out", ""], "argument --out: expected a folder name, got ''"),
    ],
)
def test_empty_hidden_and_out_are_errors(tmp_path, args, expected):
    line = assert_one_line_error(run("train", "moons", "--steps", "1", *args, cwd=tmp_path), status=2)
    assert expected in line
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_an_empty_draw_path_is_an_error(tmp_path):
    line = assert_one_line_error(run("grad", "a", "a=1", "--draw", "", cwd=tmp_path), status=2)
    assert "argument --draw: expected a file name, got ''" in line


def test_train_help_shows_the_learning_rate_of_each_optimizer():
    pytest.importorskip("sklearn")
    from chainrule.training import RECIPES, train

    result = run("train", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    groups = re.findall(r"([a-z]+(?:, [a-z]+)*): sgd ([0-9.e+-]+), adam ([0-9.e+-]+)", text)
    shown = {
        name: {"sgd": float(sgd), "adam": float(adam)}
        for names, sgd, adam in groups
        for name in names.split(", ")
    }
    classifiers = {name for name, recipe in RECIPES.items() if "sgd" in recipe.lrs}
    assert set(shown) == classifiers, text
    assert "names: adam 0.01" in text  # the GPT recipe trains with Adam only
    for name in classifiers:  # what train() really uses when --lr is not given
        for optimizer in ("sgd", "adam"):
            settings = train(
                name, steps=1, samples=2, hidden=[1], optimizer=optimizer, compile=False
            ).settings
            assert shown[name][optimizer] == settings["lr"], (name, optimizer)


def test_without_numpy_grad_works_and_train_says_what_to_install(tmp_path):
    stub = tmp_path / "stub" / "numpy"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named numpy (hidden by a test)')\n")
    paths = [str(stub.parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    result = run("grad", "b = a + a", "a=3", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "  a: 2"
    line = assert_one_line_error(
        run("train", "moons", "--steps", "1", "--out", str(tmp_path / "out"), env=env), status=1
    )
    assert 'chainrule train needs numpy: pip install "chainrule[demo]"' in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# chainrule train names and chainrule sample


@pytest.fixture(scope="module")
def trained_names(tmp_path_factory):
    pytest.importorskip("names")
    out = tmp_path_factory.mktemp("names")
    result = run("train", "names", "--steps", "3", "--seed", "5", "--out", str(out))
    return result, out


def test_train_names_writes_the_loss_curve_and_the_checkpoint_and_prints_samples(trained_names):
    result, out = trained_names
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    model = "GPT(27, n_layer=1, n_head=4, n_embd=16, block_size=16)"
    assert lines[0].startswith(f"names: {model}, adam from lr 0.01")
    assert lines[1].startswith("mean loss over the last 3 steps: ")
    sampled = lines[2].removeprefix("names sampled from the model: ").split(", ")
    assert len(sampled) == 10 and all(set(name) <= set("abcdefghijklmnopqrstuvwxyz") for name in sampled)
    assert (out / "names.png").read_bytes()[:8] == PNG_MAGIC
    loaded = chainrule.load(out / "model.json")
    assert repr(loaded) == model
    assert loaded.chars == "abcdefghijklmnopqrstuvwxyz"


def _uncovered_stretches(spans, width):
    """The stretches of [0, width] that no span (x0, x1) covers, widest first."""
    gaps, covered = [], 0.0
    for x0, x1 in sorted(spans):
        if x0 > covered:
            gaps.append(x0 - covered)
        covered = max(covered, x1)
    return sorted([*gaps, width - covered], reverse=True)


# untrained: long random names; trained (slow: about 5 s): short ones
@pytest.mark.parametrize("steps", [3, pytest.param(300, marks=pytest.mark.slow)])
def test_the_names_picture_has_no_empty_column(steps):
    # docs/names.png had a third of its width for ten short names, centred: about a tenth of
    # the picture blank on either side of them. Measured on the drawn figure, in pixels.
    pytest.importorskip("names")
    pytest.importorskip("matplotlib")
    from chainrule.plots import training_figure
    from chainrule.training import train

    figure = training_figure(train("names", steps=steps, compile=False))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    curve, column = figure.axes
    texts = [column.title, *column.texts]
    extents = [text.get_window_extent(renderer) for text in texts]
    spans = [(box.x0, box.x1) for box in [curve.get_tightbbox(renderer), *extents]]
    width = figure.bbox.width
    assert _uncovered_stretches(spans, width)[0] < 0.03 * width
    widest = max(box.width for box in extents)
    assert widest <= column.bbox.width <= widest + 0.03 * width  # the column is as wide as its text
    assert curve.bbox.width > 0.6 * width  # and the loss curve has the rest


def test_sample_prints_names_from_a_checkpoint_the_same_for_a_seed(trained_names):
    _, out = trained_names
    first = run("sample", str(out / "model.json"), "--n", "7", "--temperature", "0.8", "--seed", "3")
    assert first.returncode == 0, first.stderr
    names = first.stdout.splitlines()
    assert len(names) == 7
    again = run("sample", str(out / "model.json"), "--n", "7", "--temperature", "0.8", "--seed", "3")
    assert again.stdout == first.stdout
    from chainrule.gpt import sample

    assert names == sample(chainrule.load(out / "model.json"), 7, temperature=0.8, seed=3)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "names", "--hidden", "4"], "--hidden: options of the MLP data sets, not of names"),
        (
            ["train", "names", "--activation", "tanh", "--batch-size", "2"],
            "--activation --batch-size: options",
        ),
        (["train", "names", "--optimizer", "sgd"], "names trains with adam only, not sgd"),
        (
            ["sample", "model.json", "--temperature", "0"],
            "argument --temperature: expected a positive number",
        ),
        (["sample", "model.json", "--n", "0"], "argument --n: expected a positive integer"),
        (["sample"], "the following arguments are required: CHECKPOINT"),
    ],
)
def test_bad_names_and_sample_command_lines(tmp_path, args, expected):
    line = assert_one_line_error(run(*args, cwd=tmp_path), status=2)
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_sample_refuses_a_checkpoint_that_is_not_a_gpt(tmp_path):
    from chainrule.nn import MLP

    chainrule.save(MLP(2, [3, 1]), tmp_path / "mlp.json")
    line = assert_one_line_error(run("sample", str(tmp_path / "mlp.json")), status=1)
    assert "holds MLP(2, [3, 1], activation='relu'), not a GPT" in line
    line = assert_one_line_error(run("sample", str(tmp_path / "missing.json")), status=1)
    assert "no such checkpoint file" in line
