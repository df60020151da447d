/* Destinations: each entry may name one; entries are shown grouped by destination. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function parseDestination(text) {
    return String(text || "").trim().replace(/\s+/g, " ").slice(0, 80);
  }

  /** [{destination, entries}] sorted by destination; entries without one come last. */
  function groupByDestination(entries) {
    const groups = new Map();
    for (const entry of entries) {
      const name = typeof entry.destination === "string" ? entry.destination : "";
      const key = name.toLowerCase();
      if (!groups.has(key)) groups.set(key, { destination: name, entries: [] });
      groups.get(key).entries.push(entry);
    }
    return Array.from(groups.keys()).sort((a, b) => {
      if (!a || !b) return a ? -1 : b ? 1 : 0;
      return a < b ? -1 : a > b ? 1 : 0;
    }).map((key) => groups.get(key));
  }

  function mount(section, app) {
    const box = M.part(section, "groups");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    app.hooks.fields.destination = parseDestination;
    app.hooks.badges.push((entry) => entry.destination
      ? { text: "→ " + entry.destination, className: "destination" } : null);
    app.onChange(() => {
      const groups = groupByDestination(app.entries());
      box.replaceChildren(...groups.map((group) => M.h(doc, "div", { className: "group" },
        M.h(doc, "h3", { textContent: group.destination || "No destination yet" }),
        M.h(doc, "ul", {}, ...group.entries.map((entry) => M.h(doc, "li", {
          className: entry.done ? "done" : "", textContent: entry.title }))))));
      empty.hidden = groups.length > 0;
    });
  }

  const api = { parseDestination, groupByDestination, mount };
  M.features.destinations = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
