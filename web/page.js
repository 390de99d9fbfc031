// The web demo's page: choose a clip, submit sentences, poll the job, show the video, scores and boxes.
// Plain DOM and fetch, nothing from the network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const TABLE_ROWS = 500;
let config = null;
let example = null; // index of the chosen example clip, or null
let plotCursor = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

function chooseExample(index) {
  example = index;
  $("clip").value = "";
  document.querySelectorAll("#examples button").forEach((b, i) => b.classList.toggle("on", i === index));
  const chosen = config.examples[index];
  $("chosen").textContent = `Example: ${chosen.name}`;
  $("sentences").value = chosen.sentences.slice(0, 2).join("\n");
  checkSentences();
}

async function loadConfig() {
  config = await api("/api/config");
  const amp = config.amp ? `, mixed precision ${config.amp}` : "";
  $("model").textContent = `${config.model}: ${config.kind} model, ${config.words} words, on ${config.device}${amp}`;
  $("limits").textContent = `(${config.suffixes.join(", ")}; at most ${config.max_upload_mb} MB, ` +
    `${config.max_frames} frames)`;
  $("pp-label").hidden = !config.post_process;
  $("amp-label").hidden = !config.amp;
  $("amp-dtype").textContent = config.amp ? `(${config.amp})` : "";
  $("examples-box").hidden = config.examples.length === 0;
  for (const ex of config.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = ex.sentences.join("\n");
    const img = document.createElement("img");
    img.src = `/api/examples/${ex.index}/thumbnail.jpg`;
    img.alt = ex.name;
    button.append(img, ex.name);
    button.addEventListener("click", () => chooseExample(ex.index));
    $("examples").append(button);
  }
}

let checkTimer = null;
function checkSentences() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(async () => {
    try {
      const body = await api("/api/check", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({sentences: $("sentences").value}),
      });
      showWarnings(body.error ? [body.error, ...body.warnings] : body.warnings);
    } catch (err) {
      showWarnings([]);
    }
  }, 300);
}

function showWarnings(warnings) {
  $("warnings").replaceChildren(...warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
}

function setProgress(text, fraction) {
  $("progress-box").hidden = false;
  $("progress-text").textContent = text;
  if (fraction === null) {
    $("progress").removeAttribute("value");
  } else {
    $("progress").value = fraction;
  }
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const file = $("clip").files[0];
  if (!file && example === null) {
    showError("Choose a clip to upload or one of the examples.");
    return;
  }
  if (file && file.size > config.max_upload_mb * 1024 * 1024) {
    showError(`The clip is larger than ${config.max_upload_mb} MB, the most this server accepts (--max_upload_mb).`);
    return;
  }
  const form = new FormData();
  if (file) {
    form.append("clip", file);
  } else {
    form.append("example", String(example));
  }
  form.append("sentences", $("sentences").value);
  form.append("stride", $("stride").value);
  if ($("post_process").checked) form.append("post_process", "on");
  if ($("amp").checked) form.append("amp", "on");
  $("submit").disabled = true;
  setProgress(file ? "uploading…" : "submitting…", null);
  const started = performance.now();
  try {
    let job = await api("/api/jobs", {method: "POST", body: form});
    showWarnings(job.warnings);
    while (job.state === "queued" || job.state === "running") {
      if (job.state === "queued") {
        setProgress(job.ahead ? `queued: ${job.ahead} job(s) ahead` : "starting…", null);
      } else if (job.total) {
        setProgress(`grounding: ${job.done} / ${job.total} frames`, Math.min(job.done / job.total, 1));
      } else {
        setProgress(`grounding: ${job.done} frames`, null);
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.state === "error") throw new Error(job.message);
    setProgress("done", 1);
    await showResult(job.result, started);
  } catch (err) {
    $("progress-box").hidden = true;
    showError(err.message);
  } finally {
    $("submit").disabled = false;
  }
}

function colour(s) {
  return config.colours[s % config.colours.length];
}

function showResult(result, started) {
  $("placeholder").hidden = true;
  $("result").hidden = false;
  const video = $("video");
  const shown = new Promise((resolve) => {
    video.addEventListener("loadeddata", resolve, {once: true});
    video.addEventListener("error", resolve, {once: true});
  });
  video.src = `${result.video}?t=${Date.now()}`;
  video.play().catch(() => {});
  $("download").href = result.jsonl;
  $("legend").replaceChildren(...result.sentences.map((text, s) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour(s);
    span.append(swatch, text);
    return span;
  }));
  drawPlot(result);
  fillTable(result);
  return shown.then(() => {
    const seconds = (performance.now() - started) / 1000;
    $("timing").textContent = `(${result.frames} frames; grounded in ${result.seconds} s, ` +
      `${seconds.toFixed(1)} s from submit to video)`;
  });
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function drawPlot(result) {
  const W = 640, H = 180, left = 36, right = 8, top = 8, bottom = 24;
  const frames = result.rows.map((r) => r.frame);
  const scores = result.rows.map((r) => r.score);
  const x0 = Math.min(...frames), x1 = Math.max(...frames, x0 + 1);
  const y0 = Math.min(0, ...scores), y1 = Math.max(1, ...scores);
  const x = (f) => left + (f - x0) / (x1 - x0) * (W - left - right);
  const y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "score of each sentence per frame"});
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    root.append(svg("line", {x1: left, x2: W - right, y1: y(v), y2: y(v), stroke: "#dde1e7"}));
    const label = svg("text", {x: left - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#6b7383"});
    label.textContent = v.toFixed(2);
    root.append(label);
  }
  for (const [f, anchor] of [[x0, "start"], [Math.round((x0 + x1) / 2), "middle"], [x1, "end"]]) {
    const label = svg("text", {x: x(f), y: H - 6, "text-anchor": anchor, "font-size": 11, fill: "#6b7383"});
    label.textContent = `frame ${f}`;
    root.append(label);
  }
  result.sentences.forEach((_, s) => {
    const points = result.rows.filter((r) => r.sentence === s).map((r) => `${x(r.frame)},${y(r.score)}`);
    root.append(svg("polyline", {points: points.join(" "), fill: "none", stroke: colour(s), "stroke-width": 2}));
  });
  plotCursor = svg("line", {x1: left, x2: left, y1: top, y2: H - bottom, stroke: "#1d2330", "stroke-dasharray": "3 3"});
  root.append(plotCursor);
  $("plot").replaceChildren(root);
  const video = $("video");
  const follow = () => {
    const f = Math.min(Math.max(video.currentTime * result.fps, x0), x1);
    plotCursor.setAttribute("x1", x(f));
    plotCursor.setAttribute("x2", x(f));
  };
  video.ontimeupdate = follow;
}

function fillTable(result) {
  const body = $("boxes").tBodies[0];
  body.replaceChildren(...result.rows.slice(0, TABLE_ROWS).map((r) => {
    const tr = document.createElement("tr");
    const cells = [r.frame, r.time.toFixed(2), result.sentences[r.sentence], ...r.box.map((v) => v.toFixed(1)),
      r.score.toFixed(3)];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    tr.children[2].style.color = colour(r.sentence);
    return tr;
  }));
  $("table-note").textContent = result.rows.length > TABLE_ROWS
    ? `Showing the first ${TABLE_ROWS} of ${result.rows.length} boxes; the JSON Lines file has them all.` : "";
}

$("form").addEventListener("submit", submit);
$("sentences").addEventListener("input", checkSentences);
$("clip").addEventListener("change", () => {
  const file = $("clip").files[0];
  if (!file) return;
  example = null;
  document.querySelectorAll("#examples button").forEach((b) => b.classList.remove("on"));
  const size = file.size < 1024 * 1024 ? `${Math.ceil(file.size / 1024)} KB` : `${(file.size / 1024 / 1024).toFixed(1)} MB`;
  $("chosen").textContent = `Upload: ${file.name} (${size})`;
});
loadConfig().catch((err) => showError(err.message));
