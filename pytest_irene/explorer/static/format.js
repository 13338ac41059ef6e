/* pytest-irene explorer: number formatting shared by the tree, the charts and the app.
 * Energies, shares and changes are written exactly as the terminal writes them
 * (pytest_irene/units.py format_energy, report/tree_report.py format_share, units.format_change),
 * so the page, the terminal summary and the run file agree digit for digit.
 * Loaded first; plain functions on window.Irene (also loadable by node for tests). */
(function (root) {
  "use strict";
  var Irene = (root.Irene = root.Irene || {});

  function si(value, unit, digits) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    var prefixes = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""], [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"]];
    var a = Math.abs(value);
    if (a === 0) return "0 " + unit;
    for (var i = 0; i < prefixes.length; i++) {
      if (a >= prefixes[i][0] * 0.9995) return (value / prefixes[i][0]).toPrecision(digits || 4) + " " + prefixes[i][1] + unit;
    }
    return value.toExponential(2) + " " + unit;
  }
  /* Python's "%.4g": 4 significant digits, trailing zeros dropped, exponent outside 1e-4..1e4. */
  function g4(x) {
    var e = x.toExponential(3), exp = Number(e.slice(e.indexOf("e") + 1));
    function strip(t) { return t.indexOf(".") < 0 ? t : t.replace(/0+$/, "").replace(/\.$/, ""); }
    if (exp < -4 || exp >= 4) {
      var mant = strip(e.slice(0, e.indexOf("e")));
      return mant + "e" + (exp < 0 ? "-" : "+") + (Math.abs(exp) < 10 ? "0" : "") + Math.abs(exp);
    }
    return strip(x.toFixed(3 - exp));
  }
  /* Energy exactly as the terminal writes it (pytest_irene/units.py format_energy), so the
   * page, the terminal summary and the run file agree digit for digit. */
  function fmtJ(j) {
    if (j === null || j === undefined || !isFinite(j)) return "–";
    var a = Number(Math.abs(j).toPrecision(4));  /* the unit after rounding: 0.99996 J is "1 J" */
    if (a === 0) return "0 J";
    if (a >= 3.6e6) return g4(j / 3.6e6) + " kWh";
    if (a >= 1e3) return g4(j / 1e3) + " kJ";
    if (a >= 1) return g4(j) + " J";
    if (a >= 1e-3) return g4(j * 1e3) + " mJ";
    return g4(j * 1e6) + " uJ";
  }
  /* Python's "%.{d}f": toFixed rounds an exact tie (0.25 to one decimal) up, Python to the even digit. */
  function pyFixed(y, d) {
    var scaled = y * Math.pow(10, d), twice = scaled * 2;
    if (Number.isInteger(twice) && Math.abs(twice % 2) === 1) {
      var down = Math.floor(scaled);
      return ((down % 2 === 0 ? down : down + 1) / Math.pow(10, d)).toFixed(d);
    }
    return y.toFixed(d);
  }
  /* Shares and changes as the terminal writes them ("12.3%", "+4.5%"). */
  function fmtPct(x) { return (x === null || x === undefined || !isFinite(x)) ? "–" : pyFixed(x * 100, 1) + "%"; }
  function fmtBytes(b) {
    if (b === null || b === undefined || !isFinite(b)) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(2) : String(b)) + " " + units[i];
  }
  /* A change that rounds to nothing is "+0.0%" whatever its sign, as units.format_change writes it. */
  function fmtChange(c) {
    var t = pyFixed(c * 100, 1);
    if (Number(t) === 0) t = "0.0";
    return (t.charAt(0) === "-" ? "" : "+") + t + "%";
  }
  Irene.fmtJ = fmtJ; Irene.fmtPct = fmtPct; Irene.si = si; Irene.g4 = g4; Irene.fmtChange = fmtChange; Irene.fmtBytes = fmtBytes;
})(typeof window !== "undefined" ? window : globalThis);
