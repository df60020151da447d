/* Team members: invite people by email, within the plan's seats; remove them. */
(function (root) {
  "use strict";
  const M = root.MYYC;
  const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

  function plans() {
    return M.features["pricing-plans"];
  }

  /** {ok: true, members} with the invitation, or {ok: false, error}. The owner uses a seat. */
  function invite(members, email, plan, now, id) {
    const clean = String(email || "").trim().toLowerCase();
    if (!EMAIL.test(clean) || clean.length > 254) return { ok: false, error: "Enter an email address." };
    if (members.some((member) => member.email === clean)) return { ok: false, error: "Already invited." };
    if (members.length + 2 > plan.seats) {
      return { ok: false, error: "The " + plan.name + " plan has " + plan.seats
        + (plan.seats === 1 ? " seat" : " seats") + ": choose a bigger plan to invite more." };
    }
    const member = { id, email: clean, role: "member", invited_at: now.toISOString() };
    return { ok: true, members: members.concat([member]) };
  }

  function removeMember(members, id) {
    return members.filter((member) => member.id !== id);
  }

  function mount(section, app) {
    const form = M.part(section, "form");
    const email = M.part(section, "email");
    const message = M.part(section, "message");
    const list = M.part(section, "list");
    const seats = M.part(section, "seats");
    const doc = app.doc;
    const plan = () => plans().currentPlan(app.load("subscription", null));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const result = invite(app.load("members", []), email.value, plan(), app.now(), app.newId());
      M.say(message, result.ok ? "" : result.error);
      if (!result.ok) return;
      email.value = "";
      app.save("members", result.members);
    });
    app.onChange(() => {
      const members = app.load("members", []);
      list.replaceChildren(M.h(doc, "li", { className: "owner" },
        M.h(doc, "span", { textContent: app.user().name + " (owner)" })),
      ...members.map((member) => M.h(doc, "li", {},
        M.h(doc, "span", { textContent: member.email }),
        M.button(doc, "Remove", () => app.save("members", removeMember(app.load("members", []),
          member.id))))));
      seats.textContent = (members.length + 1) + " of " + plan().seats + " seats used.";
    });
  }

  const api = { invite, removeMember, mount };
  M.features["team-members"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
