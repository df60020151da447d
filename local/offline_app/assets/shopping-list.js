/* Shopping list: the ingredients of the week's planned meals, with a count and a check box. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** [{name, count}] from the tags of every entry planned this week, sorted by name. */
  function shoppingList(week, entries) {
    const counts = new Map();
    for (const entry of M.features["meal-plan"].plannedEntries(week, entries)) {
      const tags = Array.isArray(entry.tags) ? entry.tags : [];
      for (const tag of tags) counts.set(tag, (counts.get(tag) || 0) + 1);
    }
    return Array.from(counts.keys()).sort().map((name) => ({ name, count: counts.get(name) }));
  }

  function mount(section, app) {
    const items = M.part(section, "items");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    app.onChange(() => {
      const stored = app.load("shopping-checked", []);
      const checked = Array.isArray(stored) ? stored : [];
      const list = shoppingList(app.load("meal-plan", null), app.entries());
      items.replaceChildren(...list.map((item) => {
        const box = M.h(doc, "input", { type: "checkbox", checked: checked.includes(item.name) });
        box.addEventListener("change", () => {
          const others = checked.filter((name) => name !== item.name);
          app.save("shopping-checked", box.checked ? others.concat([item.name]) : others);
        });
        const label = item.count > 1 ? item.name + " ×" + item.count : item.name;
        return M.h(doc, "li", { className: box.checked ? "checked" : "" },
          M.h(doc, "label", {}, box, M.h(doc, "span", { textContent: label })));
      }));
      empty.hidden = list.length > 0;
    });
  }

  const api = { shoppingList, mount };
  M.features["shopping-list"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
