// The dashboard's "Latest events" table: polls the project's events/latest endpoint every 3 s
// and prepends the events received since the newest row shown. No framework.
(() => {
  const POLL_MS = 3000;
  const table = document.querySelector("[data-latest-events]");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.querySelector("[data-live-status]");
  const limit = Number(table.dataset.limit) || 20;
  let after = Number(table.dataset.after) || 0;
  let timer = null;

  function cell(row, child) {
    const td = row.insertCell();
    if (child) td.append(child);
    return td;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function eventRow(event) {
    const row = document.createElement("tr");
    row.dataset.eventId = event.id;
    row.className = "fresh";
    const time = element("time", "", event.received);
    time.dateTime = event.received_at;
    cell(row, time);
    cell(row, element("span", `badge type-${event.type}`, event.type));
    cell(row).textContent = event.name;
    const link = element("a");
    link.href = event.customer.url;
    link.append(event.customer.anonymous ? "Anonymous" : element("span", "mono", event.customer.label));
    cell(row, link);
    return row;
  }

  function show(events) {
    if (!events.length) return;
    body.querySelector("[data-empty]")?.remove();
    // The endpoint answers newest first: insert in reverse so the newest ends up on top.
    for (const event of [...events].reverse()) {
      if (body.querySelector(`tr[data-event-id="${event.id}"]`)) continue;
      body.prepend(eventRow(event));
      after = Math.max(after, event.id);
    }
    while (body.rows.length > limit) body.lastElementChild.remove();
  }

  function setStatus(text) {
    if (status) status.textContent = text;
  }

  async function poll() {
    timer = null;
    if (document.hidden) return;
    try {
      const response = await fetch(`${table.dataset.url}?after=${after}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      // Signed out (a redirect to the login page) or no longer a member: stop rather than hammer.
      if (!response.ok || !response.headers.get("Content-Type")?.includes("application/json")) {
        setStatus("paused: reload the page");
        return;
      }
      show((await response.json()).events);
      setStatus("live");
    } catch (err) {
      setStatus("offline, retrying");
    }
    schedule();
  }

  function schedule() {
    if (!timer && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else {
      poll();
    }
  });
  schedule();
})();
