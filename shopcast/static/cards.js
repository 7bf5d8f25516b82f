// shopcast product cards, shared by the live shop page and the replay page: the rail of cards,
// the pinned product, the flash deal and the poll over the video, and the buy beacon. The tags
// come from the viewer module's events (shopcast-player.js, see page.js).
// Tag data is merchant/API text: it only ever goes into textContent and attributes, never markup.
//
// For tests: window.shopcast.clicks (failed beacons go to window.shopcast.errors).

const POLL_SHOW = 30; // seconds a poll stays up without an end

// Cards for one page. `source` ("live" or "replay") tells the beacon where a click came from.
export function createCards(streamId, source) {
  const $ = (id) => document.getElementById(id);
  const ui = { pin: $("pin"), deal: $("deal"), poll: $("poll"), cards: $("cards") };
  const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
    clicks: [],
    stream: streamId,
  }));
  const state = { product: null, deal: null, poll: null };

  function money(data) {
    if (!data || data.price === undefined) return "";
    const value = Number(data.price);
    if (data.currency && Number.isFinite(value)) {
      try {
        return new Intl.NumberFormat(undefined, { style: "currency", currency: data.currency })
          .format(value);
      } catch (e) {
        /* unknown currency code */
      }
    }
    return String(data.price);
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A square picture: `image` if it is an http(s) or same-origin URL, else the colour swatch.
  function thumb(data, image) {
    const t = el("div", "thumb");
    if (data && data.colour) t.style.setProperty("--swatch", data.colour);
    if (image && /^(https?:|\/)/.test(image)) t.style.backgroundImage = `url("${encodeURI(image)}")`;
    return t;
  }

  function productImage(data) {
    return data && (data.image || data.image_url);
  }

  function buyButton(tag) {
    const b = el("button", "buy", tag.kind === "deal" ? "Grab deal" : "Buy");
    b.type = "button";
    b.addEventListener("click", () => click(tag, b));
    return b;
  }

  function click(tag, button, extra) {
    sc.clicks.push({ id: tag.id, source, extra: extra || null });
    const url =
      `/beacon/${encodeURIComponent(streamId)}/tags/${encodeURIComponent(tag.id)}/click` +
      `?source=${source}`;
    fetch(url, { method: "POST", keepalive: true })
      .then((r) => r.json())
      .then(() => {
        if (button && button.classList.contains("buy")) {
          button.textContent = "Added ✓";
          button.classList.add("done");
        }
      })
      .catch((e) => sc.errors.push({ type: "beacon", details: String(e), fatal: false }));
  }

  function title(tag) {
    const data = tag.data || {};
    return String(data.title || tag.productId || tag.id);
  }

  function productBlock(tag, withBuy) {
    const frag = document.createDocumentFragment();
    const data = tag.data || {};
    frag.append(thumb(data, productImage(data)));
    const info = el("div", "info");
    info.append(el("div", "kind", tag.kind === "deal" ? "flash deal" : tag.kind || "product"));
    info.append(el("div", "title", title(tag)));
    const price = el("div", "price", money(data));
    if (data.was) price.append(el("s", "", money({ ...data, price: data.was })));
    info.append(price);
    frag.append(info);
    if (withBuy) frag.append(buyButton(tag));
    return frag;
  }

  // One record per tag id: the module's tag fields, its rail card, whether it is on.
  const records = new Map();
  function record(tag) {
    let rec = records.get(tag.id);
    if (!rec) records.set(tag.id, (rec = { card: null, fired: false }));
    Object.assign(rec, {
      id: tag.id, kind: tag.kind, productId: tag.product_id, data: tag.data,
      start: tag.start, end: tag.end,
    });
    return rec;
  }

  function renderCard(rec) {
    if (rec.kind === "poll" || rec.card || !rec.kind) return;
    const li = el("li", "card" + (rec.kind === "deal" ? " deal-card" : ""));
    li.dataset.tag = rec.id;
    li.append(productBlock(rec, true));
    ui.cards.prepend(li);
    rec.card = li;
  }

  function lightCards() {
    const on = new Set([state.product, state.deal, state.poll]);
    for (const rec of records.values()) {
      if (rec.card) rec.card.classList.toggle("active", on.has(rec));
    }
  }

  // A tag's range starts on the frame at mediaTime (the module's "tag" event).
  function fire(tag, mediaTime) {
    const rec = record(tag);
    rec.fired = true;
    renderCard(rec);
    if (rec.kind === "product") {
      state.product = rec; // END-ON-NEXT: a new pin replaces the old one
      ui.pin.replaceChildren(productBlock(rec, true));
      ui.pin.hidden = false;
      ui.pin.dataset.tag = rec.id;
    } else if (rec.kind === "deal") {
      state.deal = rec;
      ui.deal.replaceChildren(productBlock(rec, true));
      const kind = ui.deal.querySelector(".kind");
      if (kind) kind.append(" · ends in ", el("span", "timer", ""));
      ui.deal.hidden = false;
      ui.deal.dataset.tag = rec.id;
    } else if (rec.kind === "poll") {
      state.poll = rec;
      const data = rec.data || {};
      const opts = el("div", "opts");
      (Array.isArray(data.options) ? data.options : []).forEach((option, i) => {
        const b = el("button", "", String(option));
        b.type = "button";
        b.addEventListener("click", () => {
          opts.querySelectorAll("button").forEach((x) => x.classList.remove("chosen"));
          b.classList.add("chosen");
          click(rec, b, { option: i });
        });
        opts.append(b);
      });
      ui.poll.replaceChildren(el("div", "q", String(data.question || "Poll")), opts);
      ui.poll.hidden = false;
      ui.poll.dataset.tag = rec.id;
    }
    update(mediaTime);
    lightCards();
    if (rec.card) rec.card.classList.add("seen");
  }

  // Its range ended on this frame, or a seek left it (the module's "tagend" event).
  function end(tag) {
    const rec = record(tag);
    for (const [slot, node] of [["product", ui.pin], ["deal", ui.deal], ["poll", ui.poll]]) {
      if (state[slot] === rec) {
        state[slot] = null;
        node.hidden = true;
      }
    }
    lightCards();
  }

  // A tag whose range was already over when playback reached it: only a card in the rail.
  function passed(tag) {
    const rec = record(tag);
    renderCard(rec);
    if (rec.card) rec.card.classList.add("seen");
  }

  // Now and then: the deal's countdown ticks, a poll without an end times out.
  function update(t) {
    if (state.deal) {
      const timer = ui.deal.querySelector(".timer");
      if (timer) timer.textContent = state.deal.end === null ? "" : countdown(state.deal.end - t);
    }
    if (state.poll && state.poll.end === null && t >= state.poll.start + POLL_SHOW) {
      state.poll = null;
      ui.poll.hidden = true;
    }
    lightCards();
  }

  function countdown(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  return { fire, end, passed, update, el, thumb, title };
}

