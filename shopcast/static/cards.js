// shopcast product cards, shared by the live shop page and the replay page: the rail of cards,
// the pinned product, the flash deal and the poll over the video, and the buy beacon.
// Tag data is merchant/API text: it only ever goes into textContent and attributes.
//
// For tests: window.shopcast.clicks (failed beacons go to window.shopcast.errors).
(() => {
  "use strict";

  const POLL_SHOW = 30; // seconds a poll stays up without a DURATION

  // Cards for one page. `source` ("live" or "replay") tells the beacon where a click came from.
  function create(streamId, source) {
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

    function renderCard(tag) {
      if (tag.kind === "poll" || tag.card) return;
      if (!tag.kind) return;
      const li = el("li", "card" + (tag.kind === "deal" ? " deal-card" : ""));
      li.dataset.tag = tag.id;
      li.append(productBlock(tag, true));
      ui.cards.prepend(li);
      tag.card = li;
    }

    function isActive(tag, t) {
      if (!tag.fired) return false;
      if (tag.kind === "product") return state.product === tag && !(tag.end !== null && t >= tag.end);
      if (tag.kind === "deal") return state.deal === tag && !(tag.end !== null && t >= tag.end);
      return state.poll === tag;
    }

    function lightCards(t) {
      for (const tag of Object.values(sc.tags)) {
        if (tag.card) tag.card.classList.toggle("active", isActive(tag, t));
      }
    }

    // A tag's range starts on the frame at mediaTime.
    function fire(tag, mediaTime) {
      renderCard(tag);
      if (tag.kind === "product") {
        state.product = tag; // END-ON-NEXT: a new pin replaces the old one
        ui.pin.replaceChildren(productBlock(tag, true));
        ui.pin.hidden = false;
        ui.pin.dataset.tag = tag.id;
      } else if (tag.kind === "deal") {
        state.deal = tag;
        ui.deal.replaceChildren(productBlock(tag, true));
        const kind = ui.deal.querySelector(".kind");
        if (kind) kind.append(" · ends in ", el("span", "timer", ""));
        ui.deal.hidden = false;
        ui.deal.dataset.tag = tag.id;
      } else if (tag.kind === "poll") {
        state.poll = tag;
        const data = tag.data || {};
        const opts = el("div", "opts");
        (data.options || []).forEach((option, i) => {
          const b = el("button", "", String(option));
          b.type = "button";
          b.addEventListener("click", () => {
            opts.querySelectorAll("button").forEach((x) => x.classList.remove("chosen"));
            b.classList.add("chosen");
            click(tag, b, { option: i });
          });
          opts.append(b);
        });
        ui.poll.replaceChildren(el("div", "q", String(data.question || "Poll")), opts);
        ui.poll.hidden = false;
        ui.poll.dataset.tag = tag.id;
      }
      lightCards(mediaTime);
      if (tag.card) tag.card.classList.add("seen");
    }

    // A tag whose range was already over when playback reached it: only a card in the rail.
    function passed(tag) {
      renderCard(tag);
      if (tag.card) tag.card.classList.add("seen");
    }

    let lastUi = 0;
    // Every presented frame: ranges end, the deal's countdown ticks, the cards follow.
    function update(t) {
      if (state.product && state.product.end !== null && t >= state.product.end) {
        state.product = null;
        ui.pin.hidden = true;
      }
      if (state.deal) {
        const end = state.deal.end;
        if (end !== null && t >= end) {
          state.deal = null;
          ui.deal.hidden = true;
        } else {
          const timer = ui.deal.querySelector(".timer");
          if (timer) timer.textContent = end === null ? "" : countdown(end - t);
        }
      }
      if (state.poll) {
        const end = state.poll.end !== null ? state.poll.end : state.poll.start + POLL_SHOW;
        if (t >= end) {
          state.poll = null;
          ui.poll.hidden = true;
        }
      }
      const now = performance.now();
      if (now - lastUi > 200) {
        lastUi = now;
        lightCards(t);
      }
    }

    // Nothing on screen (before the tags fire again from a new position).
    function reset() {
      state.product = state.deal = state.poll = null;
      ui.pin.hidden = ui.deal.hidden = ui.poll.hidden = true;
      for (const tag of Object.values(sc.tags)) {
        if (tag.card) tag.card.classList.remove("active");
      }
    }

    function countdown(seconds) {
      const s = Math.max(0, Math.ceil(seconds));
      return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    }

    return { fire, passed, update, reset, el, thumb, title };
  }

  window.ShopcastCards = { create };
})();
