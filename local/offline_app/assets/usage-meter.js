/* Usage meter: entries used against the plan's limit; adding stops at the limit. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function plans() {
    return M.features["pricing-plans"];
  }

  function usage(used, limit) {
    return { used, limit, percent: Math.min(100, Math.round((used * 100) / Math.max(1, limit))),
      full: used >= limit };
  }

  function mount(section, app) {
    const bar = M.part(section, "bar");
    const status = M.part(section, "status");
    const plan = () => plans().currentPlan(app.load("subscription", null));
    app.hooks.limits.push((entries) => {
      const current = plan();
      return usage(entries.length, current.entries).full
        ? "The " + current.name + " plan holds " + current.entries + " " + app.config.nouns
          + ": choose a bigger plan to add more." : null;
    });
    app.onChange(() => {
      const current = plan();
      const state = usage(app.entries().length, current.entries);
      bar.max = 100;
      bar.value = state.percent;
      status.textContent = state.used + " of " + state.limit + " " + app.config.nouns
        + " on the " + current.name + " plan.";
      status.className = state.full ? "overdue" : "";
    });
  }

  const api = { usage, mount };
  M.features["usage-meter"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
