// TED console: keeps the page up to date. The server renders every page
// whole; this listens to /events and, when the fleet changes, fetches the
// same page again and swaps its <main>. Without it the pages still work:
// reload them.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!document.getElementById("main") || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  // What a test (or a curious operator) can read: updates swapped in.
  var state = window.tedConsole = { updates: 0, live: false };
  var busy = false, again = false, dirty = false;

  function setLive(on, text) {
    state.live = on;
    if (live) {
      live.setAttribute("data-live", on ? "on" : "off");
      live.textContent = text;
    }
  }

  function refresh() {
    if (document.hidden) { dirty = true; return; }
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (resp) { return resp.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) {
          main.replaceWith(document.adoptNode(fresh));
          state.updates++;
        }
        var h1 = doc.querySelector("h1"), old = document.querySelector("h1");
        if (h1 && old && h1.innerHTML !== old.innerHTML) {
          old.replaceWith(document.adoptNode(h1));
        }
      })
      .catch(function () { /* the next event or the timer tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var wasDown = false;
  var es = new EventSource("/events");
  es.addEventListener("update", refresh);
  es.onopen = function () {
    setLive(true, "live");
    if (wasDown) { wasDown = false; refresh(); }
  };
  es.onerror = function () {
    setLive(false, "reconnecting");
    wasDown = true;
  };
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && dirty) { dirty = false; refresh(); }
  });
  // Ages ("5m ago") and staleness move with the clock, not with changes.
  setInterval(refresh, 30000);
})();
