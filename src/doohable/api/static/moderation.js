// The moderation page: the queue best first, one decision per image (a card is decided once,
// a card that just came up refuses keys for SETTLE_MS), undo, the threshold (saved vs draft),
// an image viewer and a keyboard help overlay.
(() => {
  "use strict";
  const SETTLE_MS = 400; // a card moved under the keyboard by a decision takes keys after this
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const ui = window.doohableUI;
  let items = [], current = 0, policy = null, draft = null, statusShown = "pending";
  let currentSince = 0, currentByUser = true;
  let sending = Promise.resolve(); // decisions and undos reach the server in the order made

  async function api(path, method = "GET", body) {
    const res = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    if (!res.ok) throw new Error(ui.detail(data) || res.statusText);
    return data;
  }
  let undoable = 0; // decisions made on this page that can still be undone
  const say = (msg) => ui.toast(msg, undoable > 0 ? { label: "Undo", run: undoLast } : null);
  const fmt = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const exact = (x) => (x === null || x === undefined ? "off" : String(Number(x)));

  function query() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData($("filters"))) if (v) p.set(k, k === "until" ? v + "T23:59:59" : v);
    return p.toString();
  }

  function select(i, byUser) {
    current = Math.max(0, Math.min(i, items.length - 1));
    currentSince = performance.now();
    currentByUser = byUser;
  }

  function card(it, i) {
    const el = document.createElement("article");
    const above = draft !== null && it.score !== null && it.score >= draft;
    el.className = "item" + (i === current ? " current" : "") + (it.flagged ? " flagged" : "") + (above ? " above" : "");
    el.dataset.imageId = it.id;
    el.innerHTML = `<button type="button" class="open" title="open full size (v)"><img loading="lazy"></button>
      <div class="meta"><span class="score"></span><span class="decided"></span><span class="src"></span>
      <span class="facts"></span><span class="nsfw"></span></div>
      <div class="buttons"><button type="button" class="approve">Approve</button>
      <button type="button" class="reject">Reject</button></div>`;
    const img = el.querySelector("img");
    img.src = it.url;
    img.alt = ui.altText(it);
    el.querySelector(".score").textContent = "score " + fmt(it.score) + ui.partsText(it.parts);
    el.querySelector(".decided").textContent = it.status === "pending" ? "" :
      (it.decided_by === "auto" ? `auto-${it.status} (${it.decided_rule})` : `${it.status} by ${it.decided_by}`);
    el.querySelector(".decided").classList.toggle("auto", it.decided_by === "auto");
    el.querySelector(".src").textContent = [it.source, it.author].filter(Boolean).join(" · ");
    el.querySelector(".facts").textContent = `${it.width}×${it.height} · ${ui.bytes(it.size_bytes)}`;
    el.querySelector(".nsfw").textContent = it.flagged ? `NSFW flagged (${fmt(it.nsfw)})` : "";
    for (const [kind, decision] of [["approve", "approved"], ["reject", "rejected"]]) {
      const b = el.querySelector("." + kind);
      b.hidden = it.status === decision;
      // the second click of a double click belongs to the card already decided
      b.onclick = (e) => { if (e.detail <= 1) decide(it.id, decision, false); };
    }
    el.querySelector(".open").onclick = () => { select(i, true); render(); ui.openViewer(it); };
    el.onclick = (e) => { if (!e.target.closest("button")) { select(i, true); render(); } };
    return el;
  }

  function render() {
    $("queue").replaceChildren(...items.map(card));
    const n = items.length;
    $("count").textContent = `${n} ${statusShown} ${ui.plural(n, "image")}`;
    $("empty").hidden = n > 0;
    $("empty-text").textContent = statusShown === "pending" && !query().replace("status=pending", "")
      ? "No pending images: all caught up." : `No ${statusShown} images match these filters.`;
    $("queue").children[current]?.scrollIntoView({ block: "nearest" });
  }

  let loads = 0; // queue loads asked for: only the newest one's answer is shown
  async function load() {
    const mine = ++loads;
    try {
      const shown = new FormData($("filters")).get("status") || "pending";
      const got = await api("/api/v1/moderation/queue?" + query());
      if (mine !== loads) return; // the filters changed while this answer was on its way
      statusShown = shown;
      items = got;
      select(0, true);
      render();
    } catch (e) { if (mine === loads) say(e.message); }
  }

  // one decision per card: a card being decided is out of the list at once; a card that came
  // up by a decision refuses keys for SETTLE_MS, with a message (never silently)
  async function decide(id, decision, byKey) {
    const i = items.findIndex((x) => x.id === id);
    if (i < 0) return;
    if (byKey && !currentByUser && performance.now() - currentSince < SETTLE_MS) {
      say(`Image ${id} just came up: press again to decide it.`);
      return;
    }
    const it = items[i];
    items.splice(i, 1);
    select(i, false);
    render();
    const body = { image_id: id, decision, expected_status: it.status };
    sending = sending.then(() => api("/api/v1/moderation/decisions", "POST", body)).then((r) => {
      if (r.created) undoable += 1;
      say(r.created ? `Image ${id} ${decision}.` : `Image ${id} was already ${decision}.`);
      refreshPolicy();
    }, (e) => {
      items.splice(Math.min(i, items.length), 0, it);
      render();
      say(`Image ${id} not ${decision}: ${e.message}`);
    });
    return sending;
  }

  function undoLast() {
    sending = sending.then(undoNow);
    return sending;
  }

  async function undoNow() {
    try {
      const r = await api("/api/v1/moderation/decisions/undo", "POST");
      undoable = Math.max(0, undoable - 1);
      if (!r.undone) { undoable = 0; say("Nothing to undo."); return; }
      await load();
      const back = items.findIndex((x) => x.id === r.image_id);
      if (back >= 0) { select(back, true); render(); }
      say(`Undone: image ${r.image_id} is ${r.status} again.`);
      refreshPolicy();
    } catch (e) { say(`Undo failed: ${e.message}`); }
  }

  function showPolicy() {
    $("thr-saved").textContent = exact(policy.threshold);
    $("thr-draft").textContent = exact(draft);
    $("thr-draft-row").classList.toggle("changed", draft !== policy.threshold);
    const s = policy.suggested;
    $("suggestion").textContent = s
      ? `Suggested from ${s.positives} approved / ${s.negatives} rejected: ${exact(s.threshold)} (Youden J ${fmt(s.youden_j)})`
      : policy.suggestion_error || "";
    $("model-note").textContent = policy.model_note || ""; // no scoring model: whose scores these are
    $("model-note").hidden = !policy.model_note;
  }

  async function refreshPolicy() {
    try { policy = await api("/api/v1/moderation/policy"); showPolicy(); preview(); } catch (e) { say(e.message); }
  }

  async function loadPolicy() {
    policy = await api("/api/v1/moderation/policy");
    const slider = $("thr");
    const marks = [...items.map((x) => x.score), policy.threshold, policy.suggested?.threshold]
      .filter((x) => x !== null && x !== undefined);
    if (marks.length) {
      slider.min = Math.floor(Math.min(...marks) * 10) / 10;
      slider.max = Math.ceil(Math.max(...marks) * 10) / 10 || 1;
    }
    setDraft(policy.threshold ?? policy.suggested?.threshold ?? Number(slider.max));
  }

  function setDraft(value) {
    draft = Number(value);
    $("thr").value = draft; // step="any": the slider keeps the exact value
    showPolicy();
    render();
    preview();
  }

  let timer = null;
  let asked = 0; // previews asked for: only the newest one's answer is shown
  function preview() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (draft === null) return;
      const at = draft;
      const mine = ++asked;
      try {
        const p = await api("/api/v1/moderation/preview?threshold=" + encodeURIComponent(at));
        if (mine !== asked) return; // the threshold moved while this answer was on its way
        const off = policy && policy.threshold === null ? "Auto-approval is off. " : "";
        $("preview").textContent = `${off}At ${fmt(at)}: ${p.would_approve} pending ${ui.plural(p.would_approve, "image")} ` +
          `would be auto-approved; of ${p.decided} decided, ${p.false_approvals} rejected ` +
          `${ui.plural(p.false_approvals, "one")} would have been approved and ${p.missed_approvals} approved ` +
          `${ui.plural(p.missed_approvals, "one")} missed.`;
      } catch (e) { if (mine === asked) $("preview").textContent = e.message; }
    }, 120);
  }

  async function savePolicy(threshold) {
    try {
      const p = await api("/api/v1/moderation/policy", "PUT", { threshold, apply: true });
      await load(); await loadPolicy();
      say(threshold === null ? "Auto-approval turned off." :
        `Threshold saved: ${exact(p.threshold)}; ${p.applied.approved} approved now, ${p.applied.flagged} flagged.`);
    } catch (e) { say(e.message); }
  }

  $("thr").addEventListener("input", () => setDraft($("thr").value));
  $("thr").addEventListener("change", () => $("thr").blur());
  $("thr-save").onclick = () => savePolicy(draft);
  $("thr-off").onclick = () => savePolicy(null);
  $("thr-suggest").onclick = () => { if (policy?.suggested) setDraft(policy.suggested.threshold); };
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("undo").onclick = undoLast;
  document.addEventListener("keydown", (e) => {
    if (ui.typing(e)) return;
    const it = items[current];
    const keys = {
      j: () => { select(current + 1, true); render(); },
      k: () => { select(current - 1, true); render(); },
      a: () => it && decide(it.id, "approved", true),
      r: () => it && decide(it.id, "rejected", true),
      u: undoLast,
      v: () => it && ui.openViewer(it),
      Enter: () => it && ui.openViewer(it),
    };
    const fn = keys[e.key];
    if (!fn) return;
    e.preventDefault();
    if (e.repeat) { say("Held key ignored: press it once per image."); return; }
    fn();
  });
  window.doohableModeration = { idle: () => sending.then(() => true) };
  load().then(loadPolicy).catch((e) => say(e.message));
})();
