// The storefront demo: pick a customer, show the three carousels the service gives them,
// post real events on clicks and refresh. Everything goes through the service's own
// endpoints (/recommend, /events) and the read-only /ui/api/ (cards, picking, churn/CLV).
"use strict";

const $ = (id) => document.getElementById(id);
const errorBox = $("error");
const PLACEMENTS = ["home", "product", "cart"];
const FALLBACKS = {
  unknown_customer: "this visitor is not known to the service (no profile online), so every carousel shows global popularity",
  no_consent: "this customer has not consented to personalisation, so every carousel shows global popularity",
  store_unavailable: "the online feature store did not answer in time, so the service fell back to global popularity",
  missing_features: "some features were missing and defaulted; the carousels are still personal",
};

const state = {
  overview: null,
  offsetMs: 0, // service clock minus this browser's clock (the service may run on the data's clock)
  customer: null,
  anchor: null, // the product whose page the "similar items" carousel is for
  session: null,
  previous: {},
  cards: {},
  titlesMissing: null,
};

function serverNowMs() { return Date.now() + state.offsetMs; }

function newSession() {
  const base = `ui-${Math.random().toString(16).slice(2, 10)}`;
  // virtualMs: when the event happened on the demo's clock, which fast-forward moves ahead.
  return { base, id: base, ffCount: 0, shiftMinutes: 0, events: [], basket: new Map() };
}

async function init() {
  try {
    const overview = await get("/ui/api/overview");
    state.overview = overview;
    state.offsetMs = Date.parse(overview.now) - Date.now();
    $("bundle-version").textContent = `bundle ${overview.bundle_version} · segments ${overview.segments_version}`;
    const select = $("segment-select");
    for (const s of overview.segments) {
      const option = document.createElement("option");
      option.value = s.id;
      option.textContent = `${s.name} (#${s.id}, ${s.customers} customers)`;
      option.disabled = s.customers === 0;
      select.appendChild(option);
    }
    if (overview.customers) {
      // No segment snapshot here (a container): say why instead of a dead button.
      $("random-customer").disabled = true;
      $("picker-note").textContent = `random from segment: ${overview.customers}`;
      $("picker-note").classList.remove("hidden");
    }
    $("ff-help").textContent = `The service's clock is "${overview.feature_clock}". Fast-forward re-posts this ` +
      `session's events as a new session, dated that many minutes earlier, as if the customer had been away ` +
      `(sessions expire after ${overview.session_timeout_minutes} idle minutes).`;
  } catch (error) {
    showError(errorBox, `The demo cannot start: ${error.message}`);
  }
  const params = new URLSearchParams(location.search);
  if (params.get("customer")) selectCustomer(params.get("customer"));
}

// ---- picking ---------------------------------------------------------------------------
let searchTimer = null;
$("customer-id").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const prefix = event.target.value.trim();
  if (prefix.length < 3) return;
  searchTimer = setTimeout(async () => {
    try {
      const answer = await get(`/ui/api/customers?q=${encodeURIComponent(prefix)}`);
      $("customer-suggestions").innerHTML = answer.customers
        .map((c) => `<option value="${escapeHtml(c)}"></option>`).join("");
    } catch (_) { /* suggestions are a convenience: typing a full id still works */ }
  }, 200);
});
$("customer-id").addEventListener("keydown", (event) => {
  if (event.key === "Enter") selectCustomer(event.target.value.trim());
});
$("load-customer").addEventListener("click", () => selectCustomer($("customer-id").value.trim()));
$("random-customer").addEventListener("click", async () => {
  clearError(errorBox);
  try {
    const answer = await get(`/ui/api/customers?segment=${encodeURIComponent($("segment-select").value)}`);
    selectCustomer(answer.customers[0]);
  } catch (error) {
    showError(errorBox, error.message);
  }
});
$("new-visitor").addEventListener("click", () => {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(8)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  selectCustomer(`c_${hex}`);
});

function selectCustomer(customerId) {
  if (!customerId) {
    showError(errorBox, "Type a customer id first (c_ followed by 16 hex digits), or pick one.");
    return;
  }
  state.customer = customerId;
  state.anchor = null;
  state.session = newSession();
  state.previous = {};
  $("customer-id").value = customerId;
  $("customer-shown").textContent = customerId;
  $("event-log").innerHTML = "";
  renderBasket();
  return refresh();
}

// ---- carousels -------------------------------------------------------------------------
async function refresh() {
  clearError(errorBox);
  const customer = state.customer;
  document.body.dataset.loading = "1";
  try {
    const home = await post("/recommend", { customer_id: customer, k: 10, placement: "home" });
    if (!state.anchor && home.items.length) state.anchor = home.items[0].product_id;
    const [product, cart, value] = await Promise.all([
      post("/recommend", { customer_id: customer, k: 10, placement: "product", product_id: state.anchor }),
      post("/recommend", { customer_id: customer, k: 10, placement: "cart" }),
      get(`/ui/api/customer?id=${encodeURIComponent(customer)}`).catch((e) => ({ unavailable: e.message })),
    ]);
    if (customer !== state.customer) return; // another customer was picked meanwhile
    const answers = { home, product, cart };
    const ids = PLACEMENTS.flatMap((p) => answers[p].items.map((i) => i.product_id));
    await loadCards([...ids, state.anchor].filter(Boolean));
    renderCustomer(home, value);
    for (const placement of PLACEMENTS) renderCarousel(placement, answers[placement]);
    ["customer-panel", "session-panel"].forEach((id) => $(id).classList.remove("hidden"));
  } catch (error) {
    showError(errorBox, error.message);
    for (const placement of PLACEMENTS) $(`carousel-${placement}`).classList.add("hidden");
    $("customer-panel").classList.add("hidden");
    $("session-panel").classList.add("hidden");
  } finally {
    document.body.dataset.loading = "";
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }
}

async function loadCards(productIds) {
  const wanted = [...new Set(productIds)].filter((p) => !(p in state.cards));
  if (!wanted.length) return;
  const answer = await get(`/ui/api/products?ids=${wanted.map(encodeURIComponent).join(",")}`);
  Object.assign(state.cards, answer.products);
  state.titlesMissing = answer.titles_missing;
}

function renderCustomer(home, value) {
  const badges = [];
  const segment = home.segment;
  if (segment) {
    const p = segment.probability == null ? "" : `, p=${fmt(segment.probability, 2)}`;
    badges.push(`<span class="badge segment" data-testid="segment-badge" data-segment-id="${segment.id}">segment: <b>${escapeHtml(segment.name)}</b> (#${segment.id}, ${escapeHtml(segment.assigned)}${p})</span>`);
    if (segment.stored_id != null) {
      badges.push(`<span class="badge warn">moved live from segment #${segment.stored_id}</span>`);
    }
  } else {
    badges.push(`<span class="badge" data-testid="segment-badge">segment: –</span>`);
  }
  badges.push(`<span class="badge" data-testid="lifecycle-badge">lifecycle: <b>${escapeHtml(home.lifecycle_stage || "–")}</b></span>`);
  if (value.unavailable) {
    badges.push(`<span class="badge warn" data-testid="value-badge">churn risk / CLV: not available (${escapeHtml(value.unavailable)})</span>`);
  } else if (!value.known) {
    badges.push(`<span class="badge" data-testid="value-badge">churn risk / CLV: n/a (not a known customer)</span>`);
  } else if (value.value_missing) {
    badges.push(`<span class="badge warn" data-testid="value-badge">churn risk / CLV: not scored yet (make train writes them)</span>`);
  } else {
    const risk = value.churn_risk;
    const riskClass = risk != null && risk >= 0.7 ? "risk-high" : "";
    badges.push(`<span class="badge ${riskClass}" data-testid="churn-badge">churn risk: <b>${risk == null ? "n/a" : Math.round(risk * 100) + "%"}</b></span>`);
    badges.push(`<span class="badge" data-testid="clv-badge">CLV band: <b>${escapeHtml(value.clv_band || "n/a")}</b></span>`);
  }
  if (home.live_session) badges.push(`<span class="badge live" data-testid="live-badge">live session</span>`);
  if (home.experiment) {
    badges.push(`<span class="badge">experiment <b>${escapeHtml(home.experiment.name)}</b>: variant <b>${escapeHtml(home.experiment.variant)}</b></span>`);
  }
  $("badges").innerHTML = badges.join("");

  const fallback = $("fallback");
  if (home.fallback) {
    fallback.innerHTML = `<b>Not fully personalised</b> (fallback <code>${escapeHtml(home.fallback)}</code>): ` +
      escapeHtml(FALLBACKS[home.fallback] || "the service could not personalise this answer");
    fallback.dataset.reason = home.fallback;
    fallback.classList.remove("hidden");
  } else {
    fallback.classList.add("hidden");
    fallback.dataset.reason = "";
  }

  const rules = $("rules");
  const tactics = home.tactics || {};
  if (tactics.rules && tactics.rules.length) {
    const outputs = Object.entries(tactics).filter(([k]) => k !== "rules")
      .map(([k, v]) => `${escapeHtml(k)}: <b>${escapeHtml(v)}</b>`).join(", ");
    rules.innerHTML = `Tactics rules applied: <b data-testid="rule-ids">${tactics.rules.map(escapeHtml).join(", ")}</b>` +
      (outputs ? ` — ${outputs}` : "");
    rules.classList.remove("hidden");
  } else {
    rules.classList.add("hidden");
    rules.innerHTML = "";
  }
}

function renderCarousel(placement, answer) {
  const section = $(`carousel-${placement}`);
  const ids = answer.items.map((i) => i.product_id);
  const before = state.previous[placement];
  const fresh = before ? ids.filter((p) => !before.includes(p)) : [];
  state.previous[placement] = ids;
  const changed = section.querySelector(".changed");
  changed.textContent = before ? `${fresh.length} of ${ids.length} new since the last refresh` : "";
  section.dataset.changed = String(fresh.length);
  if (placement === "product") {
    const anchor = state.cards[state.anchor];
    section.querySelector(".anchor").textContent = anchor ? (anchor.title || anchor.product_id) : "–";
  }
  const context = { tactics: answer.tactics, experiment: answer.experiment, fallback: answer.fallback };
  section.querySelector(".cards").innerHTML = answer.items.length
    ? answer.items.map((item, n) => cardHtml(item, n + 1, fresh.includes(item.product_id), context)).join("")
    : `<p class="na">no items: every candidate was filtered out</p>`;
  section.classList.remove("hidden");
}

function cardHtml(item, rank, fresh, context) {
  const card = state.cards[item.product_id] || { product_id: item.product_id };
  const title = card.title || `${item.product_id}`;
  const titleNote = card.title ? "" : `<div class="small na">title not available${state.titlesMissing ? ": " + escapeHtml(state.titlesMissing) : ""}</div>`;
  const price = card.price == null ? "–" : `€${card.price.toFixed(2)}`;
  const stock = card.in_stock === false ? `<span class="stock out">out of stock</span>` : `<span class="stock in">in stock</span>`;
  const parts = Object.entries(item.contributions || {}).sort((a, b) => b[1] - a[1]);
  const top = parts.length ? parts[0][1] : 1;
  const bars = parts.map(([name, v]) => `<div class="bar"><span>${escapeHtml(name)}</span>` +
    `<span><span class="fill" style="width:${Math.max(2, (100 * v) / top)}%"></span></span><span>${fmt(v, 3)}</span></div>`).join("");
  const rules = context.tactics && context.tactics.rules && context.tactics.rules.length
    ? `<div>rules: ${context.tactics.rules.map(escapeHtml).join(", ")}</div>` : "<div>rules: none applied</div>";
  const experiment = context.experiment
    ? `<div>experiment: ${escapeHtml(context.experiment.name)}, variant ${escapeHtml(context.experiment.variant)}</div>` : "";
  const fallback = context.fallback ? `<div>fallback: ${escapeHtml(context.fallback)}</div>` : "";
  return `<div class="card${fresh ? " fresh" : ""}" data-product-id="${escapeHtml(item.product_id)}" data-testid="card" tabindex="0">
    <span class="rank">#${rank}</span>
    <div class="title" data-action="view" title="open this product (posts a view event)">${escapeHtml(title)}</div>
    ${titleNote}
    <div class="meta">${escapeHtml(card.category || "")}${card.brand ? " · " + escapeHtml(card.brand) : ""}</div>
    <div class="meta"><span class="price">${price}</span> ${stock}</div>
    <div class="actions">
      <button data-action="view" class="secondary">View</button>
      <button data-action="cart" ${card.in_stock === false ? "disabled" : ""}>Add to cart</button>
    </div>
    <div class="why" data-testid="why"><b>Why it is here</b> (score ${fmt(item.score, 4)})${bars}${rules}${experiment}${fallback}</div>
  </div>`;
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-action]");
  const card = event.target.closest(".card");
  if (!target || !card || !state.customer) return;
  const productId = card.dataset.productId;
  if (target.dataset.action === "view") {
    state.anchor = productId;
    sendEvents([{ product_id: productId, type: "view" }]);
  } else if (target.dataset.action === "cart") {
    const price = (state.cards[productId] || {}).price;
    sendEvents([{ product_id: productId, type: "add_to_cart", ...(price == null ? {} : { price }) }]);
  }
});

// ---- events and time -------------------------------------------------------------------
async function sendEvents(partial) {
  const session = state.session;
  const nowMs = serverNowMs();
  const events = partial.map((e) => ({
    customer_id: state.customer, session_id: session.id, ts: new Date(nowMs).toISOString(), ...e,
  }));
  const virtualMs = nowMs + session.shiftMinutes * 60000;
  const ok = await postEvents(events, events.map((e) => `${e.type} ${e.product_id}`));
  if (ok) {
    events.forEach((event, n) => {
      if (!ok.rejectedIndexes.has(n)) session.events.push({ event, virtualMs });
      if (ok.rejectedIndexes.has(n)) return;
      if (event.type === "add_to_cart") session.basket.set(event.product_id, event.price);
      if (event.type === "purchase") session.basket.delete(event.product_id);
    });
    renderBasket();
  }
  await refresh();
}

async function postEvents(events, labels) {
  clearError(errorBox);
  try {
    const answer = await post("/events", { events });
    const rejectedIndexes = new Set(answer.rejected.map((r) => r.index));
    labels.forEach((label, n) => logLine(label, rejectedIndexes.has(n)
      ? answer.rejected.find((r) => r.index === n) : null));
    if (answer.rejected.length) {
      const r = answer.rejected[0];
      showError(errorBox, `POST /events rejected ${answer.rejected.length} event(s): ${r.field}: ${r.reason}`);
    }
    if (answer.session_updated === false) {
      showError(errorBox, `Events were logged but the live session was not updated: ${answer.session_error || "store down"}`);
    }
    return { rejectedIndexes };
  } catch (error) {
    showError(errorBox, error.message);
    return null;
  }
}

function logLine(label, rejection) {
  const li = document.createElement("li");
  li.textContent = rejection ? `${label}: rejected (${rejection.field}: ${rejection.reason})` : `${label}: accepted`;
  if (rejection) li.className = "rejected";
  $("event-log").prepend(li);
}

function renderBasket() {
  const basket = state.session ? state.session.basket : new Map();
  $("basket").innerHTML = basket.size
    ? [...basket.keys()].map((p) => `<li>${escapeHtml((state.cards[p] || {}).title || p)}</li>`).join("")
    : `<li class="muted">empty</li>`;
  $("buy").disabled = !basket.size;
}

$("buy").addEventListener("click", () => {
  const basket = state.session.basket;
  sendEvents([...basket.entries()].map(([p, price]) => ({
    product_id: p, type: "purchase", ...(price == null ? {} : { price }),
  })));
});

// The live session keeps only its newest event time, so events cannot be moved back in
// place: fast-forward re-posts the whole session under a new session id, every event
// dated `minutes` earlier (on the service's clock), which is what the service would hold
// had the customer walked away that long ago. Abandoned-basket rules and the live
// segment (recency) then see the idle time.
$("fast-forward").addEventListener("click", async () => {
  const session = state.session;
  const minutes = Number($("ff-minutes").value);
  if (!session || !(minutes > 0)) return;
  if (!session.events.length) {
    $("clock").textContent = "Nothing to fast-forward yet: view a product or fill the basket first.";
    return;
  }
  session.shiftMinutes += minutes;
  session.ffCount += 1;
  session.id = `${session.base}-ff${session.ffCount}`;
  const events = session.events.map(({ event, virtualMs }) => ({
    ...event, session_id: session.id, ts: new Date(virtualMs - session.shiftMinutes * 60000).toISOString(),
  }));
  const ok = await postEvents(events, [`fast-forward ${minutes} min: re-posted ${events.length} event(s) as ${session.id}`]);
  if (ok) {
    const last = Math.max(...session.events.map((e) => e.virtualMs));
    const idle = Math.round((serverNowMs() + session.shiftMinutes * 60000 - last) / 60000);
    $("clock").textContent = `Demo clock ${session.shiftMinutes} min ahead: the session's last event was ${idle} min ago.`;
    $("clock").dataset.shift = String(session.shiftMinutes);
  }
  await refresh();
});

init();
