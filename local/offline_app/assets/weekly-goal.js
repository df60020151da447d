/* Weekly goal: how many entries to get done each week, and the progress this week. */
(function (root) {
  "use strict";
  const M = root.MYYC;
  const DEFAULT_TARGET = 3;

  /** Entries marked done in the week (Monday to Sunday) of `now`. */
  function doneThisWeek(entries, now) {
    const start = M.weekStart(now);
    return entries.filter((entry) => entry.done && entry.done_at
      && M.weekStart(new Date(entry.done_at)) === start).length;
  }

  /** A target from user input: a whole number from 1 to 100 (the default otherwise). */
  function cleanTarget(value) {
    const target = Math.floor(Number(value));
    return target >= 1 && target <= 100 ? target : DEFAULT_TARGET;
  }

  function progress(count, target) {
    const goal = cleanTarget(target);
    return { count, target: goal, percent: Math.min(100, Math.round((count * 100) / goal)),
      reached: count >= goal };
  }

  function mount(section, app) {
    const input = M.part(section, "target");
    const bar = M.part(section, "bar");
    const status = M.part(section, "status");
    input.addEventListener("change", () => {
      app.save("weekly-goal", { target: cleanTarget(input.value) });
    });
    app.onChange(() => {
      const goal = app.load("weekly-goal", { target: DEFAULT_TARGET }) || {};
      const state = progress(doneThisWeek(app.entries(), app.now()), goal.target);
      input.value = String(state.target);
      bar.max = 100;
      bar.value = state.percent;
      status.textContent = state.reached
        ? "Goal reached: " + state.count + " of " + state.target + " this week."
        : state.count + " of " + state.target + " " + app.config.nouns + " done this week.";
    });
  }

  const api = { doneThisWeek, cleanTarget, progress, mount };
  M.features["weekly-goal"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
