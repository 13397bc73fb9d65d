// aiaas console: upload with progress, the try-it box, and live training curves.
// Every tenant string goes into the page as textContent, never as HTML.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

function errorText(xhrText, status) {
  try {
    const doc = new DOMParser().parseFromString(xhrText, "text/html");
    const msg = doc.querySelector(".error-message");
    if (msg) return msg.textContent;
  } catch (e) { /* fall through */ }
  return "The server answered " + status + ".";
}

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("file-input");
  const zone = document.getElementById("dropzone");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) input.files = e.dataTransfer.files;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!input.files.length) { status.textContent = "Choose a file first."; return; }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading…";
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) bar.value = Math.round(100 * ev.loaded / ev.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 100;
        const body = JSON.parse(xhr.responseText);
        status.textContent = "Uploaded as " + body.id + ".";
        window.location.assign(body.url);
      } else {
        status.textContent = "Upload failed: " + errorText(xhr.responseText, xhr.status);
      }
    });
    xhr.addEventListener("error", () => { status.textContent = "Upload failed: network error."; });
    xhr.send(new FormData(form));
  });
}

function drawLabelBars(target, scores) {
  const box = document.createElement("div");
  box.className = "try-bars";
  for (const s of scores) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "wrap try-label";
    name.textContent = s.label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * Math.max(0, Math.min(1, s.score))).toFixed(1) + "%";  // CSSOM: allowed by the CSP
    track.appendChild(fill);
    const value = document.createElement("span");
    value.textContent = s.score.toFixed(3);
    row.append(name, track, value);
    box.appendChild(row);
  }
  target.replaceChildren(box);
}

function setupTryIt() {
  const form = document.getElementById("try-form");
  if (!form) return;
  const out = document.getElementById("try-result");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    out.textContent = "…";
    const resp = await fetch(form.getAttribute("action"), { method: "POST", body: new FormData(form),
                                                           credentials: "same-origin" });
    const text = await resp.text();
    if (!resp.ok) { out.textContent = "Failed: " + errorText(text, resp.status); return; }
    const result = JSON.parse(text).result;
    if (result.scores) {
      drawLabelBars(out, result.scores);
      const top = document.createElement("p");
      top.className = "try-top";
      top.textContent = "Prediction: " + (result.label !== undefined ? result.label : (result.labels || []).join(", "));
      out.prepend(top);
    } else {
      out.textContent = "Value: " + result.value;
    }
  });
}

function setupCurves() {
  const box = document.getElementById("curves");
  if (!box || typeof EventSource === "undefined") return;
  const counter = document.getElementById("curve-points");
  const loss = { step: [], train: [], valStep: [] };
  const trainPts = [];   // [step, loss]
  const evalPts = [];    // [step, val loss, accuracy, macro_f1]
  let lossPlot = null, scorePlot = null;
  const width = () => Math.max(280, box.clientWidth - 10);

  function series(points, idx) { return points.map((p) => (p[idx] === undefined ? null : p[idx])); }

  function redraw() {
    counter.textContent = String(trainPts.length + evalPts.length);
    box.dataset.points = String(trainPts.length + evalPts.length);
    if (typeof uPlot === "undefined") return;
    // Losses: train points every log step, validation points once an epoch; one x axis of steps.
    const steps = Array.from(new Set(trainPts.map((p) => p[0]).concat(evalPts.map((p) => p[0])))).sort((a, b) => a - b);
    const trainBy = new Map(trainPts.map((p) => [p[0], p[1]]));
    const evalBy = new Map(evalPts.map((p) => [p[0], p]));
    const lossData = [steps, steps.map((s) => trainBy.has(s) ? trainBy.get(s) : null),
                      steps.map((s) => evalBy.has(s) && evalBy.get(s)[1] !== undefined ? evalBy.get(s)[1] : null)];
    const evalSteps = evalPts.map((p) => p[0]);
    const scoreData = [evalSteps, series(evalPts, 2), series(evalPts, 3)];
    if (!lossPlot) {
      lossPlot = new uPlot({ title: "Loss", width: width(), height: 220, scales: { x: { time: false } },
        series: [{ label: "step" }, { label: "train loss", stroke: "#2f6fde", spanGaps: true },
                 { label: "validation loss", stroke: "#c0392b", spanGaps: true, points: { show: true } }] },
        lossData, document.getElementById("loss-chart"));
      scorePlot = new uPlot({ title: "Validation accuracy / macro-F1", width: width(), height: 220,
        scales: { x: { time: false }, y: { range: [0, 1] } },
        series: [{ label: "step" }, { label: "accuracy", stroke: "#1e8e3e", points: { show: true } },
                 { label: "macro-F1", stroke: "#9a6700", points: { show: true } }] },
        scoreData, document.getElementById("score-chart"));
    } else {
      lossPlot.setData(lossData);
      scorePlot.setData(scoreData);
    }
  }

  function showStatus(status) {  // the badge was drawn when the page loaded; the stream keeps it current
    const badge = document.querySelector("#job-status .status");
    if (badge && badge.textContent !== status) {
      badge.textContent = status;
      badge.className = "status s-" + status;
    }
  }

  const seen = new Set();  // a reconnecting EventSource replays from the start: count each event once
  const source = new EventSource(box.dataset.stream);
  source.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    if (seen.has(ev.id)) return;
    seen.add(ev.id);
    if (ev.type !== "metrics" || !ev.data) return;
    if (!box.dataset.done) showStatus("running");
    const d = ev.data;
    if (d.split === "validation") evalPts.push([d.step, d.loss, d.accuracy, d.macro_f1]);
    else if (typeof d.loss === "number") trainPts.push([d.step, d.loss]);
    redraw();
  };
  source.addEventListener("end", (msg) => {
    source.close();
    box.dataset.done = "1";
    showStatus(JSON.parse(msg.data).status);
    redraw();
  });
  source.onerror = () => { if (box.dataset.done) source.close(); };
  window.addEventListener("resize", () => {
    if (lossPlot) { lossPlot.setSize({ width: width(), height: 220 }); scorePlot.setSize({ width: width(), height: 220 }); }
  });
  redraw();
}

// The deployment page's request rate and latency charts: the server draws them; every few seconds, while
// the tab is shown, the page fetches the fragment again and swaps it in. A hidden tab fetches nothing.
function setupLiveCharts() {
  const first = document.getElementById("traffic-live");
  if (!first || !first.dataset.refresh) return;
  const url = first.dataset.refresh;
  const every = 1000 * Math.max(1, Number(first.dataset.every) || 5);
  let timer = null, busy = false, stopped = false, redraws = 0;

  function schedule() {
    if (!stopped && !busy && timer === null && !document.hidden) timer = setTimeout(refresh, every);
  }
  async function refresh() {
    timer = null;
    if (stopped || busy || document.hidden) return;
    busy = true;
    try {
      const resp = await fetch(url, { credentials: "same-origin" });
      // Signed out (sent to the sign-in page), the scope gone or the deployment deleted: stop asking.
      if (resp.redirected || !resp.ok) { stopped = true; return; }
      const fresh = new DOMParser().parseFromString(await resp.text(), "text/html").getElementById("traffic-live");
      const shown = document.getElementById("traffic-live");
      if (fresh && shown) {
        shown.replaceWith(document.adoptNode(fresh));
        redraws += 1;
        document.body.dataset.chartRedraws = String(redraws);
      }
    } catch (e) {
      // The network dropped a request: the next tick tries again.
    } finally {
      busy = false;
    }
    schedule();
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (timer !== null) { clearTimeout(timer); timer = null; }
    } else if (timer === null) {
      refresh();  // back on screen: up to date at once, then every few seconds again
    }
  });
  schedule();
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload();
  setupTryIt();
  setupCurves();
  setupLiveCharts();
});
