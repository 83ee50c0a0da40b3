// Shared by the storefront and the console: calling the service and saying what went wrong.
"use strict";

class ApiError extends Error {
  constructor(method, url, status, body) {
    super(`${method} ${url} answered ${status}: ${describeError(body)}`);
    this.status = status;
    this.body = body;
  }
}

// The service's 4xx bodies: {"error", "field"} or BentoML's {"error", "detail": [{loc, msg}]}.
function describeError(body) {
  if (body === null || body === undefined) return "no answer";
  if (typeof body === "string") return body.slice(0, 300);
  const parts = [];
  if (body.error) parts.push(String(body.error));
  if (body.field) parts.push(`(field: ${body.field})`);
  if (Array.isArray(body.detail)) {
    for (const d of body.detail.slice(0, 3)) {
      const loc = (d.loc || []).filter((p) => p !== "body").join(".");
      parts.push(`${loc}: ${d.msg || ""}`);
    }
  }
  return parts.join(" ") || JSON.stringify(body).slice(0, 300);
}

async function call(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new ApiError(method, url, "no connection", String(error));
  }
  const text = await response.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch (_) { /* text answers (metrics) stay text */ }
  if (!response.ok) throw new ApiError(method, url, response.status, parsed);
  return parsed;
}

const post = (url, body) => call("POST", url, body);
const get = (url) => call("GET", url);

function escapeHtml(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return escapeHtml(value);
  return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toFixed(digits).replace(/\.?0+$/, "") || "0";
}

// A distinct colour per segment, stable within a page.
const PALETTE = ["#2f6fde", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285",
  "#e67700", "#5f3dc4", "#a61e4d", "#495057", "#74b816", "#1098ad"];
function colour(index) { return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length]; }

function showError(element, message) {
  element.textContent = message;
  element.classList.remove("hidden");
}
function clearError(element) {
  element.textContent = "";
  element.classList.add("hidden");
}

// "Not available: <why>" for a console part the service has no data for.
function notAvailable(container, reason) {
  container.innerHTML = `<p class="na" data-testid="not-available">not available: ${escapeHtml(reason)}</p>`;
}

function svgEl(name, attributes = {}, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  if (text !== undefined) el.textContent = text;
  return el;
}
