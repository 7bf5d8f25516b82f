// shopcast frame-exact tag cues, shared by the live shop page and the replay page.
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
// For tests: window.shopcast.{fired, tags}; a test may set
// window.shopcast.probe = (video, metadata) => number | object before load: it runs in the same
// video frame callback as the fire; a number is logged as fired[i].frame, an object's fields
// are merged into fired[i].
(() => {
  "use strict";

  const DATERANGE_CUE_TYPE = "com.apple.quicktime.HLS";
  const ID3_DESCRIPTION = "com.shopcast.tag";
  // A cue's startTime comes from the PDT mapping (ms precision; hls.js re-aligns only drifts
  // over 10 ms), so a frame counts as "reached" this much before the exact time (< ½ frame).
  const EPSILON = 0.012;
  // A fire more than this after the cue's start is logged as late (a viewer joining while the
  // tag is on, or a cue that arrived after its frame was shown).
  const LATE_AFTER = 0.1;
  // hls.js options that put both cue paths on the metadata track.
  const HLS_OPTIONS = {
    enableDateRangeMetadataCues: true,
    enableEmsgMetadataCues: true,
    enableID3MetadataCues: true,
  };

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

  // Watch `video`'s metadata tracks and fire each tag on its frame.
  //   handlers.fire(tag, mediaTime)   — a tag's first fire (its range is on at mediaTime)
  //   handlers.passed(tag)            — a tag whose range was over when its cue was reached
  //   handlers.frame(mediaTime, meta) — after every presented frame (meta null in fallback)
  // Returns {scan(force), rearm(), attach(hls)}.
  function watch(video, handlers) {
    const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
      fired: [], // {id, path, mediaTime, cueStart, frame?, late, level, kind, previousMediaTime}
      tags: {}, // id -> tag state
    }));
    // tag: {id, kind, productId, data, start, end, fired, late, paths, card}
    const entries = new Map(); // `${path}|${id}` -> {id, path, cue, fired}

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
    function scan(force) {
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
          } else if (entry.cue === cue) {
            continue;
          } else if (path === "daterange") {
            entry.cue = cue; // the range's cues added again (see attach): the ones hls.js updates
          } else if (cue.startTime < entry.cue.startTime) {
            entry.cue = cue; // the same emsg parsed again (another rendition): keep the earliest
          }
        }
      }
    }

    let previousFrame = null; // mediaTime of the frame presented before this one
    function check(mediaTime, metadata) {
      const before = previousFrame;
      previousFrame = mediaTime;
      scan(false);
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
          handlers.passed(tag);
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
          handlers.fire(tag, mediaTime);
        }
      }
      handlers.frame(mediaTime, metadata);
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

    // Every tag fires again from the next presented frame on (after a seek: the ones before
    // it fire at once, in order, so the page ends up showing what is on at the new position).
    function rearm() {
      previousFrame = null;
      for (const entry of entries.values()) entry.fired = false;
      for (const tag of Object.values(sc.tags)) {
        tag.fired = false;
        tag.late = false;
      }
    }

    function attach(hls) {
      hls.on(Hls.Events.FRAG_PARSING_METADATA, () => scan(true));
      // hls.js adds a playlist's DATERANGE cues in its own LEVEL_UPDATED/MEDIA_ATTACHED handler
      // (registered before ours), to a <track> it has just created; Chromium empties that track
      // once the track's src has loaded. Live playlists come back and re-add them; a VOD
      // playlist is loaded once. So read the cues at once: an entry keeps its cue, on the track
      // or not.
      hls.on(Hls.Events.LEVEL_UPDATED, () => {
        scan(true);
        setTimeout(() => scan(true), 0);
      });
      hls.on(Hls.Events.MEDIA_ATTACHED, () => scan(true));
    }

    return { scan, rearm, attach };
  }

  window.ShopcastCues = { watch, HLS_OPTIONS, EPSILON };
})();
