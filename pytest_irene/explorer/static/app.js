/* pytest-irene explorer: the web app's page (irene serve). Picks an architecture,
 * batch size, sequence length and profile, fetches /api/energy and draws the same
 * view as the HTML report; the sweep tab fetches /api/sweep and draws the charts. */
(function () {
  "use strict";
  var Irene = (window.Irene = window.Irene || {});
  var h = Irene.h;

  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; }).then(function (body) {
        if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
        return body;
      });
    });
  }

  function field(label, input) { return h("label", null, label, input); }

  Irene.startApp = function (data, root) {
    var limits = data.limits || {}, defaults = data.defaults || {};
    var sub = document.getElementById("irene-sub");
    if (sub) sub.textContent = "Predicted energy of one forward pass, per module. Batch size ≤ " + limits.max_batch_size + ", sequence length ≤ " + limits.max_seq_len + ".";
    var tabTree = h("button", { type: "button", cls: "tab-tree active", text: "Model tree" });
    var tabSweep = h("button", { type: "button", cls: "tab-sweep", text: "Sweep" });
    var treePane = h("div", { cls: "pane pane-tree" }), sweepPane = h("div", { cls: "pane pane-sweep", hidden: true });
    function show(which) {
      treePane.hidden = which !== "tree"; sweepPane.hidden = which !== "sweep";
      tabTree.classList.toggle("active", which === "tree"); tabSweep.classList.toggle("active", which === "sweep");
    }
    tabTree.addEventListener("click", function () { show("tree"); });
    tabSweep.addEventListener("click", function () { show("sweep"); });
    root.appendChild(h("div", { cls: "tabs" }, tabTree, tabSweep));
    root.appendChild(treePane); root.appendChild(sweepPane);

    /* ----- tree tab ----- */
    var model = h("select", { name: "model", id: "pick-model" });
    var profile = h("select", { name: "profile", id: "pick-profile" });
    var batch = h("input", { type: "number", name: "batch_size", id: "pick-batch", min: "1", max: String(limits.max_batch_size), value: String(defaults.batch_size || 8) });
    var seq = h("input", { type: "number", name: "seq_len", id: "pick-seq", min: "1", max: String(limits.max_seq_len), value: String(defaults.seq_len || 128) });
    /* a compact variant ARCH[L=,H=] (README: "also in the web app"): only for architectures that have them */
    var layers = h("input", { type: "number", name: "layers", id: "pick-layers", min: "1", max: String(limits.max_layers), placeholder: "as built", disabled: true });
    var hidden = h("input", { type: "number", name: "hidden", id: "pick-hidden", min: "64", step: "64", max: String(limits.max_hidden), placeholder: "as built", disabled: true });
    var compact = {};
    model.addEventListener("change", function () { layers.disabled = hidden.disabled = !compact[model.value]; });
    function chosenModel() {
      return !layers.disabled && (layers.value || hidden.value) ? model.value + "[L=" + layers.value + ",H=" + hidden.value + "]" : model.value;
    }
    var go = h("button", { type: "submit", id: "pick-go", text: "Predict" });
    var out = h("div", { cls: "result", id: "tree-result" });
    var form = h("form", { cls: "pick", id: "pick-form" }, field("architecture", model), field("layers L", layers), field("hidden H", hidden),
      field("batch size", batch), field("sequence length", seq), field("profile", profile), go);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var q = "model=" + encodeURIComponent(chosenModel()) + "&batch_size=" + encodeURIComponent(batch.value) +
        "&seq_len=" + encodeURIComponent(seq.value) + "&profile=" + encodeURIComponent(profile.value);
      out.textContent = ""; out.appendChild(h("p", { cls: "busy", text: "Tracing and predicting…" }));
      getJSON(data.api + "/energy?" + q).then(function (view) {
        out.textContent = ""; out.appendChild(Irene.renderCall(view));
      }).catch(function (err) {
        out.textContent = ""; out.appendChild(h("p", { cls: "error", role: "alert", text: err.message }));
      });
    });
    treePane.appendChild(form); treePane.appendChild(out);

    /* ----- sweep tab ----- */
    var models = h("select", { name: "model", id: "sweep-models", multiple: true, size: "5" });
    var sprofile = h("select", { name: "profile", id: "sweep-profile" });
    var sbatch = h("input", { type: "text", name: "batch_sizes", id: "sweep-batch", value: (defaults.sweep_batch_sizes || [8, 16]).join(",") });
    var sseq = h("input", { type: "text", name: "seq_lens", id: "sweep-seq", value: (defaults.sweep_seq_lens || [32, 64, 128]).join(",") });
    var sgo = h("button", { type: "submit", id: "sweep-go", text: "Sweep" });
    var sout = h("div", { cls: "result", id: "sweep-result" });
    var sform = h("form", { cls: "pick", id: "sweep-form" }, field("architectures", models), field("batch sizes", sbatch), field("sequence lengths", sseq), field("profile", sprofile), sgo);
    sform.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var chosen = Array.prototype.filter.call(models.options, function (o) { return o.selected; }).map(function (o) { return "model=" + encodeURIComponent(o.value); });
      var q = chosen.join("&") + "&batch_sizes=" + encodeURIComponent(sbatch.value) + "&seq_lens=" + encodeURIComponent(sseq.value) + "&profile=" + encodeURIComponent(sprofile.value);
      sout.textContent = ""; sout.appendChild(h("p", { cls: "busy", text: "Sweeping…" }));
      getJSON(data.api + "/sweep?" + q).then(function (sweep) {
        sout.textContent = ""; sout.appendChild(Irene.renderSweep(sweep));
      }).catch(function (err) {
        sout.textContent = ""; sout.appendChild(h("p", { cls: "error", role: "alert", text: err.message }));
      });
    });
    sweepPane.appendChild(sform); sweepPane.appendChild(sout);

    getJSON(data.api + "/models").then(function (body) {
      body.models.forEach(function (m, i) {
        compact[m.name] = !!m.compact;
        model.appendChild(h("option", { value: m.name, text: m.name + (m.kind === "factory" ? " (factory)" : "") }));
        models.appendChild(h("option", { value: m.name, text: m.name, selected: i === 0 }));
      });
      if (defaults.model) model.value = defaults.model;
      model.dispatchEvent(new Event("change"));
    }).catch(function (err) { out.appendChild(h("p", { cls: "error", text: "models: " + err.message })); });
    getJSON(data.api + "/profiles").then(function (body) {
      body.profiles.forEach(function (p) {
        profile.appendChild(h("option", { value: p, text: p }));
        sprofile.appendChild(h("option", { value: p, text: p }));
      });
      if (body["default"]) { profile.value = body["default"]; sprofile.value = body["default"]; }
    }).catch(function (err) { out.appendChild(h("p", { cls: "error", text: "profiles: " + err.message })); });
  };
})();
