// The inspector page: a live list of recent exchanges fed by /_proxy/events.
// Every value shown is data from the proxy: it goes into the page as text nodes and
// attribute values only (never as HTML), and the page's policy forbids anything else.
"use strict";

(() => {
  const OUTCOMES = {
    completed: "completed",
    upstream_cut: "cut",
    client_disconnected: "disconnected",
    timeout: "timeout",
    upstream_unreachable: "unreachable",
    rejected: "rejected",
    proxy_shutdown: "shutdown",
  };
  // An exchange that completed with an error status from the upstream: said in words.
  const STATUS_WORDS = {
    400: "bad request",
    401: "unauthorized",
    402: "payment required",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    408: "request timeout",
    409: "conflict",
    410: "gone",
    413: "too large",
    415: "unsupported type",
    422: "unprocessable",
    426: "upgrade required",
    429: "rate limited",
    500: "server error",
    501: "not implemented",
    502: "bad gateway",
    503: "unavailable",
    504: "gateway timeout",
  };
  const FAILED_ENDS = new Set(["response.failed", "response.incomplete", "error"]);
  const TIMELINE_SIZE = 200;

  const $ = (id) => document.getElementById(id);
  const ui = {
    rows: $("rows"),
    empty: $("empty"),
    filter: $("filter"),
    status: $("status-filter"),
    outcome: $("outcome-filter"),
    pause: $("pause"),
    count: $("count"),
    connection: $("connection"),
    detail: $("detail"),
    title: $("detail-title"),
    body: $("detail-body"),
    close: $("close"),
    plan: $("plan"),
  };
  const state = {
    records: new Map(), // seq -> record, oldest first
    rows: new Map(), // seq -> <tr>
    receivedAt: new Map(), // seq -> when its elapsed_ms arrived (performance.now())
    ringSize: 500,
    newest: 0,
    selected: null,
    paused: false,
    waiting: new Set(), // seqs changed while paused
    content: null, // the selected exchange's content, as last fetched
    fetching: false, // a content fetch in flight
    stale: false, // the selected exchange changed while it was in flight
    open: new Set(), // JSON tree paths the reader opened (or closed: "!path")
    event: null, // the timeline position whose event is shown, and its JSON
    bodyMatches: null, // seqs whose kept content matches the filter (from the proxy)
    searchTimer: null,
    images: new Map(), // image URL -> its <img>, for the selected exchange
    wanted: null, // the exchange the address names (#/exchange/N), until it arrives
    pushed: false, // the open detail has a history entry of its own over the list's
  };
  const TREE_NODES = 3000; // most JSON tree nodes drawn per body

  // A DOM element; children that are strings become text nodes.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");
  function clock(seconds) {
    const t = new Date(seconds * 1000);
    return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
  }
  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }
  function size(bytes) {
    if (!bytes) return "0 B";
    const units = ["B", "kB", "MB", "GB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
  }
  // A path that wraps only after a "/": each piece stays whole (a hyphen is no place to
  // break "backend-api"), unless it alone is wider than the line.
  function pathView(path, cls) {
    const view = el("span", { class: `path-text ${cls || ""}` });
    const pieces = String(path).match(/[^/]*\/|[^/]+$/g) || [""];
    pieces.forEach((piece, index) => {
      if (index) view.append(el("wbr"));
      view.append(el("span", { class: "piece" }, piece));
    });
    return view;
  }
  // Token counts in short: 845, 12.3k, 1.2M.
  function count(tokens) {
    if (tokens < 1000) return String(tokens);
    if (tokens < 1e6) return `${(tokens / 1000).toFixed(1).replace(/\.0$/, "")}k`;
    return `${(tokens / 1e6).toFixed(1).replace(/\.0$/, "")}M`;
  }
  // "2 h 11 min", "45 s", "3 d 4 h": how far off a moment is.
  function span(seconds) {
    const left = Math.max(0, Math.round(seconds));
    if (left < 60) return `${left} s`;
    const minutes = Math.floor(left / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
    return hours % 24 ? `${Math.floor(hours / 24)} d ${hours % 24} h` : `${Math.floor(hours / 24)} d`;
  }
  // When a window starts anew, in this browser's local time: "at 14:05 (in 2 h 11 min)".
  function resets(at, nowMs) {
    if (at === null || at === undefined) return "";
    const when = new Date(at * 1000);
    const time = `${pad(when.getHours())}:${pad(when.getMinutes())}`;
    const day = when.toDateString() === new Date(nowMs).toDateString()
      ? time : `${time} on ${when.getDate()} ${when.toLocaleString("en", { month: "short" })}`;
    const left = at * 1000 - nowMs;
    return `at ${day} (${left <= 0 ? "passed" : `in ${span(left / 1000)}`})`;
  }
  const statusClass = (status) => (status ? `${Math.floor(status / 100)}xx` : "none");
  const errorStatus = (rec) => !rec.live && rec.outcome === "completed" && (rec.status || 0) >= 400;
  const statusWords = (status) => STATUS_WORDS[status] || (status >= 500 ? "server error" : "client error");
  // The outcome as a filter value and badge class; its label says an error status in words.
  const outcomeName = (rec) =>
    rec.live ? "live" : errorStatus(rec) ? "error-status" : OUTCOMES[rec.outcome] || rec.outcome;
  const outcomeLabel = (rec) => (errorStatus(rec) ? statusWords(rec.status) : outcomeName(rec));
  // What the page says of a flagged exchange: the proxy's diagnosis, else the status in words.
  const explanation = (rec) =>
    rec.diagnosis || (errorStatus(rec) ? `the upstream answered ${rec.status} (${statusWords(rec.status)})` : null);
  const failed = (rec) => !rec.live && (rec.outcome !== "completed" || (rec.status || 0) >= 500);
  const unfinished = (rec) => rec.completed === false && !rec.live;
  const warned = (rec) =>
    !failed(rec) && ((rec.status || 0) >= 400 || Boolean(rec.diagnosis) || unfinished(rec));
  const endClass = (kind) => (kind === "response.completed" ? "ok" : FAILED_ENDS.has(kind) ? "bad" : null);
  const elapsed = (rec) =>
    rec.live ? rec.elapsed_ms + (performance.now() - (state.receivedAt.get(rec.seq) || performance.now())) : rec.duration_ms;

  // ---- the list -------------------------------------------------------------------------

  function cells(rec) {
    const path = el("td", { class: "c-path" }, pathView(rec.path, "path"));
    if (rec.rule) {
      path.append(el("span", { class: "rewritten-to" },
        el("span", { class: "arrow", "aria-label": "rewritten to" }, " → "),
        pathView(rec.upstream_path || "", "upstream"),
        el("span", { class: "rule", title: "rewrite rule" }, rec.rule)));
    }
    if (rec.diagnosis) path.append(el("span", { class: "row-diagnosis" }, rec.diagnosis));
    const outcome = el("td", { class: "c-outcome" }, el("span", { class: `badge ${outcomeName(rec)}` }, outcomeLabel(rec)));
    if (warned(rec)) outcome.append(el("span", { class: "badge warning", title: explanation(rec) || "" }, "!"));
    const events = el("td", { class: "c-events" });
    if (rec.websocket) {
      events.append(el("span", { class: "count" }, `↑${rec.frames_in} ↓${rec.frames_out} frames`));
      if (rec.close_code) events.append(el("span", { class: "last" }, `close ${rec.close_code} by ${rec.closed_by}`));
    } else if (rec.events !== undefined) {
      events.append(el("span", { class: "count" }, `${rec.events} ${rec.events === 1 ? "event" : "events"}`));
      const last = rec.stream_end || rec.last_event;
      if (last) events.append(el("span", { class: `last ${endClass(last) || ""}` }, last));
    }
    if (rec.tokens) events.append(el("span", { class: "tokens" }, `${count(rec.tokens.input)} in / ${count(rec.tokens.output)} out`));
    const type = (rec.content_type || "").split(";")[0];
    return [
      el("td", { class: "c-time", title: new Date(rec.started_at * 1000).toISOString() }, clock(rec.started_at)),
      el("td", { class: "c-method" }, rec.method),
      path,
      el("td", { class: "c-status" }, el("span", { class: `status s${statusClass(rec.status)}` }, rec.status ? String(rec.status) : "—")),
      el("td", { class: "c-type", title: rec.content_type || "" }, type),
      outcome,
      events,
      el("td", { class: "c-duration" }, duration(elapsed(rec))),
      el("td", { class: "c-bytes" },
        el("span", { class: "up" }, `${size(rec.request_bytes)} ↑`), " ",
        el("span", { class: "down" }, `${size(rec.response_bytes)} ↓`)),
    ];
  }

  function fillRow(row, rec) {
    row.replaceChildren(...cells(rec));
    row.classList.toggle("rewritten", Boolean(rec.rule));
    row.classList.toggle("failed", failed(rec));
    row.classList.toggle("warned", warned(rec));
    row.classList.toggle("live", rec.live);
    row.hidden = !matches(rec);
  }

  function matches(rec) {
    const text = ui.filter.value.trim().toLowerCase();
    if (text) {
      const haystack = [rec.method, rec.path, rec.upstream_path, rec.rule, rec.status, rec.content_type,
        rec.request_id, outcomeName(rec), outcomeLabel(rec), rec.last_event, rec.diagnosis].join(" ").toLowerCase();
      const inFields = text.split(/\s+/).every((word) => haystack.includes(word));
      if (!inFields && !(state.bodyMatches && state.bodyMatches.has(rec.seq))) return false;
    }
    if (ui.status.value && statusClass(rec.status) !== ui.status.value) return false;
    const outcome = ui.outcome.value;
    if (outcome === "failures") return failed(rec) || warned(rec);
    return !outcome || outcomeName(rec) === outcome;
  }

  function render(seq) {
    const rec = state.records.get(seq);
    let row = state.rows.get(seq);
    if (!rec) {
      if (row) row.remove();
      state.rows.delete(seq);
      if (state.selected === seq) closeDetail();
      return;
    }
    if (!row) {
      row = el("tr", { tabindex: "0", "data-seq": seq });
      state.rows.set(seq, row);
      // Newest first: almost always a new row goes on top.
      let above = null;
      for (const other of ui.rows.children) {
        if (Number(other.dataset.seq) < seq) break;
        above = other;
      }
      ui.rows.insertBefore(row, above ? above.nextSibling : ui.rows.firstChild);
    }
    fillRow(row, rec);
    if (state.selected === seq) {
      renderDetail();
      fetchContent();
    }
  }

  function summary() {
    const shown = [...state.rows.values()].filter((row) => !row.hidden).length;
    const total = state.records.size;
    ui.count.textContent = `${total} exchange${total === 1 ? "" : "s"}${shown === total ? "" : `, ${shown} shown`}`;
    ui.empty.hidden = state.records.size > 0;
  }

  // ---- data from the proxy -----------------------------------------------------------------

  // A later record of the same exchange: keep the timeline events the page already holds.
  function merge(old, rec) {
    if (old) {
      const held = old.timeline_at + old.timeline.length;
      const skip = held - rec.timeline_at;
      if (skip >= 0) {
        rec.timeline = old.timeline.concat(rec.timeline.slice(skip));
        rec.timeline_at = old.timeline_at;
      }
    }
    const extra = rec.timeline.length - TIMELINE_SIZE;
    if (extra > 0) {
      rec.timeline = rec.timeline.slice(extra);
      rec.timeline_at += extra;
    }
    return rec;
  }

  function accept(rec) {
    state.records.set(rec.seq, merge(state.records.get(rec.seq), rec));
    state.receivedAt.set(rec.seq, performance.now());
    state.newest = Math.max(state.newest, rec.seq);
    const changed = [rec.seq];
    if (state.records.size > state.ringSize) {
      // The proxy's ring holds the newest ring_size sequence numbers: so does the page.
      for (const seq of [...state.records.keys()]) {
        if (seq > state.newest - state.ringSize) continue;
        state.records.delete(seq);
        state.receivedAt.delete(seq);
        changed.push(seq);
      }
    }
    return changed;
  }

  function show(seqs) {
    if (state.paused) {
      for (const seq of seqs) state.waiting.add(seq);
      ui.pause.textContent = `Resume (${state.waiting.size} waiting)`;
      return;
    }
    for (const seq of seqs) render(seq);
    summary();
  }

  function onSnapshot(event) {
    const snapshot = JSON.parse(event.data);
    state.ringSize = snapshot.ring_size;
    const before = [...state.records.keys()];
    state.records.clear();
    state.receivedAt.clear();
    state.newest = 0;
    const seqs = new Set(before);
    for (const rec of snapshot.exchanges) for (const seq of accept(rec)) seqs.add(seq);
    show([...seqs].sort((a, b) => a - b));
    fetchPlan();
    openWanted();
  }

  function onExchange(event) {
    const rec = JSON.parse(event.data);
    if (!rec.live || rec.limits) schedulePlan();
    show(accept(rec));
    openWanted();
    if (!rec.live && state.bodyMatches) searchBodies();
  }

  function connect() {
    const source = new EventSource("/_proxy/events");
    source.addEventListener("snapshot", onSnapshot);
    source.addEventListener("exchange", onExchange);
    source.addEventListener("open", () => {
      ui.connection.textContent = "live";
      ui.connection.className = "connection up";
    });
    source.addEventListener("error", () => {
      ui.connection.textContent = source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…";
      ui.connection.className = "connection down";
    });
  }

  // ---- plan usage: the strip at the top (/_proxy/usage) ----------------------------------

  const plan = { view: null, error: null, timer: null };

  async function fetchPlan() {
    try {
      const response = await fetch("/_proxy/usage");
      const body = await response.json();
      plan.view = response.ok ? body : null;
      plan.error = response.ok ? null : (body.error && body.error.message) || `status ${response.status}`;
    } catch {
      return; // the proxy went away: the connection status says so
    }
    renderPlan();
  }

  // After an exchange ends (or a live one carries usage): asked again, once for a burst.
  function schedulePlan() {
    if (plan.timer !== null) return;
    plan.timer = setTimeout(() => {
      plan.timer = null;
      fetchPlan();
    }, 300);
  }

  function creditsText(credits) {
    if (credits.unlimited) return "unlimited";
    if (credits.balance !== null && credits.balance !== undefined) return `${credits.balance} credits`;
    return credits.has_credits ? "available" : "none";
  }

  function windowView(shown, named, now) {
    const used = Number(shown.used_percent);
    const level = used >= 95 ? "full" : used >= 80 ? "high" : "";
    const meter = el("div", { class: `meter ${level}`, role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": used, "aria-label": `${shown.label}${named} window used` });
    const fill = el("span");
    fill.style.width = `${Math.min(100, Math.max(0, used))}%`;
    meter.append(fill);
    const when = resets(shown.resets_at, now);
    const said = `${Math.round(used)}% used${when ? `, resets ${when}` : ""}${shown.stale ? "; not seen since" : ""}`;
    return el("div", { class: `window${shown.stale ? " stale" : ""}` },
      el("span", { class: "label" }, `${shown.label}${named}`), meter, el("span", { class: "said" }, said));
  }

  function accountView(account, now) {
    const facts = [el("span", { class: "who" }, account.account)];
    if (account.plan_type) facts.push(el("span", { class: "plan-type" }, `plan ${account.plan_type}`));
    if (account.credits) facts.push(el("span", { class: "credits" }, `credits: ${creditsText(account.credits)}`));
    const ago = now / 1000 - account.seen_at;
    facts.push(el("span", { class: "muted" }, `seen ${ago < 1 ? "just now" : `${span(ago)} ago`} (${account.source})`));
    const windows = el("div", { class: "windows" });
    const reached = [];
    for (const limit of account.limits) {
      const named = limit.family === "codex" ? "" : ` (${limit.name || limit.family})`;
      for (const shown of limit.windows) windows.append(windowView(shown, named, now));
      if (limit.reached) {
        const when = resets(limit.reached.resets_at, now);
        reached.push(el("p", { class: "reached" }, `Limit${named} reached (429)${when ? `: lifts ${when}` : ""}`));
      }
    }
    return el("div", { class: "account" }, ...facts, windows, ...reached);
  }

  function renderPlan() {
    const now = Date.now();
    if (plan.view && plan.view.seen) {
      ui.plan.replaceChildren(...plan.view.accounts.map((account) => accountView(account, now)));
    } else {
      const said = plan.view ? "Plan usage: none seen yet; every answer from /backend-api/codex/responses carries it."
        : plan.error ? `Plan usage: ${plan.error}` : null;
      if (said === null) return;
      ui.plan.replaceChildren(el("p", { class: "muted" }, said));
    }
    ui.plan.hidden = false;
  }

  // ---- the detail --------------------------------------------------------------------------

  function section(title, ...content) {
    return el("section", {}, el("h3", {}, title), ...content);
  }

  function pairs(entries) {
    const list = el("dl");
    for (const [name, value] of entries) {
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", {}, name), el("dd", {}, typeof value === "object" ? value : String(value)));
    }
    return list;
  }

  function headerTable(headers, label) {
    if (!headers.length) return el("p", { class: "muted" }, "none");
    const table = el("table", { class: "headers", "aria-label": label });
    for (const [name, value] of headers) {
      table.append(el("tr", {}, el("td", {}, el("div", { class: "value" }, name)), el("td", {}, el("div", { class: "value" }, value))));
    }
    return table;
  }

  function flatten(value, prefix = "") {
    if (value === null || typeof value !== "object") return [[prefix, value]];
    return Object.entries(value).flatMap(([key, item]) => flatten(item, prefix ? `${prefix}.${key}` : key));
  }

  function timingBar(rec) {
    const total = elapsed(rec) || 0;
    const marks = [
      ["connect", "connect", rec.connect_ms],
      ["headers", "headers", rec.headers_ms],
      ["first-byte", "first byte", rec.first_byte_ms],
      ["first-token", "first token", rec.first_token_ms],
      ["body", rec.live ? "so far" : "total", total],
    ];
    const bar = el("div", { class: "timing", role: "img", "aria-label": "timing" });
    const legend = el("div", { class: "legend" });
    let from = 0;
    for (const [name, label, at] of marks) {
      if (at === null || at === undefined) continue;
      const span = el("span", { class: `seg-${name}`, title: `${label}: ${duration(at)}` });
      span.style.width = total > 0 ? `${(Math.max(at - from, 0) / total) * 100}%` : "0";
      bar.append(span);
      legend.append(el("span", {}, el("i", { class: `seg-${name}` }), `${label} ${duration(at)}`));
      from = Math.max(from, at);
    }
    return [bar, legend];
  }

  function timeline(rec) {
    const list = el("ol", { class: "timeline", "aria-label": "event stream timeline" });
    rec.timeline.forEach(([kind, at], index) => {
      const position = rec.timeline_at + index;
      const chosen = state.event && state.event.position === position;
      list.append(el("li", { "data-position": position, tabindex: "0", role: "button", "aria-pressed": chosen ? "true" : "false" },
        el("span", { class: "at" }, `+${duration(at)}`),
        el("span", { class: endClass(kind) }, kind)));
    });
    const held = rec.timeline.length;
    const note = held < rec.timeline_total ? `the last ${held} of ${rec.timeline_total} events` : `${held} events`;
    const parts = [el("p", { class: "muted" }, `${note}: select one to see its JSON`), list];
    if (state.event && state.event.seq === rec.seq) {
      const shown = state.event.value === undefined
        ? el("p", { class: "muted" }, state.event.error || "loading…")
        : tree(state.event.value, `event${state.event.position}`);
      parts.push(el("div", { class: "event-json", "aria-label": `event ${state.event.position}` },
        el("h4", {}, `event ${state.event.position + 1}`), shown));
    }
    return parts;
  }

  async function showEvent(position) {
    const seq = state.selected;
    state.event = { seq, position };
    renderDetail();
    try {
      const response = await fetch(`/_proxy/exchanges/${seq}/events/${position}`);
      const body = await response.json();
      if (!state.event || state.event.seq !== seq || state.event.position !== position) return;
      if (response.ok) state.event.value = body;
      else state.event.error = body.error ? body.error.message : `status ${response.status}`;
    } catch (error) {
      if (state.event) state.event.error = `could not load the event (${error.message})`;
    }
    renderDetail();
  }

  // ---- the exchange's content: bodies, the answer, messages, curl --------------------------

  // A JSON value as a tree of <details>; what the reader opened stays open across updates.
  function tree(value, path, budget = { nodes: TREE_NODES }) {
    const root = el("div", { class: "tree" });
    root.append(node(null, value, path, 0, budget));
    if (budget.nodes < 0) root.append(el("p", { class: "muted" }, "(more not drawn)"));
    return root;
  }

  function node(key, value, path, depth, budget) {
    budget.nodes -= 1;
    const label = key === null ? null : el("span", { class: "key" }, `${key}: `);
    if (value === null || typeof value !== "object") {
      const kind = value === null ? "null" : typeof value;
      const text = typeof value === "string" ? JSON.stringify(value) : String(value);
      return el("div", { class: "leaf" }, label, el("span", { class: `v-${kind}` }, text));
    }
    const entries = Array.isArray(value) ? value.map((item, i) => [i, item]) : Object.entries(value);
    const brackets = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
    const open = state.open.has(path) || (depth < 2 && !state.open.has(`!${path}`));
    const details = el("details", { "data-path": path, open });
    details.append(el("summary", {}, label, el("span", { class: "muted" }, brackets)));
    if (open) fill(details, entries, path, depth, budget);
    details.addEventListener("toggle", () => {
      if (details.open) {
        state.open.add(path);
        state.open.delete(`!${path}`);
        if (details.children.length === 1) fill(details, entries, path, depth, { nodes: TREE_NODES });
      } else {
        state.open.delete(path);
        state.open.add(`!${path}`);
      }
    });
    return details;
  }

  function fill(details, entries, path, depth, budget) {
    const box = el("div", { class: "children" });
    for (const [key, item] of entries) {
      if (budget.nodes < 0) {
        box.append(el("div", { class: "muted" }, "…"));
        break;
      }
      box.append(node(key, item, `${path}.${key}`, depth + 1, budget));
    }
    details.append(box);
  }

  function keptNote(body) {
    const notes = [`${size(body.size)}`];
    if (body.encoding) notes.push(`${body.encoding}, ${size(body.decoded)} decoded`);
    if (body.truncated) notes.push(`cut: ${size(body.kept)} kept (inspector.body_limit)`);
    if (body.note) notes.push(body.note);
    return el("p", { class: `muted kept${body.truncated ? " truncated" : ""}` }, notes.join(" · "));
  }

  // What a reader of a Responses request looks for first: model, tools, tool choice, input.
  function requestSummary(summary) {
    return pairs(Object.entries(summary).map(([name, value]) => [
      name, typeof value === "object" && value !== null ? (Array.isArray(value) ? value.join(", ") || "none" : JSON.stringify(value)) : value,
    ]));
  }

  function bodyView(body, path) {
    const parts = [keptNote(body)];
    if (body.json !== undefined) parts.push(tree(body.json, path));
    else if (body.html) {
      parts.push(el("div", { class: "html-page", "aria-label": "HTML page, shown as text" },
        el("p", {}, el("strong", {}, body.html.title || "(no title)"), el("span", { class: "muted" }, " — an HTML page, shown as text")),
        el("pre", { class: "text" }, body.html.text)));
    } else if (body.text !== undefined) parts.push(el("pre", { class: "text" }, body.text));
    return parts;
  }

  function answerView(answer, rec) {
    const parts = [];
    const live = rec.live;
    const ended = rec.stream_end || rec.last_event;
    const end = rec.stream_end
      ? el("span", { class: endClass(rec.stream_end) }, rec.stream_end)
      : live ? "streaming…" : el("span", { class: "bad" }, `no closing event${ended ? ` (last: ${ended})` : ""}`);
    const head = [["model", answer.model], ["response", answer.response_id], ["status", answer.status],
      ["end", rec.events !== undefined ? end : null]];
    if (head.some(([, value]) => value)) parts.push(pairs(head));
    for (const item of answer.items) {
      const box = el("div", { class: `item item-${item.type}`, "data-item": item.id });
      box.append(el("h4", {}, item.type.replaceAll("_", " "), item.status ? el("span", { class: "muted" }, ` ${item.status}`) : null));
      if (item.summary) for (const line of item.summary) box.append(el("p", { class: "reasoning" }, line));
      if (item.reasoning) box.append(el("pre", { class: "text reasoning" }, item.reasoning));
      if (item.text !== undefined) box.append(el("pre", { class: "text answer-text" }, item.text));
      if (item.refusal) box.append(el("pre", { class: "text bad" }, item.refusal));
      if (item.name || item.arguments !== undefined) {
        box.append(el("p", { class: "mono call" }, `${item.name || "call"}(`, el("span", { class: "arguments" }, item.arguments || ""), ")"));
        if (item.call_id) box.append(el("p", { class: "muted mono" }, item.call_id));
      }
      if (item.image) box.append(imageView(item.image));
      if (item.revised_prompt) box.append(el("p", { class: "muted" }, `prompt: ${item.revised_prompt}`));
      parts.push(box);
    }
    if (!answer.items.length) parts.push(el("p", { class: "muted" }, live ? "nothing yet…" : "no output items"));
    if (answer.usage) parts.push(el("h4", {}, "usage"), pairs(flatten(answer.usage)));
    if (answer.error) parts.push(el("div", { class: "answer-error", role: "note" }, el("h4", {}, "error"), tree(answer.error, "answer-error")));
    return parts;
  }

  function imageView(image) {
    // The fingerprint HAR files and logs show for the same bytes.
    const facts = [image.fingerprint, image.partial ? "partial (still generating)" : null].filter(Boolean).join(" · ");
    const figure = el("figure", { class: "image" });
    if (image.url) {
      // The same element across updates: an image is fetched once, not at every redraw.
      const src = `${image.url}?sha256=${image.sha256}`;
      let img = state.images.get(src);
      if (!img) {
        img = el("img", { src, class: "thumbnail" });
        state.images.set(src, img);
      }
      img.alt = `generated image, ${facts}`;
      figure.append(img);
    }
    else figure.append(el("p", { class: "muted" }, image.dropped ? "the image was dropped (inspector.total_limit)" : "not an image the page can show"));
    figure.append(el("figcaption", { class: "mono sha" }, facts));
    return figure;
  }

  function messagesView(messages) {
    const list = el("ol", { class: "messages", "aria-label": "WebSocket messages" });
    messages.forEach((message, index) => {
      const arrow = message.side === "client" ? "↑ client" : "↓ upstream";
      const facts = [message.kind, size(message.size), message.compressed ? "deflate" : null, message.note].filter(Boolean).join(" · ");
      const item = el("li", { class: `message ${message.side}` },
        el("div", { class: "message-head" }, el("span", { class: "at" }, `+${duration(message.at_ms)}`), el("span", { class: "side" }, arrow), el("span", { class: "muted" }, facts)));
      if (message.value !== null && message.value !== undefined) {
        item.append(typeof message.value === "string" ? el("pre", { class: "text" }, message.value) : tree(message.value, `message${index}`));
      }
      list.append(item);
    });
    return list;
  }

  function curlView(curl) {
    const button = el("button", { type: "button", class: "copy" }, "Copy as curl");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(curl);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select the text to copy";
      }
    });
    return [el("p", { class: "muted" }, "Set TOKEN and ACCOUNT_ID (and any other variable in it) first; the request goes through this proxy. ", button),
      el("pre", { class: "text curl", "aria-label": "curl command" }, curl)];
  }

  function contentSections(rec) {
    const content = state.content;
    if (!content || content.seq !== rec.seq) return [el("p", { class: "muted" }, "loading the content…")];
    const parts = [];
    if (content.dropped) parts.push(el("p", { class: "muted" }, "Its content was dropped to stay within inspector.total_limit."));
    const summary = content.request && content.request.summary;
    if (summary) parts.push(section("request", requestSummary(summary)));
    if (content.answer) parts.push(section(rec.live ? "answer (so far)" : "answer", ...answerView(content.answer, rec)));
    if (content.response) parts.push(section("response body", ...bodyView(content.response, "response")));
    if (content.request) parts.push(section("request body", ...bodyView(content.request, "request")));
    if (content.messages) {
      const kept = content.messages.length;
      const total = (rec.frames_in || 0) + (rec.frames_out || 0);
      parts.push(section("messages", el("p", { class: "muted" }, `${kept} kept${total > kept ? ` of ${total} data messages and control frames` : ""}`), messagesView(content.messages)));
    }
    return parts;
  }

  function boundsSection() {
    const content = state.content;
    if (!content || content.seq !== state.selected) return null;
    const { body_limit: each, total_limit: total, held } = content.bounds;
    return section("kept", el("p", { class: "muted bounds" },
      `up to ${size(each)} of each body (inspector.body_limit); ${size(held)} of ${size(total)} held by ended exchanges (inspector.total_limit)`));
  }

  async function fetchContent() {
    if (state.fetching) {
      state.stale = true;
      return;
    }
    const seq = state.selected;
    if (seq === null) return;
    state.fetching = true;
    try {
      const response = await fetch(`/_proxy/exchanges/${seq}`);
      const body = await response.json();
      if (state.selected === seq) {
        state.content = response.ok ? body : { seq, dropped: true, bounds: { body_limit: 0, total_limit: 0, held: 0 } };
        renderDetail();
      }
    } catch (error) {
      // The proxy went away: the event stream says so; the next update fetches again.
    } finally {
      state.fetching = false;
      if (state.stale) {
        state.stale = false;
        fetchContent();
      }
    }
  }

  function renderDetail() {
    const rec = state.records.get(state.selected);
    if (!rec) return;
    ui.title.replaceChildren(`${rec.method} `, pathView(rec.path));
    const parts = [];
    const rewrite = rec.rule
      ? el("p", { class: "rewrite" }, pathView(rec.path), el("span", { class: "arrow" }, " → "),
        pathView(rec.upstream_path, "upstream"), el("span", { class: "rule" }, rec.rule))
      : el("p", { class: "muted" }, rec.upstream_path ? "not rewritten: no rule matched" : "not forwarded");
    parts.push(section("rewrite", rewrite));
    const note = explanation(rec);
    if (note) parts.push(el("p", { class: "diagnosis", role: "note" }, note));
    parts.push(...contentSections(rec));
    const badge = el("span", { class: `badge ${outcomeName(rec)}` }, outcomeLabel(rec));
    parts.push(section("exchange", pairs([
      ["status", rec.status],
      ["outcome", badge],
      ["cause", rec.cause],
      ["limit", rec.limit],
      ["content type", rec.content_type],
      ["request id", rec.request_id],
      ["client", rec.client],
      ["started", new Date(rec.started_at * 1000).toISOString()],
      ["request bytes", `${size(rec.request_bytes)}${rec.request_encoding ? ` (${rec.request_encoding})` : ""}`],
      ["response bytes", `${size(rec.response_bytes)}${rec.response_encoding ? ` (${rec.response_encoding})` : ""}`],
    ])));
    parts.push(section("timing", ...timingBar(rec)));
    if (rec.events !== undefined) {
      const end = rec.stream_end ? el("span", { class: endClass(rec.stream_end) }, rec.stream_end) : null;
      parts.push(section("event stream", pairs([
        ["events", rec.events],
        ["first", rec.first_event],
        ["last", rec.last_event],
        ["end", end || (rec.live ? "streaming…" : "no closing event")],
        ["error code", rec.error_code],
        ["error message", rec.error_message],
      ])));
      if (rec.usage) parts.push(section("usage", pairs(flatten(rec.usage))));
      const tokens = rec.tokens || {};
      const spent = [["model", rec.model], ["input tokens", tokens.input], ["cached input tokens", tokens.cached],
        ["output tokens", tokens.output], ["reasoning tokens", tokens.reasoning],
        ["time to first token", rec.first_token_ms === undefined ? null : duration(rec.first_token_ms)],
        ["output tokens a second", rec.tokens_per_s]];
      if (spent.some(([, value]) => value !== undefined && value !== null)) parts.push(section("tokens", pairs(spent)));
      parts.push(section("timeline", ...timeline(rec)));
    }
    if (rec.websocket) {
      parts.push(section("websocket", pairs([
        ["frames in (client → upstream)", rec.frames_in],
        ["frames out (upstream → client)", rec.frames_out],
        ["close code", rec.close_code],
        ["close reason", rec.close_reason],
        ["closed by", rec.closed_by],
      ])));
    }
    if (rec.limits) {
      const now = Date.now();
      parts.push(section("plan usage", pairs([["account", rec.account], ...rec.limits.map((limit) => [
        `${limit.window}${limit.family === "codex" ? "" : ` (${limit.family})`}`,
        `${Math.round(limit.used_percent)}% used${limit.resets_at ? `, resets ${resets(limit.resets_at, now)}` : ""}`,
      ])])));
    }
    if (rec.quota) parts.push(section("quota", pairs(Object.entries(rec.quota))));
    const ids = [["cf-ray", rec.cf_ray], ["x-request-id", rec.upstream_request_id], ["openai-processing-ms", rec.openai_processing_ms]];
    if (ids.some(([, value]) => value)) parts.push(section("upstream ids", pairs(ids)));
    parts.push(section("request headers", headerTable(rec.request_headers, "request headers")));
    parts.push(section("response headers", headerTable(rec.response_headers, "response headers")));
    if (state.content && state.content.seq === rec.seq && state.content.curl) parts.push(section("as curl", ...curlView(state.content.curl)));
    const bounds = boundsSection();
    if (bounds) parts.push(bounds);
    if (rec.har) {
      const link = rec.har.url
        ? el("a", { href: rec.har.url, download: rec.har.name }, `download ${rec.har.name}`)
        : el("span", { class: "mono" }, rec.har.path || rec.har.name);
      parts.push(section("capture (HAR)", el("p", {}, link), el("p", { class: "muted mono" }, rec.har.path || "")));
    }
    // A live timeline stays scrolled to its newest event, unless the reader scrolled up.
    const old = ui.body.querySelector(".timeline");
    const atEnd = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 4;
    const top = old ? old.scrollTop : 0;
    const scrolled = ui.detail.scrollTop;
    ui.body.replaceChildren(...parts);
    ui.detail.scrollTop = scrolled;
    const list = ui.body.querySelector(".timeline");
    if (list) list.scrollTop = atEnd ? list.scrollHeight : top;
  }

  // Each open exchange has an address, /_proxy/#/exchange/N: the browser's back and
  // forward open and close the detail, and the address can be shared and reloaded.
  const addressOf = (seq) => `#/exchange/${seq}`;
  function addressed() {
    const found = /^#\/exchange\/(\d+)$/.exec(location.hash);
    return found ? Number(found[1]) : null;
  }

  function followAddress() {
    const seq = addressed();
    state.wanted = null;
    if (seq === null) {
      if (state.selected !== null) closeDetail({ fromHistory: true });
    } else if (state.records.has(seq)) {
      if (state.selected !== seq) openDetail(seq, { fromHistory: true });
    } else {
      state.wanted = seq; // opened when the snapshot or the exchange itself arrives
    }
  }

  function openWanted() {
    const seq = state.wanted;
    if (seq === null) return;
    if (state.records.has(seq)) {
      state.wanted = null;
      openDetail(seq, { fromHistory: true });
    } else if (seq <= state.newest) {
      // No longer kept (or from another run of the proxy): the address says the list.
      state.wanted = null;
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function openDetail(seq, { fromHistory = false } = {}) {
    if (!fromHistory && addressed() !== seq) {
      // From the list: a new history entry; from one exchange to another: the same one,
      // so that back (and Close) return to the list.
      if (state.selected === null) {
        history.pushState(null, "", addressOf(seq));
        state.pushed = true;
      } else {
        history.replaceState(null, "", addressOf(seq));
      }
    }
    const previous = state.rows.get(state.selected);
    if (previous) previous.removeAttribute("aria-current");
    if (state.selected !== seq) {
      state.content = null;
      state.event = null;
      state.open.clear();
      state.images.clear();
    }
    state.selected = seq;
    state.rows.get(seq)?.setAttribute("aria-current", "true");
    ui.detail.hidden = false;
    renderDetail();
    fetchContent();
    ui.detail.focus();
  }

  function closeDetail({ fromHistory = false } = {}) {
    if (!fromHistory && addressed() !== null) {
      if (state.pushed) {
        state.pushed = false;
        history.back(); // the list's own entry; its popstate finds the detail closed
      } else {
        history.replaceState(null, "", location.pathname + location.search);
      }
    }
    if (fromHistory) state.pushed = false;
    const row = state.rows.get(state.selected);
    state.selected = null;
    state.content = null;
    state.event = null;
    ui.detail.hidden = true;
    if (row) {
      row.removeAttribute("aria-current");
      if (!row.hidden) row.focus();
    }
  }

  // ---- controls ----------------------------------------------------------------------------

  function refilter() {
    for (const [seq, row] of state.rows) row.hidden = !matches(state.records.get(seq));
    summary();
  }

  // The filter's text is also looked for in the kept bodies, answers and messages: by the
  // proxy, a moment after typing stops (and again as exchanges end while it is set).
  function searchBodies() {
    clearTimeout(state.searchTimer);
    const text = ui.filter.value.trim();
    if (text.length < 2) {
      state.bodyMatches = null;
      return;
    }
    state.searchTimer = setTimeout(async () => {
      try {
        const response = await fetch(`/_proxy/search?q=${encodeURIComponent(text)}`);
        if (!response.ok || ui.filter.value.trim() !== text) return;
        state.bodyMatches = new Set((await response.json()).matches);
        refilter();
      } catch {
        // Searching bodies is a help; the fields still filter.
      }
    }, 250);
  }

  function togglePause() {
    state.paused = !state.paused;
    ui.pause.setAttribute("aria-pressed", String(state.paused));
    ui.pause.textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) {
      const seqs = [...state.waiting].sort((a, b) => a - b);
      state.waiting.clear();
      show(seqs);
    }
  }

  function move(row, step) {
    let next = step > 0 ? row.nextElementSibling : row.previousElementSibling;
    while (next && next.hidden) next = step > 0 ? next.nextElementSibling : next.previousElementSibling;
    if (next) next.focus();
  }

  ui.rows.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-seq]");
    if (row) openDetail(Number(row.dataset.seq));
  });
  ui.rows.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-seq]");
    if (!row) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openDetail(Number(row.dataset.seq));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      move(row, event.key === "ArrowDown" ? 1 : -1);
    }
  });
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      ui.filter.focus();
      ui.filter.select();
    } else if (event.key === "Escape" && !ui.detail.hidden) {
      event.preventDefault();
      closeDetail();
    } else if (event.key === "Escape" && typing) {
      event.target.blur();
    }
  });
  ui.close.addEventListener("click", () => closeDetail());
  ui.pause.addEventListener("click", togglePause);
  ui.filter.addEventListener("input", () => {
    state.bodyMatches = null;
    refilter();
    searchBodies();
  });
  ui.body.addEventListener("click", (event) => {
    const item = event.target.closest(".timeline li[data-position]");
    if (item) showEvent(Number(item.dataset.position));
  });
  ui.body.addEventListener("keydown", (event) => {
    const item = event.target.closest(".timeline li[data-position]");
    if (item && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      event.stopPropagation();
      showEvent(Number(item.dataset.position));
    }
  });
  ui.status.addEventListener("change", refilter);
  ui.outcome.addEventListener("change", refilter);
  setInterval(() => {
    if (state.paused) return;
    for (const [seq, rec] of state.records) {
      if (!rec.live) continue;
      const cell = state.rows.get(seq)?.querySelector(".c-duration");
      if (cell) cell.textContent = duration(elapsed(rec));
    }
  }, 250);

  setInterval(renderPlan, 30000); // the countdowns move on
  window.addEventListener("popstate", followAddress);
  summary();
  state.wanted = addressed();
  connect();
})();
