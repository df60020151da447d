/* Entries, the base of most apps: add (title and notes), list and search, mark done or
   remove, kept in the browser between visits. Features add fields, badges, filters, an order
   and item actions through app.hooks. */
(function (root) {
  "use strict";
  const M = root.MYYC;
  const BASE = ["id", "title", "notes", "done", "done_at", "created_at"];

  /** A new entry from the add form's fields. */
  function createEntry(fields, now, id) {
    const entry = {
      id,
      title: String(fields.title || "").trim().slice(0, 200),
      notes: String(fields.notes || "").trim().slice(0, 2000),
      done: false,
      done_at: null,
      created_at: now.toISOString(),
    };
    for (const [name, value] of Object.entries(fields)) {
      if (!BASE.includes(name)) entry[name] = value;
    }
    return entry;
  }

  function searchText(entry) {
    const tags = Array.isArray(entry.tags) ? entry.tags.join(" ") : "";
    return [entry.title, entry.notes, entry.destination || "", tags].join(" ").toLowerCase();
  }

  /** Entries matching every word of `query` (title, notes, tags, destination). */
  function searchEntries(list, query) {
    const words = String(query || "").toLowerCase().split(/\s+/).filter(Boolean);
    return list.filter((entry) => words.every((word) => searchText(entry).includes(word)));
  }

  function toggleDone(list, id, now) {
    return list.map((entry) => entry.id !== id ? entry : Object.assign({}, entry, {
      done: !entry.done,
      done_at: entry.done ? null : now.toISOString(),
    }));
  }

  function removeEntry(list, id) {
    return list.filter((entry) => entry.id !== id);
  }

  /** What the list shows: filters, then the search, then the order. */
  function visibleEntries(app, query) {
    let list = app.entries();
    for (const filter of app.hooks.filters) list = filter(list);
    list = searchEntries(list, query);
    for (const order of app.hooks.order) list = order(list);
    return list;
  }

  function nouns(app, count) {
    return count === 1 ? app.config.noun : app.config.nouns;
  }

  function mountAdd(section, app) {
    const form = M.part(section, "form");
    const title = M.part(section, "title");
    const notes = M.part(section, "notes");
    const message = M.part(section, "message");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!title.value.trim()) return M.say(message, "Give it a title first.");
      const fields = { title: title.value, notes: notes.value };
      const inputs = Array.from(section.querySelectorAll("[data-field]"));
      for (const input of inputs) {
        const name = input.getAttribute("data-field");
        const parse = app.hooks.fields[name] || ((text) => String(text).trim());
        fields[name] = parse(input.value);
      }
      const list = app.entries();
      for (const limit of app.hooks.limits) {
        const reason = limit(list);
        if (reason) return M.say(message, reason);
      }
      M.say(message, "");
      app.setEntries(list.concat([createEntry(fields, app.now(), app.newId())]));
      for (const input of [title, notes].concat(inputs)) input.value = "";
    });
  }

  function renderItem(app, entry) {
    const doc = app.doc;
    const text = M.h(doc, "div", { className: "item-text" },
      M.h(doc, "strong", { textContent: entry.title }));
    if (entry.notes) text.append(M.h(doc, "span", { className: "notes", textContent: entry.notes }));
    for (const badge of app.hooks.badges) {
      const shown = badge(entry);
      if (!shown) continue;
      const spec = typeof shown === "string" ? { text: shown, className: "" } : shown;
      text.append(M.h(doc, "span", { className: ("badge " + spec.className).trim(),
        textContent: spec.text }));
    }
    const actions = M.h(doc, "div", { className: "actions" });
    for (const action of app.hooks.entryActions) {
      const spec = action(entry);
      if (spec) actions.append(M.button(doc, spec.label, spec.run));
    }
    return M.h(doc, "li", { className: entry.done ? "item done" : "item" }, text, actions);
  }

  function mountSearch(section, app) {
    const search = M.part(section, "search");
    const list = M.part(section, "list");
    const empty = M.part(section, "empty");
    const render = () => {
      const items = visibleEntries(app, search.value);
      list.replaceChildren(...items.map((entry) => renderItem(app, entry)));
      empty.hidden = items.length > 0;
    };
    search.addEventListener("input", render);
    app.onChange(render);
  }

  function mountComplete(section, app) {
    const progress = M.part(section, "progress");
    const clear = M.part(section, "clear");
    app.hooks.entryActions.push((entry) => ({
      label: entry.done ? "Undo" : "Done",
      run: () => app.setEntries(toggleDone(app.entries(), entry.id, app.now())),
    }));
    app.hooks.entryActions.push((entry) => ({
      label: "Remove",
      run: () => app.setEntries(removeEntry(app.entries(), entry.id)),
    }));
    clear.addEventListener("click", () => app.setEntries(app.entries().filter((e) => !e.done)));
    app.onChange(() => {
      const all = app.entries();
      const done = all.filter((entry) => entry.done).length;
      progress.textContent = all.length
        ? done + " of " + all.length + " " + nouns(app, all.length) + " done."
        : "Nothing to do yet.";
      clear.disabled = done === 0;
    });
  }

  function mountKeep(section, app) {
    const status = M.part(section, "status");
    const backup = M.part(section, "backup");
    const dump = M.part(section, "dump");
    backup.addEventListener("click", () => {
      dump.hidden = !dump.hidden;
      dump.value = JSON.stringify(app.entries(), null, 2);
    });
    app.onChange(() => {
      const count = app.entries().length;
      status.textContent = count + " " + nouns(app, count)
        + " saved in this browser; they are still here on your next visit.";
      if (!dump.hidden) dump.value = JSON.stringify(app.entries(), null, 2);
    });
  }

  const api = { createEntry, searchEntries, toggleDone, removeEntry, visibleEntries };
  M.entries = api;
  M.features["add-entry"] = { mount: mountAdd };
  M.features["search-entries"] = { mount: mountSearch };
  M.features["complete-entries"] = { mount: mountComplete };
  M.features["keep-entries"] = { mount: mountKeep };
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
