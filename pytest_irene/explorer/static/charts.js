/* pytest-irene explorer: sweep charts as inline SVG (line charts and stacked bars).
 * Hand-written, no library: a chart is a function from data to an <svg> element. */
(function () {
  "use strict";
  var Irene = (window.Irene = window.Irene || {});
  var h = Irene.h, NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#3949ab", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#d81b60",
    "#546e7a", "#c0ca33", "#1e88e5", "#f4511e", "#7cb342", "#5e35b1", "#00acc1", "#ffb300"];
  Irene.color = function (i) { return PALETTE[i % PALETTE.length]; };

  function s(tag, attrs) {
    var node = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /* About five round tick values covering [0, max]. */
  function ticks(max) {
    if (!(max > 0)) return [0, 1];
    var raw = max / 5, mag = Math.pow(10, Math.floor(Math.log10(raw))), step = mag;
    [1, 2, 2.5, 5, 10].some(function (m) { step = m * mag; return raw <= step; });
    var out = [];
    for (var v = 0; v <= max + step * 0.5; v += step) out.push(v);
    if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
    return out;
  }

  function frame(width, height, m, xlabel, ylabel, ymax, xticks, xpos) {
    var svg = s("svg", { "class": "plot", width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img" });
    var yt = ticks(ymax), top = yt[yt.length - 1];
    var ih = height - m.t - m.b;
    function ypos(v) { return m.t + ih - (v / top) * ih; }
    var grid = s("g", { "class": "grid" }), axis = s("g", { "class": "axis" });
    yt.forEach(function (v) {
      grid.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: ypos(v), y2: ypos(v) }));
      axis.appendChild(s("text", { x: m.l - 6, y: ypos(v) + 4, "text-anchor": "end" }, Irene.si(v, "J", 3)));
    });
    axis.appendChild(s("line", { x1: m.l, x2: width - m.r, y1: m.t + ih, y2: m.t + ih }));
    axis.appendChild(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ih }));
    xticks.forEach(function (x) {
      axis.appendChild(s("text", { x: xpos(x), y: m.t + ih + 15, "text-anchor": "middle" }, x));
    });
    axis.appendChild(s("text", { x: m.l + (width - m.l - m.r) / 2, y: height - 4, "text-anchor": "middle" }, xlabel));
    axis.appendChild(s("text", { x: 12, y: m.t + ih / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (m.t + ih / 2) + ")" }, ylabel));
    svg.appendChild(grid); svg.appendChild(axis);
    return { svg: svg, ypos: ypos };
  }

  function legend(items) {
    return h("div", { cls: "chart-legend" }, items.map(function (it) {
      return h("span", null, h("span", { cls: "sw", style: "background:" + it.color }), it.name);
    }));
  }

  /* series: [{name, color, points: [[x, y], ...]}]; x are numbers (sequence lengths). */
  Irene.lineChart = function (opts) {
    var width = opts.width || 420, height = opts.height || 260, m = { l: 64, r: 14, t: 10, b: 34 };
    var xs = [], ymax = 0;
    opts.series.forEach(function (se) { se.points.forEach(function (p) { if (xs.indexOf(p[0]) < 0) xs.push(p[0]); if (p[1] > ymax) ymax = p[1]; }); });
    xs.sort(function (a, b) { return a - b; });
    var x0 = xs[0], x1 = xs[xs.length - 1];
    function xpos(x) { return x1 === x0 ? m.l + (width - m.l - m.r) / 2 : m.l + (x - x0) / (x1 - x0) * (width - m.l - m.r); }
    var f = frame(width, height, m, opts.xlabel || "sequence length", opts.ylabel || "energy", opts.ymax || ymax, xs, xpos);
    opts.series.forEach(function (se) {
      var pts = se.points.slice().sort(function (a, b) { return a[0] - b[0]; });
      var d = pts.map(function (p, i) { return (i ? "L" : "M") + xpos(p[0]).toFixed(1) + " " + f.ypos(p[1]).toFixed(1); }).join(" ");
      var g = s("g", { "class": "series-group", "data-series": se.name });
      g.appendChild(s("path", { "class": "series", d: d, stroke: se.color }));
      pts.forEach(function (p) {
        var out = p[2] && p[2].length;  /* extrapolated: a hollow marker, and the reasons in its title */
        g.appendChild(s("circle", { cx: xpos(p[0]), cy: f.ypos(p[1]), r: 3.5, fill: se.color, stroke: se.color, "class": out ? "extrapolates" : "" },
          s("title", {}, se.name + ", seq " + p[0] + ": " + Irene.fmtJ(p[1]) + (out ? " (extrapolates: " + p[2].join("; ") + ")" : ""))));
      });
      f.svg.appendChild(g);
    });
    var note = opts.extrapolates ? h("div", { cls: "chart-note", text: "hollow markers: outside the profile's training range (extrapolated)" }) : null;
    return h("div", { cls: "chart line-chart" }, h("div", { cls: "chart-title", text: opts.title }), f.svg, legend(opts.series), note);
  };

  /* categories: x labels; stacks: [{name, color, values: [per category]}]. */
  Irene.stackedBars = function (opts) {
    var width = opts.width || 420, height = opts.height || 260, m = { l: 64, r: 14, t: 10, b: 34 };
    var n = opts.categories.length, totals = opts.categories.map(function (_, i) {
      return opts.stacks.reduce(function (acc, st) { return acc + (st.values[i] || 0); }, 0);
    });
    var ymax = opts.ymax || Math.max.apply(null, totals.concat([0]));
    var band = (width - m.l - m.r) / Math.max(1, n);
    function xpos(c) { return m.l + band * (opts.categories.indexOf(c) + 0.5); }
    var f = frame(width, height, m, opts.xlabel || "sequence length", "energy", ymax, opts.categories, xpos);
    opts.categories.forEach(function (c, i) {
      var base = 0, bw = Math.min(42, band * 0.7), g = s("g", { "class": "bar-stack", "data-category": c });
      opts.stacks.forEach(function (st) {
        var v = st.values[i] || 0;
        if (v <= 0) return;
        var yTop = f.ypos(base + v), yBot = f.ypos(base);
        g.appendChild(s("rect", { x: xpos(c) - bw / 2, y: yTop, width: bw, height: Math.max(0.5, yBot - yTop), fill: st.color },
          s("title", {}, st.name + ", seq " + c + ": " + Irene.fmtJ(v))));
        base += v;
      });
      f.svg.appendChild(g);
    });
    return h("div", { cls: "chart bar-chart" }, h("div", { cls: "chart-title", text: opts.title }), f.svg, legend(opts.stacks));
  };

  function pointsOf(sweep, model, batch) {
    return sweep.points.filter(function (p) { return p.model === model && p.batch_size === batch; })
      .sort(function (a, b) { return a.seq_len - b.seq_len; });
  }

  /* The sweep view: energy vs sequence length per batch size (one chart per architecture),
   * per architecture (one chart per batch size), and module-type stacked bars. */
  function reasons(p) { return p.extrapolation || []; }
  function anyOut(sweep) { return sweep.points.some(function (p) { return reasons(p).length > 0; }); }

  Irene.renderSweep = function (sweep) {
    var section = h("section", { cls: "sweep", id: "sweep" }), out = anyOut(sweep);
    section.appendChild(h("h2", { text: "Sweep: " + sweep.models.length + " architecture" + (sweep.models.length === 1 ? "" : "s") + " × " +
      sweep.batch_sizes.length + " batch sizes × " + sweep.seq_lens.length + " sequence lengths" + (sweep.profile ? " · profile " + sweep.profile : "") }));
    if (out) {
      var n = sweep.points.filter(function (p) { return reasons(p).length > 0; }).length;
      section.appendChild(h("p", { cls: "call-reason extrapolates", text: n + " of " + sweep.points.length +
        " predictions extrapolate beyond the profile's training range (hollow markers; hover one for why)" }));
    }
    var perModel = h("div", { cls: "charts per-model" });
    sweep.models.forEach(function (model) {
      perModel.appendChild(Irene.lineChart({
        title: model + " — per batch size", extrapolates: out,
        series: sweep.batch_sizes.map(function (b, i) {
          return { name: "batch " + b, color: Irene.color(i), points: pointsOf(sweep, model, b).map(function (p) { return [p.seq_len, p.total_j, reasons(p)]; }) };
        })
      }));
    });
    var perBatch = h("div", { cls: "charts per-batch" });
    sweep.batch_sizes.forEach(function (b) {
      perBatch.appendChild(Irene.lineChart({
        title: "batch " + b + " — per architecture", extrapolates: out,
        series: sweep.models.map(function (model, i) {
          return { name: model, color: Irene.color(i), points: pointsOf(sweep, model, b).map(function (p) { return [p.seq_len, p.total_j, reasons(p)]; }) };
        })
      }));
    });
    var types = sweep.part_types || [];
    var select = h("select", { cls: "sweep-batch", "aria-label": "batch size" }, sweep.batch_sizes.map(function (b) { return h("option", { value: String(b), text: "batch " + b }); }));
    var shared = h("input", { type: "checkbox", cls: "sweep-shared", checked: sweep.models.length <= 6 });
    var bars = h("div", { cls: "charts bars" });
    function drawBars() {
      var b = Number(select.value);
      bars.textContent = "";
      var ymax = 0;
      if (shared.checked) sweep.models.forEach(function (model) {
        pointsOf(sweep, model, b).forEach(function (p) {
          var t = 0; Object.keys(p.parts || {}).forEach(function (k) { t += p.parts[k]; }); if (t > ymax) ymax = t;
        });
      });
      sweep.models.forEach(function (model) {
        var pts = pointsOf(sweep, model, b);
        bars.appendChild(Irene.stackedBars({
          title: model + " — batch " + b, ymax: ymax || null,
          categories: pts.map(function (p) { return p.seq_len; }),
          stacks: types.map(function (t, i) {
            return { name: t, color: Irene.color(i), values: pts.map(function (p) { return (p.parts || {})[t] || 0; }) };
          }).filter(function (st) { return st.values.some(function (v) { return v > 0; }); })
        }));
      });
    }
    select.addEventListener("change", drawBars);
    shared.addEventListener("change", drawBars);

    /* every architecture at one input size, cheapest first: the "which one to pick" view */
    var cmpBatch = h("select", { cls: "cmp-batch", "aria-label": "batch size" }, sweep.batch_sizes.map(function (b) { return h("option", { value: String(b), text: "batch " + b }); }));
    var cmpSeq = h("select", { cls: "cmp-seq", "aria-label": "sequence length" }, sweep.seq_lens.map(function (q) { return h("option", { value: String(q), text: "seq " + q }); }));
    cmpSeq.value = String(sweep.seq_lens[sweep.seq_lens.length - 1]);
    var cmp = h("div", { cls: "compare" });
    function drawCompare() {
      var b = Number(cmpBatch.value), q = Number(cmpSeq.value);
      var rows = sweep.points.filter(function (p) { return p.batch_size === b && p.seq_len === q; })
        .sort(function (x, y) { return x.total_j - y.total_j; });
      var max = Math.max.apply(null, rows.map(function (p) { return Math.max(p.total_j, p.operations_j); }).concat([0]));
      cmp.textContent = "";
      cmp.appendChild(h("table", { cls: "data compare-table" },
        h("thead", null, h("tr", null, h("th", { text: "architecture" }), h("th", { cls: "num", text: "energy" }), h("th", { cls: "num", text: "× cheapest" }), h("th", { text: "operations by module type" }))),
        h("tbody", null, rows.map(function (p) {
          var segs = types.map(function (t, i) {
            var v = (p.parts || {})[t] || 0;
            return v > 0 ? h("div", { cls: "seg", title: t + ": " + Irene.fmtJ(v), style: "width:" + (100 * v / max).toFixed(2) + "%;background:" + Irene.color(i) }) : null;
          });
          var why = reasons(p).length ? h("span", { cls: "badge extrapolates", title: "extrapolates: " + reasons(p).join("; "), text: "extrapolates" }) : null;
          return h("tr", { cls: "cmp-row", "data-model": p.model }, h("td", null, p.model, why), h("td", { cls: "num", text: Irene.fmtJ(p.total_j) }),
            h("td", { cls: "num", text: rows[0].total_j > 0 ? (p.total_j / rows[0].total_j).toFixed(2) : "–" }),
            h("td", { style: "width:50%" }, h("div", { cls: "stackbar" }, segs)));
        }))));
    }
    cmpBatch.addEventListener("change", drawCompare);
    cmpSeq.addEventListener("change", drawCompare);
    section.appendChild(h("h3", { text: "Energy against sequence length, per batch size" }));
    section.appendChild(perModel);
    section.appendChild(h("h3", { text: "Energy against sequence length, per architecture" }));
    section.appendChild(perBatch);
    section.appendChild(h("h3", { text: "Architectures at one input size, cheapest first" }));
    section.appendChild(h("div", { cls: "toolbar" }, cmpBatch, cmpSeq));
    section.appendChild(cmp);
    drawCompare();
    section.appendChild(h("h3", { text: "Breakdown by module type (operations grouped by the module that runs them)" }));
    section.appendChild(h("div", { cls: "toolbar" }, select, h("label", null, shared, " same energy scale for every architecture")));
    section.appendChild(bars);
    drawBars();
    return section;
  };
})();
