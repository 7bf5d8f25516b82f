// The shop pages' shell, shared by the live shop page and the replay page: hls.js played through
// the viewer module (shopcast-player.js: tags on their frames), ?level= pinning, the HUD chips,
// the cards fed from the module's events; Safari's native HLS where hls.js cannot run.
//
// For tests: window.hls, window.shopcast.{fired, errors, levelSwitches, pinnedLevel, liveJumps}; fired[i]
// is one delivery path reaching its tag's frame ({id, path, mediaTime, cueStart, late, kind,
// level, previousMediaTime}). A test may set window.shopcast.probe = (video, metadata) =>
// number | object before load: it runs in the video frame callback of the fire; a number is
// logged as fired[i].frame, an object's fields are merged into fired[i].
import { ShopcastPlayer } from "./shopcast-player.js";

// The live shop page's hls.js settings (exported: the latency benchmark plays with them too).
export const LIVE_HLS_CONFIG = {
  // The page catches up itself (followLiveEdge below): hls.js's own catch-up off.
  lowLatencyMode: true,
  backBufferLength: 30,
  maxLiveSyncPlaybackRate: 1,
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
  // A show whose origin dies is owner-less until the cluster's node_timeout passes and the
  // publisher reconnects elsewhere (≈ 6-10 s with the defaults); the edge answers 502
  // meanwhile. hls.js gives up a media playlist after 2 retries (≈ 3 s): retry 1/s for 30 s.
  playlistLoadPolicy: {
    default: {
      maxTimeToFirstByteMs: 10000,
      maxLoadTimeMs: 20000,
      timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
      errorRetry: { maxNumRetry: 30, retryDelayMs: 1000, maxRetryDelayMs: 1000 },
    },
  },
};

// Catch up (up to 1.5× speed) when behind hls.js's target latency (the playlist's
// PART-HOLD-BACK): a player joins at the last independent part, which can be most of a segment
// behind the live edge. hls.js's own catch-up speeds up only while more than 1 s is buffered
// ahead, so with a PART-HOLD-BACK under 1 s it stops short of its target; this one keeps
// CATCH_UP_MARGIN buffered instead (about two parts at the 210 ms part target).
const CATCH_UP_EVERY_MS = 250;
const CATCH_UP_MARGIN = 0.4; // seconds buffered ahead below which the page plays at 1×
const CATCH_UP_MAX_RATE = 1.5;

function bufferedAhead(video) {
  const b = video.buffered;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= video.currentTime + 0.1 && video.currentTime < b.end(i)) {
      return b.end(i) - video.currentTime;
    }
  }
  return 0;
}

// Steer `video`'s playback rate towards `hls`'s target latency (live shows only).
export function followLiveEdge(hls, video) {
  if (!hls) return;
  setInterval(() => {
    const target = hls.targetLatency;
    const details = hls.latestLevelDetails;
    if (!target || !details || !details.live || video.paused || video.readyState < 3) return;
    const behind = hls.latency - target;
    const ahead = bufferedAhead(video);
    const rate =
      behind > 0.05 && ahead > CATCH_UP_MARGIN ? Math.min(CATCH_UP_MAX_RATE, 1 + behind) : 1;
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }, CATCH_UP_EVERY_MS);
}

const CARDS_EVERY_MS = 200; // deal countdowns, poll timeouts and the rail's lit cards

// Play `src` in `video` with the page's own hls.js settings (live or VOD); `cards` renders the
// tags (cards.js). Returns {viewer, hls} (hls null when hls.js cannot run here).
export function startPage(video, src, options, cards) {
  const $ = (id) => document.getElementById(id);
  const ui = { level: $("level"), latency: $("latency"), waiting: $("waiting"), sound: $("sound") };
  const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
    fired: [],
    errors: [],
    levelSwitches: [],
  }));

  ui.sound.addEventListener("click", () => {
    video.muted = !video.muted;
    ui.sound.textContent = video.muted ? "sound off" : "sound on";
    ui.sound.setAttribute("aria-pressed", String(!video.muted));
  });

  let hls = null;
  if (window.Hls && Hls.isSupported()) {
    hls = window.hls = new Hls(options);
    hls.on(Hls.Events.ERROR, (_, d) =>
      sc.errors.push({ type: d.type, details: d.details, fatal: d.fatal }),
    );
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => sc.levelSwitches.push(d.level));
    // ?level=180p (rendition name / short edge) or ?level=<index>: pin one rendition.
    const wanted = new URLSearchParams(location.search).get("level");
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
  }

  const viewer = new ShopcastPlayer(video, src, { hls });
  Object.defineProperty(sc, "liveJumps", { get: () => viewer.liveJumps || 0, configurable: true });
  viewer.addEventListener("tag", (e) => cards.fire(e.detail, e.detail.mediaTime));
  viewer.addEventListener("tagend", (e) => cards.end(e.detail));
  viewer.addEventListener("tagpassed", (e) => cards.passed(e.detail));
  viewer.addEventListener("cue", (e) => {
    const c = e.detail;
    const rec = {
      id: c.id, path: c.path, mediaTime: c.mediaTime, cueStart: c.start, late: c.late,
      kind: (viewer.tags.find((t) => t.id === c.id) || {}).kind || null,
      level: hls ? hls.currentLevel : null, previousMediaTime: c.previousMediaTime,
    };
    if (typeof sc.probe === "function" && c.metadata) {
      try {
        const probed = sc.probe(video, c.metadata);
        if (probed && typeof probed === "object") Object.assign(rec, probed);
        else rec.frame = probed;
      } catch (err) {
        rec.probeError = String(err);
      }
    }
    sc.fired.push(rec);
  });
  viewer.addEventListener("latency", (e) => {
    if (ui.latency) ui.latency.textContent = `${e.detail.latency.toFixed(1)} s`;
  });
  viewer.start().catch((err) => {
    ui.waiting.textContent = String(err.message || err);
    sc.errors.push({ type: "player", details: String(err), fatal: true });
  });

  setInterval(() => {
    if (hls) {
      const lvl = hls.levels[hls.currentLevel];
      ui.level.textContent = lvl ? `${Math.min(lvl.width, lvl.height)}p` : "–";
    }
    ui.waiting.hidden = video.currentTime > 0;
  }, 250);
  setInterval(() => cards.update(video.currentTime), CARDS_EVERY_MS);
  return { viewer, hls };
}
