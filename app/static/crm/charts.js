/* Shared chart helpers over the vendored Chart.js (served locally: the console works offline). */
(function () {
  "use strict";
  /* The JSON a page embeds in <script type="application/json" id="...">, or null. */
  window.crmData = function (id) {
    var holder = document.getElementById(id);
    return holder && window.Chart ? JSON.parse(holder.textContent) : null;
  };
  /* A plain bar chart of whole numbers. */
  window.crmBar = function (canvasId, labels, values, label) {
    var canvas = document.getElementById(canvasId);
    if (!canvas || !window.Chart) return null;
    return new Chart(canvas, {
      type: "bar",
      data: {labels: labels, datasets: [{label: label || "", data: values, backgroundColor: "#3c8dbc"}]},
      options: {responsive: true, maintainAspectRatio: false, animation: false,
                plugins: {legend: {display: false}},
                scales: {y: {beginAtZero: true, ticks: {precision: 0}}}}
    });
  };
})();
