// The action-ledger console's script: plain JS, no build step, loaded with `defer` from the
// console's own origin (the CSP allows no inline script). Every page works without it; it
// adds: relative times with a remembered UTC/local switch, copy buttons, timeline bars, and
// live updates over one watch stream per tab (/console/watch, the native watch stream under
// the sign-in cookie), resumed with Last-Event-ID.
//
// What it relies on in the pages (also what the browser tests use):
//   main[data-watch]            the watch query of the page (list, resource: its filters;
//                               action: action=ID); main[data-first-page] on lists;
//                               main[data-after] the log position the page was rendered at
//   #actions-body tr.action-row[data-id][data-status][data-progress]  one row per action,
//                               with .status (badge), progress.progress and .pct inside
//   #new-bar (.shown when new actions arrived), #new-count, #new-bar-link
//   #live-toggle[aria-pressed], #live-status
//   main.action-page[data-id][data-status][data-progress][data-live], #action-status,
//   #action-progress-cell progress.progress, #action-stale (.shown after other events)
//   #tz-toggle, time.t[datetime], button.copy[data-copy], li.span[data-left][data-width]
//   #histogram[data-query]      the activity histogram: drawn from /console/histogram with
//                               the list's filters (data-total: the count it drew)
(function () {
  "use strict";
  var TZ_KEY = "action-ledger-console-tz";
  var TERMINAL = { completed: 1, failed: 1, cancelled: 1 };
  var STATUS_AFTER = {
    created: null, started: "running", progress: "running", event_started: "running",
    event_finished: "running", completed: "completed", failed: "failed", cancelled: "cancelled"
  };

  // ---- times ----
  function useLocal() { try { return localStorage.getItem(TZ_KEY) === "local"; } catch (e) { return false; } }
  function relative(ms) {
    var s = Math.round((Date.now() - ms) / 1000), future = s < 0, a = Math.abs(s), t;
    if (a < 45) t = a + " s";
    else if (a < 2700) t = Math.round(a / 60) + " min";
    else if (a < 64800) t = Math.round(a / 3600) + " h";
    else t = Math.round(a / 86400) + " d";
    return future ? "in " + t : t + " ago";
  }
  function absolute(d) {
    if (!useLocal()) return d.toISOString().replace(".000Z", "Z") + " UTC";
    return d.toLocaleString();
  }
  function renderTimes() {
    var els = document.querySelectorAll("time.t[datetime]");
    for (var i = 0; i < els.length; i++) {
      var d = new Date(els[i].getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      els[i].textContent = relative(d.getTime());
      els[i].title = absolute(d) + " (" + els[i].getAttribute("datetime") + ")";
    }
    var b = document.getElementById("tz-toggle");
    if (b) {
      b.textContent = useLocal() ? "Local time" : "UTC";
      b.setAttribute("aria-pressed", useLocal() ? "true" : "false");
    }
  }

  // ---- copy ----
  function onCopy(ev) {
    var b = ev.target.closest ? ev.target.closest("button.copy[data-copy]") : null;
    if (!b) return;
    var text = b.getAttribute("data-copy");
    var done = function () { b.classList.add("copied"); b.textContent = "Copied";
      setTimeout(function () { b.classList.remove("copied"); b.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, function () {});
  }

  // ---- timeline bars (percentages from data attributes; no style attributes in HTML) ----
  function placeSpans() {
    var spans = document.querySelectorAll("li.span[data-left][data-width]");
    for (var i = 0; i < spans.length; i++) {
      var bar = spans[i].querySelector(".span-bar");
      if (!bar) continue;
      bar.style.left = spans[i].getAttribute("data-left") + "%";
      bar.style.width = spans[i].getAttribute("data-width") + "%";
    }
  }

  // ---- live ----
  function setProgress(container, value) {
    if (!container || value === null || value === undefined) return;
    var p = container.querySelector("progress.progress");
    if (p) { p.value = value; p.textContent = value + "%"; }
    var pct = container.querySelector(".pct");
    if (pct) pct.textContent = (value % 1 === 0 ? value.toFixed(0) : value.toFixed(1)) + "%";
  }
  function setStatus(container, status) {
    if (!container || !status) return;
    var badge = container.querySelector(".status");
    if (badge) { badge.className = "badge status status-" + status; badge.textContent = status; }
  }

  function Live(main) {
    this.main = main;
    this.query = main.getAttribute("data-watch") || "";
    this.source = null;
    // The position the page was rendered at: the stream starts after it, so events committed
    // between the page's query and this script (or while paused) are not missed.
    this.lastId = main.getAttribute("data-after");
    this.fresh = 0;
    this.seen = {};
    this.on = true;
    this.status = document.getElementById("live-status");
    this.toggle = document.getElementById("live-toggle");
    var rows = document.querySelectorAll("#actions-body tr.action-row");
    this.maxId = 0;
    for (var i = 0; i < rows.length; i++) this.maxId = Math.max(this.maxId, +rows[i].getAttribute("data-id"));
  }
  Live.prototype.say = function (text) { if (this.status) this.status.textContent = text; };
  Live.prototype.open = function () {
    var self = this, url = "/console/watch" + (this.query ? "?" + this.query : "");
    if (this.lastId !== null) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(this.lastId);
    this.source = new EventSource(url);
    this.source.onopen = function () { self.say("live"); };
    this.source.onerror = function () { self.say(self.source && self.source.readyState === 2 ? "offline" : "reconnecting…"); };
    var handler = function (ev) { self.lastId = ev.lastEventId || self.lastId; self.handle(ev.type, ev.data); };
    for (var t in STATUS_AFTER) this.source.addEventListener(t, handler);
    this.source.addEventListener("heartbeat", handler);
    this.source.addEventListener("cancel_requested", handler);
    this.source.addEventListener("revoked", function () { self.close(); self.say("signed out (token revoked)"); });
  };
  Live.prototype.close = function () { if (this.source) { this.source.close(); this.source = null; } };
  Live.prototype.handle = function (type, data) {
    var msg; try { msg = JSON.parse(data); } catch (e) { return; }
    var id = msg.action && msg.action.id, ev = msg.event || {};
    var status = STATUS_AFTER[type] || null, progress = typeof ev.progress === "number" ? ev.progress : null;
    if (type === "completed") progress = 100;
    var main = this.main;
    if (main.classList.contains("action-page")) {
      if (String(id) !== main.getAttribute("data-id")) return;
      if (status) { main.setAttribute("data-status", status); setStatus(document.getElementById("action-status"), status); }
      if (progress !== null) { main.setAttribute("data-progress", progress); setProgress(document.getElementById("action-progress-cell"), progress); }
      if (type !== "progress" && type !== "heartbeat") {
        var stale = document.getElementById("action-stale"); if (stale) stale.classList.add("shown");
      }
      if (status && TERMINAL[status]) { this.close(); this.say("finished"); }
      return;
    }
    var row = document.querySelector('#actions-body tr.action-row[data-id="' + id + '"]');
    if (row) {
      if (status) { row.setAttribute("data-status", status); setStatus(row, status); }
      if (progress !== null) { row.setAttribute("data-progress", progress); setProgress(row, progress); }
      return;
    }
    if (type === "created" && id > this.maxId && !this.seen[id] && main.getAttribute("data-first-page") === "true") {
      this.seen[id] = 1;
      this.fresh += 1;
      var bar = document.getElementById("new-bar"), count = document.getElementById("new-count");
      if (count) count.textContent = String(this.fresh);
      if (bar) bar.classList.add("shown");
    }
  };
  Live.prototype.setOn = function (on) {
    this.on = on;
    if (this.toggle) { this.toggle.setAttribute("aria-pressed", on ? "true" : "false"); this.toggle.textContent = on ? "Live" : "Paused"; }
    if (on) { this.say("connecting…"); this.open(); } else { this.close(); this.say("paused"); }
  };

  // ---- activity histogram (GET /console/histogram: counts per bucket and status) ----
  var STATUSES = ["queued", "running", "completed", "failed", "cancelled"];
  var SVG = "http://www.w3.org/2000/svg";
  function drawHistogram() {
    var el = document.getElementById("histogram");
    if (!el || !window.fetch || !window.URLSearchParams) return;
    var params = new URLSearchParams(el.getAttribute("data-query") || "");
    var to = params.get("until") ? new Date(params.get("until")) : new Date();
    var from = params.get("since") ? new Date(params.get("since")) : new Date(to.getTime() - 86400e3);
    if (isNaN(to.getTime()) || isNaN(from.getTime()) || from >= to) return;
    var span = to - from, interval = span <= 3 * 3600e3 ? "minute" : span <= 30 * 86400e3 ? "hour" : "day";
    if (interval === "day" && span / 86400e3 > 1900) from = new Date(to.getTime() - 1900 * 86400e3);
    params.set("interval", interval); params.set("from", from.toISOString()); params.set("to", to.toISOString());
    fetch("/console/histogram?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (h) { if (h) renderHistogram(el, h); }, function () {});
  }
  function renderHistogram(el, h) {
    var n = h.buckets.length, max = 1, i, j;
    for (i = 0; i < n; i++) max = Math.max(max, h.buckets[i].total);
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + n + " 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", h.total + " actions per " + h.interval + (h.complete ? "" : " (incomplete count)"));
    for (i = 0; i < n; i++) {
      var b = h.buckets[i], y = 100, g = document.createElementNS(SVG, "g");
      var title = document.createElementNS(SVG, "title"), parts = [];
      for (j = 0; j < STATUSES.length; j++) {
        var c = b.counts[STATUSES[j]];
        if (!c) continue;
        parts.push(c + " " + STATUSES[j]);
        var height = c / max * 100, r = document.createElementNS(SVG, "rect");
        y -= height;
        r.setAttribute("x", i + 0.1); r.setAttribute("width", 0.8);
        r.setAttribute("y", y); r.setAttribute("height", height);
        r.setAttribute("class", "h-" + STATUSES[j]);
        g.appendChild(r);
      }
      title.textContent = b.start + " – " + b.end + ": " + (parts.join(", ") || "none");
      var hit = document.createElementNS(SVG, "rect");
      hit.setAttribute("x", i); hit.setAttribute("width", 1); hit.setAttribute("y", 0); hit.setAttribute("height", 100);
      hit.setAttribute("class", "h-hit"); hit.setAttribute("data-i", i);
      g.appendChild(title); g.appendChild(hit);
      svg.appendChild(g);
    }
    // Click a bucket, or drag over several, to narrow the list to that time range.
    var down = null;
    svg.addEventListener("mousedown", function (ev) { var a = ev.target.getAttribute("data-i"); if (a !== null) { down = +a; ev.preventDefault(); } });
    svg.addEventListener("mouseup", function (ev) {
      var a = ev.target.getAttribute("data-i");
      if (down === null || a === null) { down = null; return; }
      var lo = Math.min(down, +a), hi = Math.max(down, +a), q = new URLSearchParams(el.getAttribute("data-query") || "");
      q.set("since", h.buckets[lo].start); q.set("until", h.buckets[hi].end); q.delete("cursor"); q.delete("back");
      window.location.assign("/console/actions?" + q.toString());
    });
    // Below the bars: the range, the interval, and which colour is which status.
    var caption = document.createElement("div");
    caption.className = "h-caption";
    var range = document.createElement("span");
    var shortTime = function (t) { return t.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC"); };
    range.textContent = shortTime(h.from) + " — " + shortTime(h.to) + " · " + h.total +
      " created, per " + h.interval + (h.complete ? "" : " (counted up to the read limit)");
    caption.appendChild(range);
    for (j = 0; j < STATUSES.length; j++) {
      var key = document.createElement("span");
      key.className = "h-key h-key-" + STATUSES[j];
      key.textContent = STATUSES[j];
      caption.appendChild(key);
    }
    el.textContent = "";
    el.appendChild(svg);
    el.appendChild(caption);
    el.setAttribute("data-total", h.total);
  }

  function start() {
    renderTimes();
    setInterval(renderTimes, 30000);
    placeSpans();
    drawHistogram();
    document.addEventListener("click", onCopy);
    var tz = document.getElementById("tz-toggle");
    if (tz) tz.addEventListener("click", function () {
      try { localStorage.setItem(TZ_KEY, useLocal() ? "utc" : "local"); } catch (e) {}
      renderTimes();
    });
    var main = document.querySelector("main[data-watch]");
    if (!main || !window.EventSource) return;
    if (main.classList.contains("action-page") && main.getAttribute("data-live") !== "true") return;
    var live = new Live(main);
    if (live.toggle) live.toggle.addEventListener("click", function () { live.setOn(!live.on); });
    live.open();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
