// Try it on every operation of /docs: a form pre-filled with an example that runs on this
// server as it is, Send, the live answer (status, headers, body; NDJSON and SSE event by
// event), the equivalent curl command, and the response schemas and examples of
// /openapi.json.
"use strict";
(function () {
  const c = window.clinvk;
  const h = c.h;
  const STREAMED = ["application/x-ndjson", "text/event-stream"];

  function resolve(doc, schema) {
    let s = schema || {};
    for (let i = 0; i < 10 && s.$ref; i++) {
      s = doc.components.schemas[s.$ref.split("/").pop()] || {};
    }
    if (s.allOf && s.allOf.length === 1) {
      s = Object.assign({}, resolve(doc, s.allOf[0]), s, {allOf: undefined});
    }
    return s;
  }

  // The documented example, made to run here: a backend (or a model naming one) that is not
  // installed on this server is replaced by one that is, and a model or flags meant for the
  // replaced backend are dropped.
  function runnable(value, names) {
    if (Array.isArray(value)) return value.map((v) => runnable(v, names));
    if (!value || typeof value !== "object" || !names.length) return value;
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = runnable(v, names);
    if (typeof out.backend === "string" && !names.includes(out.backend)) {
      out.backend = names[0];
      delete out.model;
      delete out.extra;
    } else if (typeof out.model === "string" && !("backend" in out) && !names.includes(out.model)) {
      out.model = names[0];
    }
    if (Array.isArray(out.backends)) {
      const here = out.backends.filter((b) => names.includes(b));
      out.backends = here.length ? here : names.slice(0, 2);
    }
    return out;
  }

  function streams(op) {
    const ok = op.responses["200"] || op.responses["202"] || {};
    return STREAMED.some((t) => t in (ok.content || {}));
  }

  // The Accept a request sends: text/html for a page (the console answers a browser only).
  function accept(op) {
    const ok = op.responses["200"] || {};
    return "text/html" in (ok.content || {}) ? "text/html" : "*/*";
  }

  function shellQuote(text) {
    return "'" + String(text).replace(/'/g, "'\\''") + "'";
  }

  // The shape of a schema as indented text: "name: type (required)" per field.
  function shape(doc, schema, depth, seen) {
    const s = resolve(doc, schema);
    const pad = "  ".repeat(depth);
    const name = schema && schema.$ref ? schema.$ref.split("/").pop() : "";
    if (s.oneOf) return s.oneOf.map((alt) => shape(doc, alt, depth, seen)).join(pad + "| or\n");
    if (s.type === "array") return pad + "array of:\n" + shape(doc, s.items, depth + 1, seen);
    if (!s.properties || depth > 3 || (name && seen.includes(name))) {
      const choices = s.enum ? " (" + s.enum.join(", ") + ")" : "";
      return pad + (name || s.type || "any") + choices + "\n";
    }
    const req = s.required || [];
    return Object.entries(s.properties).map(([k, p]) => {
      const r = resolve(doc, p);
      const nested = (r.properties || (r.type === "array" && resolve(doc, r.items).properties));
      const items = r.items || {};
      const kind = p.$ref ? p.$ref.split("/").pop() : (r.type || "any") +
        (r.type === "array" ? " of " + (items.$ref || items.type || "any").split("/").pop() : "");
      return pad + k + ": " + kind + (req.includes(k) ? " (required)" : "") + "\n" +
        (nested ? shape(doc, p, depth + 1, seen.concat(name ? [name] : [])) : "");
    }).join("");
  }

  function responsesPart(doc, op) {
    const box = h("details", {}, h("summary", {text: "Response schemas and examples"}));
    for (const [status, resp] of Object.entries(op.responses)) {
      box.appendChild(h("h5", {text: status + " " + (resp.description || "")}));
      for (const [type, media] of Object.entries(resp.content || {})) {
        box.appendChild(h("p", {class: "muted", text: type}));
        if (type === "application/json" && media.schema) {
          box.appendChild(h("pre", {text: shape(doc, media.schema, 0, [])}));
        }
        if (media.example !== undefined) {
          box.appendChild(h("p", {text: "Example:"}));
          box.appendChild(h("pre", {text: JSON.stringify(media.example, null, 2)}));
        }
      }
    }
    return box;
  }

  let count = 0;

  function tryIt(doc, section, method, path, op, names) {
    const n = ++count;
    const params = (op.parameters || []).map((p) => {
      const id = "p" + n + "-" + p.name;
      const input = h("input", {id: id, type: "text", "data-param": p.name,
                                placeholder: p.schema && p.schema.default !== undefined ?
                                  "default " + p.schema.default : (p.required ? "required" : ""),
                                value: p.example !== undefined ? p.example : ""});
      return {spec: p, input: input,
              label: h("label", {for: id}, p.name + " (" + p.in + ")", input)};
    });
    const media = ((op.requestBody || {}).content || {})["application/json"];
    let textarea = null;
    let streamBox = null;
    if (media) {
      const example = runnable(media.example || {}, names);
      textarea = h("textarea", {id: "b" + n, rows: 8, spellcheck: "false",
                                text: JSON.stringify(example, null, 2)});
      if (streams(op)) {
        streamBox = h("input", {id: "s" + n, type: "checkbox", class: "tryit-stream"});
        streamBox.addEventListener("change", () => setStreaming(textarea, streamBox.checked, path));
      }
    }
    const curl = h("pre", {class: "tryit-curl"});
    const status = h("p", {class: "tryit-status", role: "status"});
    const result = h("div", {class: "tryit-result"});
    const send = h("button", {type: "button", class: "primary tryit-send", text: "Send"});
    const cancel = h("button", {type: "button", text: "Abort", disabled: true});
    let abort = null;

    function target() {
      let url = path;
      const query = new URLSearchParams();
      const headers = {};
      for (const p of params) {
        const value = p.input.value;
        if (p.spec.in === "path") {
          url = url.replace("{" + p.spec.name + "}", encodeURIComponent(value));
        }
        else if (value === "") continue;
        else if (p.spec.in === "query") query.set(p.spec.name, value);
        else if (p.spec.in === "header") headers[p.spec.name] = value;
      }
      const qs = query.toString();
      return {url: url.replace(/^\//, "") + (qs ? "?" + qs : ""), headers: headers};
    }

    function showCurl() {
      const t = target();
      const parts = ["curl" + (streams(op) ? " -N" : "") +
                     (method !== "get" ? " -X " + method.toUpperCase() : "") +
                     " " + shellQuote(new URL(t.url, c.base).href)];
      if (accept(op) !== "*/*") parts.push("-H 'Accept: " + accept(op) + "'");
      const isPublic = op.security && op.security.length === 0;
      if (!isPublic) parts.push('-H "X-Api-Key: $CLINVK_API_KEY"');
      for (const [k, v] of Object.entries(t.headers)) parts.push("-H " + shellQuote(k + ": " + v));
      if (textarea || ["post", "put", "patch"].includes(method)) {
        parts.push("-H 'Content-Type: application/json'");
      }
      if (textarea) parts.push("-d " + shellQuote(textarea.value));
      curl.textContent = parts.join(" \\\n  ");
    }

    async function go() {
      const t = target();
      let body;
      if (textarea) body = textarea.value;
      else if (["post", "put", "patch"].includes(method)) body = "";
      c.clear(result);
      status.textContent = "Sending…";
      send.disabled = true;
      cancel.disabled = false;
      abort = new AbortController();
      const started = performance.now();
      try {
        const reply = await c.call(method.toUpperCase(), t.url, body, {
          signal: abort.signal, headers: Object.assign({Accept: accept(op)}, t.headers)});
        const type = reply.headers.get("Content-Type") || "";
        status.textContent = reply.status + " " + reply.statusText + " · " + type;
        status.className = "tryit-status " + (reply.ok ? "status-ok" : "status-bad");
        const heads = [];
        reply.headers.forEach((v, k) => heads.push(k + ": " + v));
        result.appendChild(h("details", {}, h("summary", {text: "Headers (" + heads.length + ")"}),
                                h("pre", {class: "headers", text: heads.join("\n")})));
        if (STREAMED.some((s) => type.includes(s))) {
          const list = h("ol", {class: "events tryit-events",
                                "aria-label": "Events as they arrive"});
          const counter = h("p", {class: "muted", "aria-live": "polite"});
          c.append(result, [counter, list]);
          let events = 0;
          await c.readStream(reply, (e) => {
            events += 1;
            list.appendChild(h("li", {text: (e.event ? "event: " + e.event + "\n" : "") + e.raw}));
            counter.textContent = events + " event(s) so far";
          });
          counter.textContent = events + " event(s), stream ended after " +
            Math.round(performance.now() - started) + " ms";
        } else {
          const text = await reply.text();
          let shown = text;
          try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
          result.appendChild(h("pre", {class: "tryit-body", text: shown}));
          status.textContent += " · " + Math.round(performance.now() - started) + " ms";
        }
      } catch (err) {
        status.textContent = err.name === "AbortError" ? "Aborted." : "Failed: " + err.message;
        status.className = "tryit-status status-bad";
      } finally {
        send.disabled = false;
        cancel.disabled = true;
        abort = null;
      }
    }

    send.addEventListener("click", go);
    cancel.addEventListener("click", () => abort && abort.abort());
    params.forEach((p) => p.input.addEventListener("input", showCurl));
    if (textarea) textarea.addEventListener("input", showCurl);
    showCurl();

    const form = h("details", {class: "tryit"}, h("summary", {text: "Try it"}),
      params.length ? h("div", {class: "row"}, params.map((p) => p.label)) : null,
      textarea ? h("label", {for: textarea.id, text: "Request body (JSON)"}) : null, textarea,
      streamBox ? h("label", {for: streamBox.id}, streamBox, " Stream the answer") : null,
      h("div", {class: "row"}, send, cancel), status, result,
      h("p", {class: "muted", text: "The same request with curl:"}), curl);
    section.appendChild(form);
    section.appendChild(responsesPart(doc, op));
  }

  // Switch a body between a whole answer and a stream: output_format stream-json on the
  // native API, stream: true on the OpenAI and Anthropic ones.
  function setStreaming(textarea, on, path) {
    let body;
    try { body = JSON.parse(textarea.value); } catch (e) { return; }
    if (path.startsWith("/api/")) {
      if (on) body.output_format = "stream-json"; else delete body.output_format;
    } else if (on) body.stream = true;
    else delete body.stream;
    textarea.value = JSON.stringify(body, null, 2);
    textarea.dispatchEvent(new Event("input"));
  }

  async function start() {
    const main = document.getElementById("main");
    const sections = document.querySelectorAll("section.op[data-op]");
    if (!main || !sections.length) return;
    const title = main.querySelector("h1");
    const keyBox = h("div", {class: "card"}, c.keyField(),
      h("p", {class: "muted", text: "Each operation below has a Try it form. The key is kept " +
              "in this tab only and sent as X-Api-Key."}));
    title.parentNode.insertBefore(keyBox, title.nextSibling);
    try {
      const [doc, names] = await Promise.all([c.json("GET", "openapi.json"),
                                              c.backends().catch(() => [])]);
      for (const section of sections) {
        const method = section.getAttribute("data-method");
        const path = section.getAttribute("data-path");
        const op = ((doc.paths || {})[path] || {})[method];
        if (op) tryIt(doc, section, method, path, op, names);
      }
    } catch (err) {
      keyBox.appendChild(c.errorBox(err));
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
