// "Go live" page: camera + microphone → WHIP (RFC 9725) → shopcast. No external assets.
"use strict";

(() => {
  const streamId = document.body.dataset.streamId;
  const $ = (id) => document.getElementById(id);
  const preview = $("preview");
  const keyInput = $("key");
  const goButton = $("go");
  const stopButton = $("stop");
  const stateBox = $("state");

  // What tests (and curious humans) can read: the state, the session URL, the video codec.
  const status = (window.shopcastPublish = { state: "idle", location: null, codec: null, error: null });
  let pc = null;
  let media = null;

  function show(state, text) {
    status.state = state;
    stateBox.dataset.state = state;
    stateBox.textContent = text;
  }

  // Non-trickle WHIP: send the offer once the browser has gathered its candidates
  // (or after a short wait, with whatever it has by then).
  function gathered(peer, ms) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  function preferH264(transceiver) {
    // H.264 first: shopcast can pass it through without re-encoding. VP8 stays as a fallback.
    if (!RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
    const caps = RTCRtpSender.getCapabilities("video");
    if (!caps) return;
    const isH264 = (c) => c.mimeType.toLowerCase() === "video/h264";
    transceiver.setCodecPreferences([...caps.codecs.filter(isH264), ...caps.codecs.filter((c) => !isH264(c))]);
  }

  async function goLive() {
    const key = keyInput.value.trim();
    if (!key) {
      show("error", "Enter the stream key first.");
      return;
    }
    goButton.disabled = true;
    try {
      show("starting", "Asking for camera and microphone…");
      media = await navigator.mediaDevices.getUserMedia({
        video: {
          width: { ideal: 720 },
          height: { ideal: 1280 },
          aspectRatio: { ideal: 9 / 16 },
          frameRate: { ideal: 30, max: 30 },
          facingMode: "user",
        },
        audio: { echoCancellation: true, noiseSuppression: true },
      });
      preview.srcObject = media;
      pc = new RTCPeerConnection({ iceServers: [] });
      pc.addEventListener("connectionstatechange", () => {
        const s = pc && pc.connectionState;
        if (s === "connected") show("live", "Live. Viewers can watch now.");
        else if (s === "failed") stopLive("Connection failed.", true);
        else if (s === "disconnected") show("reconnecting", "Connection interrupted…");
      });
      for (const track of media.getTracks()) {
        const transceiver = pc.addTransceiver(track, { direction: "sendonly" });
        if (track.kind === "video") preferH264(transceiver);
      }
      show("starting", "Connecting…");
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 2000);
      const response = await fetch(`/whip/${encodeURIComponent(streamId)}`, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${key}` },
        body: pc.localDescription.sdp,
      });
      const body = await response.text();
      if (response.status !== 201) {
        const reason = response.status === 401 ? "Wrong stream key." : body.trim() || response.statusText;
        await stopLive(`Refused (${response.status}): ${reason}`, true);
        return;
      }
      status.location = new URL(response.headers.get("Location"), window.location.href).href;
      const codec = /a=rtpmap:\d+ (H264|VP8)\/90000/i.exec(body);
      status.codec = codec ? codec[1].toUpperCase() : null;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      stopButton.disabled = false;
    } catch (err) {
      await stopLive(`Could not go live: ${err.message || err}`, true);
    }
  }

  async function stopLive(message, failed) {
    stopButton.disabled = true;
    const location = status.location;
    status.location = null;
    if (location) {
      try {
        await fetch(location, { method: "DELETE" });
      } catch (err) {
        // the server ends the session on its own once the connection is gone
      }
    }
    if (pc) pc.close();
    pc = null;
    if (media) media.getTracks().forEach((t) => t.stop());
    media = null;
    preview.srcObject = null;
    goButton.disabled = false;
    if (failed) status.error = message;
    show(failed ? "error" : "stopped", message);
  }

  goButton.addEventListener("click", goLive);
  stopButton.addEventListener("click", () => stopLive("Stopped.", false));
  window.addEventListener("pagehide", () => {
    // keepalive lets the DELETE outlive the page
    if (status.location) fetch(status.location, { method: "DELETE", keepalive: true });
  });
})();
