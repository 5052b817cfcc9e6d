// The voting page: one pair on screen, the next one preloaded; every action goes through
// one queue so that votes, skips and undos reach the server in the order they were made.
// A pair takes a vote only once it has been on screen MIN_VIEW_MS: a second click of a
// double click or a quick key repeat is refused with a message, never sent for a pair the
// voter has not seen, and never dropped silently.
(() => {
  "use strict";
  const MIN_VIEW_MS = 300;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const ui = window.doohableUI;
  const sides = { left: $("left"), right: $("right") };
  let current = null;  // the pair on screen
  let shownAt = 0;     // when it came on screen
  let upcoming = null; // a promise of the next pair, images preloading
  let queue = Promise.resolve();
  let busy = false;
  const history = [];  // actions that can be undone: {kind: "vote" | "skip", token}

  // `soft`: statuses answered as data instead of thrown (409 "no pair" for the next pair)
  async function api(method, path, body, soft = []) {
    const res = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 401) { location.href = "/login?next=/vote"; throw new Error("signed out"); }
    if (!res.ok && !soft.includes(res.status)) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail; } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return res.status === 204 ? null : res.json();
  }

  function preload(pair) {
    return Promise.all([pair.left.url, pair.right.url].map((url) => new Promise((ok) => {
      const img = new Image();
      img.onload = img.onerror = () => ok();
      img.src = url;
    }))).then(() => pair);
  }

  function fetchPair() {
    return api("GET", "/api/v1/pairs/next", undefined, [409]).then((pair) => (pair && pair.pair_token ? preload(pair) : pair));
  }

  function describe(side, id) {
    api("GET", `/api/v1/images/${id}`).then((meta) => {
      if (sides[side].dataset.imageId === String(id)) sides[side].querySelector("img").alt = ui.altText(meta);
    }).catch(() => {});
  }

  function show(pair) {
    current = pair;
    shownAt = performance.now();
    for (const side of ["left", "right"]) {
      const el = sides[side];
      el.classList.remove("picked");
      if (!pair || !pair.pair_token) { el.disabled = true; continue; }
      el.disabled = false;
      el.dataset.imageId = pair[side].id;
      const img = el.querySelector("img");
      img.src = pair[side].url;
      img.alt = `${side} image ${pair[side].id}`;
      describe(side, pair[side].id);
    }
    $("pair").dataset.token = pair && pair.pair_token ? pair.pair_token : "";
    if (pair && !pair.pair_token) say(pair.detail || "No pair to show.");
  }

  function say(text) { $("message").textContent = text; ui.toast(text); }

  async function refreshStats() {
    const s = await api("GET", "/api/v1/votes/stats");
    $("today").textContent = s.today;
    $("settled").textContent = `${Math.round(100 * s.settled)}%`;
    $("compared").textContent = `${s.images_compared} of ${s.images}`;
    $("progress").max = Math.max(s.images, 1);
    $("progress").value = s.images_compared;
  }

  async function advance() {
    const next = await upcoming;
    show(next);
    upcoming = fetchPair();
  }

  // why an input is not taken now, or null: said on screen, never silent
  function refusal(repeat) {
    if (!current || !current.pair_token) return "No pair to vote on.";
    if (repeat) return "Held key ignored: press once per pair.";
    if (busy) return "Still loading the next pair; choose again.";
    if (performance.now() - shownAt < MIN_VIEW_MS) return "A new pair just came up: look, then choose again.";
    return null;
  }

  // Every action: show the next pair at once, then send the action; errors are shown.
  function act(kind, winnerSide, repeat = false) {
    const why = refusal(repeat);
    $("notice").textContent = why || "";
    if (why) { ui.toast(why); return; }
    busy = true;
    const pair = current;
    if (winnerSide) sides[winnerSide].classList.add("picked");
    let send;
    if (kind === "vote") {
      const winner = winnerSide ? pair[winnerSide].id : null;
      send = () => api("POST", "/api/v1/votes", { pair_token: pair.pair_token, winner_id: winner });
    } else {
      send = () => api("POST", `/api/v1/pairs/${encodeURIComponent(pair.pair_token)}/skip`);
    }
    history.push({ kind, token: pair.pair_token });
    queue = queue
      .then(send)
      .then(() => say(kind === "vote" ? (winnerSide ? "Vote recorded." : "Recorded: can't decide.") : "Skipped."))
      .then(refreshStats)
      .catch((e) => { history.pop(); say(`Not recorded: ${e.message}`); });
    advance().catch((e) => say(e.message)).finally(() => { busy = false; });
  }

  // undo the last vote or skip, and show that pair again to choose anew
  function undo() {
    queue = queue.then(async () => {
      const last = history.pop();
      let pair = null;
      if (last && last.kind === "skip") {
        pair = await api("POST", `/api/v1/pairs/${encodeURIComponent(last.token)}/again`);
      } else {
        const r = await api("POST", "/api/v1/votes/undo");
        if (!r.undone) { say("Nothing to undo."); return; }
        pair = r.pair;
      }
      const onScreen = current;
      upcoming = Promise.resolve(onScreen);  // the pair on screen comes back next
      show(await preload(pair));
      shownAt = 0;  // a pair shown again is known: it takes a vote at once
      say(last && last.kind === "skip" ? "Skip undone: here is that pair again." : "Vote undone: choose again.");
      await refreshStats();
    }).catch((e) => say(`Undo failed: ${e.message}`));
  }

  for (const side of ["left", "right"]) {
    // the second click of a double click (detail 2) belongs to the pair already voted on
    sides[side].addEventListener("click", (e) => { if (e.detail <= 1) act("vote", side); });
  }
  $("tie").addEventListener("click", () => act("vote", null));
  $("skip").addEventListener("click", () => act("skip"));
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (ev) => {
    if (ui.typing(ev)) return;
    const keys = {
      ArrowLeft: () => act("vote", "left", ev.repeat), ArrowRight: () => act("vote", "right", ev.repeat),
      ArrowDown: () => act("vote", null, ev.repeat), ArrowUp: () => act("skip", null, ev.repeat),
      s: () => act("skip", null, ev.repeat), u: () => { if (!ev.repeat) undo(); },
    };
    const fn = keys[ev.key];
    if (fn) { ev.preventDefault(); fn(); }
  });

  // expose the queue to tests: resolves once every action sent so far has been answered
  window.doohableIdle = () => queue.then(() => upcoming).then(() => true);
  // ... and once the pair on screen takes a vote (it has been shown MIN_VIEW_MS)
  window.doohableReady = () => new Promise((ok) => {
    const poll = () => (refusal(false) === null ? ok(true) : setTimeout(poll, 20));
    poll();
  });

  upcoming = fetchPair();
  advance().catch((e) => say(e.message));
  refreshStats().catch(() => {});
})();
