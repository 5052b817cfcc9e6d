// ==UserScript==
// @name         doohable: Add to doohable
// @namespace    https://github.com/doohable/doohable
// @version      0.1.0
// @description  Adds an "Add to doohable" button on every image of a page (Instagram, Twitter/X, any site) and sends it to your doohable server.
// @match        *://*/*
// @grant        GM_xmlhttpRequest
// @grant        GM.xmlHttpRequest
// @grant        GM_getValue
// @grant        GM_setValue
// @connect      __DOOHABLE_HOST__
// @run-at       document-idle
// ==/UserScript==
// Served by the doohable app at /userscript/doohable.user.js with the server address filled in.
// Your API token is asked once and kept in the userscript manager's storage (GM_setValue).

(function () {
  "use strict";
  const SERVER = "__DOOHABLE_SERVER__";
  const ROUTE = SERVER.replace(/\/$/, "") + "/api/v1/images/url";
  const MIN_SIDE = 150; // px: smaller images (icons, avatars) get no button
  const MARK = "data-doohable";
  const PRIORITY = ["article img", '[data-testid="tweetPhoto"] img'];

  function getValue(key) {
    if (typeof GM_getValue === "function") return GM_getValue(key, null);
    try { return window.localStorage.getItem("doohable:" + key); } catch (e) { return null; }
  }
  function setValue(key, value) {
    if (typeof GM_setValue === "function") return GM_setValue(key, value);
    try { window.localStorage.setItem("doohable:" + key, value); } catch (e) { /* storage blocked */ }
  }
  function token() {
    let t = getValue("token");
    if (!t) {
      t = window.prompt("doohable: paste your API token (doohable users add NAME)");
      if (t) setValue("token", t.trim());
    }
    return t ? t.trim() : null;
  }

  function network() {
    const h = location.hostname.replace(/^www\./, "");
    if (h.endsWith("instagram.com")) return "instagram";
    if (h.endsWith("twitter.com") || h === "x.com" || h.endsWith(".x.com")) return "twitter";
    return h || "web";
  }

  function bestSrc(img) {
    // the largest candidate of srcset, else what the browser shows
    const set = (img.getAttribute("srcset") || "").split(",").map((s) => s.trim().split(/\s+/))
      .filter((p) => p[0]).map((p) => ({ url: p[0], w: parseFloat(p[1]) || 0 }));
    set.sort((a, b) => b.w - a.w);
    const raw = set.length && set[0].w ? set[0].url : img.currentSrc || img.src;
    return new URL(raw, location.href).href;
  }

  function context(img) {
    const box = img.closest("article") || img.closest('[data-testid="tweet"]') || document.body;
    const pick = (sel) => { const el = box.querySelector(sel); return el ? el.textContent.trim() : null; };
    const author = pick('[data-testid="User-Name"] a') || pick("header a") || pick('[rel="author"]') ||
      (document.querySelector('meta[name="author"]') || {}).content || null;
    const caption = pick('[data-testid="tweetText"]') || pick("h1") || pick("figcaption") || img.alt || null;
    const link = box !== document.body ? box.querySelector('a[href*="/p/"], a[href*="/status/"]') : null;
    return { author, caption: caption ? caption.slice(0, 2000) : null, page_url: link ? link.href : location.href };
  }

  function send(payload, t) {
    const headers = { "Content-Type": "application/json", "Authorization": "Bearer " + t };
    const body = JSON.stringify(payload);
    const gmx = typeof GM_xmlhttpRequest === "function" ? GM_xmlhttpRequest
      : typeof GM !== "undefined" && GM && GM.xmlHttpRequest ? GM.xmlHttpRequest : null;
    if (gmx) {
      return new Promise((resolve) => gmx({
        method: "POST", url: ROUTE, headers, data: body,
        onload: (r) => { let d = null; try { d = JSON.parse(r.responseText); } catch (e) { /* not JSON */ }
          resolve({ ok: r.status >= 200 && r.status < 300, status: r.status, data: d }); },
        onerror: () => resolve({ ok: false, status: 0, data: { detail: "cannot reach " + SERVER } }),
      }));
    }
    return fetch(ROUTE, { method: "POST", mode: "cors", headers, body })
      .then((r) => r.json().catch(() => null).then((d) => ({ ok: r.ok, status: r.status, data: d })))
      .catch(() => ({ ok: false, status: 0, data: { detail: "cannot reach " + SERVER } }));
  }

  async function add(img, button) {
    const t = token();
    if (!t) { show(button, false, "no token"); return; }
    button.disabled = true;
    button.textContent = "Adding…";
    const payload = Object.assign({ url: bestSrc(img), network: network() }, context(img));
    const r = await send(payload, t);
    if (r.status === 401) setValue("token", "");
    const d = r.data || {};
    show(button, r.ok, r.ok ? (d.duplicate ? "Already in doohable" : "Added to doohable") + (d.score != null ? ` (${Number(d.score).toFixed(2)})` : "")
      : d.detail || "error " + r.status);
  }

  function show(button, ok, message) {
    button.disabled = false;
    button.textContent = (ok ? "✓ " : "✗ ") + message;
    button.title = message;
    button.setAttribute("data-doohable-result", ok ? "ok" : "error");
    button.style.background = ok ? "#1aa34a" : "#b00020";
  }

  function decorate(img) {
    if (img.hasAttribute(MARK)) return;
    const w = img.naturalWidth || img.width, h = img.naturalHeight || img.height;
    const prioritised = PRIORITY.some((sel) => img.matches(sel));
    if (!prioritised && (w < MIN_SIDE || h < MIN_SIDE)) return;
    if (!img.currentSrc && !img.src) return;
    img.setAttribute(MARK, "1");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "doohable-add";
    button.textContent = "Add to doohable";
    button.style.cssText = "position:absolute;z-index:2147483647;padding:4px 8px;font:12px/1.2 system-ui,sans-serif;" +
      "color:#fff;background:#0a6cff;border:0;border-radius:6px;cursor:pointer;opacity:.92;";
    const parent = img.parentElement;
    if (!parent) return;
    if (getComputedStyle(parent).position === "static") parent.style.position = "relative";
    button.style.top = img.offsetTop + 8 + "px";
    button.style.left = img.offsetLeft + 8 + "px";
    button.addEventListener("click", (e) => { e.preventDefault(); e.stopPropagation(); add(img, button); }, true);
    parent.insertBefore(button, img.nextSibling);
  }

  function scan(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("img").forEach((img) => {
      if (img.complete) decorate(img); else img.addEventListener("load", () => decorate(img), { once: true });
    });
  }

  function start() {
    scan(document);
    new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach((n) => {
      if (n.nodeType !== 1) return;
      if (n.tagName === "IMG") scan(n.parentElement || document); else scan(n);
    }))).observe(document.documentElement, { childList: true, subtree: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
