// callvault console: the little script the pages need (served by callvault, no inline script).
"use strict";

// The player: the server cuts a revoked stream, but Chromium buffers 15-35 s ahead, so the page
// polls its grant and stops the video itself, saying why.
(function () {
  const video = document.getElementById("player");
  if (!video) return;
  const state = document.getElementById("player-state");
  const statusUrl = video.dataset.status;
  let stopped = false;
  let timer = null;

  function stop(message) {
    if (stopped) return;
    stopped = true;
    if (timer) clearInterval(timer);
    video.pause();
    video.removeAttribute("src");
    video.load();
    video.dataset.stopped = "1";
    state.textContent = message;
    state.className = "error";
  }

  async function check() {
    let response;
    try {
      response = await fetch(statusUrl, { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      return; // a network blip: the next poll decides
    }
    if (response.status === 401) return stop("Your console session has ended. Sign in again.");
    if (response.status === 403 || response.status === 404) return stop("This grant is no longer available to you.");
    if (!response.ok) return;
    const body = await response.json();
    if (!body.active) stop("Access ended: the grant was " + (body.reason || "ended") + ".");
  }

  video.addEventListener("error", function () {
    check().then(function () {
      if (!stopped) stop("Playback stopped: the server refused to send more of this recording.");
    });
  });
  video.src = video.dataset.src;
  state.textContent = "Every read of this recording is audited.";
  timer = setInterval(check, 2000);
})();
