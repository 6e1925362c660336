// Live updates: one EventSource per page; every value is written with textContent.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "";
  document.addEventListener("submit", function (event) {
    var button = event.target.querySelector("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) { event.preventDefault(); }
  });
  if (!window.EventSource || !document.getElementById("live")) { return; }
  var live = document.getElementById("live");
  var jobId = body.dataset.job || "";
  var url = base + "/events" + (jobId ? "?job=" + encodeURIComponent(jobId) : "");
  var source = new EventSource(url);

  function text(tag, value, className) {
    var element = document.createElement(tag);
    element.textContent = value;
    if (className) { element.className = className; }
    return element;
  }
  function percent(job) {
    if (job.progress === null || job.progress === undefined) { return "started"; }
    var label = Math.round(job.progress * 100) + "%";
    return job.progress_message ? label + " · " + job.progress_message : label;
  }
  function setProgress(job) {
    document.querySelectorAll("[data-progress]").forEach(function (bar) {
      if (bar.dataset.progress !== job.id) { return; }
      if (job.progress === null || job.progress === undefined) { bar.removeAttribute("value"); }
      else { bar.value = job.progress; }
    });
    document.querySelectorAll("[data-progress-text]").forEach(function (label) {
      if (label.dataset.progressText === job.id) { label.textContent = percent(job); }
    });
  }
  function runningRow(job) {
    var row = document.createElement("tr");
    row.dataset.job = job.id;
    var link = text("a", job.id.slice(0, 12) + "…", "mono");
    link.href = base + "/jobs/" + encodeURIComponent(job.id);
    var first = document.createElement("td");
    first.appendChild(link);
    row.appendChild(first);
    row.appendChild(text("td", job.name));
    row.appendChild(text("td", job.queue));
    row.appendChild(text("td", String(job.attempts)));
    var cell = document.createElement("td");
    var bar = document.createElement("progress");
    bar.max = 1;
    bar.dataset.progress = job.id;
    cell.appendChild(bar);
    cell.appendChild(document.createTextNode(" "));
    var label = text("span", "", "muted");
    label.dataset.progressText = job.id;
    cell.appendChild(label);
    row.appendChild(cell);
    return row;
  }
  function updateRunning(running) {
    var table = document.querySelector("#running tbody");
    if (!table) { return; }
    var rows = {};
    table.querySelectorAll("tr[data-job]").forEach(function (row) { rows[row.dataset.job] = row; });
    var seen = {};
    running.forEach(function (job) {
      seen[job.id] = true;
      if (!rows[job.id]) { table.appendChild(runningRow(job)); }
    });
    Object.keys(rows).forEach(function (id) { if (!seen[id]) { rows[id].remove(); } });
    var empty = table.querySelector("tr.empty");
    if (empty) { empty.hidden = running.length > 0; }
    running.forEach(setProgress);
  }
  function updateQueues(queues) {
    queues.forEach(function (queue) {
      document.querySelectorAll("#queues tr[data-queue]").forEach(function (row) {
        if (row.dataset.queue !== queue.queue) { return; }
        ["waiting", "delayed", "running"].forEach(function (field) {
          var cell = row.querySelector('[data-field="' + field + '"]');
          if (cell) { cell.textContent = String(queue[field]); }
        });
      });
    });
  }
  function updateJob(job) {
    if (!job || job.id !== jobId) { return; }
    setProgress(job);
    var slot = document.getElementById("job-progress-slot");
    if (slot && job.progress !== null) { slot.hidden = false; }
    var badge = document.querySelector("#job-state .state");
    if (badge && badge.textContent !== job.state) {
      badge.textContent = job.state;
      badge.className = "state state-" + job.state;
      var note = document.getElementById("job-changed");
      if (note) { note.hidden = false; }
      var actions = document.getElementById("actions");
      if (actions) { actions.hidden = true; }
    }
  }
  source.addEventListener("snapshot", function (event) {
    var data = JSON.parse(event.data);
    live.textContent = "● live " + new Date(data.at * 1000).toLocaleTimeString();
    live.className = "live on";
    updateQueues(data.queues);
    updateRunning(data.running);
    updateJob(data.job);
  });
  source.addEventListener("trouble", function (event) {
    live.textContent = "○ " + JSON.parse(event.data).message;
    live.className = "live";
  });
  source.onerror = function () { live.textContent = "○ reconnecting"; live.className = "live"; };
}());
