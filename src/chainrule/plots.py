"""Pictures of a training run: what the network learned, and how the loss and accuracy went.

``plot_training(result, "moons.png")`` writes one PNG with two panels:

- left, for a data set in the plane (moons, circles, blobs): the class the network predicts
  at every point of a grid (the decision regions), with the data on top, training points as
  dots and test points as crosses; for digits: some test images with the predicted class,
  in red where it is wrong;
- right: the loss (log scale) and the batch accuracy at every step.

For a language model (``chainrule train names``) the picture follows its recipe instead: the
loss of every step with its running mean on the left, and the names the trained model made
up on the right.

matplotlib draws it on its Agg canvas, which renders to a file and needs no display. The
figure is built directly (``matplotlib.figure.Figure``) rather than through ``pyplot``, so
plotting never changes the backend or the figures of a notebook that calls it.

>>> import os, tempfile
>>> from chainrule.datasets import moons
>>> from chainrule.training import train
>>> result = train(moons(n_samples=20, seed=0), steps=3, hidden=[4])
>>> with tempfile.TemporaryDirectory() as folder:
...     path = plot_training(result, os.path.join(folder, "moons.png"))
...     path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ._files import write_atomically  # the one atomic writer, whose errors name the path
from .datasets import Dataset
from .nn import MLP
from .training import TrainResult, predict, predict_all

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

__all__ = ["plot_training", "training_figure"]

GRID_SIZE = 40  # the decision regions are evaluated on a GRID_SIZE x GRID_SIZE grid
FINE_GRID_SIZE = 120  # the same when the model runs compiled, which is fast enough for more
SHOWN_DIGITS = 4  # digits shows SHOWN_DIGITS x SHOWN_DIGITS test images


def _import_matplotlib() -> tuple[type[Figure], Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            'chainrule.plots needs matplotlib: pip install "chainrule[demo]"', name="matplotlib"
        ) from None
    return Figure, FigureCanvasAgg


def _class_colors(n_classes: int) -> list[str]:
    # matplotlib's default color cycle: distinct colors that read well on white.
    cycle = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    return [cycle[i % len(cycle)] for i in range(n_classes)]


# ---------------------------------------------------------------------------------------------
# Left panel: decision regions (2-D data) or sample images (digits).


def _grid_axis(values: list[float], size: int) -> list[float]:
    """``size`` evenly spaced points spanning ``values`` plus a margin of a tenth on each side."""
    low, high = min(values), max(values)
    margin = (high - low) / 10 or 1.0
    low, high = low - margin, high + margin
    return [low + (high - low) * i / (size - 1) for i in range(size)]


def _draw_decision_regions(ax: Axes, result: TrainResult) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    data = cast(Dataset, result.data)  # a classifier's (so are the model and the two panels)
    points = data.X_train + data.X_test
    size = FINE_GRID_SIZE if result.settings.get("compile") else GRID_SIZE
    xs = _grid_axis([p[0] for p in points], size)
    ys = _grid_axis([p[1] for p in points], size)
    grid = [[x, y] for y in ys for x in xs]
    model = cast(MLP, result.model)
    classes = predict_all(model, grid, data.n_classes, compile=result.settings.get("compile", False))
    regions = [classes[row * len(xs) : (row + 1) * len(xs)] for row in range(len(ys))]

    colors = _class_colors(data.n_classes)
    levels = [k - 0.5 for k in range(data.n_classes + 1)]  # one band of color per class
    ax.contourf(xs, ys, regions, levels=levels, colors=colors, alpha=0.25)
    cmap = ListedColormap(colors)
    style: dict[str, Any] = {"cmap": cmap, "vmin": 0, "vmax": data.n_classes - 1}
    train_x, train_y = [p[0] for p in data.X_train], [p[1] for p in data.X_train]
    ax.scatter(train_x, train_y, c=data.y_train, s=18, edgecolors="black", linewidths=0.4, **style)
    if data.X_test:
        test_x, test_y = [p[0] for p in data.X_test], [p[1] for p in data.X_test]
        ax.scatter(test_x, test_y, c=data.y_test, marker="x", s=24, **style)
        # The markers' colors are the classes, so the legend shows the shapes in gray.
        shapes = [
            Line2D([], [], marker="o", linestyle="", color="gray", markeredgecolor="black", label="train"),
            Line2D([], [], marker="x", linestyle="", color="gray", label="test"),
        ]
        ax.legend(handles=shapes, loc="upper right", fontsize="small")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_title("decision regions")


def _draw_digits(ax: Axes, result: TrainResult) -> None:
    """The first test images in one picture (a mosaic), each with the predicted class above it."""
    data, model = cast(Dataset, result.data), cast(MLP, result.model)
    images, labels = (data.X_test, data.y_test) if data.X_test else (data.X_train, data.y_train)
    side = round(len(images[0]) ** 0.5)  # 8 for the 8x8 digits
    tile_width, tile_height = side + 1, side + 4  # a blank column to the right, a band for the text above
    n = SHOWN_DIGITS
    mosaic = [[0.0] * (n * tile_width) for _ in range(n * tile_height)]
    for k, (pixels, label) in enumerate(zip(images[: n * n], labels, strict=False)):
        top, left = (k // n) * tile_height + 4, (k % n) * tile_width
        for r in range(side):
            mosaic[top + r][left : left + side] = pixels[r * side : (r + 1) * side]
        guess = predict(model, pixels, data.n_classes)
        right = guess == label
        text = f"{guess}" if right else f"{guess} (is {label})"
        x, y = left + side / 2 - 0.5, top - 1.2  # centred over the tile, in pixel coordinates
        ax.text(x, y, text, ha="center", va="bottom", color="black" if right else "red")
    # One image for all tiles: much faster to draw than a grid of small plots.
    ax.imshow(mosaic, cmap="gray_r", vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    ax.set_title("test images: predicted class (true class if wrong)" if data.X_test else "predicted classes")


# ---------------------------------------------------------------------------------------------
# Right panel: loss and accuracy per step.


def _draw_curves(ax: Axes, result: TrainResult) -> None:
    steps = range(1, len(result.losses) + 1)
    ax.plot(steps, result.losses, color="C0", label="loss")
    if all(loss > 0 for loss in result.losses):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="C0")
    ax.set_title("training")

    # With full-batch training every step sees the whole training set.
    batch_size = result.settings.get("batch_size")
    full_batch = batch_size is None or batch_size >= len(cast(Dataset, result.data).X_train)
    label = "training accuracy" if full_batch else "batch accuracy"
    accuracy_ax = ax.twinx()
    accuracy_ax.plot(steps, result.accuracies, color="C1", label=label)
    accuracy_ax.set_ylim(0.0, 1.02)
    accuracy_ax.set_ylabel(label, color="C1")


def _title(result: TrainResult) -> str:
    title = f"{result.data.name}: train accuracy {result.train_accuracy:.1%}"
    if result.test_accuracy is not None:
        title += f", test accuracy {result.test_accuracy:.1%}"
    return title + f" after {len(result.losses)} steps"


# ---------------------------------------------------------------------------------------------
# A language model: the loss curve and the sampled names.

RUNNING_MEAN = 100  # the loss curve's running mean is over this many steps


def _running_mean(losses: list[float], window: int) -> list[float]:
    """The mean of each step's loss and the ``window - 1`` losses before it (fewer at the start)."""
    means, total = [], 0.0
    for i, loss in enumerate(losses):
        total += loss
        if i >= window:
            total -= losses[i - window]
        means.append(total / min(i + 1, window))
    return means


def _draw_loss_curve(ax: Axes, result: TrainResult) -> None:
    steps = range(1, len(result.losses) + 1)
    window = min(RUNNING_MEAN, len(result.losses))
    ax.plot(steps, result.losses, color="C0", alpha=0.3, linewidth=0.8, label="loss of the step's name")
    ax.plot(steps, _running_mean(result.losses, window), color="C0", label=f"mean of the last {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per letter (nats)")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title("training loss")


def _draw_samples(ax: Axes, result: TrainResult) -> None:
    ax.set_axis_off()
    ax.set_title("sampled names")
    for i, name in enumerate(result.samples):
        ax.text(0.5, 1 - (i + 0.5) / max(len(result.samples), 1), name or "(empty)", ha="center", va="center")


_TEXT_MARGIN = 0.05  # inches either side of the widest text in a column of text


def _fit_column_to_its_text(figure: Figure, grid: GridSpec, wide_ax: Axes, text_ax: Axes) -> None:
    """Make ``text_ax`` (a column of text, no axis) as wide as its widest text, its title
    included, and give ``wide_ax`` the rest: a fixed share left a blank band either side of
    the names, as wide as the names themselves. The texts' widths are known once the figure
    is laid out, so it is laid out twice: once to measure, then with the columns' widths set."""
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]  # (an Agg canvas has one)
    needed = max(text.get_window_extent(renderer).width for text in [text_ax.title, *text_ax.texts])
    needed += 2 * _TEXT_MARGIN * figure.dpi
    shared = wide_ax.bbox.width + text_ax.bbox.width  # what the two axes have between them
    grid.set_width_ratios([shared - needed, needed])


def _language_model_title(result: TrainResult) -> str:
    window = min(RUNNING_MEAN, len(result.losses))
    mean = sum(result.losses[-window:]) / window
    return f"{result.data.name}: mean loss {mean:.3f} over the last {window} of {len(result.losses)} steps"


# ---------------------------------------------------------------------------------------------
# Public functions


def training_figure(result: TrainResult) -> Figure:
    """The two-panel matplotlib ``Figure`` for a ``TrainResult`` (see the module docstring).

    >>> from chainrule.datasets import blobs
    >>> from chainrule.training import train
    >>> figure = training_figure(train(blobs(n_samples=12, seed=0), steps=2, hidden=[3]))
    >>> len(figure.axes)     # regions, loss, and the accuracy axis that shares the loss's x
    3
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg: no display needed
    if result.language_model:
        grid = figure.add_gridspec(1, 2)
        left, right = grid[0], grid[1]
        curve_ax, samples_ax = figure.add_subplot(left), figure.add_subplot(right)
        _draw_loss_curve(curve_ax, result)
        _draw_samples(samples_ax, result)
        figure.suptitle(_language_model_title(result))
        _fit_column_to_its_text(figure, grid, curve_ax, samples_ax)
        return figure
    columns = figure.add_gridspec(1, 2, width_ratios=[1, 1.1])
    left, right = columns[0], columns[1]
    if cast(Dataset, result.data).n_features == 2:
        _draw_decision_regions(figure.add_subplot(left), result)
    else:
        _draw_digits(figure.add_subplot(left), result)
    _draw_curves(figure.add_subplot(right), result)
    figure.suptitle(_title(result))
    return figure


def plot_training(result: TrainResult, path: str | os.PathLike) -> Path:
    """Write the training figure of ``result`` to ``path`` as a PNG and return the path.

    The image is rendered in memory first and then moved into place in one step, so a
    failure never leaves a half-written file.
    """
    path = Path(path)
    buffer = io.BytesIO()
    training_figure(result).savefig(buffer, format="png", dpi=100)
    write_atomically(path, [buffer.getvalue()])
    return path
