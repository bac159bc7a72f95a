"""The explorer page in a real browser: Debian's chromium, driven by Playwright for Python.

Skipped when Playwright or chromium is missing (`.ci/run` installs both). Each test opens the
page, presses its buttons as a user would, and reads the numbers back from the data-grad
attributes; every page is watched for network requests and console errors.
"""

import math
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import Value, topological_order
from chainrule.explorer import explore
from chainrule.expression import evaluate

pytestmark = pytest.mark.slow  # a browser for each test

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("CHAINRULE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
        except Exception as error:  # a chromium that cannot start here is an environment problem
            pytest.skip(f"chromium does not start: {error}")
        yield browser
        browser.close()


class Page:
    """A browser tab showing an explorer page, recording requests, console errors and dialogs."""

    def __init__(self, browser, viewport=DESKTOP):
        self.tab = browser.new_page(viewport=viewport)
        self.tab.set_default_timeout(5000)  # everything here is instant; fail fast if not
        self.requests, self.errors, self.dialogs = [], [], []
        self.tab.route("**/*", self._record)
        self.tab.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.tab.on("pageerror", lambda error: self.errors.append(str(error)))
        self.tab.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def _record(self, route):
        self.requests.append(route.request.url)
        route.continue_()

    def open_file(self, path: Path):
        self.tab.goto(path.as_uri())
        return self

    def show(self, page_html: str):
        self.tab.set_content(page_html)
        return self

    def button(self, name):
        return self.tab.get_by_role("button", name=name, exact=True)

    def step(self, times=1):
        for _ in range(times):
            self.button("Step").click()

    def run(self):
        self.button("Run backward").click()

    def set_overwrite(self, on: bool):
        self.tab.get_by_role("switch", name="overwrite", exact=True).set_checked(on)

    def grads(self) -> list[float]:
        """data-grad of every Value, in topological order (data-id)."""
        cells = self.tab.eval_on_selector_all(
            ".value", "els => els.map(e => [Number(e.dataset.id), e.dataset.grad])"
        )
        return [float(grad) for _, grad in sorted(cells)]

    def value(self, label):
        return self.tab.locator(f'.value[data-label="{label}"]')

    def close(self):
        assert self.errors == [], self.errors
        self.tab.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def make(viewport=DESKTOP):
        page = Page(browser, viewport)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def lecture_graph():
    return evaluate("d = a*b; e = a + b; f = d*e", {"a": -2, "b": 3}).output


def reuse_graph():
    return evaluate("b = a + a", {"a": 3}).output


def chainrule_grads(root):
    """What chainrule's own backward gives, on a fresh copy of the graph's numbers."""
    root.backward()
    grads = [v.grad for v in topological_order(root)]
    for v in topological_order(root):
        v.grad = 0.0
    return grads


# The lecture's buggy pass, written out independently of the page and of chainrule's rules:
# walk the nodes in reverse topological order; each node's rule SETS each child's grad to
# local * node.grad (`=` where it should be `+=`). Local derivatives by hand, per op.
def lecture_locals(node):
    x = [c.data for c in node.children]
    op, out = node.op, node.data
    if op == "+":
        return [1.0, 1.0]
    if op == "-":
        return [1.0, -1.0]
    if op == "*":
        return [x[1], x[0]]
    if op == "/":
        return [1.0 / x[1], -x[0] / x[1] ** 2]
    if op == "neg":
        return [-1.0]
    if op == "**":
        return [x[1] * x[0] ** (x[1] - 1.0), None]  # the constant exponent gets nothing
    if op == "tanh":
        return [1.0 - out**2]
    if op == "sigmoid":
        return [out * (1.0 - out)]
    if op == "exp":
        return [out]
    if op == "relu":
        return [1.0 if x[0] > 0 else 0.0]
    raise AssertionError(f"no hand-written rule for {op}")


def overwrite_grads(root):
    order = topological_order(root)
    grad = {v: 0.0 for v in order}
    grad[root] = 1.0
    for node in reversed(order):
        for child, local in zip(node.children, lecture_locals(node) if node.children else []):
            if local is not None:
                grad[child] = local * grad[node]
    return [grad[v] for v in order]


def assert_close(shown, expected, exact=False):
    assert len(shown) == len(expected)
    for got, want in zip(shown, expected):
        if exact:
            assert got == want, (shown, expected)
        else:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (shown, expected)


# ---------------------------------------------------------------------------------------------
# The seed's two examples


@pytest.mark.parametrize("layout", ["graphviz", "layered"])
def test_lecture_example_from_a_file_with_no_requests(open_page, tmp_path, layout):
    root = lecture_graph()
    path = tmp_path / "lecture.html"
    explore(root, path, layout=layout)
    page = open_page().open_file(path)
    assert page.grads() == [0.0] * 5  # nothing has run yet
    page.run()
    assert_close(page.grads(), chainrule_grads(root), exact=True)  # a: -3, b: -8
    assert page.grads()[:2] == [-3.0, -8.0]
    page.set_overwrite(True)
    assert_close(page.grads(), overwrite_grads(root), exact=True)  # a: 3, b: -2
    assert page.grads()[:2] == [3.0, -2.0]
    assert page.requests == [path.as_uri()]  # the file itself, and nothing else


def test_reuse_example_accumulates_and_overwrites(open_page):
    root = reuse_graph()
    page = open_page().show(explore(root).html)
    page.run()
    assert page.grads() == chainrule_grads(root) == [2.0, 1.0]
    page.set_overwrite(True)
    assert page.grads() == overwrite_grads(root) == [1.0, 1.0]
    # The wrong number is shown next to the right one, and both shares a received.
    box = page.value("a")
    assert "correct 2.0000" in box.text_content()
    assert "received 1 → 1" in box.text_content()
    assert page.requests == []


def test_step_shows_the_node_its_local_derivative_and_the_update(open_page):
    page = open_page().show(explore(lecture_graph()).html)
    page.step()  # the seed
    assert "f.grad = 1" in page.tab.locator("#explanation").text_content()
    page.step(2)  # f's rule, then e's
    explanation = page.tab.locator("#explanation").text_content()
    assert "e = a + b" in explanation
    assert "local derivative de/da = 1" in explanation
    assert "a.grad += 1 * -6" in explanation
    assert page.tab.locator(".value.current").get_attribute("data-label") == "e"
    page.step()  # d's rule: a gets its second share
    explanation = page.tab.locator("#explanation").text_content()
    assert "local derivative dd/da = 3" in explanation
    assert "a.grad += 3 * 1  →  -6 + 3 = -3" in explanation
    page.set_overwrite(True)
    assert "a.grad = 3 * 1 = 3  (the -6 it held is lost)" in page.tab.locator("#explanation").text_content()
    assert page.button("Step").is_disabled()


def test_hover_shows_formula_inputs_and_the_sum_of_contributions(open_page):
    page = open_page().show(explore(lecture_graph()).html)
    page.run()
    page.value("a").hover()
    details = page.tab.locator("#details").text_content()
    assert "a.grad = -6 (from e: 1 * -6) + 3 (from d: 3 * 1) = -3" in details
    page.value("f").hover()
    details = page.tab.locator("#details").text_content()
    assert "f = d * e = -6" in details and "inputs: d = -6, e = 1" in details


def test_the_page_is_keyboard_operable(open_page):
    page = open_page().show(explore(lecture_graph()).html)
    keyboard = page.tab.keyboard
    keyboard.press("Tab")  # Step
    keyboard.press("Enter")
    assert page.tab.locator("#progress").text_content() == "step 1 of 4"
    keyboard.press("Tab")  # Run backward
    keyboard.press("Space")
    assert page.grads()[:2] == [-3.0, -8.0]
    keyboard.press("Tab")  # Reset: disabled buttons are skipped, so focus is here
    assert page.tab.evaluate("document.activeElement.id") == "reset"
    keyboard.press("Tab")  # the overwrite switch
    keyboard.press("Space")
    assert page.tab.get_by_role("switch", name="overwrite").is_checked()
    keyboard.press("Tab")  # the first Value
    assert page.tab.evaluate("document.activeElement.dataset.label") == "a"
    keyboard.press("Enter")
    details = page.tab.locator("#details").text_content()
    assert "a.grad = 3: each share replaced the one before" in details
    assert "with += it would be -3" in details
    keyboard.press("Shift+Tab")
    keyboard.press("Shift+Tab")  # back to Reset
    keyboard.press("Enter")
    assert page.grads() == [0.0] * 5


def test_a_hostile_label_is_shown_as_text(open_page):
    label = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
    x = Value(2.0, label=label)
    page = open_page().show(explore(x * x, title=label).html)
    page.run()
    assert page.tab.locator(".value").first.get_attribute("data-label") == label
    assert page.dialogs == [] and page.tab.locator("img").count() == 0
    assert page.grads() == [4.0, 1.0]


def test_without_dot_the_page_works_the_same(open_page, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # hide Graphviz's dot
    root = lecture_graph()
    made = explore(root)
    assert made.layout == "layered"
    page = open_page().show(made.html)
    page.run()
    assert_close(page.grads(), chainrule_grads(root), exact=True)


# ---------------------------------------------------------------------------------------------
# Drawn expressions: the page against chainrule's backward and against the lecture's bug


@st.composite
def expressions(draw):
    """'t1 = ...; t2 = ...' over inputs a, b, c, reusing names, with bounded values."""
    names = ["a", "b", "c"]
    statements = []
    for i in range(draw(st.integers(1, 5))):
        x, y = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        form = draw(
            st.sampled_from(
                [
                    "{x} + {y}",
                    "{x} - {y}",
                    "{x} * {y}",
                    "{x} / ({y}*{y} + 1)",
                    "tanh({x})",
                    "sigmoid({x}) * {y}",
                    "relu({x}) + {y}",
                    "{x} ** 2",
                    "-{x} * {y}",
                ]
            )
        )
        statements.append(f"t{i} = " + form.format(x=x, y=y))
        names.append(f"t{i}")
    values = {name: draw(st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3))) for name in "abc"}
    return "; ".join(statements), values


def used_inputs(source, values):
    from chainrule.expression import parse

    return {name: values[name] for name in parse(source).inputs}


@pytest.fixture(scope="module")
def shared_tab(browser):
    """One tab for every drawn example: opening a tab per example would take most of the time."""
    page = Page(browser)
    yield page
    page.close()


@settings(max_examples=15)
@given(expressions(), st.integers(0, 12))
def test_drawn_expressions_match_chainrule_and_the_lecture(shared_tab, case, k):
    source, values = case
    root = evaluate(source, used_inputs(source, values)).output
    page = shared_tab
    page.show(explore(root, layout="layered").html)
    # The buttons are pressed from a script here, as someone scripting the page would, which
    # is much faster than simulated clicks; the other tests click and type.
    press = "ids => ids.forEach(id => { const b = document.getElementById(id); if (!b.disabled) b.click(); })"
    page.tab.evaluate(press, ["run"])
    ran = page.grads()
    assert_close(ran, chainrule_grads(root))
    page.tab.evaluate("() => document.getElementById('overwrite').click()")
    assert_close(page.grads(), overwrite_grads(root))
    # Stepping k times, then running the rest, ends where running all at once does.
    page.tab.evaluate(press, ["reset", "overwrite", *["step"] * k, "run"])
    assert page.tab.evaluate("document.getElementById('overwrite').checked") is False
    assert page.grads() == ran
    assert page.requests == [] and page.errors == []


# ---------------------------------------------------------------------------------------------
# Readable on a desktop and on a phone

# For every box (a value's, and an op's ellipse): how far the middle of the text in each of its
# cells is from the middle of the box, in pixels, as the browser lays the text out (getBBox).
# A cell's texts are those at the same x: its name, its data, or its grad with "correct" under it.
_TEXT_OFFSETS = """() => {
  const offsets = [];
  document.querySelectorAll(".value").forEach((group) => {
    const box = group.querySelector("rect.box").getBBox();
    const cells = {};
    group.querySelectorAll("text").forEach((text) => {
      if (text.classList.contains("received") || !text.textContent) return;  // below the box
      (cells[text.getAttribute("x")] = cells[text.getAttribute("x")] || []).push(text.getBBox());
    });
    Object.values(cells).forEach((boxes) => {
      const top = Math.min(...boxes.map((b) => b.y)), bottom = Math.max(...boxes.map((b) => b.y + b.height));
      offsets.push((top + bottom) / 2 - (box.y + box.height / 2));
    });
  });
  document.querySelectorAll(".op").forEach((op) => {
    const ring = op.querySelector("ellipse").getBBox(), label = op.querySelector("text").getBBox();
    offsets.push(label.y + label.height / 2 - (ring.y + ring.height / 2));
  });
  return offsets;
}"""


@pytest.mark.parametrize("overwrite", [False, True], ids=["accumulate", "overwrite"])
def test_the_text_is_centred_vertically_in_its_boxes(open_page, overwrite):
    # It sat at the top: one line of numbers in a box of room for two (the second, "correct",
    # shows in overwrite mode only).
    page = open_page().show(explore(lecture_graph()).html)
    page.run()
    page.set_overwrite(overwrite)
    offsets = page.tab.evaluate(_TEXT_OFFSETS)
    assert len(offsets) == 5 * 3 + 3  # 5 values of 3 cells, 3 ops
    assert max(map(abs, offsets)) <= 1.5, offsets


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_screenshots_at_desktop_and_phone_size(open_page, tmp_path, viewport):
    page = open_page(viewport).show(explore(lecture_graph(), title="d = a*b; e = a + b; f = d*e").html)
    page.step(4)
    page.set_overwrite(True)
    page.value("a").hover()
    # Every control is inside the viewport's width, and the text in the boxes is at least 11px.
    for name in ("Step", "Run backward", "Reset"):
        box = page.button(name).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    sizes = page.tab.eval_on_selector_all(".value text", "els => els.map(e => getComputedStyle(e).fontSize)")
    assert min(float(size.removesuffix("px")) for size in sizes) >= 11
    # The page itself does not scroll sideways; only the graph's own box does, on a phone.
    assert page.tab.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    shot = page.tab.screenshot(path=str(tmp_path / "explore.png"))
    assert shot.startswith(b"\x89PNG")


def test_a_page_of_500_values_opens_and_runs(open_page):
    x = Value(0.5, label="x")
    total = x
    while len(topological_order(total)) < 498:
        total = (total * x).tanh() + x
    page = open_page().show(explore(total, layout="layered").html)
    page.run()
    grads = page.grads()
    assert_close(grads, chainrule_grads(total))
