// The run page's log (templates/runs/_run_log.html): open scrolled to the newest line, follow
// the live tail while the reader is at the bottom, and keep the lines in view still when
// "Load earlier" inserts older ones above them. Loaded with `defer`; htmx does the fetching.
(function () {
  "use strict";

  const log = document.getElementById("log");
  if (!log) return;
  const NEAR = 40; // px from the bottom that still counts as "following"
  let following = true;
  let heightBefore = 0;

  log.scrollTop = log.scrollHeight;
  log.addEventListener("scroll", function () {
    following = log.scrollHeight - log.scrollTop - log.clientHeight < NEAR;
  });
  let earlier = false;
  // On <body>: an outerHTML swap replaces the element that asked, so the events of a swapped-out
  // element reach the body, not the log.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    if (!log.contains(event.detail.elt)) return;
    heightBefore = log.scrollHeight;
    earlier = event.detail.elt.id === "log-earlier";
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (earlier) {
      log.scrollTop += log.scrollHeight - heightBefore; // older lines went in above the reader
      earlier = false;
    } else if (following) {
      log.scrollTop = log.scrollHeight;
    }
  });
})();
