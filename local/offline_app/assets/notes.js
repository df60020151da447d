/* A notes section for a planned feature this template library does not know: short notes,
   added and removed, kept per feature in the browser. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function addNote(notes, text, now, id) {
    const clean = String(text || "").trim().slice(0, 500);
    return clean ? notes.concat([{ id, text: clean, created_at: now.toISOString() }]) : notes;
  }

  function removeNote(notes, id) {
    return notes.filter((note) => note.id !== id);
  }

  function mount(section, app, feature) {
    const form = M.part(section, "form");
    const text = M.part(section, "text");
    const list = M.part(section, "list");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    const name = "notes:" + feature.store;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      app.save(name, addNote(app.load(name, []), text.value, app.now(), app.newId()));
      text.value = "";
    });
    app.onChange(() => {
      const notes = app.load(name, []);
      list.replaceChildren(...notes.map((note) => M.h(doc, "li", { className: "item" },
        M.h(doc, "span", { textContent: note.text }),
        M.button(doc, "Remove", () => app.save(name, removeNote(app.load(name, []), note.id))))));
      empty.hidden = notes.length > 0;
    });
  }

  const api = { addNote, removeNote, mount };
  M.generic = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
