// The dashboard's only script: confirmations, "select all", a job page's live progress and the
// jobs table's live statuses.
// No inline handlers (the Content-Security-Policy forbids inline script): everything is wired
// here from data- attributes, and what the server sends is set as text, never as HTML.
"use strict";

let liveSource = null;

// A form (or the button that submits it) with data-confirm asks first. A form on its way stops
// the live updates: the answer to it is the next page.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const question = (button && button.dataset.confirm) || event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  } else if (liveSource) {
    liveSource.close();
    liveSource = null;
  }
});

// A checkbox with data-select-all="<selector>" ticks or clears the boxes it names.
for (const box of document.querySelectorAll("[data-select-all]")) {
  box.addEventListener("change", () => {
    for (const item of document.querySelectorAll(box.dataset.selectAll)) {
      item.checked = box.checked;
    }
  });
}

// A job's status as words (colour only adds to them), as the pages' status badges show it.
const statusBadge = (status) => {
  const badge = document.createElement("span");
  badge.className = `status status-${status}`;
  badge.textContent = status.replaceAll("_", " ");
  return badge;
};

// Shows a status event's job state in the elements under `scope` marked with data-field.
const showState = (scope, state) => {
  const setText = (name, text) => {
    for (const element of scope.querySelectorAll(`[data-field="${name}"]`)) {
      element.textContent = text;
    }
  };
  const bar = scope.querySelector("progress[data-field=progress]");
  if (bar) {
    bar.value = state.progress;
    bar.textContent = `${state.progress} %`;
  }
  setText("progress-text", `${state.progress} %`);
  setText("message", state.message);
  setText("tries", String(state.tries));
  if (state.finished_at !== undefined) {
    setText("finished_at", state.finished_at);
  }
  for (const cell of scope.querySelectorAll('[data-field="status"]')) {
    cell.replaceChildren(statusBadge(state.status));
  }
};

// A job page while the job is not finished: its status, progress and message follow the
// job's Server-Sent Events; once it has finished the page is loaded again (result, buttons).
const live = document.querySelector("[data-stream-url]");
if (live && window.EventSource) {
  const source = new EventSource(live.dataset.streamUrl);
  liveSource = source;
  source.addEventListener("status", (message) => {
    const state = JSON.parse(message.data);
    showState(live, state);
    if (state.finished && liveSource === source) {
      source.close();
      window.location.reload();
    }
  });
}

// The jobs table: its rows that have not finished follow their jobs on ONE stream (events name
// their job); "end" comes once every one has finished. A finished row stays as it is shown.
const table = document.querySelector("[data-rows-stream-url]");
if (table && window.EventSource) {
  const rows = new Map();
  for (const row of table.querySelectorAll("tr[data-job-id]")) {
    rows.set(row.dataset.jobId, row);
  }
  const source = new EventSource(table.dataset.rowsStreamUrl);
  liveSource = source;
  source.addEventListener("status", (message) => {
    const state = JSON.parse(message.data);
    const row = rows.get(state.job_id);
    if (row) {
      showState(row, state);
    }
  });
  source.addEventListener("end", () => source.close());
}
