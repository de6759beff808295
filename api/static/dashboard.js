// smoltbot dashboard: local times, the integrity chart, and live updates. No dependencies.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  // Path prefix when a reverse proxy serves the dashboard under one (SMOLTBOT_ROOT_PATH).
  var BASE = document.body.getAttribute("data-root") || "";
  var POLL_MS = 4000;

  // ------------------------------------------------------------------ times

  function relative(date) {
    var seconds = Math.round((Date.now() - date.getTime()) / 1000);
    if (seconds < 0) seconds = 0;
    if (seconds < 45) return seconds + " s ago";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    var hours = Math.round(minutes / 60);
    if (hours < 24) return hours + " h ago";
    return date.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function formatTimes(root) {
    var nodes = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var date = new Date(nodes[i].getAttribute("datetime"));
      if (isNaN(date.getTime())) continue;
      nodes[i].textContent = relative(date);
      nodes[i].title = date.toLocaleString();
    }
  }

  // ------------------------------------------------------------------ chart

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function shortDate(iso, spanMs) {
    var date = new Date(iso);
    if (spanMs < 2 * 86400000) return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }

  function drawChart(figure) {
    var points;
    try { points = JSON.parse(figure.getAttribute("data-timeline") || "[]"); } catch (e) { points = []; }
    points = points.filter(function (p) { return p.bucket_start; });
    if (!points.length) return;
    // Measure the space the layout gives the figure (it stretches to the integrity card's height).
    figure.replaceChildren();
    var width = Math.max(figure.clientWidth, 280), height = Math.max(figure.clientHeight, 220);
    var pad = { top: 12, right: 8, bottom: 26, left: 40 };
    var plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
    var svg = el("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img",
      "aria-label": "Share of traces verified per period, with trace volume" });
    el("title", {}, svg).textContent = "Integrity over time";

    [0, 0.5, 1].forEach(function (v) {
      var y = pad.top + plotH * (1 - v);
      el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, "class": "grid-line" }, svg);
      el("text", { x: pad.left - 8, y: y + 4, "text-anchor": "end", "class": "axis-label" }, svg).textContent = (v * 100) + "%";
    });

    var maxTotal = Math.max.apply(null, points.map(function (p) { return p.total_traces; })) || 1;
    var step = plotW / points.length;
    var barW = Math.max(2, Math.min(28, step * 0.6));
    var xs = points.map(function (_, i) { return pad.left + step * (i + 0.5); });

    points.forEach(function (p, i) {
      var h = plotH * 0.45 * (p.total_traces / maxTotal);
      var bar = el("rect", { x: xs[i] - barW / 2, y: pad.top + plotH - h, width: barW, height: Math.max(h, 0), rx: 2, "class": "bar" }, svg);
      el("title", {}, bar).textContent = new Date(p.bucket_start).toLocaleString() + ": " + p.total_traces +
        " traces, " + p.verified_traces + " verified";
    });

    var scored = [];
    points.forEach(function (p, i) { if (p.score !== null && p.score !== undefined) scored.push([xs[i], pad.top + plotH * (1 - p.score), p]); });
    if (scored.length > 1) {
      var d = scored.map(function (s, i) { return (i ? "L" : "M") + s[0].toFixed(1) + " " + s[1].toFixed(1); }).join(" ");
      var area = d + " L" + scored[scored.length - 1][0].toFixed(1) + " " + (pad.top + plotH) + " L" + scored[0][0].toFixed(1) + " " + (pad.top + plotH) + " Z";
      el("path", { d: area, "class": "area" }, svg);
      el("path", { d: d, "class": "line" }, svg);
    }
    if (scored.length <= 60) {
      scored.forEach(function (s) {
        var dot = el("circle", { cx: s[0], cy: s[1], r: 3.5, "class": "dot" + (s[2].score < 0.8 ? " low" : "") }, svg);
        el("title", {}, dot).textContent = Math.round(s[2].score * 100) + "% of " + s[2].total_traces + " traces verified · " +
          new Date(s[2].bucket_start).toLocaleString();
      });
    }

    var span = new Date(points[points.length - 1].bucket_start) - new Date(points[0].bucket_start);
    var labelIdx = points.length === 1 ? [0] : [0, Math.floor((points.length - 1) / 2), points.length - 1];
    labelIdx.filter(function (v, i, a) { return a.indexOf(v) === i; }).forEach(function (i, n, all) {
      var anchor = all.length === 1 ? "middle" : (n === 0 ? "start" : (n === all.length - 1 ? "end" : "middle"));
      var x = anchor === "start" ? xs[i] - barW / 2 : anchor === "end" ? xs[i] + barW / 2 : xs[i];
      el("text", { x: x, y: height - 6, "text-anchor": anchor, "class": "axis-label" }, svg).textContent = shortDate(points[i].bucket_start, span);
    });

    if (points.length === 1) {
      el("text", { x: width - pad.right, y: pad.top + 14, "text-anchor": "end", "class": "axis-label" }, svg)
        .textContent = "one period so far: the line grows as traces arrive";
    }

    figure.replaceChildren(svg);
  }

  function drawCharts(root) {
    var figures = root.querySelectorAll("[data-chart]");
    for (var i = 0; i < figures.length; i++) drawChart(figures[i]);
  }

  // ------------------------------------------------------------------ live updates

  function startLive(root) {
    var agent = root.getAttribute("data-agent");
    var status = document.querySelector("[data-live-status]");
    var statusText = status && status.querySelector("[data-live-text]");
    var signature = root.getAttribute("data-trace-count") + "|" + root.getAttribute("data-last-seen");
    var lastOk = Date.now();
    var busy = false;

    function setStatus(kind, text) {
      if (!status) return;
      status.classList.remove("paused", "offline", "flash");
      if (kind) status.classList.add(kind);
      statusText.textContent = text;
    }

    function knownTraceIds() {
      var ids = {};
      root.querySelectorAll("[data-trace-id]").forEach(function (row) { ids[row.getAttribute("data-trace-id")] = true; });
      return ids;
    }

    function refresh() {
      return fetch(BASE + "/agents/" + encodeURIComponent(agent) + "/live", { headers: { accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var before = knownTraceIds();
          root.innerHTML = html;
          root.querySelectorAll("[data-trace-id]").forEach(function (row) {
            if (!before[row.getAttribute("data-trace-id")]) row.classList.add("new");
          });
          formatTimes(root);
          drawCharts(root);
          setStatus("flash", "updated just now");
        });
    }

    function poll() {
      if (busy) return;
      if (document.hidden) { setStatus("paused", "paused"); return; }
      busy = true;
      fetch(BASE + "/v1/agents/" + encodeURIComponent(agent), { headers: { accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          lastOk = Date.now();
          var next = data.trace_count + "|" + (data.last_seen_at || "");
          if (next !== signature) {
            signature = next;
            root.setAttribute("data-trace-count", data.trace_count);
            return refresh();
          }
          var ago = Math.round((Date.now() - lastOk) / 1000);
          setStatus(null, ago < 2 ? "live" : "live · " + ago + " s");
        })
        .catch(function () { setStatus("offline", "reconnecting…"); })
        .then(function () { busy = false; formatTimes(document); });
    }

    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
    setInterval(poll, POLL_MS);
  }

  // ------------------------------------------------------------------ drift acknowledgement

  // The owner types the agent's credential; it goes to this server's own API in a header, once,
  // and is never stored (the field is cleared at once). Delegated: the live refresh replaces forms.
  function onAcknowledge(event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-ack]")) return;
    event.preventDefault();
    var input = form.querySelector("input[name=credential]");
    var status = form.querySelector("[data-ack-status]");
    var credential = input ? input.value.trim() : "";
    if (input) input.value = "";
    if (!credential) { status.textContent = "Enter the agent's credential."; return; }
    status.textContent = "…";
    fetch(BASE + form.getAttribute("data-ack"), {
      method: "POST", headers: { "x-api-key": credential, accept: "application/json" },
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.ok) { status.textContent = "Acknowledged"; form.classList.add("done"); }
        else { status.textContent = (body && body.error && body.error.message) || ("Error " + response.status); }
      });
    }).catch(function () { status.textContent = "The API could not be reached."; });
  }

  // ------------------------------------------------------------------ start

  function start() {
    formatTimes(document);
    drawCharts(document);
    var resizeTimer;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { drawCharts(document); }, 150);
    });
    var live = document.querySelector("[data-live-root]");
    if (live) startLive(live);
    document.addEventListener("submit", onAcknowledge);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
