/* Building Blocks pages: hover and tap interaction without a server (plain JavaScript, no build step).
 *
 * Reads the image's data from window.modelcardBlocks, set by the <image>.data.js script the page
 * loads just before this one (a script, not a fetched file: browsers refuse to fetch files for
 * pages opened from disk, file://). Updates legends when the reader hovers, taps or clicks
 *   - a position of a layer's grid (.bb-stage .bb-cell[data-cell]): semantic dictionary legend,
 *   - an upper-layer position (.bb-stage[data-role=upper] [data-upper]): layer-to-layer map,
 *   - a neuron group (card [data-group], also by keyboard, or flow-diagram node [data-node]):
 *     its positions, top classes and channels,
 *   - a link of the group flow: its value and share, in the note under the diagram.
 * Strings from the data are inserted with textContent only, never as HTML.
 */
(function () {
  "use strict";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v) {
    var a = Math.abs(v);
    if (a === 0) return "0";
    return (v > 0 ? "+" : "") + (a >= 100 || a < 0.01 ? v.toExponential(2) : v.toPrecision(3));
  }

  function iconFor(layer, channel, px) {
    var s = layer.icons;
    if (!s || !(String(channel) in s.index)) return null;
    var slot = s.index[String(channel)];
    var r = Math.floor(slot / s.cols), c = slot % s.cols;
    var span = el("span", "bb-icon");
    span.style.backgroundImage = "url('" + s.url + "')";
    span.style.backgroundSize = (s.cols * px) + "px " + (s.rows * px) + "px";
    span.style.backgroundPosition = (-c * px) + "px " + (-r * px) + "px";
    span.style.width = px + "px";
    span.style.height = px + "px";
    return span;
  }

  function channelRow(layer, pair, scale) {
    var row = el("div", "bb-row");
    var icon = iconFor(layer, pair[0], 36);
    if (icon) row.appendChild(icon);
    row.appendChild(el("span", null, "ch " + pair[0]));
    var bar = el("span", "bb-bar " + (pair[1] > 0 ? "bb-pos" : "bb-neg"));
    bar.style.width = (90 * Math.abs(pair[1]) / (scale || 1)).toFixed(1) + "px";
    row.appendChild(bar);
    row.appendChild(el("span", null, fmt(pair[1])));
    return row;
  }

  function className(layer, index) {
    var c = layer.classes[String(index)];
    return c ? c.name : String(index);
  }

  function fill(legend, title, sections) {
    while (legend.firstChild) legend.removeChild(legend.firstChild);
    legend.appendChild(el("h4", null, title));
    sections.forEach(function (s) {
      if (s.label) legend.appendChild(el("div", null, s.label));
      s.rows.forEach(function (r) { legend.appendChild(r); });
    });
  }

  function maxAbs(values) {
    var m = 0;
    values.forEach(function (v) { m = Math.max(m, Math.abs(v)); });
    return m || 1;
  }

  function showCell(data, slug, index) {
    var layer = data.layers[slug];
    var cell = layer.cells[index];
    document.querySelectorAll('.bb-stage[data-layer="' + slug + '"] .bb-cell[data-cell]').forEach(function (c) {
      c.classList.toggle("bb-on", Number(c.getAttribute("data-cell")) === index &&
        c.closest(".bb-stage").getAttribute("data-role") !== "lower");
    });
    var legend = document.querySelector('.bb-legend[data-layer="' + slug + '"][data-kind="cell"]');
    if (!legend) return;
    var scale = cell.channels.length ? cell.channels[0][1] : 1;
    // the dictionary's quality figure: share of the position's squared norm its channels carry
    var sq = 0;
    cell.channels.forEach(function (p) { if (p[1] > 0) sq += p[1] * p[1]; });
    var share = cell.magnitude > 0 ? sq / (cell.magnitude * cell.magnitude) : 0;
    fill(legend, "Position (" + cell.row + ", " + cell.col + ") · norm " + fmt(cell.magnitude).replace("+", ""), [
      { rows: cell.channels.map(function (p) { return channelRow(layer, p, scale); }) },
      { rows: [el("p", "bb-quality", "The " + cell.channels.length + " channels listed carry " +
        (100 * share).toFixed(1) + "% of the squared activation norm at this position" +
        (share < 0.5 ? ": most of what fires here is in channels not shown." : "."))] },
      { label: "Attribution to classes here", rows: cell.classes.map(function (p) {
        var r = el("div", "bb-row");
        r.appendChild(el("span", null, className(layer, p[0])));
        r.appendChild(el("span", null, fmt(p[1])));
        return r;
      }) }
    ]);
  }

  function paint(stage, values, signed) {
    var m = maxAbs(values);
    stage.querySelectorAll(".bb-cell[data-cell]").forEach(function (c) {
      var v = values[Number(c.getAttribute("data-cell"))] || 0;
      var a = Math.min(1, Math.abs(v) / m) * 0.75;
      var rgb = !signed ? "255,23,68" : (v >= 0 ? "214,96,77" : "67,147,195");
      c.style.background = "rgba(" + rgb + "," + a.toFixed(3) + ")";
    });
  }

  function showUpper(data, slug, q) {
    var layer = data.layers[slug];
    if (!layer.layer_to_layer) return;
    var l2l = layer.layer_to_layer, w = l2l.upper_grid[1];
    var map = l2l.maps[q];
    document.querySelectorAll('.bb-stage[data-layer="' + slug + '"][data-role="upper"] [data-upper]').forEach(function (c) {
      c.classList.toggle("bb-on", Number(c.getAttribute("data-upper")) === q);
    });
    var lower = document.querySelector('.bb-stage[data-layer="' + slug + '"][data-role="lower"]');
    if (lower) {
      // the static picture (map of the strongest upper position) gives way to the plain photo
      var img = lower.querySelector("img");
      var photo = lower.getAttribute("data-photo");
      if (img && photo && img.getAttribute("src") !== photo) img.setAttribute("src", photo);
      if (img) img.style.opacity = "0.45";
      paint(lower, map, true);
    }
    var legend = document.querySelector('.bb-legend[data-layer="' + slug + '"][data-kind="upper"]');
    if (!legend) return;
    var total = map.reduce(function (s, v) { return s + v; }, 0);
    var best = map.map(function (v, i) { return [i, v]; }).sort(function (a, b) { return b[1] - a[1]; }).slice(0, 3);
    fill(legend, "Upper position (" + Math.floor(q / w) + ", " + (q % w) + ") of " + l2l.upper, [
      { rows: [el("div", null, "total attribution from " + l2l.lower + ": " + fmt(total))] },
      { label: "strongest lower positions", rows: best.map(function (p) {
        var gw = layer.grid[1];
        return el("div", "bb-row", "(" + Math.floor(p[0] / gw) + ", " + (p[0] % gw) + "): " + fmt(p[1]));
      }) }
    ]);
  }

  function showGroup(data, slug, g) {
    var layer = data.layers[slug];
    var group = layer.groups[g];
    if (!group) return;
    var flat = [];
    group.map.forEach(function (row) { row.forEach(function (v) { flat.push(v); }); });
    var stage = document.querySelector('.bb-stage[data-layer="' + slug + '"][data-role="groups"]');
    if (stage) paint(stage, flat, false);
    document.querySelectorAll('.bb-groups[data-layer="' + slug + '"] [data-group]').forEach(function (c) {
      c.classList.toggle("bb-on", Number(c.getAttribute("data-group")) === g);
    });
    var legend = document.querySelector('.bb-legend[data-layer="' + slug + '"][data-kind="group"]');
    if (!legend) return;
    var scale = group.channels.length ? group.channels[0][1] : 1;
    fill(legend, "Group G" + g, [
      { label: "channels", rows: group.channels.map(function (p) { return channelRow(layer, p, scale); }) },
      { label: "classes (logit units)", rows: group.classes.map(function (p) {
        var r = el("div", "bb-row");
        r.appendChild(el("span", null, className(layer, p[0])));
        r.appendChild(el("span", null, fmt(p[1])));
        return r;
      }) }
    ]);
  }

  function focusNode(flow, id) {
    flow.classList.toggle("bb-focus", id !== null);
    flow.querySelectorAll("path").forEach(function (p) {
      p.classList.toggle("bb-on", id !== null && (p.getAttribute("data-from") === id || p.getAttribute("data-to") === id));
    });
  }

  // Hover (a mouse) and click (a mouse, a tap on a phone) do the same: select what is under the
  // pointer. A tap also fires mouseover in mobile browsers; doing the same twice is harmless.
  function onSelect(target, handler) {
    target.addEventListener("mouseover", handler);
    target.addEventListener("click", handler);
  }

  function flowNote(flow, text) {
    var note = flow.parentNode.querySelector('.bb-flow-note[data-layer="' + flow.getAttribute("data-layer") + '"]');
    if (note) note.textContent = text;
  }

  function wire(data) {
    Object.keys(data.layers).forEach(function (slug) {
      document.querySelectorAll('.bb-stage[data-layer="' + slug + '"]').forEach(function (stage) {
        var role = stage.getAttribute("data-role");
        onSelect(stage, function (ev) {
          var t = ev.target.closest(".bb-cell");
          if (!t) return;
          if (role === "upper") showUpper(data, slug, Number(t.getAttribute("data-upper")));
          else if (role === "dictionary" || role === "grid") showCell(data, slug, Number(t.getAttribute("data-cell")));
        });
      });
      document.querySelectorAll('.bb-groups[data-layer="' + slug + '"] [data-group]').forEach(function (card) {
        var show = function () { showGroup(data, slug, Number(card.getAttribute("data-group"))); };
        card.addEventListener("mouseenter", show);
        card.addEventListener("click", show);
        card.addEventListener("focus", show);
      });
      document.querySelectorAll('.bb-flow[data-layer="' + slug + '"]').forEach(function (flow) {
        flow.querySelectorAll("[data-node]").forEach(function (node) {
          var id = node.getAttribute("data-node");
          var show = function () {
            focusNode(flow, id);
            if (id.charAt(0) === "0") showGroup(data, slug, Number(id.slice(2)));
          };
          node.addEventListener("mouseenter", show);
          node.addEventListener("click", show);
          node.addEventListener("mouseleave", function () { focusNode(flow, null); });
        });
        flow.querySelectorAll("path").forEach(function (path) {
          var title = path.querySelector("title");
          var show = function () {
            var from = path.getAttribute("data-from"), to = path.getAttribute("data-to");
            flowNote(flow, from.replace(/^\d-/, "G") + " → " + to.replace(/^1-/, "G").replace(/^2-/, "class ") + ": " +
              (title ? title.textContent : ""));
          };
          path.addEventListener("mouseenter", show);
          path.addEventListener("click", show);
        });
      });
    });
  }

  function start() {
    var root = document.querySelector("[data-bb-data]");
    if (!root) return;
    var data = window.modelcardBlocks;
    if (!data || !data.layers) {
      // the data script did not load (a file missing from the copy of the site): the static
      // legends, pictures and numbers of the page still apply
      root.textContent = "The interactive legends could not load their data; the static views below still apply.";
      return;
    }
    wire(data);
    document.documentElement.setAttribute("data-bb-ready", "1");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
