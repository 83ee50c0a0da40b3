// The segment console: segments and their movement, models and their evaluation, live
// metrics. Data from /ui/api/segments, /ui/api/models and the service's /metrics; plots are
// drawn here as inline SVG (no chart library).
"use strict";

const $ = (id) => document.getElementById(id);
const errorBox = $("error");
const API_ENDPOINTS = ["/recommend", "/recommend/batch", "/similar", "/segment", "/events"];
const segmentColour = {}; // segment id -> colour, the same in every plot

function colourOf(segmentId) {
  if (!(segmentId in segmentColour)) segmentColour[segmentId] = colour(Object.keys(segmentColour).length);
  return segmentColour[segmentId];
}

function table(headers, rows, numeric = []) {
  const head = headers.map((h, i) => `<th class="${numeric.includes(i) ? "num" : ""}">${escapeHtml(h)}</th>`).join("");
  const body = rows.map((r) => "<tr>" + r.map((c, i) =>
    `<td class="${numeric.includes(i) ? "num" : ""}">${c}</td>`).join("") + "</tr>").join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function legend(entries) {
  return `<div class="legend">${entries.map(([label, c]) =>
    `<span><i style="background:${c}"></i>${escapeHtml(label)}</span>`).join("")}</div>`;
}

// ---- segments --------------------------------------------------------------------------
async function loadSegments() {
  let data;
  try {
    data = await get("/ui/api/segments");
  } catch (error) {
    showError(errorBox, `Segments: ${error.message}`);
    ["segment-table", "projection-plot", "sizes-plot", "profile-table", "movement-table"]
      .forEach((id) => notAvailable($(id), error.message));
    return;
  }
  const current = data.current;
  current.segments.forEach((s) => colourOf(s.id));
  $("segments-version").textContent = `version ${current.version}, ${current.algorithm || ""}, created ${current.created_at || "–"}`;
  const profiles = data.profiles.available ? Object.fromEntries(data.profiles.segments.map((s) => [s.id, s])) : {};
  const total = current.segments.reduce((sum, s) => sum + (s.size || 0), 0);
  $("segment-table").innerHTML = table(
    ["", "id", "name", "customers", "share", "what sets it apart", "lifecycle"],
    current.segments.map((s) => {
      const p = profiles[s.id] || {};
      return [
        `<i style="display:inline-block;width:10px;height:10px;background:${colourOf(s.id)}"></i>`,
        s.id, escapeHtml(s.name), s.size ?? "–",
        s.size && total ? `${(100 * s.size / total).toFixed(1)}%` : "–",
        p.distinguishing ? escapeHtml(p.distinguishing.join("; ")) : "–",
        p.lifecycle ? escapeHtml(Object.entries(p.lifecycle).map(([k, v]) => `${k} ${v}`).join(", ")) : "–",
      ];
    }), [1, 3, 4]);
  $("segment-table").querySelector("table").id = "segment-rows";
  if (!data.profiles.available) {
    $("segment-table").insertAdjacentHTML("beforeend",
      `<p class="na small">traits and lifecycle mix: not available: ${escapeHtml(data.profiles.reason)}</p>`);
  }
  drawProjection($("projection-plot"), data.projection);
  drawSizes($("sizes-plot"), data.history);
  const features = current.features;
  $("profile-table").innerHTML = table(
    ["segment", ...features],
    current.segments.map((s) => [escapeHtml(s.name), ...features.map((f) => fmt(s.centroid[f], 3))]),
    features.map((_, i) => i + 1));
  drawMovement($("movement-table"), data.movement, current.segments);
}

function drawProjection(container, projection) {
  if (!projection.available) return notAvailable(container, projection.reason);
  const all = [...projection.points.map((p) => p.xy), ...projection.centres.map((c) => c.xy)];
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const W = 520, H = 380, pad = 30;
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", "data-testid": "projection" });
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: pad, y1: pad, x2: pad, y2: H - pad, class: "axis" }));
  svg.appendChild(svgEl("text", { x: W / 2, y: H - 8, "text-anchor": "middle" }, "component 1"));
  svg.appendChild(svgEl("text", { x: 10, y: H / 2, transform: `rotate(-90 10 ${H / 2})`, "text-anchor": "middle" }, "component 2"));
  for (const p of projection.points) {
    svg.appendChild(svgEl("circle", { cx: sx(p.xy[0]), cy: sy(p.xy[1]), r: 2.4, fill: colourOf(p.segment), "fill-opacity": 0.45, class: "point" }));
  }
  for (const c of projection.centres) {
    svg.appendChild(svgEl("circle", { cx: sx(c.xy[0]), cy: sy(c.xy[1]), r: 7, fill: colourOf(c.id), stroke: "#111", "stroke-width": 1.5, class: "centre" }));
    svg.appendChild(svgEl("text", { x: sx(c.xy[0]) + 9, y: sy(c.xy[1]) + 4 }, c.name));
  }
  container.innerHTML = projection.note ? `<p class="na small">${escapeHtml(projection.note)}</p>` : "";
  container.appendChild(svg);
}

function drawSizes(container, history) {
  if (!history.available) return notAvailable(container, history.reason);
  const versions = history.versions.filter((v) => v.segments);
  const W = 520, H = 300, pad = 34, barW = Math.min(60, (W - 2 * pad) / versions.length * 0.6);
  const totals = versions.map((v) => v.segments.reduce((s, x) => s + (x.size || 0), 0));
  const top = Math.max(...totals, 1);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", "data-testid": "sizes" });
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
  const names = {};
  versions.forEach((v, i) => {
    const x = pad + (i + 0.5) * ((W - 2 * pad) / versions.length) - barW / 2;
    let y = H - pad;
    for (const s of v.segments) {
      const h = ((s.size || 0) / top) * (H - 2 * pad);
      y -= h;
      names[s.id] = s.name;
      const rect = svgEl("rect", { x, y, width: barW, height: Math.max(h, 0), fill: colourOf(s.id), class: "bar" });
      rect.appendChild(svgEl("title", {}, `${v.version}: ${s.name} (#${s.id}) ${s.size}`));
      svg.appendChild(rect);
    }
    svg.appendChild(svgEl("text", { x: x + barW / 2, y: H - pad + 14, "text-anchor": "middle" }, v.version));
    svg.appendChild(svgEl("text", { x: x + barW / 2, y: y - 4, "text-anchor": "middle" }, String(totals[i])));
  });
  container.innerHTML = legend(Object.entries(names).map(([id, n]) => [`${n} (#${id})`, colourOf(id)]));
  container.appendChild(svg);
}

function drawMovement(container, movement, segments) {
  if (!movement.available) return notAvailable(container, movement.reason);
  const nameOf = Object.fromEntries(segments.map((s) => [String(s.id), s.name]));
  const top = Math.max(...movement.customers.flat(), 1);
  const cell = (v) => `<span style="display:block;background:rgba(47,111,222,${(0.08 + 0.8 * v / top).toFixed(2)});padding:0 .3rem">${v}</span>`;
  container.innerHTML = `<p class="small muted">Customers in each segment of ${escapeHtml(movement.previous_version)} (rows) and of ${escapeHtml(movement.version)} (columns); adjusted Rand ${fmt(movement.adjusted_rand)}, ${fmt(100 * movement.changed_share, 1)}% changed segment.</p>` +
    table([`${movement.previous_version} \\ ${movement.version}`, ...movement.new.map((id) => `#${id} ${nameOf[id] || ""}`)],
      movement.previous.map((id, i) => [`#${escapeHtml(id)}`, ...movement.customers[i].map(cell)]),
      movement.new.map((_, i) => i + 1));
}

// ---- models ----------------------------------------------------------------------------
let models = null;

async function loadModels() {
  try {
    models = await get("/ui/api/models");
  } catch (error) {
    showError(errorBox, `Models: ${error.message}`);
    ["bundle-info", "blend-plot", "evaluation-table", "segment-ndcg-plot", "customer-value"]
      .forEach((id) => notAvailable($(id), error.message));
    return;
  }
  const bundle = models.bundle;
  $("bundle-version").textContent = `bundle ${bundle.version}`;
  $("models-version").textContent = `bundle ${bundle.version}, trained ${bundle.created_at || "–"}`;
  const versions = Object.entries(bundle.versions).map(([k, v]) => `${k} ${v}`).join(" · ");
  const metrics = JSON.stringify(bundle.metrics);
  $("bundle-info").innerHTML = `<dt>bundle</dt><dd>${escapeHtml(bundle.version)}</dd>` +
    `<dt>trained</dt><dd>${escapeHtml(bundle.created_at || "–")}</dd>` +
    `<dt>versions</dt><dd>${escapeHtml(versions)}</dd>` +
    `<dt>models</dt><dd>${escapeHtml(bundle.models.join(", "))}</dd>` +
    `<dt>headline metrics</dt><dd>${escapeHtml(metrics)}</dd>`;
  drawBlend($("blend-plot"), models.blend);
  const evaluation = models.evaluation;
  if (!evaluation.available) {
    notAvailable($("evaluation-table"), evaluation.reason);
    notAvailable($("segment-ndcg-plot"), evaluation.reason);
  } else {
    const select = $("view-select");
    select.innerHTML = Object.keys(evaluation.views).map((v) => `<option>${escapeHtml(v)}</option>`).join("");
    select.onchange = () => drawEvaluation(select.value);
    drawEvaluation(select.value);
  }
  const value = models.customer_value;
  if (!value.available) notAvailable($("customer-value"), value.reason);
  else {
    $("customer-value").innerHTML = table(["metric", "value"],
      Object.entries(value.numbers).map(([k, v]) => [escapeHtml(k), fmt(v, 4)]), [1]);
  }
}

function drawBlend(container, blend) {
  if (!blend.available) return notAvailable(container, blend.reason);
  const W = 900, rowH = 24, labelW = 190, pad = 10, H = pad * 2 + rowH * blend.rows.length;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", "data-testid": "blend" });
  blend.rows.forEach((row, r) => {
    const y = pad + r * rowH;
    svg.appendChild(svgEl("text", { x: labelW - 6, y: y + rowH / 2 + 4, "text-anchor": "end" }, row.name));
    const sum = row.weights.reduce((a, b) => a + b, 0) || 1;
    let x = labelW;
    row.weights.forEach((w, m) => {
      const width = (w / sum) * (W - labelW - pad);
      if (width <= 0) return;
      const rect = svgEl("rect", { x, y: y + 3, width, height: rowH - 6, fill: colour(m), class: "bar" });
      rect.appendChild(svgEl("title", {}, `${row.name}: ${blend.models[m]} ${fmt(w, 3)}`));
      svg.appendChild(rect);
      if (width > 34) svg.appendChild(svgEl("text", { x: x + 3, y: y + rowH / 2 + 4, fill: "#fff", style: "fill:#fff" }, fmt(w, 2)));
      x += width;
    });
  });
  container.innerHTML = legend(blend.models.map((m, i) => [m, colour(i)]));
  container.appendChild(svg);
}

function drawEvaluation(view) {
  const body = models.evaluation.views[view];
  const metricNames = ["ndcg", "recall", "precision", "hit_rate", "map", "mrr", "coverage", "n_customers"];
  const rows = Object.entries(body.models);
  const best = Math.max(...rows.map(([, m]) => m.ndcg || 0));
  $("evaluation-table").innerHTML = `<p class="small muted">@${models.evaluation.k}, protocol ${escapeHtml(models.evaluation.protocol)}</p>` +
    table(["model", ...metricNames], rows.map(([name, m]) => [
      m.ndcg === best ? `<b>${escapeHtml(name)}</b>` : escapeHtml(name),
      ...metricNames.map((k) => fmt(m[k], 4)),
    ]), metricNames.map((_, i) => i + 1));
  drawSegmentNdcg($("segment-ndcg-plot"), body.by_segment);
}

function drawSegmentNdcg(container, bySegment) {
  const segments = Object.keys(bySegment || {});
  if (!segments.length) return notAvailable(container, "the evaluation report has no per-segment breakdown");
  const modelNames = Object.keys(bySegment[segments[0]]).filter((k) => k !== "n_customers");
  const W = 900, H = 280, pad = 34, groupW = (W - 2 * pad) / segments.length;
  const barW = (groupW * 0.85) / modelNames.length;
  const top = Math.max(...segments.flatMap((s) => modelNames.map((m) => bySegment[s][m] || 0)), 1e-9);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", "data-testid": "segment-ndcg" });
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
  svg.appendChild(svgEl("text", { x: 4, y: pad - 8 }, `NDCG (max ${fmt(top, 3)})`));
  segments.forEach((s, g) => {
    const gx = pad + g * groupW;
    modelNames.forEach((m, i) => {
      const v = bySegment[s][m] || 0;
      const h = (v / top) * (H - 2 * pad);
      const rect = svgEl("rect", { x: gx + i * barW, y: H - pad - h, width: Math.max(barW - 1, 1), height: h, fill: colour(i), class: "bar" });
      rect.appendChild(svgEl("title", {}, `${s}: ${m} ${fmt(v, 4)}`));
      svg.appendChild(rect);
    });
    svg.appendChild(svgEl("text", { x: gx + groupW * 0.42, y: H - pad + 14, "text-anchor": "middle" },
      `${s} (${bySegment[s].n_customers ?? "?"})`));
  });
  container.innerHTML = legend(modelNames.map((m, i) => [m, colour(i)]));
  container.appendChild(svg);
}

// ---- live ------------------------------------------------------------------------------
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const l of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function summarise(samples) {
  const requests = {}; const buckets = {}; const fallbacks = {};
  for (const s of samples) {
    const endpoint = s.labels.endpoint;
    if (s.name === "bentoml_service_request_total" && API_ENDPOINTS.includes(endpoint)) {
      requests[endpoint] = (requests[endpoint] || 0) + s.value;
    } else if (s.name === "bentoml_service_request_duration_seconds_bucket" && API_ENDPOINTS.includes(endpoint)) {
      buckets[s.labels.le] = (buckets[s.labels.le] || 0) + s.value;
    } else if (s.name === "segrec_fallbacks_total") {
      const key = `${s.labels.endpoint} · ${s.labels.reason}`;
      fallbacks[key] = (fallbacks[key] || 0) + s.value;
    }
  }
  return { requests, buckets, fallbacks, at: performance.now() };
}

// Percentile from cumulative histogram buckets (linear within the bucket, as Prometheus does).
function percentile(buckets, q) {
  const bounds = Object.keys(buckets).map((le) => [le === "+Inf" ? Infinity : Number(le), buckets[le]])
    .sort((a, b) => a[0] - b[0]);
  if (!bounds.length) return null;
  const total = bounds[bounds.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [upper, count] of bounds) {
    if (count >= rank) {
      if (upper === Infinity) return lower;
      return lower + (upper - lower) * ((rank - below) / Math.max(count - below, 1e-9));
    }
    lower = upper; below = count;
  }
  return lower;
}

let previousScrape = null;
const rpsHistory = [];

async function pollLive() {
  let text;
  try {
    text = await get("/metrics");
  } catch (error) {
    notAvailable($("live-stats"), `the service's /metrics: ${error.message}`);
    return;
  }
  const now = summarise(parseMetrics(text));
  const totalNow = Object.values(now.requests).reduce((a, b) => a + b, 0);
  let rps = null, window = "since start", latencyBuckets = now.buckets;
  if (previousScrape) {
    const seconds = (now.at - previousScrape.at) / 1000;
    const totalBefore = Object.values(previousScrape.requests).reduce((a, b) => a + b, 0);
    rps = Math.max(totalNow - totalBefore, 0) / seconds;
    const delta = Object.fromEntries(Object.entries(now.buckets).map(([le, v]) => [le, v - (previousScrape.buckets[le] || 0)]));
    if ((delta["+Inf"] || 0) > 0) { latencyBuckets = delta; window = `last ${seconds.toFixed(0)} s`; }
  }
  previousScrape = now;
  if (rps !== null) { rpsHistory.push(rps); if (rpsHistory.length > 60) rpsHistory.shift(); }
  const ms = (q) => { const v = percentile(latencyBuckets, q); return v == null ? "–" : `${(v * 1000).toFixed(1)} ms`; };
  const fallbackTotal = Object.values(now.fallbacks).reduce((a, b) => a + b, 0);
  $("live-stats").innerHTML =
    `<span class="stat" data-testid="rps"><span class="muted small">requests/s</span><br><span class="value">${rps == null ? "…" : rps.toFixed(2)}</span></span>` +
    `<span class="stat"><span class="muted small">p50 (${window})</span><br><span class="value">${ms(0.5)}</span></span>` +
    `<span class="stat"><span class="muted small">p95</span><br><span class="value">${ms(0.95)}</span></span>` +
    `<span class="stat"><span class="muted small">p99</span><br><span class="value">${ms(0.99)}</span></span>` +
    `<span class="stat"><span class="muted small">requests (total)</span><br><span class="value">${totalNow}</span></span>` +
    `<span class="stat"><span class="muted small">fallbacks (total)</span><br><span class="value">${fallbackTotal}</span></span>`;
  $("fallback-table").innerHTML = Object.keys(now.fallbacks).length
    ? table(["endpoint · reason", "answers"], Object.entries(now.fallbacks).map(([k, v]) => [escapeHtml(k), v]), [1])
    : `<p class="muted small">none so far</p>`;
  drawSparkline($("rps-plot"), rpsHistory);
}

function drawSparkline(container, values) {
  const W = 520, H = 120, pad = 20;
  const top = Math.max(...values, 1);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", "data-testid": "rps-plot" });
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" }));
  svg.appendChild(svgEl("text", { x: pad, y: 12 }, `max ${top.toFixed(1)} req/s, last ${values.length * 2} s`));
  const points = values.map((v, i) => `${pad + (i / 59) * (W - 2 * pad)},${H - pad - (v / top) * (H - 2 * pad)}`);
  if (points.length) svg.appendChild(svgEl("polyline", { points: points.join(" "), fill: "none", stroke: "#2f6fde", "stroke-width": 2 }));
  container.innerHTML = "";
  container.appendChild(svg);
}

loadSegments();
loadModels();
pollLive();
setInterval(pollLive, 2000);
