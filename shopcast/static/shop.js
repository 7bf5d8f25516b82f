// shopcast live shop page: hls.js in low-latency mode + product cards that light up on the
// tagged frame (the viewer module shopcast-player.js fires them; page.js and cards.js hold what
// the replay page shares).
import { createCards } from "./cards.js";
import { LIVE_HLS_CONFIG, followLiveEdge, startPage } from "./page.js";

const streamId = document.body.dataset.stream;
const video = document.getElementById("video");

const { hls } = startPage(
  video,
  `/hls/${encodeURIComponent(streamId)}/master.m3u8`,
  LIVE_HLS_CONFIG,
  createCards(streamId, "live"),
);
followLiveEdge(hls, video);
