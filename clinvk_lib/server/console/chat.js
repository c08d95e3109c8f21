// The console's Chat page: one session per backend, the answer streamed as it arrives
// (POST /api/v1/prompt with output_format stream-json), tokens and cost per turn.
"use strict";
(function () {
  const c = window.clinvk;
  const h = c.h;

  c.pages.chat = function (main, params) {
    const state = {session: params.get("session") || "", abort: null,
                   backend: params.get("backend") || ""};
    const backend = h("select", {id: "chat-backend"});
    const model = h("input", {id: "chat-model", type: "text", placeholder: "backend default",
                              list: "chat-models"});
    const models = h("datalist", {id: "chat-models"});
    let known = [];
    const log = h("div", {class: "chat-log", role: "log", "aria-live": "polite",
                          "aria-label": "Conversation"});
    const prompt = h("textarea", {id: "chat-prompt", rows: 3, required: true});
    const send = h("button", {type: "submit", class: "primary", text: "Send"});
    const stop = h("button", {type: "button", text: "Stop", disabled: true,
                              onclick: () => state.abort && state.abort.abort()});
    const sessionNote = h("p", {class: "muted", role: "status"});
    const form = h("form", {onsubmit: (e) => { e.preventDefault(); turn(); }},
      h("label", {for: "chat-prompt", text: "Message"}), prompt,
      h("div", {class: "row"}, send, stop,
        h("button", {type: "button", text: "New session",
                     onclick: () => newSession("New session.")})));
    c.append(main, [h("h1", {text: "Chat"}),
      h("div", {class: "row"}, h("label", {for: "chat-backend"}, "Backend", backend),
        h("label", {for: "chat-model"}, "Model (optional)", model), models),
      sessionNote, log, form]);
    prompt.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); turn(); }
    });
    backend.addEventListener("change", () => {
      if (backend.value === state.backend) return;
      state.backend = backend.value;
      suggestModels();
      newSession("Switched to " + backend.value + ": the next message starts a new session.");
    });

    c.backends().then((names) => {
      if (state.backend && !names.includes(state.backend)) names.unshift(state.backend);
      names.forEach((n) => backend.appendChild(h("option", {value: n, text: n})));
      if (state.backend) backend.value = state.backend;
      state.backend = backend.value;
      suggestModels();
      showSession();
      if (!names.length) log.appendChild(c.errorBox(new Error("No backend CLI is installed " +
                                                              "on the server.")));
    }).catch((err) => log.appendChild(c.errorBox(err)));

    // The models configured for the chosen backend (backend/model ids of the OpenAI model
    // list), offered as suggestions.
    function suggestModels() {
      c.clear(models);
      const prefix = backend.value + "/";
      known.filter((id) => id.startsWith(prefix)).forEach(
        (id) => models.appendChild(h("option", {value: id.slice(prefix.length)})));
    }
    c.json("GET", "openai/v1/models").then((list) => {
      known = (list.data || []).map((m) => m.id);
      suggestModels();
    }).catch(() => {});

    function showSession() {
      sessionNote.textContent = state.session ? "Session " + state.session + " on " +
        state.backend + ": each message continues it." : "Next message starts a new session on " +
        (state.backend || "the chosen backend") + ".";
    }

    function newSession(note) {
      state.session = "";
      log.appendChild(h("div", {class: "turn system", text: note}));
      showSession();
    }

    async function turn() {
      const text = prompt.value;
      if (!text.trim() || send.disabled) return;
      const body = {backend: backend.value, prompt: text, output_format: "stream-json"};
      if (model.value.trim()) body.model = model.value.trim();
      if (state.session) body.session_id = state.session;
      log.appendChild(h("div", {class: "turn user", text: text}));
      const reply = h("div", {class: "turn assistant", "aria-busy": "true"});
      const words = h("span", {class: "reply-text"});
      const meta = h("span", {class: "meta", text: backend.value + " · running…"});
      c.append(reply, [words, meta]);
      log.appendChild(reply);
      prompt.value = "";
      send.disabled = true;
      stop.disabled = false;
      state.abort = new AbortController();
      let streamed = "";
      try {
        const answer = await c.call("POST", "api/v1/prompt", body, {
          signal: state.abort.signal, headers: {Accept: "application/x-ndjson"}});
        if (!answer.ok) throw new Error(c.errorMessage(answer.status, null, await answer.text()));
        await c.readStream(answer, (e) => {
          const ev = e.data || {};
          const content = ev.content || {};
          if (ev.session_id && !state.session) { state.session = ev.session_id; showSession(); }
          if (ev.type === "message") {
            // Partial pieces add up; a whole message that repeats them adds nothing.
            if (content.is_partial) streamed += content.text;
            else if (content.text.trim() !== streamed.trim()) {
              streamed += (streamed ? "\n\n" : "") + content.text;
            }
            words.textContent = streamed;
          } else if (ev.type === "tool_use") {
            const tool = h("span", {class: "meta", text: "tool: " + content.tool_name});
            reply.insertBefore(tool, meta);
          } else if (ev.type === "error") {
            reply.insertBefore(h("span", {class: "meta status-bad", text: content.message}), meta);
          } else if (ev.type === "done") {
            meta.textContent = ev.backend + (content.model ? " · " + content.model : "") + " · " +
              c.tokens(content.usage) + (content.exit_code ? " · exit " + content.exit_code : "");
          }
        });
      } catch (err) {
        meta.textContent = err.name === "AbortError" ? "stopped" : err.message;
        meta.classList.add("status-bad");
      } finally {
        reply.removeAttribute("aria-busy");
        send.disabled = false;
        stop.disabled = true;
        state.abort = null;
        prompt.focus();
      }
    }

    return () => { if (state.abort) state.abort.abort(); };
  };
})();
