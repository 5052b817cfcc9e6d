// Shared page helpers: a toast that stays on screen (fixed, any size), plurals, byte sizes,
// alt text from image metadata, the image viewer (full size, zoom, metadata) and the `?` overlay.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const plural = (n, word) => (n === 1 ? word : word + "s");

  function bytes(n) {
    if (n === null || n === undefined) return "size –";
    if (n < 1024) return `${n} B`;
    if (n < 1 << 20) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / (1 << 20)).toFixed(1)} MB`;
  }

  function altText(it) {
    if (it.caption) return it.caption.slice(0, 200);
    const by = it.author ? ` by ${it.author}` : "";
    const on = it.source ? ` from ${it.source}` : "";
    return `image ${it.id}${by}${on}`;
  }

  function partsText(parts) {
    if (!parts || typeof parts !== "object") return "";
    const bits = Object.entries(parts).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${v.toFixed(2)}`);
    return bits.length ? ` (${bits.join(", ")})` : "";
  }

  // keys typed into a text field are not shortcuts; a slider or a button keeps them working
  function typing(e) {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return true;
    if (t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return true;
    return t instanceof HTMLInputElement && !["range", "checkbox", "radio", "button", "submit"].includes(t.type);
  }

  // an API error's reason: {"detail": "..."} or FastAPI's list of validation errors
  function detail(data) {
    const d = data && data.detail;
    if (Array.isArray(d)) return d.map((x) => `${(x.loc || []).slice(1).join(".")}: ${x.msg}`).join("; ");
    return typeof d === "string" ? d : null;
  }

  let toastTimer = null;
  function toast(text, action) {
    const box = $("toast");
    $("toast-text").textContent = text;
    const btn = $("toast-action");
    btn.hidden = !action;
    if (action) { btn.textContent = action.label; btn.onclick = action.run; }
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 10000);
  }

  function fact(dl, name, value) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = name; dd.textContent = value;
    dl.append(dt, dd);
  }

  function openViewer(it) {
    const dlg = $("viewer");
    const img = $("viewer-img");
    img.src = it.url; img.alt = altText(it);
    img.classList.remove("zoomed");
    const dl = $("viewer-facts");
    dl.replaceChildren();
    fact(dl, "Image", `#${it.id}`);
    fact(dl, "Score", it.score === null || it.score === undefined ? "not scored" : it.score.toFixed(3) + partsText(it.parts));
    fact(dl, "Status", it.decided_by ? `${it.status} (${it.decided_by === "auto" ? "auto: " + it.decided_rule : "by " + it.decided_by})` : it.status);
    fact(dl, "Source", it.source);
    fact(dl, "Author", it.author);
    fact(dl, "Posted", it.posted_at ? new Date(it.posted_at).toLocaleString() : null);
    fact(dl, "Added", it.created_at ? new Date(it.created_at).toLocaleString() : null);
    fact(dl, "Size", `${it.width}×${it.height} px · ${bytes(it.size_bytes)}`);
    fact(dl, "Caption", it.caption);
    if (it.page_url) fact(dl, "Page", it.page_url);
    if (!dlg.open) dlg.showModal();
  }

  function zoom() { $("viewer-img").classList.toggle("zoomed"); }

  document.addEventListener("DOMContentLoaded", () => {
    $("viewer-img")?.addEventListener("click", zoom);
    $("viewer-close")?.addEventListener("click", () => $("viewer").close());
    $("help-close")?.addEventListener("click", () => $("help").close());
    $("toast-close")?.addEventListener("click", () => { $("toast").hidden = true; });
  });
  document.addEventListener("keydown", (e) => {
    if (typing(e)) return;
    if (e.key === "?" && $("help")) { e.preventDefault(); $("help").open ? $("help").close() : $("help").showModal(); }
    else if ((e.key === "z" || e.key === "+" || e.key === "-") && $("viewer")?.open) { e.preventDefault(); zoom(); }
  }, true);

  window.doohableUI = { detail, plural, bytes, altText, partsText, typing, toast, openViewer };
})();
