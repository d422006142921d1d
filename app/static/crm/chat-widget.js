/*
 * The CRM chat widget: a button that opens a small chat panel on any page.
 *
 *   <script src="https://<crm>/static/crm/chat-widget.js" data-crm-base="https://<crm>"
 *           data-page="<landing page slug>" data-campaign="<tracking code>" data-lang="zh|en" defer></script>
 *
 * All attributes but src are optional: the base defaults to the script's own origin, the language to the
 * page's <html lang>, then the browser's. The visitor chats with the auto-reply (which asks for a name and
 * a phone) or an agent; once the bot has both, the widget sends them as a lead to
 * POST {base}/api/v1/public/lead with the chat's token, and shows the answer. Plain JS, no external
 * assets, styles inside a shadow root (the host page's CSS does not reach in, ours does not leak out).
 * Requests carry no cookies (credentials "omit"): the CRM answers CORS on /api/v1/public/ only.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[src*='chat-widget.js']");
  if (!script || window.__crmChatWidget) { return; }
  window.__crmChatWidget = true;

  var data = script.dataset || {};
  var base = (data.crmBase || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var pageSlug = data.page || "";
  var campaign = data.campaign || "";
  var lang = (data.lang || document.documentElement.lang || navigator.language || "zh").slice(0, 2).toLowerCase();
  lang = lang === "en" ? "en" : "zh";
  var POLL_MS = 4000;
  var STORE_KEY = "crm-chat:" + base + ":" + pageSlug;

  var TEXTS = {
    zh: {button: "在线咨询", title: "在线咨询", close: "关闭", placeholder: "请输入消息…", send: "发送",
         bot: "助手", agent: "顾问", you: "我", sending: "正在提交您的联系方式…",
         received: "已收到您的联系方式，顾问会尽快联系您。", reference: "编号",
         tooMany: "消息太频繁，请稍后再试。", failed: "网络异常，请稍后再试。", closed: "本次咨询已结束。",
         start: "正在连接…"},
    en: {button: "Chat with us", title: "Chat with us", close: "Close", placeholder: "Type a message…",
         send: "Send", bot: "Assistant", agent: "Advisor", you: "You", sending: "Sending your details…",
         received: "We have your details; an advisor will contact you soon.", reference: "Reference",
         tooMany: "Too many messages: please wait a moment.", failed: "Could not reach us: please try again.",
         closed: "This chat has ended.", start: "Connecting…"}
  }[lang];

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:-apple-system,'PingFang SC','Microsoft YaHei',Arial,sans-serif}",
    ".btn{position:fixed;right:20px;bottom:20px;z-index:2147483000;border:0;border-radius:24px;",
    "padding:12px 18px;background:#1f6feb;color:#fff;font-size:15px;cursor:pointer;box-shadow:0 2px 8px rgba(0,0,0,.25);",
    "display:flex;align-items:center;gap:8px}",
    ".panel{position:fixed;right:20px;bottom:76px;z-index:2147483000;width:340px;max-width:calc(100vw - 40px);",
    "height:460px;max-height:calc(100vh - 100px);display:none;flex-direction:column;background:#fff;",
    "border-radius:10px;box-shadow:0 4px 24px rgba(0,0,0,.3);overflow:hidden;color:#222;font-size:14px}",
    ".panel.open{display:flex}",
    ".head{display:flex;justify-content:space-between;align-items:center;padding:10px 14px;background:#1f6feb;color:#fff}",
    ".head button{background:none;border:0;color:#fff;font-size:20px;cursor:pointer;line-height:1}",
    ".log{flex:1;overflow-y:auto;padding:10px;background:#f5f7fa}",
    ".msg{margin:6px 0;display:flex;flex-direction:column}",
    ".msg .who{font-size:11px;color:#777;margin-bottom:2px}",
    ".msg .text{display:inline-block;max-width:85%;padding:7px 10px;border-radius:8px;white-space:pre-wrap;word-wrap:break-word;background:#fff;border:1px solid #e1e4e8}",
    ".msg.visitor{align-items:flex-end}.msg.visitor .text{background:#dbeafe;border-color:#bfdbfe}",
    ".msg.agent .text{background:#ecfdf5;border-color:#a7f3d0}",
    ".note{margin:8px 0;font-size:12px;color:#555;text-align:center}.note.error{color:#b91c1c}",
    "form{display:flex;gap:6px;padding:8px;border-top:1px solid #e1e4e8;background:#fff}",
    "input{flex:1;padding:8px;border:1px solid #ccd;border-radius:6px;font-size:14px}",
    "form button{padding:8px 12px;border:0;border-radius:6px;background:#1f6feb;color:#fff;cursor:pointer}",
    "form button:disabled,input:disabled{opacity:.5;cursor:default}"
  ].join("");

  // --- the elements ----------------------------------------------------------------------------------
  var host = document.createElement("div");
  host.id = "crm-chat-widget";
  var root = host.attachShadow ? host.attachShadow({mode: "open"}) : host;
  var style = document.createElement("style");
  style.textContent = CSS;
  root.appendChild(style);

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  var button = el("button", {"class": "btn", id: "crm-chat-button", type: "button", "aria-expanded": "false"});
  button.appendChild(icon());
  button.appendChild(document.createTextNode(TEXTS.button));
  function icon() {  // a speech bubble, drawn here: no font or image to load
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "18");
    svg.setAttribute("height", "18");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    return svg;
  }

  var panel = el("div", {"class": "panel", id: "crm-chat-panel", role: "dialog", "aria-label": TEXTS.title});
  var head = el("div", {"class": "head"});
  head.appendChild(el("strong", {}, TEXTS.title));
  var closeButton = el("button", {type: "button", id: "crm-chat-close", "aria-label": TEXTS.close, title: TEXTS.close},
                       "\u00D7");
  head.appendChild(closeButton);
  var log = el("div", {"class": "log", id: "crm-chat-log", "aria-live": "polite"});
  var form = el("form", {id: "crm-chat-form"});
  var input = el("input", {id: "crm-chat-input", type: "text", maxlength: "1000", autocomplete: "off",
                           placeholder: TEXTS.placeholder, "aria-label": TEXTS.placeholder});
  var send = el("button", {type: "submit", id: "crm-chat-send"}, TEXTS.send);
  form.appendChild(input);
  form.appendChild(send);
  panel.appendChild(head);
  panel.appendChild(log);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(button);

  // --- the chat's state ------------------------------------------------------------------------------
  var chat = {token: null, formToken: null, lastId: 0, seen: {}, closed: false, leadSent: false,
              starting: null, timer: null};

  function note(text, isError) {
    var line = el("p", {"class": "note" + (isError ? " error" : "")}, text);
    line.setAttribute("data-note", isError ? "error" : "info");
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
    return line;
  }

  function show(messages) {
    (messages || []).forEach(function (m) {
      if (chat.seen[m.id]) { return; }
      chat.seen[m.id] = true;
      chat.lastId = Math.max(chat.lastId, m.id);
      var row = el("div", {"class": "msg " + m.sender, "data-sender": m.sender, "data-id": String(m.id)});
      var who = m.sender === "visitor" ? TEXTS.you : m.sender === "agent" ? (m.name || TEXTS.agent) : TEXTS.bot;
      row.appendChild(el("span", {"class": "who"}, who));
      row.appendChild(el("span", {"class": "text"}, m.body));
      log.appendChild(row);
    });
    log.scrollTop = log.scrollHeight;
  }

  function setClosed() {
    if (chat.closed) { return; }
    chat.closed = true;
    input.disabled = send.disabled = true;
    note(TEXTS.closed);
    stopPolling();
  }

  function call(method, path, body) {
    var options = {method: method, credentials: "omit", mode: "cors",
                   headers: {"Accept": "application/json", "Accept-Language": lang}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(base + path, options).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (json) {
        return {status: resp.status, ok: resp.ok, body: json};
      });
    });
  }

  function remember() {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({token: chat.token, formToken: chat.formToken,
                                                        leadSent: chat.leadSent}));
    } catch (e) { /* storage off: the chat lasts as long as the page */ }
  }

  function resume() {
    var saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch (e) { saved = null; }
    if (!saved || !saved.token) { return Promise.resolve(false); }
    return call("GET", "/api/v1/public/chat/" + encodeURIComponent(saved.token) + "/messages").then(function (r) {
      if (!r.ok) { return false; }
      chat.token = saved.token;
      chat.formToken = saved.formToken;
      chat.leadSent = !!saved.leadSent;
      show(r.body.messages);
      if (r.body.status === "closed") { setClosed(); }
      return true;
    }, function () { return false; });
  }

  function start() {
    if (chat.token) { return Promise.resolve(true); }
    if (chat.starting) { return chat.starting; }
    var connecting = note(TEXTS.start);
    chat.starting = resume().then(function (resumed) {
      if (resumed) { return true; }
      var body = {lang: lang};
      if (pageSlug) { body.page = pageSlug; }
      if (campaign) { body.campaign = campaign; }
      return call("POST", "/api/v1/public/chat/start", body).then(function (r) {
        if (!r.ok) {
          note(r.status === 429 ? TEXTS.tooMany : (r.body.message || TEXTS.failed), true);
          return false;
        }
        chat.token = r.body.token;
        chat.formToken = r.body.form_token;
        remember();
        show(r.body.messages);
        return true;
      });
    }).catch(function () {
      note(TEXTS.failed, true);
      return false;
    }).then(function (ok) {
      connecting.remove();
      chat.starting = null;
      return ok;
    });
    return chat.starting;
  }

  function poll() {
    if (!chat.token || chat.closed) { return; }
    call("GET", "/api/v1/public/chat/" + encodeURIComponent(chat.token) + "/messages?after=" + chat.lastId)
      .then(function (r) {
        if (!r.ok) { return; }
        show(r.body.messages);
        if (r.body.status === "closed") { setClosed(); }
      }, function () { /* offline for a moment: the next poll tries again */ });
  }

  function startPolling() {
    stopPolling();
    chat.timer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (chat.timer) { clearInterval(chat.timer); chat.timer = null; }
  }

  function sendLead(contact, formToken) {
    chat.leadSent = true;
    remember();
    var sending = note(TEXTS.sending);
    var body = {name: contact.name, phone: contact.phone, form_token: formToken || chat.formToken,
                chat: chat.token};
    if (pageSlug) { body.page = pageSlug; }
    if (campaign) { body.utm_campaign = campaign; }
    call("POST", "/api/v1/public/lead", body).then(function (r) {
      sending.remove();
      if (r.ok) {
        var done = note(TEXTS.received + (r.body.reference ? " " + TEXTS.reference + ": " + r.body.reference : ""));
        done.setAttribute("data-lead", "received");
      } else {
        chat.leadSent = false;  // the next complete answer tries again
        remember();
        note(r.status === 429 ? TEXTS.tooMany : (r.body.message || TEXTS.failed), true)
          .setAttribute("data-lead", "refused");
      }
    }, function () {
      sending.remove();
      chat.leadSent = false;
      remember();
      note(TEXTS.failed, true);
    });
  }

  function post(text) {
    input.disabled = send.disabled = true;
    return start().then(function (ok) {
      if (!ok) { return; }
      return call("POST", "/api/v1/public/chat/" + encodeURIComponent(chat.token) + "/messages", {body: text})
        .then(function (r) {
          if (r.status === 409) { setClosed(); return; }
          if (!r.ok) {
            note(r.status === 429 ? TEXTS.tooMany : (r.body.message || TEXTS.failed), true);
            return;
          }
          input.value = "";
          show(r.body.messages);
          var contact = r.body.contact || {};
          if (contact.complete && !chat.leadSent) { sendLead(contact, r.body.form_token); }
        });
    }).catch(function () {
      note(TEXTS.failed, true);
    }).then(function () {
      if (!chat.closed) { input.disabled = send.disabled = false; input.focus(); }
    });
  }

  // --- events ------------------------------------------------------------------------------------------
  function open() {
    panel.classList.add("open");
    button.setAttribute("aria-expanded", "true");
    start().then(function (ok) { if (ok) { poll(); startPolling(); } });
    input.focus();
  }

  function close() {
    panel.classList.remove("open");
    button.setAttribute("aria-expanded", "false");
    stopPolling();
  }

  button.addEventListener("click", function () {
    if (panel.classList.contains("open")) { close(); } else { open(); }
  });
  closeButton.addEventListener("click", close);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (text && !chat.closed) { post(text); }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { stopPolling(); } else if (panel.classList.contains("open") && chat.token) { startPolling(); }
  });

  function mount() { document.body.appendChild(host); }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
})();
