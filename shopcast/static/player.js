// shopcast vertical player, shared by the live shop page and the replay page: hls.js with both
// tag cue paths on, ?level= pinning, the HUD chips, and Safari's native HLS as the fallback.
//
// For tests: window.hls, window.shopcast.{errors, levelSwitches, pinnedLevel}.
(() => {
  "use strict";

  // Play `src` in `video`; `options` are the page's own hls.js settings (live or VOD), `cues`
  // the page's ShopcastCues watcher. Returns the Hls instance (null when hls.js cannot run).
  function start(video, src, options, cues) {
    const $ = (id) => document.getElementById(id);
    const ui = { level: $("level"), latency: $("latency"), waiting: $("waiting"), sound: $("sound") };
    const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
      errors: [],
      levelSwitches: [],
    }));

    ui.sound.addEventListener("click", () => {
      video.muted = !video.muted;
      ui.sound.textContent = video.muted ? "sound off" : "sound on";
      ui.sound.setAttribute("aria-pressed", String(!video.muted));
    });

    if (window.Hls && Hls.isSupported()) {
      const hls = new Hls(Object.assign({}, options, ShopcastCues.HLS_OPTIONS));
      window.hls = hls;
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
      cues.attach(hls);
      hls.loadSource(src);
      hls.attachMedia(video);
      followMovedShow(hls, video, sc);
      setInterval(() => {
        const lvl = hls.levels[hls.currentLevel];
        ui.level.textContent = lvl ? `${Math.min(lvl.width, lvl.height)}p` : "–";
        if (ui.latency) ui.latency.textContent = hls.latency ? `${hls.latency.toFixed(1)} s` : "–";
        ui.waiting.hidden = video.currentTime > 0;
      }, 250);
      return hls;
    }
    if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = src; // Safari plays HLS natively (and maps DATERANGE to metadata cues)
      video.addEventListener("playing", () => (ui.waiting.hidden = true));
    } else {
      ui.waiting.textContent = "this browser cannot play HLS";
    }
    return null;
  }

  // A show continued on another origin (cluster failover) goes on in playlists whose sequence
  // numbers follow the wall clock after a discontinuity, sharing no segment with the last ones.
  // hls.js (1.7) places such a reload by its sequence numbers, past what it buffered, and never
  // crosses the hole from the buffered side (its gap jumping walks loaded fragments only). So:
  // playback stood still for a second, not paused, with the live edge beyond everything
  // buffered → go to the live edge (hls.js loads from there; no reload of the page or source).
  function followMovedShow(hls, video, sc) {
    sc.liveJumps = 0;
    let last = -1;
    let since = performance.now();
    setInterval(() => {
      const now = performance.now();
      if (video.paused || video.seeking || video.currentTime !== last) {
        last = video.currentTime;
        since = now;
        return;
      }
      const live = hls.liveSyncPosition;
      const ranges = video.buffered;
      const end = ranges.length ? ranges.end(ranges.length - 1) : 0;
      if (live !== null && live > end + 0.5 && now - since > 1000) {
        video.currentTime = live;
        sc.liveJumps += 1;
        since = now;
      }
    }, 250);
  }

  window.ShopcastPlayer = { start };
})();
