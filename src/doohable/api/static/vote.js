// The voting page: one pair on screen, the next one preloaded; every action goes through
// one queue so that votes, skips and undos reach the server in the order they were made.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const sides = { left: $("left"), right: $("right") };
  let current = null;  // the pair on screen
  let upcoming = null; // a promise of the next pair, images preloading
  let queue = Promise.resolve();
  let busy = false;

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

  function show(pair) {
    current = pair;
    for (const side of ["left", "right"]) {
      const el = sides[side];
      el.classList.remove("picked");
      if (!pair || !pair.pair_token) { el.disabled = true; continue; }
      el.disabled = false;
      el.dataset.imageId = pair[side].id;
      el.querySelector("img").src = pair[side].url;
    }
    $("pair").dataset.token = pair && pair.pair_token ? pair.pair_token : "";
    if (pair && !pair.pair_token) say(pair.detail || "No pair to show.");
  }

  function say(text) { $("message").textContent = text; }

  async function refreshStats() {
    const s = await api("GET", "/api/v1/votes/stats");
    $("today").textContent = s.today;
    $("settled").textContent = `${Math.round(100 * s.settled)}%`;
  }

  async function advance() {
    const next = await upcoming;
    show(next);
    upcoming = fetchPair();
  }

  // Every action: show the next pair at once, then send the action; errors are shown.
  function act(kind, winnerSide) {
    if (busy || !current || !current.pair_token) return;
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
    queue = queue
      .then(send)
      .then(() => say(kind === "vote" ? (winnerSide ? "Vote recorded." : "Recorded: can't decide.") : "Skipped."))
      .then(refreshStats)
      .catch((e) => say(`Not recorded: ${e.message}`));
    advance().catch((e) => say(e.message)).finally(() => { busy = false; });
  }

  function undo() {
    queue = queue
      .then(() => api("POST", "/api/v1/votes/undo"))
      .then((r) => say(r.undone ? "Last vote undone." : "Nothing to undo."))
      .then(refreshStats)
      .catch((e) => say(`Undo failed: ${e.message}`));
  }

  sides.left.addEventListener("click", () => act("vote", "left"));
  sides.right.addEventListener("click", () => act("vote", "right"));
  $("tie").addEventListener("click", () => act("vote", null));
  $("skip").addEventListener("click", () => act("skip"));
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.metaKey || ev.ctrlKey || ev.altKey) return;
    const keys = {
      ArrowLeft: () => act("vote", "left"), ArrowRight: () => act("vote", "right"),
      ArrowDown: () => act("vote", null), ArrowUp: () => act("skip"), s: () => act("skip"), u: undo,
    };
    const fn = keys[ev.key];
    if (fn) { ev.preventDefault(); fn(); }
  });

  // expose the queue to tests: resolves once every action sent so far has been answered
  window.doohableIdle = () => queue.then(() => upcoming).then(() => true);

  upcoming = fetchPair();
  advance().catch((e) => say(e.message));
  refreshStats().catch(() => {});
})();
