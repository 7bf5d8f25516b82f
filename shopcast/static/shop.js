// shopcast live shop page: hls.js in low-latency mode + product cards that light up on the
// tagged frame (the viewer module shopcast-player.js fires them; page.js and cards.js hold what
// the replay page shares).
import { createCards } from "./cards.js";
import { startPage } from "./page.js";

const streamId = document.body.dataset.stream;
const video = document.getElementById("video");

startPage(
  video,
  `/hls/${encodeURIComponent(streamId)}/master.m3u8`,
  {
    // Catch up (up to 1.5× speed) when behind the target latency: a player joins at the last
    // independent part, which can be most of a segment behind the live edge.
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
    },
  },
  createCards(streamId, "live"),
);
