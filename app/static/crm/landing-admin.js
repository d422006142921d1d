/* Live width counters for a landing page's title, keywords and description (the rules of
   app/services/landing.py): a wide (CJK) character counts 2, others 1; keywords are split on , ， 、 */
(function () {
  "use strict";
  var script = document.currentScript;
  var limits = JSON.parse(script.getAttribute("data-limits"));
  var widthLabel = script.getAttribute("data-label-width");
  var countLabel = script.getAttribute("data-label-count");
  var minLabel = script.getAttribute("data-label-min");
  var WIDE = /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]/;

  function width(text) {
    var total = 0;
    for (var i = 0; i < text.length; i++) {
      total += WIDE.test(text.charAt(i)) ? 2 : 1;
    }
    return total;
  }

  function keywords(text) {
    return text.split(/[,，、]/).map(function (s) { return s.trim(); }).filter(function (s) { return s; });
  }

  function attach(name) {
    var input = document.getElementById(name);
    if (!input) {
      return;
    }
    var counter = document.createElement("small");
    counter.className = "help-block landing-counter";
    counter.setAttribute("aria-live", "polite");
    input.parentNode.insertBefore(counter, input.nextSibling);
    var low = limits[name][0], high = limits[name][1];

    function update() {
      var value = input.value.trim();
      var shown = value, extra = "";
      if (name === "keywords") {
        var words = keywords(value);
        shown = words.join(",");
        extra = " · " + countLabel + " " + words.length + " / 10";
      }
      var w = width(shown);
      var bad = w > high || (low && w > 0 && w < low) || (name === "keywords" && keywords(value).length > 10);
      counter.textContent = widthLabel + " " + w + " / " + high + (low ? " (" + minLabel + " " + low + ")" : "")
        + extra;
      counter.style.color = bad ? "#c62828" : "";
    }

    input.addEventListener("input", update);
    update();
  }

  ["title", "keywords", "description"].forEach(attach);
}());
