// The backpropagation explorer's script. It reads the graph that Python embedded (nodes in
// topological order, and for each backward step the local derivatives that chainrule's own
// rules gave), draws it, and replays the backward pass one step at a time. It only multiplies
// and adds: every derivative was computed in Python. Nothing here evaluates text as code, and
// every label reaches the page through textContent, never as HTML.
(function () {
  "use strict";

  const graph = JSON.parse(document.getElementById("chainrule-graph").textContent);
  const sizes = graph.sizes;
  const nodes = graph.nodes; // children before the values made from them
  const count = nodes.length;
  const MODES = ["accumulate", "overwrite"];
  const SVG = "http://www.w3.org/2000/svg"; // a namespace name, never fetched
  const LINE = 17; // px from a box's first line of text to its second (grad, then "correct")

  // Numbers arrive as JSON numbers, or as "Infinity", "-Infinity" and "NaN", which JSON lacks.
  nodes.forEach(function (node) {
    node.data = Number(node.data);
    node.expected = 0; // how many shares of gradient this value will receive
    node.users = []; // the values whose rules send it a share
  });
  const steps = graph.steps.map(function (step) {
    const shares = step.shares.map(function (share) {
      return { child: share[0], local: Number(share[1]) };
    });
    shares.forEach(function (share) {
      nodes[share.child].expected += 1;
      if (nodes[share.child].users.indexOf(step.node) < 0) nodes[share.child].users.push(step.node);
    });
    return { node: step.node, shares: shares };
  });
  const total = steps.length + 1; // the seed, then one step per computed value

  // ------------------------------------------------------------------------------------------
  // The state of the backward pass, in both modes at once, so the switch can compare them.

  // received[mode][i]: every share value i got, in order; log[mode][k]: the shares step k sent.
  const state = { done: 0, grads: {}, received: {}, log: {} };

  function reset() {
    state.done = 0;
    MODES.forEach(function (mode) {
      state.grads[mode] = new Float64Array(count);
      state.received[mode] = nodes.map(function () { return []; });
      state.log[mode] = [];
    });
  }

  // Step k: k = 0 seeds the root with 1; step k > 0 runs the rule of steps[k - 1].
  function applyStep(k) {
    MODES.forEach(function (mode) {
      const grads = state.grads[mode];
      if (k === 0) {
        grads[graph.root] = 1;
        state.received[mode][graph.root].push({ seed: true, share: 1, before: 0 });
        state.log[mode].push([]);
        return;
      }
      const step = steps[k - 1];
      const g = grads[step.node];
      const sent = step.shares.map(function (share) {
        const amount = share.local * g; // the chain rule: local derivative times the node's grad
        const before = grads[share.child];
        grads[share.child] = mode === "accumulate" ? before + amount : amount;
        const record = { from: step.node, local: share.local, g: g, share: amount, before: before };
        state.received[mode][share.child].push(record);
        return record;
      });
      state.log[mode].push(sent);
    });
  }

  function mode() {
    return document.getElementById("overwrite").checked ? "overwrite" : "accumulate";
  }

  // ------------------------------------------------------------------------------------------
  // Number formats: four decimals in the boxes, as the lecture's drawings; short in sentences.

  function boxNumber(x) {
    if (Number.isNaN(x)) return "nan";
    if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
    if (Math.abs(x) >= 1e5) return x.toExponential(3);
    return (x === 0 ? 0 : x).toFixed(4); // no "-0.0000"
  }

  function short(x) {
    if (Number.isNaN(x)) return "nan";
    if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
    if (x === 0) return "0";
    return String(Number(x.toPrecision(6)));
  }

  function boxName(name) {
    return name.length > sizes.nameChars ? name.slice(0, sizes.nameChars - 1) + "…" : name;
  }

  // ------------------------------------------------------------------------------------------
  // Drawing

  function svg(tag, attributes, parent) {
    const element = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (key) { element.setAttribute(key, attributes[key]); });
    if (parent) parent.appendChild(element);
    return element;
  }

  function html(tag, className, text, parent) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    if (parent) parent.appendChild(element);
    return element;
  }

  function curve(x1, y1, x2, y2) {
    const bend = Math.max(20, (x2 - x1) / 2);
    return "M" + x1 + "," + y1 + " C" + (x1 + bend) + "," + y1 + " " + (x2 - bend) + "," + y2 +
      " " + x2 + "," + y2;
  }

  const view = []; // per value: its elements
  const canvas = svg("svg", {
    width: graph.width, height: graph.height, viewBox: "0 0 " + graph.width + " " + graph.height,
    class: "canvas",
  });
  document.getElementById("graph").appendChild(canvas);
  const edgeLayer = svg("g", { class: "edges" }, canvas);
  const opLayer = svg("g", { class: "ops" }, canvas);
  const valueLayer = svg("g", { class: "values" }, canvas);

  function boxTop(node) { return node.y - sizes.nodeHeight / 2; }
  function boxMiddle(node) { return boxTop(node) + sizes.boxHeight / 2; }

  nodes.forEach(function (node, i) {
    const left = node.x - node.width / 2;
    const top = boxTop(node);
    const nameWidth = node.cells[0];
    const dataWidth = node.cells[1];
    const group = svg("g", {
      class: "value", tabindex: "0", role: "button", "data-id": i, "data-label": node.name,
      "data-data": String(node.data),
    }, valueLayer);
    svg("rect", { x: left, y: top, width: node.width, height: sizes.boxHeight, rx: 3, class: "box" }, group);
    svg("line", { x1: left + nameWidth, y1: top, x2: left + nameWidth, y2: top + sizes.boxHeight }, group);
    svg("line", {
      x1: left + nameWidth + dataWidth, y1: top, x2: left + nameWidth + dataWidth, y2: top + sizes.boxHeight,
    }, group);
    // Every line of text is centred in its cell (the style's dominant-baseline: central puts a
    // line's middle at its y); render() moves grad up and "correct" in under it in overwrite mode.
    const middle = top + sizes.boxHeight / 2;
    const nameText = svg("text", { x: left + 7, y: middle, class: "name" }, group);
    nameText.textContent = boxName(node.name);
    const dataText = svg("text", { x: left + nameWidth + 7, y: middle }, group);
    dataText.textContent = "data " + boxNumber(node.data);
    const gradX = left + nameWidth + dataWidth + 7;
    const gradText = svg("text", { x: gradX, y: middle, class: "grad" }, group);
    const correctText = svg("text", { x: gradX, y: middle + LINE / 2, class: "correct" }, group);
    const receivedText = svg("text", { x: left + 4, y: top + sizes.boxHeight + 13, class: "received" }, group);
    const item = {
      group: group, grad: gradText, correct: correctText, received: receivedText, edges: [], opEdge: null,
      op: null, middle: middle,
    };
    if (node.children.length) {
      const op = svg("g", { class: "op" }, opLayer);
      svg("ellipse", { cx: node.op_x, cy: node.op_y, rx: sizes.opWidth / 2, ry: sizes.opHeight / 2 }, op);
      const opText = svg("text", { x: node.op_x, y: node.op_y, "text-anchor": "middle" }, op);
      opText.textContent = node.op.length > 4 ? node.op.slice(0, 3) + "…" : node.op;
      item.op = op;
      item.opEdge = svg("path", {
        d: curve(node.op_x + sizes.opWidth / 2, node.op_y, left, boxMiddle(node)), class: "edge",
      }, edgeLayer);
      // One arrow per argument, repeats included: a + a draws two, slightly apart.
      node.children.forEach(function (c, k) {
        const child = nodes[c];
        const spread = (k - (node.children.length - 1) / 2) * 6;
        item.edges.push(svg("path", {
          d: curve(child.x + child.width / 2, boxMiddle(child), node.op_x - sizes.opWidth / 2, node.op_y + spread),
          class: "edge",
        }, edgeLayer));
      });
    }
    group.addEventListener("mouseenter", function () { showDetails(i); });
    group.addEventListener("focus", function () { showDetails(i); });
    group.addEventListener("click", function () { select(i); });
    group.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault(); // Space would scroll the page
        select(i);
      }
    });
    view.push(item);
  });

  let selected = null;
  function select(i) {
    if (selected !== null) view[selected].group.classList.remove("selected");
    selected = i;
    view[i].group.classList.add("selected");
    showDetails(i);
  }

  // ------------------------------------------------------------------------------------------
  // Showing the state

  function receivedSummary(list, overwrite) {
    const parts = list.map(function (r) { return short(r.share); });
    const shown = parts.slice(0, 4).join(overwrite ? " → " : " + ");
    return shown + (parts.length > 4 ? " … (" + parts.length + " in all)" : "");
  }

  function render() {
    const m = mode();
    const grads = state.grads[m];
    const correct = state.grads.accumulate;
    const current = state.done > 1 ? steps[state.done - 2].node : (state.done === 1 ? graph.root : null);
    const touched = new Set();
    if (state.done > 1) steps[state.done - 2].shares.forEach(function (s) { touched.add(s.child); });
    nodes.forEach(function (node, i) {
      const item = view[i];
      const g = grads[i];
      item.group.setAttribute("data-grad", String(g));
      item.group.setAttribute("aria-label", node.name + ": data " + short(node.data) + ", grad " + short(g));
      item.grad.textContent = "grad " + boxNumber(g);
      const wrong = m === "overwrite" && !Object.is(g, correct[i]) && !(Number.isNaN(g) && Number.isNaN(correct[i]));
      item.correct.textContent = m === "overwrite" ? "correct " + boxNumber(correct[i]) : "";
      item.grad.setAttribute("y", m === "overwrite" ? item.middle - LINE / 2 : item.middle);
      item.group.classList.toggle("wrong", wrong);
      const list = state.received[m][i];
      item.received.textContent = node.expected > 1 && list.length
        ? "received " + receivedSummary(list, m === "overwrite") : "";
      item.group.classList.toggle("current", i === current);
      item.group.classList.toggle("receiving", touched.has(i));
      if (item.op) {
        const active = state.done > 1 && i === current;
        item.op.classList.toggle("active", active);
        item.opEdge.classList.toggle("active", active);
        item.edges.forEach(function (edge) { edge.classList.toggle("active", active); });
      }
    });
    document.getElementById("progress").textContent = "step " + state.done + " of " + total;
    document.getElementById("step").disabled = state.done >= total;
    document.getElementById("run").disabled = state.done >= total;
    document.getElementById("mode-help").textContent = m === "overwrite"
      ? "overwrite (the lecture's bug): child.grad = local * node.grad"
      : "accumulate: child.grad += local * node.grad";
    explain();
    if (selected !== null) showDetails(selected);
  }

  // What the last step did, with its numbers.
  function explain() {
    const panel = document.getElementById("explanation");
    panel.textContent = "";
    const m = mode();
    if (state.done === 0) {
      html("h2", null, "Ready", panel);
      html("p", null, "Every grad starts at 0. Press Step to run the backward pass one node at a time, " +
        "in reverse topological order (every node after all the nodes that use it), or Run backward.", panel);
      return;
    }
    const root = nodes[graph.root];
    if (state.done === 1) {
      html("h2", null, "Step 1 of " + total + ": the seed", panel);
      html("p", "formula", root.name + ".grad = 1", panel);
      html("p", null, "d" + root.name + "/d" + root.name + " = 1: the output's gradient with respect to itself.", panel);
      return;
    }
    const step = steps[state.done - 2];
    const node = nodes[step.node];
    const g = state.grads[m][step.node];
    html("h2", null, "Step " + state.done + " of " + total + ": " + node.name + " = " + node.formula, panel);
    html("p", null, node.name + ".grad = " + short(g) + (node.hint ? ". Rule: " + node.hint + "." : "."), panel);
    const list = html("ul", "updates", undefined, panel);
    const sent = state.log[m][state.done - 1];
    step.shares.forEach(function (share, j) {
      const child = nodes[share.child];
      const before = sent[j].before;
      const amount = sent[j].share;
      const item = html("li", null, undefined, list);
      html("div", "formula", "local derivative d" + node.name + "/d" + child.name + " = " + short(share.local), item);
      if (m === "accumulate") {
        html("div", "formula", child.name + ".grad += " + short(share.local) + " * " + short(g) +
          "  →  " + short(before) + " + " + short(amount) + " = " + short(before + amount), item);
      } else {
        html("div", "formula", child.name + ".grad = " + short(share.local) + " * " + short(g) + " = " +
          short(amount) + (before !== 0 ? "  (the " + short(before) + " it held is lost)" : ""), item);
      }
    });
  }

  // A value's formula, inputs, and gradient as the sum of its contributions.
  function showDetails(i) {
    const panel = document.getElementById("details");
    panel.textContent = "";
    const node = nodes[i];
    const m = mode();
    const g = state.grads[m][i];
    html("h2", null, node.name, panel);
    if (node.formula) {
      html("p", "formula", node.name + " = " + node.formula + " = " + short(node.data), panel);
      html("p", null, "inputs: " + node.children.map(function (c) {
        return nodes[c].name + " = " + short(nodes[c].data);
      }).join(", "), panel);
    } else {
      html("p", "formula", node.name + " = " + short(node.data), panel);
      html("p", null, node.labelled ? "an input (a leaf of the graph)" : "a constant (a leaf of the graph)", panel);
    }
    const received = state.received[m][i];
    const parts = received.map(function (r) {
      return r.seed ? "1 (the seed)" : short(r.share) + " (from " + nodes[r.from].name + ": " + short(r.local) +
        " * " + short(r.g) + ")";
    });
    let text;
    if (!received.length) {
      text = node.name + ".grad = 0: nothing has reached it yet";
    } else if (m === "accumulate") {
      text = node.name + ".grad = " + parts.join(" + ") + (parts.length > 1 ? " = " + short(g) : "");
    } else {
      text = node.name + ".grad = " + short(g) + (parts.length > 1
        ? ": each share replaced the one before: " + parts.join(", then ") + "; with += it would be " +
          short(state.grads.accumulate[i])
        : " (" + parts[0] + ")");
    }
    html("p", "formula", text, panel);
    const waiting = node.expected - received.length;
    if (waiting > 0) {
      html("p", null, waiting + " more share" + (waiting > 1 ? "s" : "") + " to come, from " +
        node.users.map(function (u) { return nodes[u].name; }).join(", "), panel);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Controls

  function scrollToCurrent() {
    const current = state.done > 1 ? steps[state.done - 2].node : graph.root;
    if (view[current].group.scrollIntoView) view[current].group.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  document.getElementById("step").addEventListener("click", function () {
    if (state.done >= total) return;
    applyStep(state.done);
    state.done += 1;
    render();
    scrollToCurrent();
  });
  document.getElementById("run").addEventListener("click", function () {
    while (state.done < total) {
      applyStep(state.done);
      state.done += 1;
    }
    render();
  });
  document.getElementById("reset").addEventListener("click", function () {
    reset();
    render();
  });
  document.getElementById("overwrite").addEventListener("change", render);

  // A graph a little wider than the window is shrunk to fit; a much wider one scrolls instead,
  // since shrinking it further would make its numbers too small to read.
  function fit() {
    const available = document.getElementById("graph").clientWidth - 2;
    const scale = available / graph.width;
    const s = scale >= 1 || scale < 0.7 ? 1 : scale;
    canvas.setAttribute("width", graph.width * s);
    canvas.setAttribute("height", graph.height * s);
  }
  window.addEventListener("resize", fit);

  reset();
  fit();
  render();
})();
