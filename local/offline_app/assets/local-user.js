/* The local user: who is acting in this browser. Switching names lets one person play both
   seller and buyer; listings, bids and orders belong to the user who made them. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function mount(section, app) {
    const current = M.part(section, "current");
    const form = M.part(section, "form");
    const name = M.part(section, "name");
    const others = M.part(section, "users");
    const doc = app.doc;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (app.switchUser(name.value)) name.value = "";
    });
    app.onChange(() => {
      const me = app.user();
      current.textContent = me.name;
      others.replaceChildren(...app.users().filter((user) => user.id !== me.id)
        .map((user) => M.button(doc, "Switch to " + user.name, () => app.switchUser(user.name))));
    });
  }

  const api = { mount };
  M.features["local-user"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
