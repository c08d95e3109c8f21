// The clinvk console's shared pieces: building DOM from text nodes (never parsed markup),
// the API key (kept in this tab's sessionStorage only), calling the API, and reading
// NDJSON / SSE as it arrives.
"use strict";
(function () {
  const KEY_NAME = "clinvk.apiKey";
  // The server's root, whatever page this is (/ or /docs), also behind a path prefix.
  const base = new URL(".", document.baseURI);

  // An element: attrs sets attributes ("text" the text, "on<event>" a listener); children
  // are nodes or strings (always added as text, never parsed as HTML).
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function getKey() {
    try { return sessionStorage.getItem(KEY_NAME) || ""; } catch (e) { return ""; }
  }

  function setKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_NAME, value);
      else sessionStorage.removeItem(KEY_NAME);
    } catch (e) { /* storage refused: the key lives in the field only */ }
  }

  let keyFieldCount = 0;
  // The API key field: the key is kept in this tab's sessionStorage and sent as X-Api-Key.
  function keyField() {
    const id = "api-key-" + (++keyFieldCount);
    const input = h("input", {id: id, type: "password", autocomplete: "off",
                              spellcheck: "false", value: getKey(),
                              placeholder: "only if the server has keys"});
    input.addEventListener("change", () => setKey(input.value.trim()));
    input.addEventListener("input", () => setKey(input.value.trim()));
    const forget = h("button", {type: "button", text: "Forget",
                                onclick: () => { input.value = ""; setKey(""); }});
    return h("form", {class: "key-field", onsubmit: (e) => e.preventDefault()},
             h("label", {for: id, text: "API key"}), input, forget);
  }

  // fetch() on the server with the key (if any) and JSON in and out.
  function call(method, path, body, options) {
    const headers = Object.assign({Accept: "application/json"}, (options || {}).headers);
    const key = getKey();
    if (key) headers["X-Api-Key"] = key;
    const init = {method: method, headers: headers, credentials: "same-origin",
                  signal: (options || {}).signal};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    return fetch(new URL(path, base), init);
  }

  // The JSON answer, or an Error whose message is the server's (native, OpenAI or
  // Anthropic error body).
  async function json(method, path, body, options) {
    const reply = await call(method, path, body, options);
    const text = await reply.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!reply.ok) {
      const err = new Error(errorMessage(reply.status, data, text));
      err.status = reply.status;
      throw err;
    }
    return data;
  }

  function errorMessage(status, data, text) {
    let message = text;
    if (data && typeof data === "object") {
      const inner = data.error && typeof data.error === "object" ? data.error : data;
      message = inner.message || JSON.stringify(data);
    }
    const hint = status === 401 ? " (set the API key at the top of the page)" : "";
    return "HTTP " + status + ": " + message + hint;
  }

  // Read a streamed body as it arrives: NDJSON (one JSON per line) or SSE (event/data
  // blocks); onEvent({event, data, raw}) is called for each event at once.
  async function readStream(reply, onEvent) {
    const sse = (reply.headers.get("Content-Type") || "").includes("text/event-stream");
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let block = {event: "", data: []};
    const line = (text) => {
      if (!sse) {
        if (text.trim()) onEvent({event: "", data: parse(text), raw: text});
        return;
      }
      if (text === "") {
        if (block.data.length) {
          const raw = block.data.join("\n");
          onEvent({event: block.event, data: parse(raw), raw: raw});
        }
        block = {event: "", data: []};
      } else if (text.startsWith("data:")) {
        block.data.push(text.slice(5).replace(/^ /, ""));
      } else if (text.startsWith("event:")) {
        block.event = text.slice(6).trim();
      }
    };
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, {stream: true});
      let at;
      while ((at = buffered.indexOf("\n")) >= 0) {
        line(buffered.slice(0, at).replace(/\r$/, ""));
        buffered = buffered.slice(at + 1);
      }
    }
    if (buffered) line(buffered);
    if (sse) line("");
  }

  function parse(text) {
    try { return JSON.parse(text); } catch (e) { return text; }
  }

  function elapsed(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m" + (s % 60) + "s";
    return Math.floor(m / 60) + "h" + (m % 60) + "m";
  }

  function usd(value) {
    return value ? "$" + Number(value).toFixed(4) : "-";
  }

  function tokens(usage) {
    if (!usage) return "no usage reported";
    const parts = [(usage.input_tokens || 0) + " in", (usage.output_tokens || 0) + " out"];
    if (usage.cached_tokens) parts.push(usage.cached_tokens + " cached");
    if (usage.cost_usd) parts.push(usd(usage.cost_usd));
    return parts.join(" · ");
  }

  // A message telling what went wrong, for a live region.
  function errorBox(err) {
    return h("div", {class: "error", role: "alert", text: err.message || String(err)});
  }

  // The backends the server can run, from /health (needs no key).
  async function backends() {
    const health = await json("GET", "health");
    return (health.backends || []).filter((b) => b.available).map((b) => b.name);
  }

  window.clinvk = {h: h, append: append, clear: clear, getKey: getKey, keyField: keyField,
                   call: call, json: json, errorMessage: errorMessage, readStream: readStream,
                   elapsed: elapsed, usd: usd, tokens: tokens, errorBox: errorBox,
                   backends: backends, base: base, pages: {}};
})();
