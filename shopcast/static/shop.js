// shopcast demo shop page: hls.js (LL-HLS) + product cards that light up on the tagged frame.
//
// Two cue paths, both surfaced by hls.js on its "id3" metadata TextTrack (LLHLS_RULES.md,
// "Timed metadata"):
//   daterange — one cue per client attribute of each EXT-X-DATERANGE; cue.id = the range ID,
//               cue.value = {key: "X-COM-SHOPCAST-…", data}; X-COM-SHOPCAST-DATA is 0x<hex JSON>.
//   emsg      — one cue per ID3 frame of each emsg box; our TXXX frame is
//               cue.value = {key: "TXXX", info: "com.shopcast.tag", data: "<tag JSON>"}.
// A tag fires on the first presented frame whose mediaTime reaches the cue's startTime
// (requestVideoFrameCallback; fallback: cuechange), whichever path has its cue first.
//
// For tests: window.hls, window.shopcast.{errors, levelSwitches, fired, tags}; a test may set
// window.shopcast.probe = (video, metadata) => number | object before load: it runs in the same
// video frame callback as the fire; a number is logged as fired[i].frame, an object's fields
// are merged into fired[i].
(() => {
  "use strict";

  const DATERANGE_CUE_TYPE = "com.apple.quicktime.HLS";
  const EMSG_CUE_TYPE = "https://aomedia.org/emsg/ID3";
  const ID3_DESCRIPTION = "com.shopcast.tag";
  // A cue's startTime comes from the PDT mapping (ms precision; hls.js re-aligns only drifts
  // over 10 ms), so a frame counts as "reached" this much before the exact time (< ½ frame).
  const EPSILON = 0.012;
  // A fire more than this after the cue's start is logged as late (a viewer joining while the
  // tag is on, or a cue that arrived after its frame was shown).
  const LATE_AFTER = 0.1;
  const POLL_SHOW = 30; // seconds a poll stays up without a DURATION

  const streamId = document.body.dataset.stream;
  const params = new URLSearchParams(location.search);
  const video = document.getElementById("video");
  const $ = (id) => document.getElementById(id);
  const ui = {
    pin: $("pin"), deal: $("deal"), poll: $("poll"), cards: $("cards"),
    level: $("level"), latency: $("latency"), live: $("live"), waiting: $("waiting"),
    sound: $("sound"),
  };

  const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
    errors: [],
    levelSwitches: [],
    fired: [], // {id, path, mediaTime, frame?, late, level, kind}
    tags: {}, // id -> tag state
    clicks: [],
    stream: streamId,
  }));

  // ---- tag model ------------------------------------------------------------------------
  // tag: {id, kind, productId, data, start, end, fired, late, paths:Set, card}
  const entries = new Map(); // `${path}|${id}` -> {id, path, cue, seenAt}

  function tagFor(id) {
    let tag = sc.tags[id];
    if (!tag) {
      tag = sc.tags[id] = {
        id, kind: null, productId: null, data: null, start: NaN, end: null,
        fired: false, late: false, paths: [], card: null,
      };
    }
    return tag;
  }

  function hexToText(value) {
    // hls.js hands over the attribute text ("0x7B22…"); Safari's DataCue may give the bytes.
    if (value instanceof ArrayBuffer) return new TextDecoder().decode(value);
    const clean = String(value).replace(/^0x/i, "");
    const bytes = new Uint8Array(clean.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(clean.substr(i * 2, 2), 16);
    return new TextDecoder().decode(bytes);
  }

  function cueValue(cue) {
    if (cue.value !== undefined) return cue.value;
    try {
      return JSON.parse(cue.text); // hls.js falls back to JSON text where .value is read-only
    } catch (e) {
      return null;
    }
  }

  // Classify one cue; record what it says about its tag. Returns [path, id] or null.
  function readCue(cue) {
    const v = cueValue(cue);
    if (!v || typeof v !== "object") return null;
    if (v.key === "TXXX" && v.info === ID3_DESCRIPTION) {
      let body;
      try {
        body = JSON.parse(v.data);
      } catch (e) {
        return null;
      }
      if (!body || !body.id) return null;
      const tag = tagFor(body.id);
      tag.kind = tag.kind || body.kind;
      tag.productId = tag.productId || body.product_id || null;
      tag.data = tag.data || body.data || {};
      return ["emsg", body.id];
    }
    const isDaterange = cue.type === DATERANGE_CUE_TYPE || (cue.id && /^X-/.test(v.key || ""));
    if (!isDaterange || !cue.id) return null;
    const tag = tagFor(cue.id);
    if (v.key === "X-COM-SHOPCAST-KIND") tag.kind = tag.kind || v.data;
    else if (v.key === "X-COM-SHOPCAST-PRODUCT") tag.productId = tag.productId || v.data;
    else if (v.key === "X-COM-SHOPCAST-DATA" && !tag.data) {
      try {
        tag.data = JSON.parse(hexToText(v.data));
      } catch (e) {
        /* not ours */
      }
    } else if (!/^X-COM-SHOPCAST-/.test(v.key)) {
      return null; // somebody else's DATERANGE
    }
    // The range's end (DURATION, or END-ON-NEXT once the next pin is known).
    if (Number.isFinite(cue.endTime) && cue.endTime < 1e300) tag.end = cue.endTime;
    return ["daterange", cue.id];
  }

  let scannedCount = -1;
  let scanTick = 0;
  function scanCues(force) {
    const tracks = video.textTracks;
    let count = 0;
    for (let t = 0; t < tracks.length; t++) {
      if (tracks[t].kind === "metadata" && tracks[t].cues) count += tracks[t].cues.length;
    }
    // New cues, or now and then (cue times and END-ON-NEXT ends get updated in place).
    if (!force && count === scannedCount && ++scanTick % 15) return;
    scannedCount = count;
    for (let t = 0; t < tracks.length; t++) {
      const track = tracks[t];
      if (track.kind !== "metadata" || !track.cues) continue;
      if (track.mode === "disabled") track.mode = "hidden";
      for (let i = 0; i < track.cues.length; i++) {
        const cue = track.cues[i];
        const found = readCue(cue);
        if (!found) continue;
        const [path, id] = found;
        const key = path + "|" + id;
        const entry = entries.get(key);
        if (!entry) {
          entries.set(key, { id, path, cue, fired: false });
        } else if (entry.cue !== cue && path === "emsg" && cue.startTime < entry.cue.startTime) {
          entry.cue = cue; // the same emsg parsed again (another rendition): keep the earliest
        }
      }
    }
  }

  // ---- firing ---------------------------------------------------------------------------
  let previousFrame = null; // mediaTime of the frame presented before this one
  function check(mediaTime, metadata) {
    const before = previousFrame;
    previousFrame = mediaTime;
    scanCues(false);
    const due = [];
    for (const entry of entries.values()) {
      if (entry.fired) continue;
      const start = entry.cue.startTime;
      if (Number.isFinite(start) && mediaTime + EPSILON >= start) due.push([start, entry]);
    }
    due.sort((a, b) => a[0] - b[0]);
    for (const [start, entry] of due) {
      entry.fired = true;
      const tag = sc.tags[entry.id];
      // A range that is over by now (a viewer joining later) only shows up in the rail.
      if (tag.end !== null && mediaTime >= tag.end) {
        renderCard(tag);
        if (tag.card) tag.card.classList.add("seen");
        continue;
      }
      const late = mediaTime - start > LATE_AFTER;
      const rec = {
        id: entry.id, path: entry.path, mediaTime, cueStart: start, late,
        kind: tag.kind, level: window.hls ? window.hls.currentLevel : null,
        previousMediaTime: before,
      };
      if (typeof sc.probe === "function" && metadata) {
        try {
          const probed = sc.probe(video, metadata);
          if (probed && typeof probed === "object") Object.assign(rec, probed);
          else rec.frame = probed;
        } catch (e) {
          rec.probeError = String(e);
        }
      }
      sc.fired.push(rec);
      if (!tag.paths.includes(entry.path)) tag.paths.push(entry.path);
      if (!tag.fired) {
        tag.fired = true;
        tag.late = late;
        tag.start = start;
        activate(tag, mediaTime);
      }
    }
    updateActive(mediaTime);
  }

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (now, metadata) => {
      check(metadata.mediaTime, metadata);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    // Fallback: cuechange (fires within ~250 ms timeupdate granularity in some browsers).
    video.textTracks.addEventListener("addtrack", (ev) => {
      ev.track.addEventListener("cuechange", () => check(video.currentTime, null));
    });
    video.addEventListener("timeupdate", () => check(video.currentTime, null));
  }

  // ---- UI -------------------------------------------------------------------------------
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

  function thumb(data) {
    const t = el("div", "thumb");
    if (data && data.colour) t.style.setProperty("--swatch", data.colour);
    const image = data && (data.image || data.image_url);
    if (image && /^(https?:|\/)/.test(image)) t.style.backgroundImage = `url("${encodeURI(image)}")`;
    return t;
  }

  function buyButton(tag) {
    const b = el("button", "buy", tag.kind === "deal" ? "Grab deal" : "Buy");
    b.type = "button";
    b.addEventListener("click", () => click(tag, b));
    return b;
  }

  function click(tag, button, extra) {
    sc.clicks.push({ id: tag.id, extra: extra || null });
    const url = `/beacon/${encodeURIComponent(streamId)}/tags/${encodeURIComponent(tag.id)}/click`;
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

  function productBlock(tag, withBuy) {
    const frag = document.createDocumentFragment();
    const data = tag.data || {};
    frag.append(thumb(data));
    const info = el("div", "info");
    info.append(el("div", "kind", tag.kind === "deal" ? "flash deal" : tag.kind || "product"));
    info.append(el("div", "title", data.title || tag.productId || tag.id));
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

  function activate(tag, mediaTime) {
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
      ui.poll.replaceChildren(el("div", "q", data.question || "Poll"), opts);
      ui.poll.hidden = false;
      ui.poll.dataset.tag = tag.id;
    }
    for (const t of Object.values(sc.tags)) {
      if (t.card) t.card.classList.toggle("active", isActive(t, mediaTime));
    }
    if (tag.card) tag.card.classList.add("seen");
  }

  function isActive(tag, t) {
    if (!tag.fired) return false;
    if (tag.kind === "product") return state.product === tag && !(tag.end !== null && t >= tag.end);
    if (tag.kind === "deal") return state.deal === tag && !(tag.end !== null && t >= tag.end);
    return state.poll === tag;
  }

  let lastUi = 0;
  function updateActive(t) {
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
      for (const tag of Object.values(sc.tags)) {
        if (tag.card) tag.card.classList.toggle("active", isActive(tag, t));
      }
    }
  }

  function countdown(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  ui.sound.addEventListener("click", () => {
    video.muted = !video.muted;
    ui.sound.textContent = video.muted ? "sound off" : "sound on";
    ui.sound.setAttribute("aria-pressed", String(!video.muted));
  });

  // ---- player ---------------------------------------------------------------------------
  const src = `/hls/${encodeURIComponent(streamId)}/master.m3u8`;
  if (window.Hls && Hls.isSupported()) {
    // Catch up (up to 1.5× speed) when behind the target latency: a player joins at the last
    // independent part, which can be most of a segment behind the live edge.
    const hls = new Hls({
      lowLatencyMode: true,
      backBufferLength: 30,
      maxLiveSyncPlaybackRate: 1.5,
      // Opened before the show is on air: the multivariant playlist is 404 until the first
      // rendition exists. hls.js never retries a 4xx by itself; wait for the show (1/s, 2 min).
      manifestLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: Infinity,
          maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: {
            maxNumRetry: 120,
            retryDelayMs: 1000,
            maxRetryDelayMs: 1000,
            shouldRetry: (cfg, count, timeout, response, retry) =>
              retry || (!!response && response.code === 404 && count < cfg.maxNumRetry),
          },
        },
      },
      enableDateRangeMetadataCues: true,
      enableEmsgMetadataCues: true,
      enableID3MetadataCues: true,
    });
    window.hls = hls;
    hls.on(Hls.Events.ERROR, (_, d) =>
      sc.errors.push({ type: d.type, details: d.details, fatal: d.fatal }),
    );
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => sc.levelSwitches.push(d.level));
    // ?level=180p (rendition name / short edge) or ?level=<index>: pin one rendition.
    const wanted = params.get("level");
    hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
      if (wanted === null) return;
      let index = d.levels.findIndex(
        (l) => `${Math.min(l.width, l.height)}p` === wanted || l.name === wanted,
      );
      if (index < 0 && /^\d+$/.test(wanted)) index = Number(wanted);
      if (index >= 0 && index < d.levels.length) {
        hls.startLevel = index;
        hls.currentLevel = index;
        sc.pinnedLevel = index;
      }
    });
    hls.on(Hls.Events.FRAG_PARSING_METADATA, () => scanCues(true));
    hls.on(Hls.Events.LEVEL_UPDATED, () => setTimeout(() => scanCues(true), 0));
    hls.loadSource(src);
    hls.attachMedia(video);
    setInterval(() => {
      const lvl = hls.levels[hls.currentLevel];
      ui.level.textContent = lvl ? `${Math.min(lvl.width, lvl.height)}p` : "–";
      ui.latency.textContent = hls.latency ? `${hls.latency.toFixed(1)} s` : "–";
      ui.waiting.hidden = video.currentTime > 0;
    }, 250);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src; // Safari plays LL-HLS natively (and maps DATERANGE to metadata cues)
    video.addEventListener("playing", () => (ui.waiting.hidden = true));
  } else {
    ui.waiting.textContent = "this browser cannot play HLS";
  }
})();
