// The leaderboard's retrain panel (admins): start a retrain, poll its state once a second while
// it runs, then show the held-out pairwise accuracy of the new and the current scorer.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");

  function describe(s) {
    if (s.state === "idle") return "No retrain yet.";
    if (s.state === "running") {
      const of = s.total ? ` ${s.done} of ${s.total}` : (s.done ? ` ${s.done}` : "");
      return `Retraining (started by ${s.started_by}): ${s.stage}${of}…`;
    }
    if (s.state === "failed") return `The last retrain failed: ${s.error}`;
    const r = s.result;
    const cur = r.current.error ? `current model unavailable (${r.current.error})` : `current ${pct(r.current.pairwise_accuracy)}`;
    const verdict = r.promoted ? `promoted to ${r.promoted}, ${r.rescored.scored} images rescored`
      : (r.better ? "better, not promoted" : "not better: kept the current model");
    return `Held-out pairwise accuracy on ${r.votes.measured} votes: new ${pct(r.new.pairwise_accuracy)}, ${cur}. ` +
      `The new model is ${verdict}.`;
  }

  function show(s) {
    $("retrain-status").textContent = describe(s);
    $("retrain-status").dataset.state = s.state;
    $("retrain-start").disabled = s.state === "running";
    if (s.state === "running") setTimeout(poll, 1000);
  }

  async function poll() {
    const res = await fetch("/api/v1/retrain", { credentials: "same-origin" });
    if (res.ok) show(await res.json());
  }

  $("retrain-start").onclick = async () => {
    $("retrain-start").disabled = true;
    const from = $("retrain-from").value;
    const res = await fetch("/api/v1/retrain", {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(from ? { from_model: from } : {}),
    });
    const data = await res.json();
    if (!res.ok) {
      window.doohableUI.toast(window.doohableUI.detail(data) || res.statusText);
      await poll();
      return;
    }
    show(data);
  };
  poll();
})();
