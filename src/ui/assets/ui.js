// Follows a running job's log: asks for the bytes after the last offset every two seconds
// and appends only what is new, so a multi-megabyte log is never rendered twice. The
// server renders the ANSI colours, sections and line numbers; this builds the elements it
// describes. The unfinished last line is shown apart (#log-partial) and replaced by each
// answer, until it comes whole as an ordinary line.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || log.dataset.live !== "true") return;
  const job = log.dataset.job;
  let offset = Number(log.dataset.offset);
  let chunk = Number(log.dataset.chunk);
  let state = log.dataset.state;
  // The open sections: the last `depth` nested <details> at the end of the log.
  const stack = [log];
  const open = state.split("|")[1];
  const depth = open ? open.split(",").length : 0;
  for (let i = 0; i < depth; i++) {
    const top = [...stack[stack.length - 1].children].filter((e) => e.matches("details.sec")).pop();
    if (!top) break;
    stack.push(top.querySelector(":scope > .body"));
  }

  function line(item) {
    const div = document.createElement("div");
    div.className = "ln";
    if (item.l) div.dataset.n = String(item.l);
    div.innerHTML = item.h; // escaped by the server
    return div;
  }

  // `mm:ss`, or `h:mm:ss` from an hour (as the server writes it).
  function took(secs) {
    const two = (n) => String(n).padStart(2, "0");
    const h = Math.floor(secs / 3600), m = Math.floor(secs / 60) % 60, s = secs % 60;
    return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
  }

  function append(items, partial) {
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const old = document.getElementById("log-partial");
    if (old) old.remove();
    for (const item of items) {
      const into = stack[stack.length - 1];
      if (item.t === "l") {
        into.appendChild(line(item));
      } else if (item.t === "s") {
        const details = document.createElement("details");
        details.className = "sec";
        details.dataset.section = item.n;
        details.open = !item.c;
        const summary = document.createElement("summary");
        if (item.l) summary.dataset.n = String(item.l);
        summary.innerHTML = item.h;
        const body = document.createElement("div");
        body.className = "body";
        details.append(summary, body);
        into.appendChild(details);
        stack.push(body);
      } else if (item.t === "e") {
        let named = null;
        for (let i = 0; i < item.p && stack.length > 1; i++) named = stack.pop();
        const summary = named && named.parentElement.querySelector(":scope > summary");
        if (summary) {
          const span = document.createElement("span");
          span.className = "dur";
          span.textContent = took(item.d);
          summary.appendChild(span);
        }
      }
    }
    if (partial) {
      const div = line(partial);
      div.id = "log-partial";
      stack[stack.length - 1].appendChild(div);
    }
    if (nearBottom) log.scrollTop = log.scrollHeight;
  }

  async function poll() {
    let reply;
    try {
      const url = `/-/ui/jobs/${job}/log?offset=${offset}&chunk=${chunk}&state=${encodeURIComponent(state)}`;
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.redirected || !response.ok) {
        document.getElementById("log-note").textContent = "Stopped following the log: reload the page.";
        return;
      }
      reply = await response.json();
    } catch (e) {
      setTimeout(poll, 5000);
      return;
    }
    append(reply.items, reply.partial);
    offset = reply.offset;
    chunk = reply.chunk;
    state = reply.state;
    log.dataset.offset = String(offset);
    const status = document.querySelector("#job-status .status");
    if (status && status.textContent !== reply.status) {
      status.textContent = reply.status;
      status.className = `status s-${reply.status}`;
    }
    if (reply.live) {
      setTimeout(poll, 2000);
    } else {
      log.dataset.live = "false";
      document.getElementById("log-note").textContent = `The job is ${reply.status}; reload the page to retry it.`;
      // A finished job cannot be canceled any more.
      for (const form of document.querySelectorAll('#job-actions form[action$="/cancel"]')) form.remove();
      if (reply.artifact) document.getElementById("artifact").hidden = false;
    }
  }
  setTimeout(poll, 1000);
})();

// Parts of a page that change while it is open (a pipeline's jobs, the runners): an element
// with `data-follow` names the URL that renders it again; it is fetched every `data-every`
// ms and swapped in when it changed. The server renders it one way only, so the page reads
// the same with or without this script. Following stops when the new rendering no longer
// has `data-follow` (the pipeline is over), and waits while focus is inside the element so
// that a button being pressed is not swapped out from under the pointer.
(function () {
  for (const region of document.querySelectorAll("[data-follow][id]")) follow(region.id);

  function follow(id) {
    const region = document.getElementById(id);
    if (!region || !region.dataset.follow) return;
    const every = Math.max(1000, Number(region.dataset.every) || 5000);
    setTimeout(() => refresh(id), every);
  }

  async function refresh(id) {
    const region = document.getElementById(id);
    if (!region) return;
    if (region.contains(document.activeElement) && document.activeElement !== document.body) {
      follow(id);
      return;
    }
    let html;
    try {
      const response = await fetch(region.dataset.follow, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.redirected || !response.ok) return; // signed out or gone: the page stays as it is
      html = await response.text();
    } catch (e) {
      follow(id);
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = html; // rendered and escaped by the server
    const fresh = template.content.getElementById(id);
    if (!fresh) return;
    if (fresh.outerHTML !== region.outerHTML) region.replaceWith(fresh);
    follow(id);
  }
})();

// The new-pipeline form: a button that adds an empty variable row (without the script the
// form offers a few).
(function () {
  const add = document.getElementById("add-variable");
  if (!add) return;
  add.hidden = false;
  add.addEventListener("click", () => {
    const rows = add.parentElement.querySelectorAll(".var");
    const row = rows[rows.length - 1].cloneNode(true);
    for (const input of row.querySelectorAll("input")) input.value = "";
    add.before(row);
    row.querySelector("input").focus();
  });
})();

// A manual job's `manual_confirmation`: its Run button's form asks before it is sent (the
// form is also in regions `ui.js` replaces, so the listener sits on the document).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
