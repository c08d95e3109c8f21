// The console's pages: Runs (in flight, live events, cancel), Sessions, Usage; and the
// router that shows one page per #hash. Chat is in chat.js.
"use strict";
(function () {
  const c = window.clinvk;
  const h = c.h;
  let leave = null;          // what the current page must stop (timers, streams) when left

  // -- Runs -----------------------------------------------------------------------------

  c.pages.runs = function (main) {
    const state = {timer: null, watch: null, holding: false};
    const status = h("p", {class: "muted"});
    const outcome = h("p", {class: "action-result", role: "status"});
    const body = h("tbody");
    const table = h("div", {class: "table-wrap"}, h("table", {},
      h("caption", {class: "sr-only", text: "Runs in flight"}),
      h("thead", {}, headRow(["Run", "Backend", "Route", "State", "Elapsed", "Client", "Key id",
                              "Actions"])),
      body));
    const events = h("section", {class: "card", "aria-live": "polite", hidden: true});
    const refresh = h("button", {type: "button", text: "Refresh", onclick: () => load()});
    c.append(main, [h("h1", {text: "Runs in flight"}),
      h("p", {class: "muted", text: "Synchronous requests, streams and fan-outs running a " +
        "backend now, and durable jobs queued or running. Refreshed every 2 seconds."}),
      h("div", {class: "row"}, refresh), outcome, status, table, events]);

    async function load() {
      if (state.holding) return;       // a confirmation is open: do not redraw under it
      try {
        const [runs, jobs] = await Promise.all([c.json("GET", "api/v1/runs"), activeJobs()]);
        if (state.holding) return;
        c.clear(body);
        for (const run of runs.runs) body.appendChild(runRow(run));
        for (const job of jobs) body.appendChild(jobRow(job));
        const count = runs.runs.length + jobs.length;
        status.textContent = count ? count + " in flight" : "Nothing is running.";
      } catch (err) {
        status.textContent = err.message;
      }
    }

    async function activeJobs() {
      try {
        const [running, queued] = await Promise.all(["running", "queued"].map(
          (s) => c.json("GET", "api/v1/jobs?limit=50&status=" + s)));
        return running.jobs.concat(queued.jobs);
      } catch (err) {
        return [];                      // jobs may be unavailable: runs still show
      }
    }

    function runRow(run) {
      return h("tr", {"data-run": run.id},
        h("td", {}, h("code", {text: run.id})),
        h("td", {text: run.backends.join(", ") || "-"}),
        h("td", {}, h("code", {text: run.method + " " + run.route})),
        h("td", {text: run.kind + ", " + run.state + (run.cancel_requested ? ", cancelling" : "")}),
        h("td", {text: c.elapsed(run.elapsed_ms)}),
        h("td", {text: run.client}),
        h("td", {}, h("code", {text: run.key_id || "-"})),
        h("td", {}, actions("run " + run.id, "api/v1/runs/" + encodeURIComponent(run.id))));
    }

    function jobRow(job) {
      const started = job.started_at || job.created_at;
      return h("tr", {"data-job": job.id},
        h("td", {}, h("code", {text: job.id})),
        h("td", {text: job.backend || (job.request && job.request.backend) || job.kind}),
        h("td", {}, h("code", {text: "job: " + job.kind})),
        h("td", {text: "job, " + job.status}),
        h("td", {text: started ? c.elapsed(Date.now() - Date.parse(started)) : "-"}),
        h("td", {text: "-"}),
        h("td", {}, h("code", {text: job.api_key_id || "-"})),
        h("td", {}, actions("job " + job.id, "api/v1/jobs/" + encodeURIComponent(job.id))));
    }

    // Watch (GET path/events) and Cancel (DELETE path) buttons; Cancel asks in place first.
    function actions(label, path) {
      const onWatch = () => watch(path + "/events", label);
      const onCancel = () => c.json("DELETE", path);
      const cell = h("span", {class: "confirm"});
      const show = () => {
        state.holding = false;
        c.clear(cell);
        c.append(cell, [h("button", {type: "button", text: "Watch", "aria-label": "Watch " + label,
                                     onclick: onWatch}),
          h("button", {type: "button", class: "danger", text: "Cancel",
                       "aria-label": "Cancel " + label, onclick: ask})]);
      };
      const ask = () => {
        state.holding = true;
        c.clear(cell);
        const yes = h("button", {type: "button", class: "danger", text: "Yes, cancel " + label,
                                 onclick: async () => {
                                   yes.disabled = true;
                                   try {
                                     await onCancel();
                                     outcome.textContent = label + " cancelled.";
                                   } catch (err) { outcome.textContent = err.message; }
                                   show(); load();
                                 }});
        c.append(cell, [h("span", {text: "Stop it?"}), yes,
          h("button", {type: "button", text: "No", onclick: show})]);
        yes.focus();
      };
      show();
      return cell;
    }

    async function watch(path, id) {
      if (state.watch) state.watch.abort();
      const abort = state.watch = new AbortController();
      const list = h("ol", {class: "events", "aria-label": "Events of " + id});
      c.clear(events);
      events.hidden = false;
      c.append(events, [h("h2", {text: "Events of " + id}),
        h("button", {type: "button", text: "Stop watching", onclick: () => abort.abort()}), list]);
      try {
        const reply = await c.call("GET", path, undefined, {
          signal: abort.signal, headers: {Accept: "application/x-ndjson"}});
        if (!reply.ok) throw new Error(c.errorMessage(reply.status, null, await reply.text()));
        await c.readStream(reply, (e) => list.appendChild(h("li", {text: describe(e.data)})));
      } catch (err) {
        if (err.name !== "AbortError") events.appendChild(c.errorBox(err));
      }
    }

    load();
    state.timer = setInterval(load, 2000);
    return () => { clearInterval(state.timer); if (state.watch) state.watch.abort(); };
  };

  function headRow(titles) {
    return h("tr", {}, titles.map((t) => h("th", {scope: "col", text: t})));
  }

  // One event as a line of text: its type and what it says.
  function describe(e) {
    if (typeof e !== "object" || e === null) return String(e);
    const content = e.content || {};
    const what = content.text || content.message || content.tool_name ||
      (content.usage ? c.tokens(content.usage) : "") || (e.status ? e.status : "");
    return [e.seq, e.type, e.backend, what].filter((x) => x !== undefined && x !== "").join("  ");
  }
  c.describeEvent = describe;

  // -- Sessions -------------------------------------------------------------------------

  c.pages.sessions = function (main) {
    const status = h("p", {class: "muted", role: "status"});
    const backend = h("select", {id: "f-backend"}, h("option", {value: "", text: "any"}));
    const state = h("select", {id: "f-status"}, h("option", {value: "", text: "any"}),
      ["active", "completed", "error", "paused", "cancelled"].map(
        (s) => h("option", {value: s, text: s})));
    const workdir = h("input", {id: "f-workdir", type: "search", placeholder: "part of a path"});
    const body = h("tbody");
    const detail = h("section", {class: "card", hidden: true, "aria-live": "polite"});
    const form = h("form", {class: "row", role: "search",
                            onsubmit: (e) => { e.preventDefault(); load(); }},
      h("label", {for: "f-backend"}, "Backend", backend),
      h("label", {for: "f-status"}, "Status", state),
      h("label", {for: "f-workdir"}, "Workdir contains", workdir),
      h("button", {type: "submit", class: "primary", text: "Filter"}));
    c.append(main, [h("h1", {text: "Sessions"}), form, status,
      h("div", {class: "table-wrap"}, h("table", {},
        h("caption", {class: "sr-only", text: "Sessions"}),
        h("thead", {}, headRow(["Session", "Backend", "Status", "Title", "Workdir", "Turns",
                                "Last used"])),
        body)), detail]);
    c.backends().then((names) => names.forEach(
      (n) => backend.appendChild(h("option", {value: n, text: n})))).catch(() => {});

    async function load() {
      const query = new URLSearchParams({limit: "200"});
      if (backend.value) query.set("backend", backend.value);
      if (state.value) query.set("status", state.value);
      if (workdir.value.trim()) query.set("workdir", workdir.value.trim());
      try {
        const data = await c.json("GET", "api/v1/sessions?" + query);
        const shown = data.sessions;
        c.clear(body);
        for (const s of shown) {
          body.appendChild(h("tr", {"data-session": s.id},
            h("td", {}, h("button", {type: "button", class: "mono", text: s.id,
                                     "aria-label": "Open session " + s.id,
                                     onclick: () => open(s.id)})),
            h("td", {text: s.backend}), h("td", {text: s.status || ""}),
            h("td", {text: s.title || ""}), h("td", {class: "mono", text: s.working_dir || ""}),
            h("td", {text: s.turn_count || 0}), h("td", {text: s.last_used})));
        }
        status.textContent = shown.length + " shown of " + data.total + " session(s)";
      } catch (err) {
        status.textContent = err.message;
      }
    }

    async function open(id) {
      c.clear(detail);
      detail.hidden = false;
      try {
        const s = await c.json("GET", "api/v1/sessions/" + encodeURIComponent(id));
        const rows = ["backend", "status", "model", "working_dir", "created_at", "last_used",
                      "turn_count", "title", "initial_prompt"];
        const kv = h("dl", {class: "kv"});
        for (const name of rows) {
          if (s[name] === undefined || s[name] === "") continue;
          c.append(kv, [h("dt", {text: name}), h("dd", {text: s[name]})]);
        }
        c.append(kv, [h("dt", {text: "usage"}), h("dd", {text: c.tokens(s.token_usage)})]);
        const del = h("span", {class: "confirm"});
        const askDelete = () => {
          c.clear(del);
          const yes = h("button", {type: "button", class: "danger", text: "Yes, delete " + s.id,
            onclick: async () => {
              try {
                await c.json("DELETE", "api/v1/sessions/" + encodeURIComponent(s.id));
                c.clear(detail);
                detail.appendChild(h("p", {role: "status", text: "Session " + s.id + " deleted."}));
                load();
              } catch (err) { detail.appendChild(c.errorBox(err)); }
            }});
          c.append(del, [h("span", {text: "Delete this session for good?"}), yes,
            h("button", {type: "button", text: "No", onclick: offerDelete})]);
          yes.focus();
        };
        const offerDelete = () => {
          c.clear(del);
          del.appendChild(h("button", {type: "button", class: "danger", text: "Delete…",
                                       onclick: askDelete}));
        };
        offerDelete();
        c.append(detail, [h("h2", {tabindex: "-1", text: "Session " + s.id}), kv,
          h("h3", {text: "Last reply"}), h("pre", {class: "reply", text: s.last_reply || "(none yet)"}),
          h("h3", {text: "Metadata"}), h("pre", {text: JSON.stringify(s.metadata || {}, null, 2)}),
          h("div", {class: "row"},
            h("a", {href: "#chat?session=" + encodeURIComponent(s.id) + "&backend=" +
                    encodeURIComponent(s.backend), text: "Continue in Chat"}), del)]);
        detail.querySelector("h2").focus();
      } catch (err) {
        detail.appendChild(c.errorBox(err));
      }
    }

    load();
  };

  // -- Usage ----------------------------------------------------------------------------

  c.pages.usage = function (main) {
    const out = h("div", {"aria-live": "polite"});
    c.append(main, [h("h1", {text: "Usage"}),
      h("div", {class: "row"}, h("button", {type: "button", text: "Refresh", onclick: load})),
      out]);

    function table(caption, first, rows) {
      const cols = ["runs", "success", "failure", "timeout", "cancelled", "input_tokens",
                    "output_tokens", "cached_tokens", "cost_usd"];
      return h("div", {class: "table-wrap"}, h("table", {},
        h("caption", {text: caption}),
        h("thead", {}, headRow([first].concat(cols))),
        h("tbody", {}, Object.entries(rows).map(([name, row]) => h("tr", {},
          h("th", {scope: "row"}, h("code", {text: name})),
          cols.map((k) => h("td", {text: k === "cost_usd" ? c.usd(row[k]) : (row[k] || 0)})))))));
    }

    async function load() {
      c.clear(out);
      try {
        const u = await c.json("GET", "api/v1/usage");
        if (!u.enabled && u.scope !== "cluster") {
          out.appendChild(h("p", {class: "notice", text: "Nothing is counted: the server runs " +
            "with server.metrics_enabled off. Turn it on (CLINVK_METRICS_ENABLED=true or " +
            "server.metrics_enabled: true) to see usage here and at /metrics."}));
        }
        if (u.store_error) {
          out.appendChild(h("p", {class: "notice", text: "The shared store (server.store) " +
            "did not answer, so these are this server's own figures: " + u.store_error}));
        }
        c.append(out, [h("dl", {class: "kv"},
          h("dt", {text: "figures of"}), h("dd", {text: u.scope === "cluster" ?
            "every node on the shared store" : "this server"}),
          h("dt", {text: "since"}), h("dd", {text: u.since}),
          h("dt", {text: "requests answered"}), h("dd", {text: u.http_requests}),
          h("dt", {text: "runs in flight"}), h("dd", {text: u.runs_in_flight})),
          table("Per backend", "backend", u.backends)]);
        if (Object.keys(u.keys).length) out.appendChild(table("Per API key id", "key id", u.keys));
      } catch (err) {
        out.appendChild(c.errorBox(err));
      }
    }
    load();
  };

  // -- the router -----------------------------------------------------------------------

  function route() {
    const [name, query] = (location.hash.slice(1) || "runs").split("?");
    const page = c.pages[name] ? name : "runs";
    if (leave) { leave(); leave = null; }
    const main = c.clear(document.getElementById("main"));
    document.querySelectorAll("header.top nav a").forEach((a) => {
      if (a.getAttribute("href") === "#" + page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    document.title = page[0].toUpperCase() + page.slice(1) + " · clinvk console";
    leave = c.pages[page](main, new URLSearchParams(query || "")) || null;
  }

  function start() {
    if (!document.getElementById("key-slot")) return;      // not the console page
    document.getElementById("key-slot").appendChild(c.keyField());
    window.addEventListener("hashchange", () => {
      route();
      document.getElementById("main").focus();
    });
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
