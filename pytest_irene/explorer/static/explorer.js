/* pytest-irene explorer: draws energy trees from the page's JSON block.
 * Vanilla JS, no dependencies, no network: the same file runs in the HTML report
 * (data inline) and in the web app (data fetched from /api/energy). Everything that
 * comes from user code (scopes, test ids) is inserted as text, never as HTML. */
(function () {
  "use strict";
  var Irene = (window.Irene = window.Irene || {});

  /* ---------- small helpers ---------- */
  function h(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") node.textContent = v;
        else if (k === "cls") node.className = v;
        else if (k === "style") node.setAttribute("style", v);
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : v);
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  Irene.h = h;

  var si = Irene.si, fmtJ = Irene.fmtJ, fmtPct = Irene.fmtPct, fmtBytes = Irene.fmtBytes, fmtChange = Irene.fmtChange;

  /* Features shown in the tooltip, in this order, with their formatting. */
  var FEATURES = [
    ["params", "parameters", function (v) { return si(v, "", 4); }],
    ["flops", "FLOPs", function (v) { return si(v, "FLOP", 4); }],
    ["mem_bytes", "memory traffic", fmtBytes],
    ["latency_s", "latency", function (v) { return si(v, "s", 4); }],
    ["cpu", "CPU utilisation", function (v) { return v.toFixed(1) + " %"; }],
    ["mem", "host memory", function (v) { return v.toFixed(1) + " %"; }],
    ["gpu", "GPU utilisation", function (v) { return v.toFixed(1) + " %"; }],
    ["gpu_mem", "GPU memory", function (v) { return v.toFixed(1) + " %"; }],
    ["gpu_clk", "GPU clock", function (v) { return v.toFixed(0) + " MHz"; }],
    ["gpu_mem_clk", "GPU memory clock", function (v) { return v.toFixed(0) + " MHz"; }],
    ["gpu_energy_j", "GPU energy (NVML)", fmtJ],
    ["cpu_energy_j", "CPU energy (RAPL)", fmtJ]
  ];
  /* A map keyed by names from the page's data (scopes, feature names): no prototype, so a module
   * named "constructor" or "__proto__" finds nothing that is not its own. */
  function ownMap(obj) {
    var out = Object.create(null);
    if (obj) Object.keys(obj).forEach(function (k) { out[k] = obj[k]; });
    return out;
  }
  var KNOWN = ownMap(null);
  FEATURES.forEach(function (f) { KNOWN[f[0]] = true; });

  /* Colour of a share of the root's energy: pale yellow (0) to red (1), sqrt-scaled so
   * that small modules are still told apart. */
  function heat(share) {
    var t = Math.sqrt(Math.max(0, Math.min(1, share || 0)));
    var hue = 52 - 52 * t, light = 94 - 30 * t;
    return "hsl(" + hue.toFixed(0) + ",92%," + light.toFixed(0) + "%)";
  }
  Irene.heat = heat;

  /* ---------- tooltip ---------- */
  var tipEl = null;
  function tip() { return tipEl || (tipEl = document.getElementById("irene-tip")); }
  function showTip(content, evt, anchor) {
    var t = tip();
    if (!t) return;
    t.textContent = "";
    append(t, content);
    t.hidden = false;
    var x, y;
    if (evt && evt.clientX !== undefined && evt.type.indexOf("mouse") === 0) { x = evt.clientX + 14; y = evt.clientY + 14; }
    else { var r = (anchor || evt.target).getBoundingClientRect(); x = r.left + 20; y = r.bottom + 4; }
    var w = t.offsetWidth, hh = t.offsetHeight;
    if (x + w > window.innerWidth - 8) x = Math.max(8, window.innerWidth - w - 8);
    if (y + hh > window.innerHeight - 8) y = Math.max(8, y - hh - 24);
    t.style.left = x + "px"; t.style.top = y + "px";
  }
  function hideTip() { var t = tip(); if (t) t.hidden = true; }
  Irene.showTip = showTip; Irene.hideTip = hideTip;

  function energyOf(node, source) {
    var v = source === "measured" ? node.energy_j : node.predicted_energy_j;
    return v === undefined ? null : v;
  }

  function nodeTip(node, ctx) {
    var e = energyOf(node, ctx.source);
    var rows = [];
    rows.push(["energy (" + ctx.source + ")", fmtJ(e)]);
    if (ctx.source === "predicted" && node.energy_j !== null && node.energy_j !== undefined) rows.push(["energy (measured)", fmtJ(node.energy_j)]);
    rows.push(["share of model", fmtPct(ctx.total ? e / ctx.total : null)]);
    var feats = node.features || {};
    FEATURES.forEach(function (f) {
      var v = feats[f[0]];
      if (v !== undefined && v !== null) rows.push([f[1], f[2](v)]);
    });
    Object.keys(feats).sort().forEach(function (k) {
      if (!KNOWN[k] && feats[k] !== null) rows.push([k, String(feats[k])]);
    });
    var table = h("table", null, rows.map(function (r) { return h("tr", null, h("td", { text: r[0] }), h("td", { cls: "num", text: r[1] })); }));
    var parts = [
      h("div", { cls: "tip-title", text: node.scope || "(whole model)" }),
      h("div", { text: node.type + " · " + node.level }),
      table
    ];
    var d = ctx.deltas[node.scope];
    if (d) {
      var txt;
      if (d.baseline_j === null || d.baseline_j === undefined) txt = "new since the baseline (" + fmtJ(d.now_j) + ")";
      else txt = "baseline " + fmtJ(d.baseline_j) + " → now " + fmtJ(d.now_j) + (d.change !== null && d.change !== undefined ? " (" + fmtChange(d.change) + ")" : "");
      parts.push(h("div", { cls: "tip-delta" + (d.failed ? " fail" : ""), text: txt + (d.failed ? " — fails the gate" : "") }));
    }
    if (d && d.was) parts.push(h("div", { text: "renamed from " + d.was }));
    if (node.notes && node.notes.generic_regressor) parts.push(h("div", { cls: "tip-extra", text: "type unseen in training: generic regressor (extrapolates)" }));
    if (node.notes && node.notes.regressor_type) parts.push(h("div", { text: "predicted as " + node.notes.regressor_type }));
    return parts;
  }

  /* ---------- the tree ---------- */
  function nodeLabel(node, call) {
    if (!node.scope) return call.model_name || node.type;
    var i = node.scope.lastIndexOf(".");
    return i < 0 ? node.scope : node.scope.slice(i + 1);
  }

  function setOpen(li, open) {
    var kids = li.querySelector(":scope > ul");
    var tog = li.querySelector(":scope > .row > .tog");
    if (!kids) return;
    kids.hidden = !open;
    tog.textContent = open ? "▾" : "▸";
    tog.setAttribute("aria-expanded", open ? "true" : "false");
    li.querySelector(":scope > .row").setAttribute("aria-expanded", open ? "true" : "false");
  }

  function buildNode(node, depth, ctx) {
    var e = energyOf(node, ctx.source);
    var share = ctx.total ? (e || 0) / ctx.total : 0;
    var d = ctx.deltas[node.scope];
    var hasKids = node.children && node.children.length > 0;
    var tog = h("button", { cls: "tog" + (hasKids ? "" : " leaf"), type: "button", "aria-label": "expand or collapse", tabindex: "-1" });
    var deltaEl = null;
    if (d) {
      if (d.baseline_j === null || d.baseline_j === undefined) deltaEl = h("span", { cls: "delta up", text: "new" });
      else if (d.change !== null && d.change !== undefined) deltaEl = h("span", { cls: "delta " + (Math.abs(d.change) < 5e-4 ? "same" : d.change > 0 ? "up" : "down"), text: fmtChange(d.change) });
    }
    var row = h("div", {
      cls: "row" + (d && d.failed ? " failed" : ""), tabindex: "0", role: "treeitem",
      style: "background:" + heat(share), "data-scope": node.scope, "data-level": node.level
    },
      tog,
      h("span", { cls: "name", text: nodeLabel(node, ctx.call) }),
      h("span", { cls: "type", text: node.type }),
      node.notes && node.notes.generic_regressor ? h("span", { cls: "gen", title: "type unseen in training", text: "generic" }) : null,
      deltaEl,
      h("span", { cls: "en", text: fmtJ(e) }),
      h("span", { cls: "share", text: fmtPct(share) })
    );
    var li = h("li", { cls: "node", "data-scope": node.scope }, row);
    ctx.byScope[node.scope] = { li: li, node: node };
    var failedBelow = !!(d && d.failed), generic = !!(node.notes && node.notes.generic_regressor), genericBelow = false;
    if (hasKids) {
      var ul = h("ul", { role: "group" });
      node.children.forEach(function (c) {
        var r = buildNode(c, depth + 1, ctx);
        ul.appendChild(r.li);
        failedBelow = failedBelow || r.failedBelow;
        genericBelow = genericBelow || r.generic;
      });
      li.appendChild(ul);
      setOpen(li, depth < 1 || failedBelow);
      tog.addEventListener("click", function (ev) { ev.stopPropagation(); setOpen(li, ul.hidden); });
      row.addEventListener("dblclick", function () { setOpen(li, ul.hidden); });
      row.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); setOpen(li, ul.hidden); }
        else if (ev.key === "ArrowRight") setOpen(li, true);
        else if (ev.key === "ArrowLeft") setOpen(li, false);
      });
      if (failedBelow && !(d && d.failed)) row.classList.add("has-failed");
      /* an unseen type deep in a collapsed subtree is still marked on the rows above it */
      if (genericBelow) { row.classList.add("has-generic"); row.setAttribute("title", "contains types unseen in training (generic regressor)"); }
    }
    row.addEventListener("mouseenter", function (ev) { showTip(nodeTip(node, ctx), ev); });
    row.addEventListener("mousemove", function (ev) { showTip(nodeTip(node, ctx), ev); });
    row.addEventListener("mouseleave", hideTip);
    row.addEventListener("focus", function (ev) { showTip(nodeTip(node, ctx), ev, row); });
    row.addEventListener("blur", hideTip);
    return { li: li, failedBelow: failedBelow, generic: generic || genericBelow };
  }

  function reveal(ctx, scope) {
    var entry = ctx.byScope[scope];
    if (!entry) return;
    var li = entry.li.parentElement && entry.li.parentElement.closest("li.node");
    while (li) { setOpen(li, true); li = li.parentElement && li.parentElement.closest("li.node"); }
    var row = entry.li.querySelector(":scope > .row");
    row.scrollIntoView({ block: "center" });
    row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash");
    row.focus({ preventScroll: true });
  }

  /* The call's badge: its verdict (fail for a budget overrun too, cheaper, saved...), as the
   * terminal summary counts it; pages written before "verdict" existed fall back to status. */
  function statusBadge(call) {
    var v = call.verdict || call.status;
    return v ? h("span", { cls: "badge " + v.replace(/ /g, "-"), text: v }) : null;
  }
  /* "per forward pass", or "per generation of N new tokens" for a generation tree. */
  function perWhat(call) {
    return call.new_tokens ? "per generation of " + call.new_tokens + " new tokens" : "per forward pass";
  }
  var EXTRAPOLATES_TITLE = "outside the profile's training range: the number comes from the regressors' physics alone";
  function extrapolationMark(call) {
    return call.extrapolation && call.extrapolation.length
      ? h("span", { cls: "badge extrapolates", title: "extrapolates: " + call.extrapolation.join("; "), text: "extrapolates" }) : null;
  }
  Irene.extrapolationMark = extrapolationMark;

  function breakdownTable(rows, total, caption) {
    var max = rows.length ? rows[0][1] : 0;
    return h("table", { cls: "data breakdown" },
      h("thead", null, h("tr", null, h("th", { text: caption }), h("th", { cls: "num", text: "count" }),
        h("th", { cls: "num", text: "energy" }), h("th", { cls: "num", text: "share" }), h("th", { text: "" }))),
      h("tbody", null, rows.map(function (r) {
        return h("tr", null, h("td", { text: r[0] }), h("td", { cls: "num", text: String(r[3]) }),
          h("td", { cls: "num", text: fmtJ(r[1]) }), h("td", { cls: "num", text: fmtPct(r[2]) }),
          h("td", { style: "width:30%" }, h("div", { cls: "bar", style: "width:" + (max ? (100 * r[1] / max).toFixed(1) : 0) + "%" })));
      })));
  }

  /* Render one call view (see pytest_irene/explorer/payload.py) into a <section>. */
  function renderCall(call) {
    var root = call.tree.root;
    var ctx = { call: call, source: call.source, total: call.total_j, deltas: ownMap(call.deltas), byScope: ownMap(null) };
    var section = h("section", { cls: "call" + (call.failed ? " failed" : ""), id: call.id, "data-model": call.model_name });
    var meta = [call.model_name, "batch " + call.batch_size, "seq " + call.seq_len];
    if (call.profile) meta.push("profile " + call.profile);
    if (call.features) meta.push(call.features + " features");
    if (call.energy_scope_text) meta.push(call.energy_scope_text);
    section.appendChild(h("div", { cls: "call-head" },
      h("h2", { text: call.title }), statusBadge(call), extrapolationMark(call),
      h("span", { cls: "total" }, h("strong", { text: fmtJ(call.total_j) }), " " + call.source + " " + perWhat(call)),
      h("span", { cls: "call-meta", text: meta.join(" · ") })));
    if (call.reason) section.appendChild(h("p", { cls: "call-reason" + (call.status === "fail" ? " fail" : ""), text: call.reason }));
    if (call.extrapolation && call.extrapolation.length)
      section.appendChild(h("p", { cls: "call-reason extrapolates", title: EXTRAPOLATES_TITLE, text: "extrapolates: " + call.extrapolation.join("; ") }));
    if (call.budget_j !== null && call.budget_j !== undefined)
      section.appendChild(h("p", { cls: "call-reason" + (call.over_budget ? " fail" : ""), text: "budget " + fmtJ(call.budget_j) + (call.over_budget ? " — exceeded" : " — within") }));
    if (call.removed && call.removed.length)
      section.appendChild(h("p", { cls: "call-reason fail", text: "removed since the baseline: " + call.removed.map(function (d) { return d.scope + " (" + d.type + ")"; }).join(", ") }));
    if (call.renames && call.renames.length)
      section.appendChild(h("p", { cls: "call-reason", text: "renamed modules: " + call.renames.map(function (r) { return (r.old || "<model>") + " -> " + (r.new || "<model>") + " (" + r.type + ", " + fmtJ(r.energy_j) + ")"; }).join(", ") }));

    var tree = h("ul", { cls: "tree", role: "tree" });
    var built = buildNode(root, 0, ctx);
    tree.appendChild(built.li);
    function all(open) {
      tree.querySelectorAll("li.node").forEach(function (li) { setOpen(li, open); });
      if (!open) setOpen(built.li, true);
    }
    var count = h("span", { cls: "find-count" });
    var find = h("input", { type: "search", cls: "find", placeholder: "find scope or type", "aria-label": "find nodes by scope or type" });
    find.addEventListener("input", function () {
      var q = find.value.trim().toLowerCase(), n = 0;
      Object.keys(ctx.byScope).forEach(function (scope) {
        var entry = ctx.byScope[scope], row = entry.li.querySelector(":scope > .row");
        var hit = !!q && (scope.toLowerCase().indexOf(q) >= 0 || entry.node.type.toLowerCase().indexOf(q) >= 0);
        row.classList.toggle("match", hit);
        if (hit) {
          n++;
          var li = entry.li.parentElement && entry.li.parentElement.closest("li.node");
          while (li) { setOpen(li, true); li = li.parentElement && li.parentElement.closest("li.node"); }
        }
      });
      count.textContent = q ? n + " match" + (n === 1 ? "" : "es") : "";
    });
    var toolbar = h("div", { cls: "toolbar" },
      h("button", { type: "button", cls: "expand-all", onclick: function () { all(true); }, text: "Expand all" }),
      h("button", { type: "button", cls: "collapse-all", onclick: function () { all(false); }, text: "Collapse all" }),
      find, count,
      h("span", { cls: "legend" }, "share of model energy: 0 %", h("span", { cls: "ramp" }), "100 %"));

    var ops = call.operations || [];
    var opsTable = h("table", { cls: "data ops" },
      h("thead", null, h("tr", null, h("th", { cls: "num", text: "#" }), h("th", { text: "operation" }), h("th", { text: "type" }),
        h("th", { cls: "num", text: "energy" }), h("th", { cls: "num", text: "share" }))),
      h("tbody", null, ops.map(function (op, i) {
        var tr = h("tr", { cls: "op", "data-scope": op.scope, "data-energy": String(op.energy_j), title: "show in tree" },
          h("td", { cls: "num", text: String(i + 1) }), h("td", { cls: "scope", text: op.scope }), h("td", { text: op.type }),
          h("td", { cls: "num", text: fmtJ(op.energy_j) }), h("td", { cls: "num", text: fmtPct(op.share) }));
        tr.addEventListener("click", function () { reveal(ctx, op.scope); });
        tr.addEventListener("mouseenter", function (ev) { var en = ctx.byScope[op.scope]; if (en) showTip(nodeTip(en.node, ctx), ev); });
        tr.addEventListener("mouseleave", hideTip);
        return tr;
      })));
    var side = h("div", { cls: "side" },
      h("h3", { text: "Operations by energy (" + ops.length + ")" }), h("div", { cls: "scroll" }, opsTable),
      h("h3", { text: "By module type" }), h("div", { cls: "scroll" }, breakdownTable(call.breakdown.module, call.total_j, "module type")),
      h("h3", { text: "By operation type" }), h("div", { cls: "scroll" }, breakdownTable(call.breakdown.ml, call.total_j, "operation type")));
    section.appendChild(toolbar);
    section.appendChild(h("div", { cls: "call-body" }, h("div", { cls: "tree-wrap" }, tree), side));
    section.irene = { reveal: function (s) { reveal(ctx, s); }, expandAll: function () { all(true); }, collapseAll: function () { all(false); } };
    return section;
  }
  Irene.renderCall = renderCall;

  function renderIndex(calls) {
    return h("table", { cls: "irene-index" },
      h("tbody", null, calls.map(function (c) {
        return h("tr", null, h("td", null, statusBadge(c), extrapolationMark(c)),
          h("td", null, h("a", { href: "#" + c.id, text: c.title })),
          h("td", { cls: "num", text: fmtJ(c.total_j) }));
      })));
  }

  var EAGER_CALLS = 12;

  function placeholder(call) {
    var section = h("section", { cls: "call pending", id: call.id, "data-model": call.model_name });
    function draw() { section.replaceWith(renderCall(call)); }
    section.appendChild(h("div", { cls: "call-head" },
      h("h2", { text: call.title }), statusBadge(call), extrapolationMark(call),
      h("span", { cls: "total" }, h("strong", { text: fmtJ(call.total_j) }), " " + call.source + " " + perWhat(call)),
      h("span", { cls: "call-meta", text: [call.model_name, "batch " + call.batch_size, "seq " + call.seq_len].join(" · ") }),
      h("button", { type: "button", cls: "show-call", onclick: draw, text: "Show tree" })));
    section.ireneDraw = draw;
    return section;
  }

  function showFromHash() {
    var id = (location.hash || "").slice(1);
    try { id = decodeURIComponent(id); } catch (e) { /* a malformed %-escape: use the hash as typed */ }
    var el = id && document.getElementById(id);
    if (el && el.ireneDraw) { el.ireneDraw(); el = document.getElementById(id); }
    if (el) el.scrollIntoView();
  }

  function bootReport(data, root) {
    var calls = data.calls || [];
    var sub = document.getElementById("irene-sub");
    var failed = calls.filter(function (c) { return c.failed; }).length;
    var what = calls.length || !data.sweep ? calls.length + " call" + (calls.length === 1 ? "" : "s") + (failed ? ", " + failed + " failing" : "") : "sweep of " + data.sweep.points.length + " predictions";
    if (calls.length && data.total_j !== null && data.total_j !== undefined) what += "; " + fmtJ(data.total_j) + " predicted in all";
    if (sub) sub.textContent = what + (data.generated ? " · generated " + data.generated : "");
    if (data.sweep && Irene.renderSweep) root.appendChild(Irene.renderSweep(data.sweep));
    if (calls.length > 1) root.appendChild(renderIndex(calls));
    /* Large suites: draw failing calls at once and the others when asked (or linked to),
     * so a report of hundreds of calls opens instantly. */
    var lazy = calls.length > EAGER_CALLS;
    calls.forEach(function (c) { root.appendChild(lazy && !c.failed ? placeholder(c) : renderCall(c)); });
    window.addEventListener("hashchange", function () { showFromHash(); });
    showFromHash();
    if (!calls.length && !data.sweep) root.appendChild(h("p", { text: "No wrapped calls were recorded in this session." }));
  }

  Irene.boot = function () {
    var el = document.getElementById("irene-data");
    var root = document.getElementById("irene-root");
    if (!el || !root) return;
    var data = JSON.parse(el.textContent);
    root.textContent = "";
    if (data.kind === "app" && Irene.startApp) Irene.startApp(data, root);
    else bootReport(data, root);
    document.addEventListener("scroll", hideTip, true);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { Irene.boot(); });
  else setTimeout(function () { Irene.boot(); }, 0);
})();
