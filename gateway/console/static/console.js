// Farthing console: live figures on the overview through server-sent
// events. The pages work without this file; it only keeps the overview's
// numbers current.
(function () {
  "use strict";
  if (!document.querySelector(".panels") || !window.EventSource) {
    return;
  }
  var live = document.getElementById("live");
  var source = new EventSource("/console/events");
  source.addEventListener("figures", function (e) {
    var figures = JSON.parse(e.data);
    Object.keys(figures).forEach(function (id) {
      var el = document.getElementById(id);
      if (el && el.textContent !== figures[id]) {
        el.textContent = figures[id];
      }
    });
    if (live) {
      var now = new Date();
      live.textContent = "Live: updated " + now.toISOString().replace(/\.\d+Z$/, "Z") + ".";
      live.title = now.toString();
      live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
    }
  });
  source.onerror = function () {
    if (live) {
      live.textContent = "Live updates paused; retrying.";
    }
  };
})();
