// The page of `brainmaps serve`: upload, follow the job, show the result and the map.
// Plain JavaScript, no build step; the only library is NiiVue, served from /static/vendor.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { health: null, job: null, results: [], scan: 0, nv: null, mapMax: 1 };

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), ...authHeaders() },
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function fmt(x, digits = 3) {
  return Number(x).toFixed(digits);
}

async function loadHealth() {
  const health = await (await fetch("/health")).json();
  state.health = health;
  const m = health.model;
  const what = m.task === "classification"
    ? `classifies ${m.target} (${m.classes.join(" / ")})`
    : `predicts ${m.target}`;
  $("model").textContent =
    `Run ${m.run}: a ${m.model} ensemble of ${m.n_models} fold models that ${what}, ` +
    `on a ${m.grid.join("×")} grid; maps: ${m.methods.join(", ") || "none"}.`;
  $("limits").textContent =
    `Up to ${health.max_upload_mb} MB per upload, up to ${health.max_scans} scans per zip.`;
  $("token-row").hidden = !health.auth;
  const select = $("method");
  select.innerHTML = "";
  for (const name of m.methods) select.add(new Option(name, name));
}

async function upload(file) {
  showError("");
  $("result-panel").hidden = true;
  $("viewer-panel").hidden = true;
  $("progress-panel").hidden = false;
  setStage("receiving", 0, "uploading…");
  $("stage-registering").textContent = "registration";
  const body = new FormData();
  body.append("file", file, file.name);
  const space = encodeURIComponent($("space").value);
  let job;
  try {
    job = await (await api(`/predict?space=${space}`, { method: "POST", body })).json();
  } catch (error) {
    $("progress-panel").hidden = true;
    const retry = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
    const named = error.message.includes(file.name) ? error.message : `${file.name}: ${error.message}`;
    showError(`${named}${retry}`);
    return;
  }
  state.job = job.id;
  await follow(job.id);
}

function setStage(stage, progress, text) {
  $("bar").value = progress;
  $("stage-text").textContent = text || stage;
  const base = stage.split(":")[0].split(" ")[0];
  let reached = true;
  for (const li of $("stages").children) {
    const here = li.dataset.stage === base;
    li.className = here ? "current" : reached ? "done" : "";
    if (here) reached = false;
  }
  if (stage === "done") for (const li of $("stages").children) li.className = "done";
}

async function follow(id) {
  for (;;) {
    let status;
    try {
      status = await (await api(`/jobs/${id}`)).json();
    } catch (error) {
      showError(error.message);
      return;
    }
    setStage(status.stage, status.progress, `${status.stage} (${Math.round(status.progress * 100)} %)`);
    if (status.status === "done" || status.status === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
  try {
    const result = await (await api(`/jobs/${id}/result`)).json();
    state.results = result.results;
    showResults(result);
  } catch (error) {
    showError(error.message);
  }
}

function probabilityRows(r) {
  const rows = [];
  for (const [name, p] of Object.entries(r.probabilities)) {
    const spread = r.spread[name];
    const call = name === r.call ? " call" : "";
    rows.push(
      `<tr class="prob${call}"><th scope="row">p(${escapeHtml(name)})</th>` +
      `<td><span class="probability" data-class="${escapeHtml(name)}" data-value="${p}">` +
      `${fmt(p)}</span> ± <span class="spread">${fmt(spread)}</span></td>` +
      `<td><meter min="0" max="1" value="${p}"></meter></td></tr>`);
  }
  return rows.join("");
}

function showResults(result) {
  const box = $("results");
  box.innerHTML = "";
  result.results.forEach((r, i) => {
    const card = document.createElement("article");
    card.className = "scan";
    card.dataset.scan = String(i);
    if (r.error) {
      card.innerHTML = `<h3>${escapeHtml(r.name)}</h3><p class="scan-error">${escapeHtml(r.error)}</p>`;
    } else {
      const space = r.space === "registered"
        ? `registered to MNI152 (template correlation r = ${fmt(r.template_correlation, 2)})`
        : `used as uploaded, in MNI space (template correlation r = ${fmt(r.template_correlation, 2)})`;
      let answer;
      if (r.probabilities) {
        const rule = r.threshold.value === null ? r.threshold.rule
          : `${r.threshold.rule}, value ${r.threshold.value}`;
        answer = `<p class="call-line">Call: <strong class="call-value">${escapeHtml(r.call)}</strong>` +
          ` <span class="muted">(${escapeHtml(rule)})</span></p>` +
          `<table>${probabilityRows(r)}</table>`;
      } else {
        answer = `<p class="call-line">Predicted: <strong class="prediction" data-value="${r.prediction}">` +
          `${fmt(r.prediction, 2)}</strong> ± <span class="spread">${fmt(r.prediction_std, 2)}</span></p>`;
      }
      card.innerHTML = `<h3>${escapeHtml(r.name)}</h3>${answer}` +
        `<p class="muted">Mean of ${r.n_models} fold models (± their standard deviation); ${space}.</p>`;
      if (result.results.length > 1) {
        const show = document.createElement("button");
        show.textContent = "show in viewer";
        show.addEventListener("click", () => showScan(i));
        card.appendChild(show);
      }
    }
    box.appendChild(card);
  });
  $("result-panel").hidden = false;
  const spaces = result.results.filter((r) => !r.error).map((r) => r.space);
  $("stage-registering").textContent = spaces.includes("registered")
    ? "registration" : "registration (not needed: MNI space)";
  const first = result.results.findIndex((r) => !r.error);
  if (first >= 0) showScan(first);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

async function showScan(i) {
  state.scan = i;
  for (const card of document.querySelectorAll("article.scan")) {
    card.classList.toggle("selected", card.dataset.scan === String(i));
  }
  if (!state.health.model.methods.length) return;
  if (typeof niivue === "undefined") {
    $("no-viewer").hidden = false;
    return;
  }
  $("viewer-panel").hidden = false;
  await loadViewer();
}

async function loadViewer() {
  const method = $("method").value;
  const base = `/jobs/${state.job}`;
  if (!state.nv) {
    state.nv = new niivue.Niivue({
      backColor: [0.08, 0.08, 0.1, 1],
      isColorbar: true,
      show3Dcrosshair: true,
      crosshairColor: [0.2, 0.8, 1, 0.8],
      crosshairWidth: 1,
      dragAndDropEnabled: false,
      logLevel: "error",
    });
    await state.nv.attachToCanvas($("viewer"));
    state.nv.setCrosshairWidth(1);
    state.nv.onLocationChange = (data) => {
      $("location").textContent = data && data.string ? data.string : "";
    };
  }
  const nv = state.nv;
  const headers = authHeaders();
  const mapResponse = await api(`${base}/map.nii.gz?scan=${state.scan}&method=${method}`);
  const scanResponse = await api(`${base}/scan.nii.gz?scan=${state.scan}`);
  const [mapBuffer, scanBuffer] = await Promise.all([mapResponse.arrayBuffer(), scanResponse.arrayBuffer()]);
  while (nv.volumes.length) nv.removeVolumeByIndex(0);
  const scanImage = await niivue.NVImage.loadFromUrl({ url: "scan.nii.gz", buffer: scanBuffer, name: "scan.nii.gz", colormap: "gray", headers });
  scanImage.colorbarVisible = false;
  const mapImage = await niivue.NVImage.loadFromUrl({ url: "map.nii.gz", buffer: mapBuffer, name: `${method}.nii.gz`, colormap: "warm", colormapNegative: "winter", headers });
  nv.addVolume(scanImage);
  nv.addVolume(mapImage);
  state.mapMax = Math.max(Math.abs(mapImage.global_min || 0), Math.abs(mapImage.global_max || 0)) || 1;
  nv.setSliceType(nv.sliceTypeMultiplanar);
  applyDisplay();
  const dl = $("dl-map");
  dl.dataset.path = `${base}/map.nii.gz?scan=${state.scan}&method=${method}`;
}

function applyDisplay() {
  const nv = state.nv;
  if (!nv || nv.volumes.length < 2) return;
  const map = nv.volumes[1];
  const fraction = Number($("threshold").value);
  map.cal_min = fraction * state.mapMax;
  map.cal_max = state.mapMax;
  map.cal_minNeg = -state.mapMax;
  map.cal_maxNeg = -fraction * state.mapMax;
  map.opacity = Number($("opacity").value);
  $("threshold-value").textContent = `|map| ≥ ${fmt(fraction, 2)} of max`;
  nv.updateGLVolume();
}

async function download(path, filename) {
  try {
    const response = await api(path);
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error.message);
  }
}

function wire() {
  const drop = $("drop");
  const input = $("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => { if (input.files.length) upload(input.files[0]); input.value = ""; });
  $("opacity").addEventListener("input", applyDisplay);
  $("threshold").addEventListener("input", applyDisplay);
  $("method").addEventListener("change", () => loadViewer().catch((e) => showError(e.message)));
  $("dl-json").addEventListener("click", (e) => { e.preventDefault(); download(`/jobs/${state.job}/result`, "result.json"); });
  $("dl-tsv").addEventListener("click", (e) => { e.preventDefault(); download(`/jobs/${state.job}/result?format=tsv`, "result.tsv"); });
  $("dl-map").addEventListener("click", (e) => {
    e.preventDefault();
    const r = state.results[state.scan];
    const stem = r.name.replace(/\.nii(\.gz)?$/i, "");
    download(e.target.dataset.path || `/jobs/${state.job}/map.nii.gz?scan=${state.scan}`, `${stem}_${$("method").value}.nii.gz`);
  });
}

wire();
loadHealth().catch((error) => showError(`cannot reach the server: ${error.message}`));
