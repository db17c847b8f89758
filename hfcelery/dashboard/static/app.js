/* hfcelery pages: live counters, charts, bulk actions on a filter, live job updates. */
(function () {
  "use strict";
  var body = document.body;
  var xsrf = body.getAttribute("data-xsrf");

  // An answer's JSON; an error answer (JSON or not) throws with the server's reason.
  function answer(r) {
    return r.text().then(function (text) {
      var o = null;
      try { o = JSON.parse(text); } catch (e) { o = null; }
      if (!r.ok) {
        throw new Error((o && o.error) || text.trim() || ("the server answered " + r.status));
      }
      return o;
    });
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(answer);
  }
  function postForm(url, data) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "X-HF-XSRF": xsrf },
      body: new URLSearchParams(data).toString()
    }).then(answer);
  }
  function chart(el, series, data) {
    if (!el || typeof uPlot === "undefined") { return null; }
    var opts = {
      width: Math.max(el.clientWidth, 280), height: 200,
      series: [{}].concat(series.map(function (s) { return { label: s[0], stroke: s[1], width: 2 }; })),
      axes: [{}, {}]
    };
    return new uPlot(opts, data, el);
  }

  // Overview: counters and the realtime graph, polled every 2 s.
  var realtime = document.getElementById("realtime");
  if (realtime) {
    var points = [[], [], []], last = null, plot = chart(realtime, [["Succeeded", "#2e9e4f"], ["Failed", "#d9534f"]], points);
    var poll = function () {
      getJSON(realtime.getAttribute("data-api")).then(function (s) {
        Object.keys(s.states).forEach(function (name) {
          var el = document.querySelector('[data-state="' + name + '"]');
          if (el) { el.textContent = s.states[name]; }
        });
        var r = document.querySelector("[data-retries]");
        if (r) { r.textContent = s.retries; }
        var now = Date.now() / 1000;
        if (last) {
          var dt = Math.max(now - last.t, 0.001);
          points[0].push(now);
          points[1].push((s.totals.succeeded - last.s) / dt);
          points[2].push((s.totals.failed - last.f) / dt);
          if (points[0].length > 60) { points.forEach(function (p) { p.shift(); }); }
          if (plot) { plot.setData(points); }
        }
        last = { t: now, s: s.totals.succeeded, f: s.totals.failed };
        realtime.setAttribute("data-succeeded-total", s.totals.succeeded);
      }).catch(function () {});
    };
    poll();
    setInterval(poll, 2000);
  }
  ["history-day", "history-week"].forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    getJSON(el.getAttribute("data-api")).then(function (h) {
      var d = [[], [], []];
      h.points.forEach(function (p) {
        d[0].push(Date.parse(p.time) / 1000); d[1].push(p.succeeded); d[2].push(p.failed);
      });
      chart(el, [["Succeeded", "#2e9e4f"], ["Failed", "#d9534f"]], d);
    }).catch(function () {});
  });

  // Lists: the header's box selects (or clears) every job of the page.
  var all = document.querySelector("input.select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="id"][form="bulk"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  // Lists: an action on every job matching the filter: confirm with the count, then batches.
  var bulk = document.getElementById("bulk");
  if (bulk) {
    bulk.addEventListener("submit", function (ev) {
      var scope = bulk.querySelector('input[name="scope"]');
      if (!scope || !scope.checked) { return; }
      ev.preventDefault();
      var action = ev.submitter ? ev.submitter.value : "requeue";
      var text = bulk.querySelector(".progress-text");
      var failed = function (err) {
        text.textContent = "Failed: " + err.message;
        text.setAttribute("data-failed", "1");
      };
      getJSON(bulk.getAttribute("data-count")).then(function (c) {
        if (!window.confirm(action + " " + c.count + " job(s) matching the filter?")) { return; }
        var data = {};
        new FormData(bulk).forEach(function (v, k) { if (k !== "scope" && k !== "id") { data[k] = v; } });
        data.action = action;
        var done = 0, applied = 0;
        var step = function (after) {
          if (after) { data.after = after; } else { delete data.after; }
          postForm(bulk.getAttribute("data-bulk-api"), data).then(function (o) {
            done += o.requested; applied += o.applied;
            text.textContent = applied + " of " + done + " done (of " + c.count + ")";
            if (o.next_cursor) { step(o.next_cursor); } else {
              text.textContent = "Finished: " + applied + " of " + done + " job(s) changed.";
              text.setAttribute("data-finished", "1");
              window.setTimeout(function () { window.location.reload(); }, 800);
            }
          }).catch(failed);
        };
        step(null);
      }).catch(failed);
    });
  }

  // A job's page: follow its state, progress and log while it is not finished.
  var job = document.querySelector(".job[data-live='1']");
  if (job) {
    var seen = job.getAttribute("data-state");
    var follow = setInterval(function () {
      getJSON(job.getAttribute("data-job-api")).then(function (j) {
        if (j.state !== seen) { clearInterval(follow); window.location.reload(); return; }
        var p = document.getElementById("progress");
        if (j.progress && p) {
          var bar = p.querySelector("progress");
          if (bar && j.progress.fraction !== null) {
            bar.value = j.progress.fraction;
            var percent = p.querySelector(".percent");
            if (percent) { percent.textContent = Math.round(j.progress.fraction * 100) + "%"; }
          }
          var log = p.querySelector(".log");
          if (log) { log.textContent = j.progress.log.join("\n"); }
        } else if (j.progress && !p) { window.location.reload(); }
      }).catch(function () {});
    }, 2000);
  }
})();
