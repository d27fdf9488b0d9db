// Follows a running job's log: asks for the bytes after the last offset every two seconds
// and appends only what is new, so a multi-megabyte log is never rendered twice. The
// server renders the ANSI colours and sections; this builds the elements it describes.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || log.dataset.live !== "true") return;
  const job = log.dataset.job;
  let offset = Number(log.dataset.offset);
  let state = log.dataset.state;
  // The open sections: the last `depth` nested <details> at the end of the log.
  const stack = [log];
  const depth = state.split("|")[1] ? state.split("|")[1].split(",").length : 0;
  for (let i = 0; i < depth; i++) {
    const top = stack[stack.length - 1].lastElementChild;
    if (!top || !top.matches("details.sec")) break;
    stack.push(top.querySelector(":scope > .body"));
  }

  function line(html) {
    const div = document.createElement("div");
    div.className = "ln";
    div.innerHTML = html; // escaped by the server
    return div;
  }

  function append(items) {
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    for (const item of items) {
      const into = stack[stack.length - 1];
      if (item.t === "l") {
        into.appendChild(line(item.h));
      } else if (item.t === "s") {
        const details = document.createElement("details");
        details.className = "sec";
        details.dataset.section = item.n;
        details.open = !item.c;
        const summary = document.createElement("summary");
        summary.innerHTML = item.h;
        const body = document.createElement("div");
        body.className = "body";
        details.append(summary, body);
        into.appendChild(details);
        stack.push(body);
      } else if (item.t === "e") {
        for (let i = 0; i < item.p && stack.length > 1; i++) stack.pop();
      }
    }
    if (nearBottom) log.scrollTop = log.scrollHeight;
  }

  async function poll() {
    let reply;
    try {
      const url = `/-/ui/jobs/${job}/log?offset=${offset}&state=${encodeURIComponent(state)}`;
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
    append(reply.items);
    offset = reply.offset;
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
