/* The lead form of a landing page: sent as JSON to the public capture endpoint, its answer shown in place.
   Without this script the form still posts (the endpoint then redirects to the thanks page, or back to the
   page with the refused field). Messages come from the page (data-msg-*), in the page's language. */
(function () {
  "use strict";
  var form = document.getElementById("lead-form");
  if (!form || !window.fetch || !window.JSON) {
    return;
  }
  var status = form.querySelector("[data-form-status]");
  var button = form.querySelector("button[type=submit]");
  var fields = ["name", "phone", "consult_note", "website", "form_token", "page", "utm_campaign"];

  var query = window.location.search;
  var match = /[?&]utm_campaign=([^&#]*)/.exec(query);
  if (match && form.elements.utm_campaign) {
    try {
      form.elements.utm_campaign.value = decodeURIComponent(match[1].replace(/\+/g, " ")).slice(0, 100);
    } catch (e) { /* a malformed escape: keep what the page has */ }
  }

  function slotFor(field) {
    return (field && form.querySelector('[data-error-for="' + field + '"]')) || status;
  }

  function clear() {
    var slots = form.querySelectorAll("[data-error-for]");
    for (var i = 0; i < slots.length; i++) {
      slots[i].textContent = "";
    }
    status.textContent = "";
    status.className = "lp-error lp-form-error";
    for (var j = 0; j < fields.length; j++) {
      var input = form.elements[fields[j]];
      if (input && input.removeAttribute) {
        input.removeAttribute("aria-invalid");
      }
    }
  }

  function refuse(field, message) {
    var slot = slotFor(field);
    slot.textContent = message || form.getAttribute("data-msg-failed");  // text, never markup
    var input = field && form.elements[field];
    if (input && slot !== status && input.focus) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  function done() {
    var box = document.createElement("p");
    box.className = "lp-form-done";
    box.setAttribute("role", "status");
    box.textContent = form.getAttribute("data-msg-success");
    form.parentNode.replaceChild(box, form);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clear();
    var body = {};
    for (var i = 0; i < fields.length; i++) {
      var input = form.elements[fields[i]];
      if (input) {
        body[fields[i]] = input.value;
      }
    }
    button.disabled = true;
    status.className = "lp-form-status";
    status.textContent = form.getAttribute("data-msg-sending");
    fetch(form.getAttribute("action"), {
      method: "POST",
      credentials: "omit",  // a visitor needs no cookie; a logged-in console user is a visitor here too
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return {status: response.status, data: data || {}};
      });
    }).then(function (answer) {
      button.disabled = false;
      status.textContent = "";
      status.className = "lp-error lp-form-error";
      if (answer.status >= 200 && answer.status < 300) {
        done();
      } else if (answer.status === 429) {
        refuse(null, form.getAttribute("data-msg-too-many"));
      } else {
        refuse(answer.data.field, answer.data.message);
      }
    }, function () {
      button.disabled = false;
      status.className = "lp-error lp-form-error";
      refuse(null, form.getAttribute("data-msg-failed"));
    });
  });
}());
