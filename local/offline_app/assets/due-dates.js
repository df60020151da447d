/* Due dates: entries may have one; the list is ordered soonest first and flags overdue ones. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** "YYYY-MM-DD" from a date input, or null. */
  function parseDue(text) {
    const clean = String(text || "").trim();
    return /^\d{4}-\d{2}-\d{2}$/.test(clean) ? clean : null;
  }

  function dueOf(entry) {
    return typeof entry.due_date === "string" ? entry.due_date : null;
  }

  /** Open entries first, soonest due first, undated after; done entries last. Stable. */
  function byDue(entries) {
    const rank = (entry) => [entry.done ? 1 : 0, dueOf(entry) === null ? 1 : 0];
    return entries.map((entry, index) => ({ entry, index })).sort((a, b) => {
      const [ra, rb] = [rank(a.entry), rank(b.entry)];
      if (ra[0] !== rb[0]) return ra[0] - rb[0];
      if (ra[1] !== rb[1]) return ra[1] - rb[1];
      const [da, db] = [dueOf(a.entry) || "", dueOf(b.entry) || ""];
      if (da !== db) return da < db ? -1 : 1;
      return a.index - b.index;
    }).map((item) => item.entry);
  }

  function isOverdue(entry, today) {
    return !entry.done && dueOf(entry) !== null && dueOf(entry) < today;
  }

  function mount(section, app) {
    const next = M.part(section, "next");
    const overdue = M.part(section, "overdue");
    app.hooks.fields.due_date = parseDue;
    app.hooks.order.push(byDue);
    app.hooks.badges.push((entry) => {
      if (!dueOf(entry)) return null;
      const late = isOverdue(entry, M.isoDate(app.now()));
      return { text: (late ? "overdue since " : "due ") + dueOf(entry),
        className: late ? "overdue" : "due" };
    });
    app.onChange(() => {
      const today = M.isoDate(app.now());
      const open = byDue(app.entries()).filter((entry) => !entry.done && dueOf(entry));
      next.textContent = open.length
        ? "Next: " + open[0].title + " (due " + dueOf(open[0]) + ")" : "Nothing due.";
      const late = open.filter((entry) => isOverdue(entry, today)).length;
      overdue.textContent = late ? late + " overdue" : "Nothing overdue.";
      overdue.className = late ? "overdue" : "";
    });
  }

  const api = { parseDue, byDue, isOverdue, mount };
  M.features["due-dates"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
