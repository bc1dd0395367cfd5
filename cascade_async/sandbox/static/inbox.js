// The sandbox inbox. Message content is untrusted: it only ever reaches the page as text nodes
// (textContent / append of strings), never as HTML.
"use strict";

(() => {
  const LIST_PAGE = 200; // recipients rendered at once
  const THREAD_PAGE = 100; // messages fetched per thread page
  const CHANNELS = { telegram: "Telegram", viber: "Viber", rcs: "RCS", sms: "SMS", call: "Phone call" };
  const NO_PHONE = "";

  const state = {
    threads: new Map(), // phone -> {phone, messages, unread, rejected, lastSeq, lastAt, preview}
    shown: LIST_PAGE,
    open: null, // the phone whose thread is shown
    oldest: null, // seq of the oldest message shown in the thread (paging back)
    query: "", // active search
    matches: null, // phones with search matches
    connected: false,
    loading: true, // events wait in `pending` while the recipients are (re)loaded
    loadedSeq: -1, // the last seq the loaded recipients include
    pending: [],
    threadLoading: false, // events for the open thread wait in `pendingOpen` while it loads
    pendingOpen: [],
  };
  const timings = (window.inboxTimings = {});
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    if (!response.ok && response.status !== 204) throw new Error(`${path}: HTTP ${response.status}`);
    return response.status === 204 ? null : response.json();
  }

  const phoneLabel = (phone) => (phone === NO_PHONE ? "No usable phone" : phone);
  const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
  const stampFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const time = (iso) => timeFormat.format(new Date(iso));
  const stamp = (iso) => stampFormat.format(new Date(iso));
  const layout = (node) => node.getBoundingClientRect(); // forces layout, so timings include it

  // --- recipients ------------------------------------------------------------------------------

  async function loadThreads() {
    state.loading = true;
    try {
      const body = await api("/sandbox/threads");
      state.threads = new Map(body.threads.map((t) => [t.phone, t]));
      state.loadedSeq = body.lastSeq;
    } finally {
      state.loading = false;
      const pending = state.pending.filter(([, item]) => item.seq > state.loadedSeq);
      state.pending = [];
      for (const [kind, item] of pending) (kind === "m" ? received : rejected)([item]);
    }
  }

  function orderedThreads() {
    let list = [...state.threads.values()];
    if (state.matches) list = list.filter((t) => state.matches.has(t.phone));
    return list.sort((a, b) => b.lastSeq - a.lastSeq);
  }

  function threadButton(t) {
    const unread = t.unread
      ? el("span", { className: "badge", text: String(t.unread), "aria-label": `${t.unread} unread` })
      : null;
    const rejected = t.rejected
      ? el("span", { className: "badge bad", text: `${t.rejected}!`, "aria-label": `${t.rejected} rejected` })
      : null;
    return el(
      "button",
      { type: "button", className: "thread", "data-phone": t.phone, "aria-current": t.phone === state.open },
      el("span", { className: "who" }, phoneLabel(t.phone), unread, rejected),
      el("span", { className: "when", text: time(t.lastAt) }),
      el("span", { className: "preview", text: t.preview }),
    );
  }

  function renderThreads() {
    const list = orderedThreads();
    const fragment = document.createDocumentFragment();
    for (const t of list.slice(0, state.shown)) fragment.append(el("li", null, threadButton(t)));
    const focused = document.activeElement?.dataset?.phone;
    $("threads").replaceChildren(fragment);
    if (focused !== undefined) $("threads").querySelector(`[data-phone="${CSS.escape(focused)}"]`)?.focus();
    $("more-threads").hidden = list.length <= state.shown;
    $("no-threads").hidden = list.length > 0;
    $("no-threads").textContent = state.query ? "No recipient matches." : "No messages yet.";
    let total = 0;
    for (const t of state.threads.values()) total += t.messages;
    $("total").textContent = `(${list.length}; ${total} messages)`;
  }

  let renderQueued = false;
  function scheduleThreads() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderThreads();
    });
  }

  // --- one message -----------------------------------------------------------------------------

  function details(pairs) {
    const dl = el("dl", { className: "details" });
    for (const [name, value] of pairs) if (value !== null && value !== undefined) dl.append(el("dt", { text: name }), el("dd", { text: String(value) }));
    return dl;
  }

  function messageItem(m, withPhone) {
    const channel = CHANNELS[m.channel] || m.channel;
    const head = el(
      "div",
      { className: "head" },
      el("span", { className: "chan", text: channel }),
      el("span", { className: "sender", text: m.fromName }),
      withPhone ? el("span", { className: "to", text: `to ${m.toPhone}` }) : null,
      el("span", { className: "type", text: m.messageType }),
      el("time", { datetime: m.receivedAt, text: time(m.receivedAt) }),
    );
    const body = [];
    if (m.messageType === "flashcall") {
      body.push(el("p", { className: "call", text: `Incoming call from ${m.fromName}` }));
      if (m.renderedText) body.push(el("p", { className: "text", text: m.renderedText }));
    } else {
      body.push(el("p", { className: "text", text: m.renderedText ?? m.text ?? "" }));
    }
    if (m.surveyOptions) {
      const group = el("div", { className: "survey", role: "group", "aria-label": "Survey options" });
      for (const option of m.surveyOptions) {
        group.append(el("button", { type: "button", "aria-disabled": "true", title: "Answers are not simulated", text: option }));
      }
      body.push(group);
    }
    const facts = details([
      ["Status", m.status],
      ["Tracking id", m.trackingId],
      ["messageId", m.messageId],
      ["Scheduled", m.scheduledSent ? stamp(m.scheduledSent) : null],
      ["TTL", m.ttl ? `${m.ttl} s` : null],
      ["Route", m.route],
    ]);
    return el("li", { className: "bubble msg", "data-seq": m.seq, "data-channel": m.channel }, head, ...body, facts);
  }

  function rejectionItem(r) {
    const e = r.error || {};
    const where = r.index !== null && r.index !== undefined ? `message ${r.index + 1} of ${r.messageCount}` : null;
    return el(
      "li",
      { className: "bubble rejected", "data-seq": r.seq },
      el(
        "div",
        { className: "head" },
        el("strong", { text: `Rejected: ${r.status} ${e.code || ""}` }),
        el("time", { datetime: r.receivedAt, text: time(r.receivedAt) }),
      ),
      el("p", { className: "text", text: e.message || "" }),
      details([
        ["Field", e.field],
        ["In request", where],
        ["Tracking id", r.trackingId],
        ["Phone as sent", r.toPhone],
        ["Route", r.route],
      ]),
      el("details", null, el("summary", { text: "Request" }), el("pre", { text: r.request })),
    );
  }

  // --- a thread ------------------------------------------------------------------------------

  async function fetchThread(phone, before) {
    const page = before === null ? "" : `&before=${before}`;
    const [messages, rejections] = await Promise.all([
      phone === NO_PHONE
        ? { messages: [] }
        : api(`/sandbox/messages?phone=${encodeURIComponent(phone)}&limit=${THREAD_PAGE}${page}`),
      before === null ? api(`/sandbox/rejections?phone=${encodeURIComponent(phone)}`) : { rejections: [] },
    ]);
    return { messages: messages.messages, rejections: rejections.rejections };
  }

  function items(messages, rejections) {
    const all = [...messages.map((m) => [m.seq, messageItem(m, false)]), ...rejections.map((r) => [r.seq, rejectionItem(r)])];
    all.sort((a, b) => a[0] - b[0]);
    return all.map(([, node]) => node);
  }

  function refreshThreadButton(phone) {
    const t = state.threads.get(phone);
    const old = phone === null ? null : $("threads").querySelector(`[data-phone="${CSS.escape(phone)}"]`);
    if (!t || !old) return;
    const fresh = threadButton(t);
    const focused = document.activeElement === old;
    old.replaceWith(fresh);
    if (focused) fresh.focus();
  }

  async function openThread(phone) {
    const started = performance.now();
    const previous = state.open;
    const wasSearching = state.matches !== null;
    state.open = phone;
    state.query = "";
    state.matches = null;
    $("q").value = "";
    state.threadLoading = true;
    state.pendingOpen = [];
    let messages, rejections;
    try {
      ({ messages, rejections } = await fetchThread(phone, null));
    } finally {
      state.threadLoading = false;
    }
    if (state.open !== phone) return;
    state.oldest = messages.length ? messages[messages.length - 1].seq : null;
    const fragment = document.createDocumentFragment();
    fragment.append(...items(messages, rejections));
    const newest = Math.max(-1, ...messages.slice(0, 1).map((m) => m.seq), ...rejections.map((r) => r.seq));
    fragment.append(...state.pendingOpen.filter(([seq]) => seq > newest).map(([, node]) => node));
    state.pendingOpen = [];
    $("bubbles").replaceChildren(fragment);
    $("older").hidden = messages.length < THREAD_PAGE;
    $("pane-title").textContent = `Thread: ${phoneLabel(phone)}`;
    const box = $("phone");
    box.scrollTop = box.scrollHeight;
    markRead(phone);
    if (wasSearching) renderThreads();
    else {
      refreshThreadButton(previous);
      refreshThreadButton(phone);
    }
    layout($("bubbles"));
    timings.thread = performance.now() - started;
  }

  async function loadOlder() {
    if (state.open === null || state.oldest === null) return;
    const phone = state.open;
    const { messages } = await fetchThread(phone, state.oldest);
    if (state.open !== phone) return;
    const box = $("phone");
    const fromBottom = box.scrollHeight - box.scrollTop;
    $("bubbles").prepend(...items(messages, []));
    box.scrollTop = box.scrollHeight - fromBottom;
    if (messages.length) state.oldest = messages[messages.length - 1].seq;
    $("older").hidden = messages.length < THREAD_PAGE;
  }

  let readTimer = null;
  function markRead(phone) {
    const t = state.threads.get(phone);
    if (t) t.unread = 0;
    clearTimeout(readTimer);
    readTimer = setTimeout(() => {
      const url = `/sandbox/threads/read?phone=${encodeURIComponent(phone)}`;
      api(url, { method: "POST" }).catch(() => {});
    }, 200);
  }

  // --- search ----------------------------------------------------------------------------------

  function matches(m, q) {
    const needle = q.toLowerCase();
    return [m.toPhone, m.trackingId, m.messageId, m.fromName, m.text || "", m.renderedText || ""].some((v) =>
      v.toLowerCase().includes(needle),
    );
  }

  async function search(q) {
    state.query = q.trim();
    if (!state.query) {
      state.matches = null;
      renderThreads();
      if (state.open !== null) return openThread(state.open);
      $("pane-title").textContent = "Select a recipient";
      $("bubbles").replaceChildren();
      return undefined;
    }
    const started = performance.now();
    const body = await api(`/sandbox/messages?q=${encodeURIComponent(state.query)}&limit=${LIST_PAGE}`);
    state.open = null;
    state.matches = new Set(body.messages.map((m) => m.toPhone));
    const fragment = document.createDocumentFragment();
    fragment.append(...body.messages.map((m) => messageItem(m, true)));
    $("bubbles").replaceChildren(fragment);
    $("older").hidden = true;
    const more = body.messages.length >= LIST_PAGE ? "+" : "";
    const n = body.messages.length;
    $("pane-title").textContent = `Search “${state.query}”: ${n}${more} message${n === 1 ? "" : "s"}, newest first`;
    $("phone").scrollTop = 0;
    renderThreads();
    timings.search = performance.now() - started;
    return undefined;
  }

  // --- live ------------------------------------------------------------------------------------

  function received(list) {
    const openItems = [];
    for (const m of list) {
      if (state.loading) {
        state.pending.push(["m", m]);
        continue;
      }
      let t = state.threads.get(m.toPhone);
      if (!t) {
        t = { phone: m.toPhone, messages: 0, unread: 0, rejected: 0, lastSeq: -1, lastAt: m.receivedAt, preview: "" };
        state.threads.set(m.toPhone, t);
      }
      t.messages += 1;
      t.lastSeq = m.seq;
      t.lastAt = m.receivedAt;
      t.preview = (m.messageType === "flashcall" ? "Incoming call" : m.renderedText || m.text || "").slice(0, 120);
      if (m.toPhone === state.open) openItems.push([m.seq, messageItem(m, false)]);
      else t.unread += 1;
      if (state.query && matches(m, state.query)) {
        state.matches.add(m.toPhone);
        $("bubbles").prepend(messageItem(m, true));
      }
    }
    appendToOpen(openItems);
    scheduleThreads();
  }

  function rejected([r]) {
    if (state.loading) {
      state.pending.push(["r", r]);
      return;
    }
    const phone = r.toPhone || NO_PHONE;
    let t = state.threads.get(phone);
    if (!t) {
      t = { phone, messages: 0, unread: 0, rejected: 0, lastSeq: -1, lastAt: r.receivedAt, preview: "" };
      state.threads.set(phone, t);
    }
    t.rejected += 1;
    t.lastSeq = r.seq;
    t.lastAt = r.receivedAt;
    t.preview = `Rejected: ${r.status} ${(r.error && r.error.code) || ""}`;
    if (phone === state.open) appendToOpen([[r.seq, rejectionItem(r)]]);
    scheduleThreads();
  }

  function appendToOpen(items) {
    if (!items.length) return;
    if (state.threadLoading) {
      state.pendingOpen.push(...items);
      return;
    }
    const box = $("phone");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    $("bubbles").append(...items.map(([, node]) => node));
    if (atBottom) box.scrollTop = box.scrollHeight;
    markRead(state.open);
  }

  async function resync() {
    await loadThreads();
    renderThreads();
    if (state.query) await search(state.query);
    else if (state.open !== null) await openThread(state.open);
  }

  function cleared() {
    state.threads.clear();
    state.open = null;
    state.oldest = null;
    state.matches = state.query ? new Set() : null;
    $("bubbles").replaceChildren();
    $("older").hidden = true;
    $("pane-title").textContent = "Select a recipient";
    renderThreads();
  }

  function connect() {
    const events = new EventSource("/sandbox/events");
    const live = $("live");
    events.addEventListener("hello", () => {
      const reconnected = state.connected === null;
      state.connected = true;
      live.textContent = "Live";
      live.classList.add("on");
      document.body.dataset.live = "true";
      if (reconnected) resync();
    });
    events.addEventListener("messages", (e) => received(JSON.parse(e.data)));
    events.addEventListener("rejected", (e) => rejected([JSON.parse(e.data)]));
    events.addEventListener("cleared", cleared);
    events.addEventListener("resync", () => resync());
    events.addEventListener("error", () => {
      state.connected = null; // resync what was missed once back
      live.textContent = "Reconnecting…";
      live.classList.remove("on");
      document.body.dataset.live = "false";
    });
  }

  // --- wiring ----------------------------------------------------------------------------------

  function moveFocus(event) {
    const buttons = [...$("threads").querySelectorAll("button.thread")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, to))].focus();
  }

  async function start() {
    $("threads").addEventListener("click", (event) => {
      const button = event.target.closest("button.thread");
      if (button) openThread(button.dataset.phone);
    });
    $("threads").addEventListener("keydown", moveFocus);
    $("more-threads").addEventListener("click", () => {
      state.shown += LIST_PAGE;
      renderThreads();
    });
    $("older").addEventListener("click", loadOlder);
    let typing = null;
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(typing);
      search($("q").value);
    });
    $("q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => search($("q").value), 250);
    });
    $("clear").addEventListener("click", async () => {
      await api("/sandbox/messages", { method: "DELETE" });
      cleared();
    });
    connect();
    const started = performance.now();
    await loadThreads();
    renderThreads();
    layout($("threads"));
    timings.list = performance.now() - started;
    document.body.dataset.ready = "true";
  }

  start();
})();
