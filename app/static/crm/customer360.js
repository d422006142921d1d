/* The Timeline panel of the customer page (app/templates/customer360/_timeline_panel.html): the kind
   chips reload the list, "load more" appends the next page. Both read GET /api/v1/customer/<id>/timeline
   with the session; every text goes in through textContent (nothing from the server is parsed as HTML). */
(function () {
  "use strict";
  var root = document.getElementById("crm-customer-timeline");
  if (!root) { return; }
  var list = document.getElementById("crm-c360-list");
  var more = document.getElementById("crm-c360-more");
  var empty = document.getElementById("crm-c360-empty");
  var next = root.getAttribute("data-next") || "";

  function kinds() {
    var boxes = root.querySelectorAll("#crm-c360-filters input[name=kind]");
    var chosen = [];
    for (var i = 0; i < boxes.length; i++) { if (boxes[i].checked) { chosen.push(boxes[i].value); } }
    return chosen;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text) { node.textContent = text; }
    return node;
  }

  function link(href, text) {
    var a = el("a", "", text);
    a.setAttribute("href", href);
    return a;
  }

  function item(e) {
    var li = el("li", "crm-c360-event crm-c360-" + e.kind);
    li.setAttribute("data-kind", e.kind);
    li.setAttribute("data-action", e.action);
    var icon = el("span", "crm-c360-icon");
    icon.title = e.kind_label;
    icon.appendChild(el("i", "fa " + e.icon));
    li.appendChild(icon);
    var body = el("div", "crm-c360-body");
    var head = el("div", "crm-c360-head");
    var time = el("time", "", e.time);
    time.setAttribute("datetime", e.at);
    head.appendChild(time);
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("span", "crm-c360-kind", e.kind_label));
    if (e.opportunity_id) {
      head.appendChild(document.createTextNode(" "));
      var label = "#" + e.opportunity_id;
      head.appendChild(e.opportunity_link ? link(e.opportunity_link, label) : document.createTextNode(label));
    }
    body.appendChild(head);
    var title = el("div", "crm-c360-title");
    title.appendChild(e.link ? link(e.link, e.title) : document.createTextNode(e.title));
    body.appendChild(title);
    if (e.detail) { body.appendChild(el("div", "crm-c360-detail", e.detail)); }
    li.appendChild(body);
    return li;
  }

  function load(replace) {
    var chosen = kinds();
    if (replace) { list.textContent = ""; next = ""; }
    if (!chosen.length) { more.hidden = true; empty.hidden = false; return; }
    if (!replace && !next) { more.hidden = true; return; }  // the last page is shown: nothing more
    var url = root.getAttribute("data-url") + "?kinds=" + encodeURIComponent(chosen.join(","));
    if (!replace && next) { url += "&before=" + encodeURIComponent(next); }
    more.disabled = true;
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (resp) { if (!resp.ok) { throw new Error(resp.status); } return resp.json(); })
      .then(function (data) {
        data.result.forEach(function (e) { list.appendChild(item(e)); });
        next = data.next || "";
        more.hidden = !next;
        empty.hidden = list.children.length > 0;
      })
      .catch(function () { window.alert(root.getAttribute("data-error")); })
      .then(function () { more.disabled = false; });
  }

  more.addEventListener("click", function () { load(false); });
  var boxes = root.querySelectorAll("#crm-c360-filters input[name=kind]");
  for (var i = 0; i < boxes.length; i++) { boxes[i].addEventListener("change", function () { load(true); }); }
})();
