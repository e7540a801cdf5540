// jsd console: optional enhancements. Every page works without this script.
(function () {
  "use strict";

  // After a refused form, put the keyboard (and screen reader) on the first field that needs fixing.
  var invalid = document.querySelector("[aria-invalid=true]");
  if (invalid) invalid.focus();

  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });

  // Live joins of a device: server-sent events from /ui/devices/<eui>/joins/stream.
  var table = document.getElementById("joins");
  if (table && window.EventSource) {
    var body = table.querySelector("tbody");
    var live = document.getElementById("live-state");
    var empty = document.getElementById("joins-empty");
    var source = new EventSource(table.getAttribute("data-stream"));
    source.addEventListener("open", function () { if (live) live.hidden = false; });
    source.addEventListener("error", function () { if (live) live.hidden = true; });
    source.addEventListener("end", function () { source.close(); if (live) live.hidden = true; });
    source.addEventListener("join", function (msg) {
      var j = JSON.parse(msg.data);
      if (body.querySelector('tr[data-seq="' + j.seq + '"]')) return;
      var tr = document.createElement("tr");
      tr.className = "new";
      tr.setAttribute("data-seq", j.seq);
      var cells = [j.time, j.result, j.net_id];
      cells.forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 1) {
          var span = document.createElement("span");
          span.className = "badge " + (j.ok ? "ok" : "bad");
          span.textContent = text;
          td.appendChild(span);
        } else {
          td.textContent = text;
          if (i === 2) td.className = "mono";
        }
        tr.appendChild(td);
      });
      body.insertBefore(tr, body.firstChild);
      if (empty) empty.hidden = true;
    });
  }

  // Upload progress: poll the job and update the bar; show the outcome when it ends.
  var job = document.getElementById("job");
  if (job && job.getAttribute("data-state") === "running") {
    var url = job.getAttribute("data-progress");
    var tick = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
        document.getElementById("bar").max = p.total || 1;
        document.getElementById("bar").value = p.done;
        document.getElementById("done").textContent = p.done;
        document.getElementById("total").textContent = p.total;
        document.getElementById("rate").textContent = p.rate;
        document.getElementById("left").textContent = p.seconds_left === null ? "—" : p.seconds_left + " s left";
        if (p.state !== "running") { window.location.reload(); return; }
        setTimeout(tick, 400);
      }).catch(function () { setTimeout(tick, 2000); });
    };
    setTimeout(tick, 300);
  }
})();
