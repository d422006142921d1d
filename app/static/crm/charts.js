/* Shared chart helpers over the vendored Chart.js (served locally: the console works offline). */
(function () {
  "use strict";
  /* The JSON a page embeds in <script type="application/json" id="...">, or null. */
  window.crmData = function (id) {
    var holder = document.getElementById(id);
    return holder && window.Chart ? JSON.parse(holder.textContent) : null;
  };
  /* A chart on the canvas `canvasId` as every report draws it (fixed height, no animation); `options`
     adds to or overrides those defaults. Null when the canvas or Chart.js is missing. */
  window.crmChart = function (canvasId, type, labels, datasets, options) {
    var canvas = document.getElementById(canvasId);
    if (!canvas || !window.Chart) return null;
    var base = {responsive: true, maintainAspectRatio: false, animation: false};
    return new Chart(canvas, {type: type, data: {labels: labels, datasets: datasets},
                              options: Object.assign(base, options || {})});
  };
  /* Scales of whole numbers from zero; stacked when asked. */
  window.crmCounts = function (stacked) {
    var y = {beginAtZero: true, ticks: {precision: 0}};
    return stacked ? {x: {stacked: true}, y: Object.assign({stacked: true}, y)} : {y: y};
  };
  /* One data set: `rows` mapped through `value`, in `color` (a line's colour too). */
  window.crmSeries = function (label, rows, value, color, extra) {
    return Object.assign({label: label, backgroundColor: color, borderColor: color, data: rows.map(value)},
                         extra || {});
  };
  /* A plain bar chart of whole numbers. */
  window.crmBar = function (canvasId, labels, values, label) {
    return window.crmChart(canvasId, "bar", labels,
                           [{label: label || "", data: values, backgroundColor: "#3c8dbc"}],
                           {plugins: {legend: {display: false}}, scales: window.crmCounts(false)});
  };
})();
