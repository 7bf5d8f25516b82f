// shopcast viewer module: shopcast's product tags, on the frame they tag, for any web player.
//
//   import { ShopcastPlayer } from "/static/shopcast-player.js";
//   const viewer = new ShopcastPlayer(video, "/hls/shoe-launch/master.m3u8", { hls: Hls });
//   viewer.addEventListener("tag", (e) => show(e.detail));      // {id, kind, product_id, data, start, end}
//   viewer.addEventListener("tagend", (e) => hide(e.detail));
//   await viewer.start();
//
// `hls` is hls.js (its constructor or an instance), `shaka` is Shaka Player (shaka.Player or an
// instance); with neither (or where hls.js cannot run) the browser's own HLS plays (Safari).
// No other dependency. Types: shopcast-player.d.ts.
//
// Every tag reaches a player twice (LLHLS_RULES.md, "Timed metadata"); both are read and a tag
// fires once, from whichever path reaches its frame first:
//   DATERANGE — CLASS "com.shopcast.<kind>", ID = the tag id, X-COM-SHOPCAST-KIND,
//               X-COM-SHOPCAST-PRODUCT, X-COM-SHOPCAST-DATA (0x + hex of the data's JSON, absent
//               over 512 bytes); DURATION for deals, END-ON-NEXT + PLANNED-DURATION for pins.
//               hls.js/Safari: one metadata-track cue per attribute, cue.id = ID,
//               cue.value = {key, data}. Shaka: one "metadataadded" event per attribute,
//               metadataType = CLASS, payload = {key, data}.
//   emsg ID3  — one TXXX frame, description "com.shopcast.tag", text = the tag as JSON
//               {id, kind, product_id, data}. hls.js: cue.value = {key: "TXXX", info, data};
//               Shaka: "metadataadded" of type "org.id3", payload = {key: "TXXX", description, data}.
// A tag fires on the first presented frame whose mediaTime reaches its start
// (requestVideoFrameCallback; fallback: timeupdate), and ends (tagend) on the first one that
// reaches its end: a deal's DURATION, a pin's next pin of the same kind (END-ON-NEXT).

// A cue's start comes from the program date-time mapping (ms precision; hls.js re-aligns only
// drifts over 10 ms), so a frame counts as "reached" this much before the exact time (< ½ frame).
export const EPSILON = 0.012;
// A fire more than this after the tag's start is marked late (a viewer joining while the tag is
// on, or a cue that arrived after its frame was shown).
const LATE_AFTER = 0.1;
const LATENCY_EVERY_MS = 1000;
const LOAD_RETRY_MS = 1000; // between Shaka's load attempts (options.loadAttempts)
const START_SYNC_TRIES = 10; // fragments buffered before the start check gives up (hls.js)
const DATERANGE_CUE_TYPE = "com.apple.quicktime.HLS";
const ID3_DESCRIPTION = "com.shopcast.tag";
const CLASS_PREFIX = "com.shopcast.";
const SHOW_CLASS = "com.shopcast.show"; // the show's own range: no tag
const ATTRIBUTE_PREFIX = "X-COM-SHOPCAST-";
// Our open pins carry PLANNED-DURATION (a day) beside END-ON-NEXT; Shaka reports the former
// as the end, hls.js may too: such a range ends on the next one of its kind instead.
const END_ON_NEXT_MARK = "PLANNED-DURATION";
// Kinds that end on the next tag of their kind when the tag itself gives no end.
const END_ON_NEXT_KINDS = new Set(["product", "poll"]);
// A cue end at or past this is "no end" (hls.js uses Number.MAX_VALUE, Shaka Infinity).
const NO_END = 1e300;

/** hls.js settings that put both tag paths on its metadata track. */
export const HLS_CONFIG = Object.freeze({
  enableDateRangeMetadataCues: true,
  enableEmsgMetadataCues: true,
  enableID3MetadataCues: true,
});
/** Shaka settings that surface the emsg ID3 boxes (Shaka parses emsg in HLS only then). */
export const SHAKA_CONFIG = Object.freeze({ mediaSource: { dispatchAllEmsgBoxes: true } });

function hexToText(value) {
  // hls.js and Shaka hand over the attribute text ("0x7B22…"); Safari's DataCue may give bytes.
  if (value instanceof ArrayBuffer) return new TextDecoder().decode(value);
  const clean = String(value).replace(/^0x/i, "");
  const bytes = new Uint8Array(clean.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(clean.substr(i * 2, 2), 16);
  return new TextDecoder().decode(bytes);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    return undefined;
  }
}

function cueValue(cue) {
  if (cue.value !== undefined) return cue.value;
  return parseJson(cue.text); // hls.js falls back to JSON text where .value is read-only
}

function isConstructor(value) {
  return typeof value === "function";
}

/** Plays a shopcast stream or replay and emits its tags on their frames. */
export class ShopcastPlayer extends EventTarget {
  constructor(video, url, options = {}) {
    super();
    if (!(video instanceof HTMLMediaElement)) throw new TypeError("video must be a <video>");
    this.video = video;
    this.url = String(url);
    this.options = options;
    /** The hls.js or Shaka instance (null while not started, or on native HLS). */
    this.player = null;
    /** "hls.js", "shaka" or "native" once started. */
    this.engine = null;
    /** The last latency reading (seconds), null until there is one (and on a replay). */
    this.latency = null;
    this._tags = new Map(); // id -> state (see _tag)
    this._entries = new Map(); // `${path}|${id}` -> {id, path, cue, start, fired}
    this._shakaRanges = new Map(); // `${CLASS}|${start}` -> {id, attrs} (see _shakaMetadata)
    this._ownPlayer = false;
    this._closed = false;
    this._previousFrame = null;
    this._seeked = false;
    this._scannedCount = -1;
    this._scanTick = 0;
    this._timers = [];
    this._unlisten = [];
  }

  /** Load the URL into the player and start watching for tags; resolves once loading began. */
  async start() {
    const { hls, shaka, config } = this.options;
    if (shaka) await this._startShaka(shaka, config || {});
    else if (hls && this._startHls(hls, config || {})) this.engine = "hls.js";
    else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.engine = "native"; // Safari: DATERANGE (and ID3) as DataCues on a metadata track
      this.video.src = this.url;
    } else {
      throw new Error("this browser cannot play HLS (give hls.js or Shaka Player)");
    }
    this._watchFrames();
    this._listen(this.video, "seeking", () => this._rearm());
    this._timers.push(setInterval(() => this._readLatency(), LATENCY_EVERY_MS));
  }

  /** Stop watching; destroys the player if this module made it. */
  destroy() {
    this._closed = true;
    this._timers.forEach(clearInterval);
    this._unlisten.forEach((off) => off());
    if (this._ownPlayer && this.player) this.player.destroy();
  }

  /** Every tag seen so far, in time order ({id, kind, product_id, data, start, end}). */
  get tags() {
    return [...this._tags.values()]
      .filter((t) => t.kind)
      .map((t) => this._public(t))
      .sort((a, b) => a.start - b.start);
  }

  // ---- players ---------------------------------------------------------------------------

  _startHls(hlsOrClass, config) {
    let hls = hlsOrClass;
    if (isConstructor(hlsOrClass)) {
      if (hlsOrClass.isSupported && !hlsOrClass.isSupported()) return false;
      hls = new hlsOrClass(Object.assign({}, config, HLS_CONFIG));
      this._ownPlayer = true;
    } else {
      Object.assign(hls.config, HLS_CONFIG);
    }
    this.player = hls;
    const Events = hls.constructor.Events;
    const on = (name, fn) => {
      hls.on(name, fn);
      this._unlisten.push(() => hls.off(name, fn));
    };
    on(Events.FRAG_PARSING_METADATA, () => this._scan(true));
    // hls.js adds a playlist's DATERANGE cues in its own LEVEL_UPDATED/MEDIA_ATTACHED handler
    // (registered before ours), to a <track> it has just created; Chromium empties that track
    // once the track's src has loaded. Live playlists come back and re-add them; a VOD playlist
    // is loaded once. So read the cues at once: an entry keeps its cue, on the track or not.
    on(Events.LEVEL_UPDATED, () => {
      this._scan(true);
      setTimeout(() => this._scan(true), 0);
    });
    on(Events.MEDIA_ATTACHED, () => this._scan(true));
    this._startAtLiveSync(hls, on, Events);
    this._followMovedShow(hls);
    hls.loadSource(this.url);
    if (hls.media !== this.video) hls.attachMedia(this.video);
    return true;
  }

  // hls.js (1.7.4) starts a live stream at its target latency (PART-HOLD-BACK) by seeking once,
  // when its first fragment is buffered; if its gap controller has just moved the playhead to the
  // start of that fragment (it does when the playlist starts less than two target durations
  // earlier: a viewer joining in a show's first seconds), the seek is dropped ("already
  // seeking") and playback stays at the fragment's first independent part, up to a GOP behind,
  // for good. So: once the first fragment is buffered and no seek is running, go to hls.js's
  // live sync position if the playhead is more than a part behind it and it is buffered.
  _startAtLiveSync(hls, on, Events) {
    this.startJumps = 0;
    let tries = 0;
    let done = false;
    on(Events.FRAG_BUFFERED, () => {
      const video = this.video;
      const details = hls.latestLevelDetails;
      if (done || !details || !details.live || video.seeking) return;
      if (++tries > START_SYNC_TRIES) done = true;
      const target = hls.liveSyncPosition;
      if (target === null || target === undefined) return;
      done = true;
      const slack = details.partTarget || details.targetduration;
      const ranges = video.buffered;
      for (let i = 0; i < ranges.length; i++) {
        if (ranges.start(i) <= target && target < ranges.end(i) && video.currentTime < target - slack) {
          video.currentTime = target;
          this.startJumps = 1;
        }
      }
    });
  }

  // A show continued on another origin (cluster failover) goes on in playlists whose sequence
  // numbers follow the wall clock after a discontinuity, sharing no segment with the last ones.
  // hls.js (1.7) places such a reload by its sequence numbers, past what it buffered, and never
  // crosses the hole from the buffered side (its gap jumping walks loaded fragments only). So:
  // playback stood still for a second, not paused, with the live edge beyond everything
  // buffered → go to the live edge (hls.js loads from there; no reload of the page or source).
  _followMovedShow(hls) {
    this.liveJumps = 0;
    let last = -1;
    let since = performance.now();
    const timer = setInterval(() => {
      const video = this.video;
      const now = performance.now();
      if (video.paused || video.seeking || video.currentTime !== last) {
        last = video.currentTime;
        since = now;
        return;
      }
      const live = hls.liveSyncPosition;
      const ranges = video.buffered;
      const end = ranges.length ? ranges.end(ranges.length - 1) : 0;
      if (live !== null && live !== undefined && live > end + 0.5 && now - since > 1000) {
        video.currentTime = live;
        this.liveJumps += 1;
        since = now;
      }
    }, 250);
    this._unlisten.push(() => clearInterval(timer));
  }

  async _startShaka(shakaOrClass, config) {
    let player = shakaOrClass;
    if (isConstructor(shakaOrClass)) {
      player = new shakaOrClass();
      this._ownPlayer = true;
    }
    player.configure(config);
    player.configure(SHAKA_CONFIG); // the page's settings, but never without the emsg boxes
    this.player = player;
    this.engine = "shaka";
    // Shaka adds a region for each DATERANGE attribute (on the playlist) and each ID3 frame
    // (on the segment) ahead of the playhead: "metadataadded". Its "metadata" event comes on
    // the playhead's next poll (up to 1/4 s late), so the frame loop fires them instead.
    const onAdded = (event) => this._shakaMetadata(event);
    player.addEventListener("metadataadded", onAdded);
    this._unlisten.push(() => player.removeEventListener("metadataadded", onAdded));
    if (player.getMediaElement() !== this.video) await player.attach(this.video);
    // A page opened before the show is on air: the playlist is 404 (Shaka 1001), or lists one
    // open segment only, which Shaka 4.16 cannot start on. hls.js has its own retry settings.
    const attempts = Math.max(1, Number(this.options.loadAttempts) || 1);
    for (let attempt = 1; ; attempt++) {
      try {
        await player.load(this.url);
        return;
      } catch (err) {
        if (attempt >= attempts || this._closed) throw err;
        await new Promise((resolve) => setTimeout(resolve, LOAD_RETRY_MS));
      }
    }
  }

  // Shaka's DATERANGE attributes of one range share CLASS, start and end; the ID one (Shaka
  // 4.16 reports it) names the tag. Ranges are keyed by CLASS and start until it comes.
  _shakaMetadata(event) {
    const payload = event.payload || {};
    const type = event.metadataType;
    const start = event.startTime;
    if (type === "org.id3") {
      if (payload.key === "TXXX" && payload.description === ID3_DESCRIPTION) {
        this._noteEmsg(parseJson(payload.data), start, null);
      }
      return;
    }
    if (typeof type !== "string" || !type.startsWith(CLASS_PREFIX) || type === SHOW_CLASS) return;
    const key = `${type}|${start}`;
    let range = this._shakaRanges.get(key);
    if (!range) this._shakaRanges.set(key, (range = { id: null, attrs: [] }));
    if (payload.key === "ID") range.id = String(payload.data);
    else range.attrs.push(payload);
    if (range.id === null) return;
    const end = Number.isFinite(event.endTime) && event.endTime < NO_END ? event.endTime : null;
    const tag = this._tag(range.id);
    tag.kind = tag.kind || type.slice(CLASS_PREFIX.length);
    for (const attr of range.attrs.splice(0)) this._dateRangeAttribute(tag, attr.key, attr.data);
    if (end !== null && tag.endOnNext !== true) tag.end = end;
    this._entry("daterange", range.id, null, start);
  }

  // ---- tag state ---------------------------------------------------------------------------

  _tag(id) {
    let tag = this._tags.get(id);
    if (!tag) {
      tag = {
        id, kind: null, product_id: null, data: null,
        end: null, // an end the tag itself gives (DURATION)
        endOnNext: null, // true: ends on the next of its kind; null: not known yet
        fired: false, active: false, passed: false,
        paths: new Map(), // path -> entry
      };
      this._tags.set(id, tag);
    }
    return tag;
  }

  _entry(path, id, cue, start) {
    const key = `${path}|${id}`;
    const entry = this._entries.get(key);
    if (!entry) {
      const made = { id, path, cue, start, fired: false };
      this._entries.set(key, made);
      this._tag(id).paths.set(path, made);
    } else if (cue !== null && entry.cue !== cue) {
      // The range's cues added again (see _startHls): keep the one hls.js updates; the same
      // emsg parsed again (another rendition): keep the earliest.
      if (path === "daterange" || cue.startTime < entry.cue.startTime) entry.cue = cue;
    } else if (cue === null && path === "emsg" && start < entry.start) {
      entry.start = start; // Shaka: the same emsg from another rendition
    }
  }

  _noteEmsg(body, start, cue) {
    if (!body || typeof body !== "object" || typeof body.id !== "string") return;
    const tag = this._tag(body.id);
    tag.kind = tag.kind || String(body.kind || "") || null;
    tag.product_id = tag.product_id || (body.product_id == null ? null : String(body.product_id));
    if (tag.data === null) tag.data = body.data === undefined ? {} : body.data;
    this._entry("emsg", body.id, cue, start);
  }

  _dateRangeAttribute(tag, key, value) {
    if (key === "X-COM-SHOPCAST-KIND") tag.kind = tag.kind || String(value);
    else if (key === "X-COM-SHOPCAST-PRODUCT") tag.product_id = tag.product_id || String(value);
    else if (key === "X-COM-SHOPCAST-DATA" && tag.data === null) {
      const data = parseJson(hexToText(value));
      if (data !== undefined) tag.data = data;
    } else if (key === END_ON_NEXT_MARK) {
      tag.endOnNext = true;
      tag.end = null;
    }
  }

  _startOf(tag) {
    let start = Infinity;
    for (const entry of tag.paths.values()) {
      const s = entry.cue ? entry.cue.startTime : entry.start;
      if (Number.isFinite(s) && s < start) start = s;
    }
    return start;
  }

  // The tag's end on the media timeline, null while unknown (an open pin).
  _endOf(tag) {
    if (tag.end !== null) return tag.end;
    const endsOnNext = tag.endOnNext === true || (tag.endOnNext === null && END_ON_NEXT_KINDS.has(tag.kind));
    if (!endsOnNext) return null;
    const start = this._startOf(tag);
    let end = null;
    for (const other of this._tags.values()) {
      if (other === tag || other.kind !== tag.kind) continue;
      const s = this._startOf(other);
      if (s > start && (end === null || s < end)) end = s;
    }
    return end;
  }

  _public(tag) {
    const start = this._startOf(tag);
    return {
      id: tag.id,
      kind: tag.kind,
      product_id: tag.product_id,
      data: tag.data === null ? {} : tag.data,
      start: Number.isFinite(start) ? start : null,
      end: this._endOf(tag),
    };
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- cues on metadata tracks (hls.js, Safari) -----------------------------------------

  // Classify one cue and note what it says about its tag.
  _readCue(cue) {
    const v = cueValue(cue);
    if (!v || typeof v !== "object") return;
    if (v.key === "TXXX" && v.info === ID3_DESCRIPTION) {
      this._noteEmsg(parseJson(v.data), cue.startTime, cue);
      return;
    }
    const isDaterange = cue.type === DATERANGE_CUE_TYPE || (cue.id && /^[A-Z]/.test(v.key || ""));
    const ours = typeof v.key === "string" && (v.key.startsWith(ATTRIBUTE_PREFIX) || v.key === END_ON_NEXT_MARK);
    if (!isDaterange || !cue.id || !ours) return; // somebody else's DATERANGE
    if (v.key === END_ON_NEXT_MARK && !this._tags.has(cue.id)) return; // not known as ours yet
    const tag = this._tag(cue.id);
    this._dateRangeAttribute(tag, v.key, v.data);
    // A DURATION's end (an END-ON-NEXT range's end is worked out from the next tag instead).
    if (tag.endOnNext !== true && Number.isFinite(cue.endTime) && cue.endTime < NO_END) {
      tag.end = cue.endTime;
    }
    this._entry("daterange", cue.id, cue, cue.startTime);
  }

  _scan(force) {
    if (this.engine === "shaka") return;
    const tracks = this.video.textTracks;
    let count = 0;
    for (let t = 0; t < tracks.length; t++) {
      if (tracks[t].kind === "metadata" && tracks[t].cues) count += tracks[t].cues.length;
    }
    // New cues, or now and then (cue times and END-ON-NEXT ends get updated in place).
    if (!force && count === this._scannedCount && ++this._scanTick % 15) return;
    this._scannedCount = count;
    for (let t = 0; t < tracks.length; t++) {
      const track = tracks[t];
      if (track.kind !== "metadata") continue;
      if (track.mode === "disabled") track.mode = "hidden";
      if (!track.cues) continue;
      // Attributes in playlist order, PLANNED-DURATION after KIND: read the range's own
      // attributes first so the mark finds its tag.
      const cues = Array.from(track.cues);
      for (const cue of cues) if (cueValue(cue)?.key !== END_ON_NEXT_MARK) this._readCue(cue);
      for (const cue of cues) if (cueValue(cue)?.key === END_ON_NEXT_MARK) this._readCue(cue);
    }
  }

  // ---- the frame loop ----------------------------------------------------------------------

  _watchFrames() {
    const video = this.video;
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype && video instanceof HTMLVideoElement) {
      const onFrame = (now, metadata) => {
        if (this._closed) return;
        this._check(metadata.mediaTime, metadata);
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    } else {
      // Fallback: timeupdate (every 1/4 s or so) and cue changes.
      const onTime = () => this._check(video.currentTime, null);
      this._listen(video, "timeupdate", onTime);
      this._listen(video.textTracks, "addtrack", (ev) => this._listen(ev.track, "cuechange", onTime));
    }
  }

  _check(mediaTime, metadata) {
    const before = this._previousFrame;
    this._previousFrame = mediaTime;
    this._scan(false);
    if (this._seeked) {
      // The first frame after a seek: a tag that was on and is not on here ends.
      this._seeked = false;
      for (const tag of this._tags.values()) {
        if (!tag.active) continue;
        const end = this._endOf(tag);
        if (this._startOf(tag) > mediaTime + EPSILON || (end !== null && mediaTime + EPSILON >= end)) {
          tag.active = false;
          this._emit("tagend", Object.assign(this._public(tag), { mediaTime, reason: "seek" }));
        }
      }
    }
    // Ends first: a new pin's tag comes after its predecessor's tagend.
    for (const tag of this._tags.values()) {
      if (!tag.active) continue;
      const end = this._endOf(tag);
      if (end !== null && mediaTime + EPSILON >= end) {
        tag.active = false;
        this._emit("tagend", Object.assign(this._public(tag), { mediaTime, reason: "end" }));
      }
    }
    const due = [];
    for (const entry of this._entries.values()) {
      if (entry.fired) continue;
      const start = entry.cue ? entry.cue.startTime : entry.start;
      if (Number.isFinite(start) && mediaTime + EPSILON >= start) due.push([start, entry]);
    }
    due.sort((a, b) => a[0] - b[0]);
    for (const [start, entry] of due) {
      const tag = this._tags.get(entry.id);
      if (!tag.kind) continue; // its attributes are still to come
      entry.fired = true;
      const end = this._endOf(tag);
      if (end !== null && mediaTime + EPSILON >= end) {
        // Over by now (a viewer joining later, a seek past it): known, never shown.
        if (!tag.fired && !tag.passed) {
          tag.passed = true;
          this._emit("tagpassed", this._public(tag));
        }
        continue;
      }
      const late = mediaTime - start > LATE_AFTER;
      this._emit("cue", {
        id: entry.id, path: entry.path, start, mediaTime, previousMediaTime: before, late, metadata,
      });
      if (!tag.fired) {
        tag.fired = true;
        if (tag.active) continue; // on before a seek and still on: nothing changes
        tag.active = true;
        this._emit("tag", Object.assign(this._public(tag), { mediaTime, late }));
      }
    }
  }

  // After a seek the tags are worked out again from the next presented frame: those that were
  // on and are not there end ("seek"), those on there fire (the ones before it at once, in
  // order), those on before and still on stay on without an event.
  _rearm() {
    this._previousFrame = null;
    this._seeked = true;
    for (const tag of this._tags.values()) tag.fired = false; // tagpassed stays once a tag
    for (const entry of this._entries.values()) entry.fired = false;
  }

  // ---- latency -----------------------------------------------------------------------------

  // Seconds from the program date-time of the frame at the playhead to this device's clock:
  // ingest to screen, the same figure for every player (clocks synchronised).
  _readLatency() {
    let date = null;
    let edge = null;
    const p = this.player;
    if (this.engine === "hls.js") {
      const details = p.levels && p.levels[p.currentLevel] && p.levels[p.currentLevel].details;
      if (!details || !details.live) return;
      date = p.playingDate;
      edge = p.latency || null; // hls.js: distance from the playlist's live edge
    } else if (this.engine === "shaka") {
      if (!p.isLive()) return;
      date = p.getPlayheadTimeAsDate();
    } else if (this.engine === "native" && typeof this.video.getStartDate === "function") {
      const startDate = this.video.getStartDate().getTime();
      if (!Number.isFinite(startDate) || this.video.duration !== Infinity) return;
      date = new Date(startDate + this.video.currentTime * 1000);
    }
    if (!date || !Number.isFinite(date.getTime()) || this.video.currentTime <= 0) return;
    this.latency = (Date.now() - date.getTime()) / 1000;
    this._emit("latency", { latency: this.latency, edge });
  }

  _listen(target, type, fn) {
    target.addEventListener(type, fn);
    this._unlisten.push(() => target.removeEventListener(type, fn));
  }
}
