/* Pricing plans: Free, Pro and Team, with their limits; choosing one sets the subscription. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  const PLANS = Object.freeze([
    Object.freeze({ id: "free", name: "Free", price_cents: 0, entries: 10, seats: 1 }),
    Object.freeze({ id: "pro", name: "Pro", price_cents: 1200, entries: 500, seats: 5 }),
    Object.freeze({ id: "team", name: "Team", price_cents: 4900, entries: 5000, seats: 25 }),
  ]);

  function planById(id) {
    return PLANS.find((plan) => plan.id === id) || PLANS[0];
  }

  /** The plan of a stored subscription (Free when there is none). */
  function currentPlan(subscription) {
    return planById(subscription && subscription.plan);
  }

  /** Why `plan` cannot be chosen with this many members and entries, or null. */
  function cannotChoose(plan, memberCount, entryCount) {
    if (memberCount + 1 > plan.seats) {
      return plan.name + " has " + plan.seats + " seat(s): remove members first.";
    }
    if (entryCount > plan.entries) {
      return plan.name + " holds " + plan.entries + " entries: remove some first.";
    }
    return null;
  }

  function choose(planId, now) {
    return { plan: planById(planId).id, status: "active", started_at: now.toISOString() };
  }

  function mount(section, app) {
    const cards = M.part(section, "plans");
    const message = M.part(section, "message");
    const doc = app.doc;
    app.onChange(() => {
      const current = currentPlan(app.load("subscription", null));
      cards.replaceChildren(...PLANS.map((plan) => {
        const chosen = plan.id === current.id;
        const pick = M.button(doc, chosen ? "Current plan" : "Choose " + plan.name, () => {
          const reason = cannotChoose(plan, app.load("members", []).length, app.entries().length);
          M.say(message, reason);
          if (!reason) app.save("subscription", choose(plan.id, app.now()));
        });
        pick.disabled = chosen;
        const card = M.h(doc, "div", { className: chosen ? "plan chosen" : "plan" },
          M.h(doc, "h3", { textContent: plan.name }),
          M.h(doc, "p", { className: "price", textContent: plan.price_cents
            ? M.formatCents(plan.price_cents) + " / month" : "free" }),
          M.h(doc, "p", { textContent: plan.entries + " " + app.config.nouns + ", "
            + plan.seats + (plan.seats === 1 ? " seat" : " seats") }),
          pick);
        card.setAttribute("data-plan", plan.id);
        return card;
      }));
    });
  }

  const api = { PLANS, planById, currentPlan, cannotChoose, choose, mount };
  M.features["pricing-plans"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
