/* Meal plan: a weekly planner, Monday to Sunday, that assigns entries (recipes) to days.
   Stored as {Mon: [entry ids], ..., Sun: [...]} under "meal-plan". */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function emptyWeek() {
    const week = {};
    for (const day of M.DAYS) week[day] = [];
    return week;
  }

  /** A well-formed week from whatever storage held. */
  function normalWeek(week) {
    const clean = emptyWeek();
    for (const day of M.DAYS) {
      const ids = week && Array.isArray(week[day]) ? week[day] : [];
      clean[day] = ids.filter((id) => typeof id === "string");
    }
    return clean;
  }

  /** The week with `entryId` planned on `day` (once per day). */
  function assign(week, day, entryId) {
    if (!M.DAYS.includes(day)) throw new RangeError("not a day of the week: " + day);
    const next = normalWeek(week);
    if (!next[day].includes(entryId)) next[day] = next[day].concat([entryId]);
    return next;
  }

  function unassign(week, day, entryId) {
    const next = normalWeek(week);
    if (M.DAYS.includes(day)) next[day] = next[day].filter((id) => id !== entryId);
    return next;
  }

  /** Each day with its planned entries; entries removed since are left out. */
  function weekView(week, entries) {
    const byId = new Map(entries.map((entry) => [entry.id, entry]));
    const clean = normalWeek(week);
    return M.DAYS.map((day) => ({
      day,
      name: M.DAY_NAMES[day],
      entries: clean[day].map((id) => byId.get(id)).filter(Boolean),
    }));
  }

  /** Every planned entry, once per day it is planned. */
  function plannedEntries(week, entries) {
    return weekView(week, entries).flatMap((day) => day.entries);
  }

  function mount(section, app) {
    const days = M.part(section, "week");
    const clear = M.part(section, "clear");
    const doc = app.doc;
    const load = () => normalWeek(app.load("meal-plan", null));
    clear.addEventListener("click", () => app.save("meal-plan", emptyWeek()));
    app.onChange(() => {
      const entries = app.entries();
      const columns = weekView(load(), entries).map((day) => {
        const planned = M.h(doc, "ul", { className: "planned" },
          ...day.entries.map((entry) => M.h(doc, "li", {},
            M.h(doc, "span", { textContent: entry.title }),
            M.button(doc, "×", () => app.save("meal-plan", unassign(load(), day.day, entry.id))))));
        const pick = M.h(doc, "select", {},
          M.h(doc, "option", { value: "", textContent: "Add " + app.config.noun + "…" }),
          ...entries.map((entry) => M.h(doc, "option", { value: entry.id, textContent: entry.title })));
        pick.setAttribute("data-day", day.day);
        pick.setAttribute("aria-label", "Plan a " + app.config.noun + " on " + day.name);
        pick.addEventListener("change", () => {
          if (pick.value) app.save("meal-plan", assign(load(), day.day, pick.value));
        });
        const column = M.h(doc, "div", { className: "day" },
          M.h(doc, "h3", { textContent: day.name }), planned, pick);
        column.setAttribute("data-day", day.day);
        return column;
      });
      days.replaceChildren(...columns);
      clear.disabled = plannedEntries(load(), entries).length === 0;
    });
  }

  const api = { emptyWeek, normalWeek, assign, unassign, weekView, plannedEntries, mount };
  M.features["meal-plan"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
