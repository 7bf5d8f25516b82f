// shopcast replay page: a recorded show as VOD with the same cards as live (lighting on the same
// frames: the viewer module shopcast-player.js, page.js and cards.js are the live page's), and a
// chapter list of its product moments that seeks to each one.
//
// A chapter's position is its tag's program date-time placed on the VOD playlist's own
// EXT-X-PROGRAM-DATE-TIMEs (hls.js: fragment.programDateTime, ms, and fragment.start).
//
// For tests: window.shopcast.{chapters, seeks}; seeks[i] gets the presented frame's mediaTime
// (and the probe's fields, see page.js) on the first frame shown after that chapter's seek.
import { createCards } from "./cards.js";
import { startPage } from "./page.js";

// Seek this far into the tagged frame: the date-times are ms-rounded, and a seek shows the
// frame presented at the target (well under half a frame at 60 fps).
const SEEK_INTO = 0.008;
const CHAPTER_KINDS = new Set(["product", "deal"]);
// Play on after a chapter's seek even if no frame callback came (e.g. a hidden tab).
const RESUME_AFTER = 1000;

const streamId = document.body.dataset.stream;
const recordingId = document.body.dataset.recording;
const video = document.getElementById("video");
const list = document.getElementById("chapters");
const position = document.getElementById("position");
// A playback token (when the origin requires one) opens the recording and its page data.
const token = new URLSearchParams(location.search).get("token");
const query = token ? `?token=${encodeURIComponent(token)}` : "";
const base = `/vod/${encodeURIComponent(recordingId)}`;

const sc = (window.shopcast = Object.assign(window.shopcast || {}, {
  recording: recordingId,
  chapters: [], // {id, title, pdt, time}
  seeks: [], // {id, target, mediaTime?, frame?}
}));
const cards = createCards(streamId, "replay");
const buttons = new Map(); // tag id -> {button, at} of its chapter
let pendingSeek = null; // the chapter seek whose first frame is still to come

video.poster = `${base}/poster.jpg${query}`; // the recording's cover until it plays
const { viewer, hls } = startPage(video, `${base}/master.m3u8${query}`, {}, cards);
viewer.addEventListener("tag", (e) => {
  for (const [id, view] of buttons) view.button.classList.toggle("current", id === e.detail.id);
});
// A seek needs nothing here: on the first frame after it the module ends the tags that are not
// on at the new position ("seek") and fires the ones that are (those before it at once, in order).

// The first frame presented after a chapter's seek: where the chapter landed.
function watchSeek(seek) {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  const onFrame = (now, metadata) => {
    if (pendingSeek !== seek) return;
    if (video.seeking) {
      video.requestVideoFrameCallback(onFrame);
      return;
    }
    pendingSeek = null;
    resume();
    seek.mediaTime = metadata.mediaTime;
    if (typeof sc.probe === "function") {
      try {
        const probed = sc.probe(video, metadata);
        if (probed && typeof probed === "object") Object.assign(seek, probed);
        else seek.frame = probed;
      } catch (e) {
        seek.probeError = String(e);
      }
    }
  };
  video.requestVideoFrameCallback(onFrame);
}

// ---- chapters --------------------------------------------------------------------------
let fragments = []; // of the loaded level: {start (s), duration (s), programDateTime (ms)}

// Seconds into the recording of a date-time (epoch ms); null when the recording lacks it.
function timeOf(pdtMs) {
  let holder = null;
  for (const frag of fragments) {
    if (frag.programDateTime === null || frag.programDateTime > pdtMs) continue;
    if (!holder || frag.programDateTime > holder.programDateTime) holder = frag;
  }
  if (!holder) return null;
  const offset = (pdtMs - holder.programDateTime) / 1000;
  return offset <= holder.duration ? holder.start + offset : null;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function placeChapters() {
  for (const chapter of sc.chapters) {
    const view = buttons.get(chapter.id);
    chapter.time = timeOf(chapter.pdt);
    view.at.textContent = chapter.time === null ? "–" : clock(chapter.time);
    view.button.disabled = chapter.time === null;
  }
}

// Paused while it seeks, so the first frame shown is the product's (a playing element may
// already be on the next one when it presents), then on it goes.
function seekTo(chapter) {
  if (chapter.time === null) return;
  const target = chapter.time + SEEK_INTO;
  pendingSeek = { id: chapter.id, target };
  sc.seeks.push(pendingSeek);
  video.pause();
  video.currentTime = target;
  watchSeek(pendingSeek);
  video.addEventListener("seeked", () => setTimeout(resume, RESUME_AFTER), { once: true });
}

function resume() {
  if (video.paused && !video.seeking) video.play().catch(() => {});
}

function showChapters(tags) {
  for (const tag of tags) {
    if (!CHAPTER_KINDS.has(tag.kind)) continue;
    const pdt = Date.parse(tag.program_date_time);
    if (!Number.isFinite(pdt)) continue;
    const data = tag.data && typeof tag.data === "object" ? tag.data : {};
    const title = String(data.title || tag.product_id || tag.id);
    const button = cards.el("button", "chapter");
    button.type = "button";
    button.dataset.tag = tag.id;
    button.append(cards.thumb(data, tag.thumbnail_url || data.image || data.image_url));
    button.append(cards.el("span", "info", title));
    const at = cards.el("span", "at", "–");
    button.append(at);
    const li = cards.el("li");
    li.append(button);
    list.append(li);
    const chapter = { id: tag.id, title, pdt, time: null };
    button.addEventListener("click", () => seekTo(chapter));
    buttons.set(tag.id, { button, at });
    sc.chapters.push(chapter);
  }
  placeChapters();
}

if (hls) {
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
    fragments = d.details.fragments.map((f) => ({
      start: f.start,
      duration: f.duration,
      programDateTime: f.programDateTime,
    }));
    placeChapters();
  });
}

fetch(`/replay/${encodeURIComponent(recordingId)}/data.json${query}`)
  .then((r) => {
    if (!r.ok) throw new Error(`page data: HTTP ${r.status}`);
    return r.json();
  })
  .then((body) => showChapters(Array.isArray(body.tags) ? body.tags : []))
  .catch((e) => sc.errors.push({ type: "data", details: String(e), fatal: false }));

setInterval(() => {
  if (Number.isFinite(video.duration)) {
    position.textContent = `${clock(video.currentTime)} / ${clock(video.duration)}`;
  }
}, 250);
