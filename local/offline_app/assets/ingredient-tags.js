/* Ingredient tags: each entry lists its ingredients; the list can be filtered by one. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** Tags from "Eggs, flour; milk": trimmed, lowercase, each once. */
  function parseTags(text) {
    const tags = [];
    for (const raw of String(text || "").split(/[,;\n]/)) {
      const tag = raw.trim().toLowerCase().replace(/\s+/g, " ").slice(0, 40);
      if (tag && !tags.includes(tag)) tags.push(tag);
    }
    return tags.slice(0, 30);
  }

  function tagsOf(entry) {
    return Array.isArray(entry.tags) ? entry.tags : [];
  }

  /** Every tag in use, sorted. */
  function allTags(entries) {
    const seen = new Set();
    for (const entry of entries) for (const tag of tagsOf(entry)) seen.add(tag);
    return Array.from(seen).sort();
  }

  /** The entries tagged `tag` (all of them when tag is empty). */
  function withTag(entries, tag) {
    return tag ? entries.filter((entry) => tagsOf(entry).includes(tag)) : entries;
  }

  function mount(section, app) {
    const filter = M.part(section, "filter");
    const cloud = M.part(section, "tags");
    const doc = app.doc;
    let current = "";
    const choose = (tag) => { current = tag; app.changed(); };
    app.hooks.fields.tags = parseTags;
    app.hooks.filters.push((entries) => withTag(entries, current));
    app.hooks.badges.push((entry) => tagsOf(entry).length
      ? { text: tagsOf(entry).join(", "), className: "tags" } : null);
    filter.addEventListener("change", () => choose(filter.value));
    app.onChange(() => {
      const tags = allTags(app.entries());
      if (!tags.includes(current)) current = "";
      filter.replaceChildren(
        M.h(doc, "option", { value: "", textContent: "any ingredient" }),
        ...tags.map((tag) => M.h(doc, "option", { value: tag, textContent: tag })));
      filter.value = current;
      cloud.replaceChildren(...tags.map((tag) => {
        const chip = M.button(doc, tag, () => choose(current === tag ? "" : tag));
        chip.className = tag === current ? "chip active" : "chip";
        return chip;
      }));
    });
  }

  const api = { parseTags, allTags, withTag, mount };
  M.features["ingredient-tags"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
