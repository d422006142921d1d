/* The segment builder's live count: as the form changes (debounced), POST its criteria (ids and numbers as
   JSON integers, as the API's document says) to
   /api/v1/segments/count (with the form's CSRF token, as every session write to the API needs) and
   show "N customers" in the viewer's data scope, or the refused field's message. */
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.getAttribute("data-url");
  var failed = script.getAttribute("data-error");
  var form = document.getElementById("crm-segment-form");
  var out = document.getElementById("crm-segment-count");
  var problem = document.getElementById("crm-segment-count-error");
  if (!form || !out) {
    return;
  }
  var LISTS = ["tags_any", "tags_all", "tags_none", "stages", "product_lines", "campaigns", "statuses"];
  var NUMBERS = ["lessons_min", "active_within_days", "contacted_within_days", "not_contacted_days",
                 "win_min", "win_max"];
  var timer = null, sent = 0;

  function criteria() {
    var c = {};
    LISTS.forEach(function (name) {
      var select = form.elements[name];
      var values = select ? Array.prototype.filter.call(select.options, function (o) { return o.selected; })
        .map(function (o) { return /^\d+$/.test(o.value) ? Number(o.value) : o.value; }) : [];
      if (values.length) { c[name] = values; }
    });
    var regions = (form.elements.regions.value || "").split(/[,，、;；\s]+/).filter(function (r) { return r; });
    if (regions.length) { c.regions = regions; }
    NUMBERS.forEach(function (name) {
      var value = (form.elements[name].value || "").trim();
      if (value !== "") { c[name] = /^\d+$/.test(value) ? Number(value) : value; }
    });
    var consent = form.elements.consent.value;
    if (consent === "yes" || consent === "no") { c.consent = consent === "yes"; }
    return c;
  }

  function count() {
    var mine = ++sent;
    var request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("Content-Type", "application/json");
    request.setRequestHeader("X-CSRFToken", form.elements.csrf_token.value);
    request.onload = function () {
      if (mine !== sent) { return; }  // an answer to an older state of the form
      var body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { body = {}; }
      if (request.status === 200) {
        out.textContent = body.label;
        problem.textContent = "";
      } else {
        out.textContent = "—";
        problem.textContent = (body.message || failed) + (body.field ? " (" + body.field + ")" : "");
      }
    };
    request.onerror = function () { if (mine === sent) { problem.textContent = failed; } };
    request.send(JSON.stringify({subject: form.elements.subject.value, criteria: criteria()}));
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(count, 400);
  }

  form.addEventListener("input", later);
  form.addEventListener("change", later);
  if (window.jQuery) {  // Select2 reports its changes as jQuery events only
    window.jQuery(form).on("change", "select", later);
  }
  count();
}());
