// birdsong dashboard. Plain JavaScript, no framework, no build step: it
// drives the same HTTP API as any script, with the key the user types in
// (kept in sessionStorage, so it is gone when the tab is closed).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const esc = (s) => window.Charts.esc(s == null ? "" : s);
  const KEY = "birdsong.apiKey";
  const state = { jobsCursor: null, job: null, resultsCursor: null, models: [], system: null };

  // ---- API access --------------------------------------------------------
  const key = () => sessionStorage.getItem(KEY) || "";
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (key()) h.Authorization = "Bearer " + key();
    return h;
  }
  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || "HTTP " + status);
      this.status = status;
      this.problem = problem;
    }
  }
  async function api(path, opts) {
    opts = opts || {};
    const res = await fetch(path, { method: opts.method || "GET", headers: headers(opts.headers), body: opts.body });
    if (!res.ok) {
      let problem = null;
      try { problem = await res.json(); } catch (_) { /* not a problem document */ }
      if (res.status === 401) showNotice("The server needs a valid API key for this: enter it at the top of the page.");
      throw new ApiError(res.status, problem);
    }
    if (opts.raw) return res;
    return res.json();
  }
  function showNotice(text) {
    const n = $("notice");
    n.textContent = text;
    n.hidden = !text;
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const pct = (v) => (v == null ? "—" : (v * 100).toFixed(1) + " %");
  const num = (v, d) => (v == null ? "—" : Number(v).toFixed(d == null ? 1 : d));
  // A score is not a detection: a file or window where no species reached
  // its threshold says so in words, never as an empty cell or "null".
  const NO_DETECTION = `<span class="none">no detection</span>`;
  // "species-1 32.0 %, species-0 20.1 %": the best scores, detected or not.
  const scores = (top) => (Array.isArray(top) && top.length ? top.map((t) => `${esc(t.species)} ${pct(t.confidence)}`).join(", ") : "—");
  // The species a file was detected with: "wren (3 windows, best 91.0 %)".
  const detectedText = (list) => list.map((d) => `${esc(d.species)} (${d.windows} window${d.windows === 1 ? "" : "s"}, best ${pct(d.max_score)})`).join(", ");

  // ---- key ---------------------------------------------------------------
  function keyState() {
    $("key-state").textContent = key() ? "key in use for this tab" : "no key (read-only if the server allows it)";
  }
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("api-key").value.trim();
    if (v) sessionStorage.setItem(KEY, v);
    $("api-key").value = "";
    showNotice("");
    keyState();
    refreshCurrent();
  });
  $("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); keyState(); });

  // ---- tabs --------------------------------------------------------------
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));
  let current = "upload";
  function select(tab, focus) {
    tabs.forEach((t) => {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    });
    if (focus) tab.focus();
    current = tab.id.replace("tab-", "");
    refreshCurrent();
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (e) => {
      let j = null;
      if (e.key === "ArrowRight") j = (i + 1) % tabs.length;
      else if (e.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
      else if (e.key === "Home") j = 0;
      else if (e.key === "End") j = tabs.length - 1;
      if (j != null) { e.preventDefault(); select(tabs[j], true); }
    });
  });
  function refreshCurrent() {
    const quiet = (p) => p.catch((e) => { if (e.status !== 401) showNotice(e.message); });
    if (current === "jobs") quiet(loadJobs(true));
    else if (current === "system") quiet(loadSystem());
    else if (current === "charts") quiet(loadCharts());
    else if (current === "upload") quiet(loadSpecies());
  }

  // ---- upload ------------------------------------------------------------
  let picked = [];
  function showPicked() {
    $("picked").innerHTML = picked.map((f) => `<li>${esc(f.name)} <span class="muted">(${(f.size / 1024).toFixed(0)} kB)</span></li>`).join("");
  }
  $("files").addEventListener("change", () => { picked = Array.from($("files").files); showPicked(); });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    picked = picked.concat(Array.from(e.dataTransfer.files || []));
    showPicked();
  });
  async function loadSpecies() {
    const s = await api("/v1/species");
    $("species-list").innerHTML = s.species.map((x) => `<option value="${esc(x.name)}"></option>`).join("");
  }
  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!picked.length) { $("upload-state").textContent = "Choose at least one file first."; return; }
    const form = new FormData();
    picked.forEach((f) => form.append("file", f, f.name));
    const species = $("species").value.trim();
    if (species) {
      const labels = {};
      picked.forEach((f) => { labels[f.name] = species; });
      form.append("labels", JSON.stringify(labels));
    }
    const site = $("site").value.trim();
    if (site) form.append("site", site);
    // What the job reports: a species list (BirdNET-Analyzer's format) and a
    // minimum confidence; the API checks both.
    const only = $("report-species").value.trim();
    if (only) form.append("species_list", only);
    const min = $("report-min").value.trim();
    if (min) form.append("min_confidence", min);
    $("upload-button").disabled = true;
    $("upload-state").textContent = "Uploading…";
    try {
      const a = await api("/v1/jobs", { method: "POST", body: form });
      const names = picked.map((f) => f.name).join(", ");
      picked = [];
      $("files").value = "";
      showPicked();
      let msg = `Job created: ${a.accepted} accepted`;
      if (a.duplicate) msg += `, ${a.duplicate} already known`;
      if (a.rejected && a.rejected.length) msg += `, ${a.rejected.length} rejected (${a.rejected.map((r) => r.path + ": " + r.reason).join("; ")})`;
      $("upload-state").textContent = msg + ".";
      trackJob(a.job_id, names);
    } catch (err) {
      $("upload-state").textContent = "Upload refused: " + err.message;
    } finally {
      $("upload-button").disabled = false;
    }
  });
  function trackJob(id, names) {
    const list = $("uploads");
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const li = document.createElement("li");
    li.dataset.job = id;
    li.innerHTML = `<div class="line"><span class="path">${esc(names)}</span><span class="job-status">queued</span></div>
      <progress max="1" value="0" aria-label="Progress of job ${esc(id)}"></progress>
      <div class="line"><span class="muted job-counts"></span><button type="button" class="small secondary open-job">View results</button></div>`;
    li.querySelector(".open-job").addEventListener("click", () => { select($("tab-jobs")); openJob(id); });
    list.prepend(li);
    const poll = async () => {
      let s;
      try { s = await api(`/v1/jobs/${id}`); } catch (err) { li.querySelector(".job-status").textContent = err.message; return; }
      const c = s.counts, ended = c.done + c.failed + c.awaiting_model;
      const bar = li.querySelector("progress");
      bar.max = Math.max(c.tasks, 1);
      bar.value = ended;
      li.querySelector(".job-status").textContent = s.status;
      li.querySelector(".job-counts").textContent = `${ended} of ${c.tasks} files · ${c.done} done` +
        (c.failed ? ` · ${c.failed} failed` : "") + (c.awaiting_model ? ` · ${c.awaiting_model} awaiting a model` : "");
      if (s.status === "finished") { li.classList.add("finished"); return; }
      setTimeout(poll, 1000);
    };
    poll();
  }

  // ---- record ------------------------------------------------------------
  let recorder = null, chunks = [], stopTimer = null;
  const MAX_RECORD_S = 30;
  $("record-start").addEventListener("click", async () => {
    if (!navigator.mediaDevices || !window.MediaRecorder) { $("record-state").textContent = "This browser cannot record audio."; return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      recorder = new MediaRecorder(stream);
      chunks = [];
      recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
      recorder.onstop = () => { stream.getTracks().forEach((t) => t.stop()); classifyRecording(new Blob(chunks, { type: recorder.mimeType })); };
      recorder.start();
      stopTimer = setTimeout(() => recorder && recorder.state === "recording" && recorder.stop(), MAX_RECORD_S * 1000);
      $("record-start").disabled = true;
      $("record-stop").disabled = false;
      $("record-state").textContent = "Recording… (stops by itself after 30 s)";
    } catch (err) {
      $("record-state").textContent = "No microphone: " + err.message;
    }
  });
  $("record-stop").addEventListener("click", () => {
    clearTimeout(stopTimer);
    if (recorder && recorder.state === "recording") recorder.stop();
    $("record-stop").disabled = true;
  });
  // Browsers record Opus in WebM or Ogg, which the server's decoder does not
  // read: decode here and send 16-bit mono WAV.
  async function toWav(blob) {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    try {
      const buf = await ctx.decodeAudioData(await blob.arrayBuffer());
      const n = buf.length, mono = new Float32Array(n);
      for (let c = 0; c < buf.numberOfChannels; c++) {
        const d = buf.getChannelData(c);
        for (let i = 0; i < n; i++) mono[i] += d[i] / buf.numberOfChannels;
      }
      return encodeWav(mono, buf.sampleRate);
    } finally {
      ctx.close();
    }
  }
  function encodeWav(samples, rate) {
    const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
    const str = (o, s) => { for (let i = 0; i < s.length; i++) out.setUint8(o + i, s.charCodeAt(i)); };
    str(0, "RIFF"); out.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVEfmt ");
    out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
    out.setUint32(24, rate, true); out.setUint32(28, rate * 2, true); out.setUint16(32, 2, true); out.setUint16(34, 16, true);
    str(36, "data"); out.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) out.setInt16(44 + i * 2, Math.max(-1, Math.min(1, samples[i])) * 32767, true);
    return new Blob([out.buffer], { type: "audio/wav" });
  }
  async function classifyRecording(blob) {
    $("record-start").disabled = false;
    $("record-stop").disabled = true;
    $("record-state").textContent = "Classifying…";
    try {
      const wav = await toWav(blob);
      const audio = $("record-audio");
      if (audio.src) URL.revokeObjectURL(audio.src);
      audio.src = URL.createObjectURL(wav);
      audio.hidden = false;
      const form = new FormData();
      form.append("file", wav, "recording.wav");
      const r = await api("/v1/classify", { method: "POST", body: form });
      $("record-state").textContent = "";
      const detected = r.detected || [];
      const verdict = detected.length
        ? `confidence ${pct(r.confidence)} · detected: ${detectedText(detected)}`
        : "no species reached its threshold";
      const dets = r.detections.length
        ? `<div class="table-wrap"><table><caption class="visually-hidden">Detections in the clip</caption><thead><tr><th scope="col">Start (s)</th><th scope="col">End (s)</th><th scope="col">Species</th><th scope="col">Confidence</th><th scope="col" class="hide-narrow">Threshold</th></tr></thead><tbody>
        ${r.detections.map((d) => `<tr><td class="num">${num(d.start_s)}</td><td class="num">${num(d.end_s)}</td><td>${esc(d.species)}</td><td class="num">${pct(d.confidence)}</td><td class="num hide-narrow">${pct(d.threshold)}</td></tr>`).join("")}
        </tbody></table></div>`
        : "";
      const windows = r.window_scores || [];
      const all = windows.length
        ? `<details class="windows"><summary>Every window's scores (${windows.length})</summary><div class="table-wrap"><table><caption class="visually-hidden">Scores of every window of the clip</caption><thead><tr><th scope="col">Start (s)</th><th scope="col">End (s)</th><th scope="col">Detected</th><th scope="col">Best scores</th></tr></thead><tbody>
        ${windows.map((w) => `<tr><td class="num">${num(w.start_s)}</td><td class="num">${num(w.end_s)}</td><td>${w.detected.length ? w.detected.map((d) => esc(d.species)).join(", ") : NO_DETECTION}</td><td class="muted">${scores(w.top_k)}</td></tr>`).join("")}
        </tbody></table></div></details>`
        : "";
      $("record-result").innerHTML = `<div class="result"><div class="species">${r.species ? esc(r.species) : NO_DETECTION}</div>
        <div class="muted">${verdict} · best mean scores: ${scores(r.top_k)} · ${num(r.duration_s)} s · model ${esc(r.model_version)}</div>
        ${dets}${all}</div>`;
    } catch (err) {
      $("record-state").textContent = "Could not classify the clip: " + err.message;
    }
  }

  // ---- jobs and results --------------------------------------------------
  async function loadJobs(reset) {
    if (reset) state.jobsCursor = null;
    const q = new URLSearchParams({ limit: "20" });
    if (state.jobsCursor) q.set("cursor", state.jobsCursor);
    const page = await api("/v1/jobs?" + q);
    const body = $("jobs-table").tBodies[0];
    if (reset) body.innerHTML = "";
    if (reset && !page.jobs.length) body.innerHTML = `<tr><td colspan="5" class="muted">No jobs yet.</td></tr>`;
    page.jobs.forEach((j) => {
      const tr = document.createElement("tr");
      tr.dataset.job = j.job_id;
      if (state.job === j.job_id) tr.className = "selected";
      const ended = j.done + j.failed + j.awaiting_model;
      tr.innerHTML = `<td class="hide-narrow">${when(j.created_at)}</td><td class="path">${esc(j.description || j.job_id)}</td>
        <td><span class="badge ${j.status === "finished" ? "ok" : ""}">${esc(j.status)}</span>${j.failed ? ` <span class="badge warn">${j.failed} failed</span>` : ""}</td>
        <td class="num">${ended} / ${j.tasks}</td>
        <td><button type="button" class="small secondary">Open<span class="visually-hidden"> job ${esc(j.description || j.job_id)}</span></button></td>`;
      tr.querySelector("button").addEventListener("click", () => openJob(j.job_id));
      body.appendChild(tr);
      addScope(j);
    });
    state.jobsCursor = page.next_cursor;
    $("jobs-more").hidden = !page.next_cursor;
  }
  $("jobs-more").addEventListener("click", () => loadJobs(false).catch((e) => showNotice(e.message)));
  $("jobs-refresh").addEventListener("click", () => loadJobs(true).catch((e) => showNotice(e.message)));

  async function openJob(id) {
    state.job = id;
    state.resultsCursor = null;
    document.querySelectorAll("#jobs-table tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.job === id));
    const s = await api(`/v1/jobs/${id}`);
    $("job-detail").hidden = false;
    $("job-title").textContent = "Job " + (s.description || id);
    const c = s.counts;
    $("job-summary").textContent = `${s.status} · ${c.tasks} files: ${c.done} done, ${c.failed} failed, ${c.awaiting_model} awaiting a model, ${c.rejected} rejected · ${num(s.audio_seconds_done)} s of audio · created ${when(s.created_at)}`;
    $("results-table").tBodies[0].innerHTML = "";
    await loadResults();
    $("job-title").focus();
  }
  // One row per detection (a window whose score for a species reached its
  // threshold); a classified file without any gets one row saying "no
  // detection" with its best scores. With "every window" ticked, one row per
  // window instead, detected or not (`?windows=all`).
  async function loadResults() {
    const allWindows = $("all-windows").checked;
    const q = new URLSearchParams({ limit: allWindows ? "10" : "50" });
    if (allWindows) q.set("windows", "all");
    if (state.resultsCursor) q.set("cursor", state.resultsCursor);
    const page = await api(`/v1/jobs/${state.job}/results?` + q);
    const body = $("results-table").tBodies[0];
    const inspectButton = (f, start) => `<button type="button" class="small secondary">Inspect<span class="visually-hidden"> ${esc(f.source_path)} at ${num(start)} s</span></button>`;
    // `span` is the stretch the Inspect button opens (none for a file row).
    const addRow = (f, first, cells, span, title) => {
      const tr = document.createElement("tr");
      tr.dataset.path = f.source_path;
      tr.innerHTML = `<td class="path">${first ? esc(f.source_path) : ""}</td>${cells}<td>${span ? inspectButton(f, span.start_s) : ""}</td>`;
      if (span) {
        tr.querySelector("button").addEventListener("click", () => {
          body.querySelectorAll("tr").forEach((r) => r.classList.remove("selected"));
          tr.classList.add("selected");
          inspect(f, span, title).catch((e) => showNotice(e.message));
        });
      }
      body.appendChild(tr);
    };
    page.items.forEach((f) => {
      if (f.detected == null) {
        // Not classified (yet): its status, and why if it failed.
        addRow(f, true, `<td colspan="5" class="muted">${esc(f.status)}${f.error ? ": " + esc(f.error) : ""}</td>`, null);
        return;
      }
      if (allWindows) {
        const threshold = new Map(f.detections.map((d) => [`${d.window_index}|${d.species}`, d.threshold]));
        const windows = f.window_scores || [];
        if (!windows.length) addRow(f, true, `<td colspan="5" class="muted">no windows</td>`, null);
        windows.forEach((w, i) => {
          const best = w.detected[0];
          const names = w.detected.length ? w.detected.map((d) => esc(d.species)).join(", ") : NO_DETECTION;
          const title = best ? `${best.species} in ${f.source_path}` : `No detection in ${f.source_path}`;
          addRow(f, i === 0, `<td class="num">${num(w.start_s)}</td><td class="num hide-narrow">${num(w.end_s)}</td>
            <td class="species">${names}<div class="muted small">scores: ${scores(w.top_k)}</div></td>
            <td class="num">${best ? pct(best.confidence) : "—"}</td>
            <td class="num hide-narrow">${best ? pct(threshold.get(`${w.window_index}|${best.species}`)) : "—"}</td>`, w, title);
        });
        return;
      }
      if (!f.detections.length) {
        const why = f.detected.length ? "no detection matches the filters" : `best scores: ${scores(f.top_k)}`;
        addRow(f, true, `<td class="num">—</td><td class="num hide-narrow">—</td>
          <td class="species">${NO_DETECTION}<div class="muted small">${why}</div></td><td class="num">—</td><td class="num hide-narrow">—</td>`, null);
        return;
      }
      f.detections.forEach((d, i) => {
        addRow(f, i === 0, `<td class="num">${num(d.start_s)}</td><td class="num hide-narrow">${num(d.end_s)}</td>
          <td class="species">${esc(d.species)}</td><td class="num">${pct(d.confidence)}</td><td class="num hide-narrow">${pct(d.threshold)}</td>`, d, `${d.species} in ${f.source_path}`);
      });
    });
    if (!body.children.length) body.innerHTML = `<tr><td colspan="7" class="muted">No results yet.</td></tr>`;
    state.resultsCursor = page.next_cursor;
    $("results-more").hidden = !page.next_cursor;
  }
  $("all-windows").addEventListener("change", () => {
    state.resultsCursor = null;
    $("results-table").tBodies[0].innerHTML = "";
    $("results-caption").textContent = $("all-windows").checked
      ? "Results of the job, one row per window with its scores, detected or not"
      : "Results of the job, one row per detection; files without one say no detection";
    loadResults().catch((e) => showNotice(e.message));
  });
  $("results-more").addEventListener("click", () => loadResults().catch((e) => showNotice(e.message)));

  async function download(format) {
    const res = await api(`/v1/jobs/${state.job}/export?format=${format}`, { raw: true });
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `birdsong-${state.job}.${format === "raven" ? "txt" : format}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  $("export-csv").addEventListener("click", () => download("csv").catch((e) => showNotice(e.message)));
  $("export-raven").addEventListener("click", () => download("raven").catch((e) => showNotice(e.message)));
  $("export-parquet").addEventListener("click", () => download("parquet").catch((e) => showNotice(e.message)));

  async function inspect(file, det, title) {
    const range = `start=${det.start_s}&end=${det.end_s}`;
    $("inspector").hidden = false;
    $("inspector-title").textContent = `${title}, ${num(det.start_s)}–${num(det.end_s)} s`;
    const [spec, wav] = await Promise.all([
      api(`/v1/files/${file.file_sha256}/spectrogram?${range}`),
      api(`/v1/files/${file.file_sha256}/audio?${range}`, { raw: true }).then((r) => r.blob()),
    ]);
    drawSpectrogram(spec);
    const audio = $("window-audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(wav);
    $("inspector-title").focus();
  }
  // Magma-like colour map from -80 dB (dark) to 0 dB (bright).
  function colour(t) {
    const stops = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];
    const x = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    return stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  }
  function drawSpectrogram(spec) {
    const canvas = $("spectrogram");
    canvas.width = Math.max(spec.frames, 1);
    canvas.height = spec.n_mels;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    const lo = spec.min_db, span = Math.max(spec.max_db - spec.min_db, 1e-6);
    for (let b = 0; b < spec.n_mels; b++) {
      const row = spec.db[b], y = spec.n_mels - 1 - b;
      for (let f = 0; f < spec.frames; f++) {
        const [r, g, bl] = colour((row[f] - lo) / span), o = (y * canvas.width + f) * 4;
        img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = bl; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    canvas.setAttribute("aria-label", `Mel spectrogram, ${spec.n_mels} bands up to ${spec.sample_rate / 2} Hz, ${num(spec.start_s)} to ${num(spec.end_s)} s`);
    $("spectro-caption").textContent = `Mel spectrogram, ${spec.n_mels} bands (0–${spec.sample_rate / 2} Hz, low at the bottom), ${num(spec.start_s)}–${num(spec.end_s)} s; brighter is louder (${num(spec.min_db, 0)} to ${num(spec.max_db, 0)} dB).`;
  }

  // ---- system ------------------------------------------------------------
  function rows(table, html, cols, emptyText) {
    $(table).tBodies[0].innerHTML = html || `<tr><td colspan="${cols}" class="muted">${esc(emptyText)}</td></tr>`;
  }
  async function loadSystem() {
    const [s, m] = await Promise.all([api("/v1/system"), api("/v1/models")]);
    state.system = s;
    const t = s.tasks;
    $("task-counts").innerHTML = [["queued", t.queued], ["processing", t.processing], ["awaiting a model", t.awaiting_model], ["failed", t.failed], ["done", t.done]]
      .map(([k, v]) => `<div><dt>${k}</dt><dd>${v}</dd></div>`).join("");
    rows("queues-table", s.queues.map((q) => `<tr><td>${esc(q.queue)}</td><td class="num">${q.messages == null ? "unknown" : q.messages}</td><td class="num">${q.consumers == null ? "unknown" : q.consumers}</td></tr>`).join(""), 3, "No queues.");
    rows("workers-table", s.workers.map((w) => `<tr><td>${esc(w.worker)}</td><td>${when(w.last_seen)}</td><td class="num">${w.tasks_last_hour}</td><td class="num">${w.processing}</td></tr>`).join(""), 4, "No worker has finished a task recently.");
    rows("failures-table", s.failures.map((f) => `<tr><td>${when(f.finished_at)}</td><td class="path">${esc(f.source_path)}</td><td>${esc(f.error_kind ? f.error_kind + ": " : "")}${esc(f.error)}</td></tr>`).join(""), 3, "No failures.");
    // One bar per minute of the last hour, empty minutes included.
    const now = new Date(s.now), byMinute = new Map(s.throughput.map((b) => [new Date(b.minute).getTime(), b]));
    const start = Math.floor(now.getTime() / 60000) * 60000 - 59 * 60000, items = [];
    for (let i = 0; i < 60; i++) {
      const at = start + i * 60000, b = byMinute.get(at);
      items.push({ label: new Date(at).toTimeString().slice(0, 5), value: b ? b.audio_seconds : 0 });
    }
    window.Charts.vbar($("throughput-chart"), items, "Seconds of audio classified per minute over the last hour", { every: 10, emptyText: "Nothing classified in the last hour." });
    renderModels(m);
  }
  // The metrics JSON differs by origin (a retrain run stores the holdout
  // scores and the evaluation; a published model its evaluations by set):
  // find an evaluation and take its recording-level metrics.
  function evaluation(metrics) {
    if (!metrics || typeof metrics !== "object") return null;
    const sets = metrics.evaluation || metrics;
    const set = sets.test || sets.holdout || sets.validation || Object.values(sets).find((v) => v && typeof v === "object" && (v.recording || v.window));
    if (!set) return null;
    return set.recording || set.window || null;
  }
  function renderModels(m) {
    state.models = m.models;
    const html = m.models.map((v) => {
      const e = evaluation(v.metrics), promoted = v.status === "promoted";
      const acc = e ? e.accuracy : v.metrics && v.metrics.holdout ? v.metrics.holdout.recording_accuracy : null;
      const f1 = e && e.macro_avg ? e.macro_avg.f1 : v.metrics && v.metrics.holdout ? v.metrics.holdout.recording_macro_f1 : null;
      const action = promoted ? "" : `<button type="button" class="small promote" data-version="${esc(v.version)}">${m.promoted ? "Switch to" : "Promote"}<span class="visually-hidden"> ${esc(v.version)}</span></button>`;
      return `<tr data-version="${esc(v.version)}"><td><strong>${esc(v.version)}</strong></td>
        <td>${promoted ? `<span class="badge ok">promoted</span>` : esc(v.status)}</td>
        <td class="num">${pct(acc)}</td><td class="num">${f1 == null ? "—" : Number(f1).toFixed(3)}</td><td>${when(v.created_at)}</td>
        <td class="row"><button type="button" class="small secondary show-confusion" data-version="${esc(v.version)}">Confusion matrix<span class="visually-hidden"> of ${esc(v.version)}</span></button>${action}</td></tr>`;
    }).join("");
    rows("models-table", html, 6, "No model versions yet: upload labelled recordings and retrain.");
    $("models-table").querySelectorAll(".promote").forEach((b) => b.addEventListener("click", () => promote(b.dataset.version)));
    $("models-table").querySelectorAll(".show-confusion").forEach((b) => b.addEventListener("click", () => showConfusion(b.dataset.version)));
    const shown = m.promoted || (m.models[0] && m.models[0].version);
    if (shown && !$("confusion").dataset.version) showConfusion(shown);
  }
  function showConfusion(version) {
    const v = state.models.find((x) => x.version === version);
    if (!v) return;
    const e = evaluation(v.metrics);
    $("confusion").dataset.version = version;
    const classes = Array.isArray(v.classes) ? v.classes : [];
    window.Charts.confusion($("confusion"), classes, (e && e.confusion) || [], `Confusion matrix of ${version} (rows: true species, columns: predicted)`);
  }
  async function promote(version) {
    const previous = state.models.find((x) => x.status === "promoted");
    const verb = previous ? `roll ${previous.version} back to ${version}` : `promote ${version}`;
    if (!window.confirm(`Really ${verb}? Workers switch to it at once.`)) return;
    try {
      const r = await api(`/v1/models/${encodeURIComponent(version)}/promote`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: "promoted from the dashboard" }),
      });
      $("model-state").textContent = `${r.version} is promoted (was ${r.previous || "none"}); ${r.requeued_tasks} waiting tasks queued again.`;
      await loadSystem();
    } catch (err) {
      $("model-state").textContent = "Not promoted: " + err.message;
    }
  }
  $("retrain").addEventListener("click", async () => {
    $("retrain").disabled = true;
    try {
      const r = await api("/v1/retrain", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      $("retrain-state").textContent = "Retrain requested…";
      const poll = async () => {
        const s = await api(r.status_url);
        $("retrain-state").textContent = `Retrain ${s.status}` + (s.model_version ? `: ${s.model_version}` : "") + (s.error ? ` (${s.error})` : "");
        if (["requested", "running"].includes(s.status)) setTimeout(() => poll().catch(() => {}), 3000);
        else { $("retrain").disabled = false; loadSystem().catch(() => {}); }
      };
      await poll();
    } catch (err) {
      $("retrain-state").textContent = "Retrain refused: " + err.message;
      $("retrain").disabled = false;
    }
  });
  $("system-refresh").addEventListener("click", () => loadSystem().catch((e) => showNotice(e.message)));

  // ---- charts ------------------------------------------------------------
  function addScope(job) {
    const sel = $("chart-scope");
    if (Array.from(sel.options).some((o) => o.value === job.job_id)) return;
    const o = document.createElement("option");
    o.value = job.job_id;
    o.textContent = `job ${job.description || job.job_id} (${new Date(job.created_at).toLocaleString()})`;
    sel.appendChild(o);
  }
  async function loadCharts() {
    if ($("chart-scope").options.length === 1) {
      const page = await api("/v1/jobs?limit=50");
      page.jobs.forEach(addScope);
    }
    const job = $("chart-scope").value;
    const s = await api("/v1/stats" + (job ? "?job=" + encodeURIComponent(job) : ""));
    const none = s.recordings - s.recordings_with_detections;
    $("chart-state").textContent = `${s.detections} detection${s.detections === 1 ? "" : "s"} in ${s.recordings_with_detections} of ${s.recordings} recording${s.recordings === 1 ? "" : "s"}` +
      (none ? ` (${none} with no detection)` : "") + "; only scores at or above their species' threshold count.";
    const species = s.species.map((x) => ({ label: x.species, value: x.detections }));
    if (s.other_detections) species.push({ label: "other species", value: s.other_detections });
    const nothing = s.recordings ? "No detections: no window reached its species' threshold." : "No data yet.";
    window.Charts.hbar($("chart-species"), species, "Detections by species", { emptyText: nothing });
    window.Charts.vbar($("chart-histogram"), s.confidence_histogram.map((n, i) => ({ label: (i / 10).toFixed(1), value: n })), "Detections by confidence (bins of 0.1)", { every: 2, emptyText: nothing });
    window.Charts.line($("chart-trend"), s.confidence_trend.map((p) => ({ label: new Date(p.hour).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" }), value: p.mean_confidence })), "Mean confidence of detections per hour", 1);
    window.Charts.vbar($("chart-hours"), s.by_hour.map((n, h) => ({ label: String(h), value: n })), "Detections by hour of the day (recorder's clock)", { every: 3, cls: "bar2", emptyText: nothing });
  }
  $("chart-scope").addEventListener("change", () => loadCharts().catch((e) => showNotice(e.message)));

  keyState();
  refreshCurrent();
})();
