/* The app's core: storage, the local user, change notifications, small DOM helpers.
   Classic scripts (index.html opens from disk, no build step). Every file registers on the
   shared MYYC namespace; under node the same file is a CommonJS module, so the pure functions
   can be tested. Data is only ever shown through textContent and value. */
(function (root) {
  "use strict";

  const DAYS = Object.freeze(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
  const DAY_NAMES = Object.freeze({
    Mon: "Monday", Tue: "Tuesday", Wed: "Wednesday", Thu: "Thursday",
    Fri: "Friday", Sat: "Saturday", Sun: "Sunday",
  });

  /** "YYYY-MM-DD" of a date, in local time. */
  function isoDate(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  }

  /** The Monday that starts the week of `date`, as "YYYY-MM-DD". */
  function weekStart(date) {
    const day = new Date(date.getFullYear(), date.getMonth(), date.getDate());
    day.setDate(day.getDate() - ((day.getDay() + 6) % 7));
    return isoDate(day);
  }

  /** Cents from text such as "12.50", "-3" or "$1,200"; null when it is not an amount. */
  function parseCents(text) {
    const clean = String(text === undefined || text === null ? "" : text).replace(/[\s,$€£]/g, "");
    const match = /^(-?)(\d{1,12})(?:\.(\d{1,2}))?$/.exec(clean);
    if (!match) return null;
    const cents = Number(match[2]) * 100 + Number(((match[3] || "") + "00").slice(0, 2));
    return match[1] === "-" ? -cents : cents;
  }

  /** "12.50" from 1250 cents. */
  function formatCents(cents) {
    const abs = Math.abs(cents);
    const text = Math.floor(abs / 100) + "." + String(abs % 100).padStart(2, "0");
    return cents < 0 ? "-" + text : text;
  }

  function newId() {
    if (root.crypto && typeof root.crypto.randomUUID === "function") {
      return root.crypto.randomUUID();
    }
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  /** A Storage look-alike in memory: when localStorage is unavailable, and in tests. */
  function memoryStorage() {
    const data = new Map();
    return {
      getItem: (key) => (data.has(key) ? data.get(key) : null),
      setItem: (key, value) => { data.set(key, String(value)); },
      removeItem: (key) => { data.delete(key); },
    };
  }

  /** Switch to the local user called `name`, created on first use. */
  function switchUser(users, name, id) {
    const clean = String(name || "").trim().slice(0, 60);
    if (!clean) return { users, user: null };
    const found = users.find((u) => u.name.toLowerCase() === clean.toLowerCase());
    if (found) return { users, user: found };
    const user = { id, name: clean };
    return { users: users.concat([user]), user };
  }

  /** The settings index.html carries in its JSON block. */
  function readConfig(doc) {
    return JSON.parse(doc.getElementById("app-config").textContent);
  }

  /** A new element; props are DOM properties (text goes through textContent, never HTML). */
  function h(doc, tag, props, ...children) {
    const node = doc.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) node[name] = value;
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  /** The element marked data-part="<name>" inside `scope`. */
  function part(scope, name) {
    return scope.querySelector('[data-part="' + name + '"]');
  }

  function button(doc, label, onClick) {
    const node = h(doc, "button", { type: "button", textContent: label });
    node.addEventListener("click", onClick);
    return node;
  }

  /** Show `text` in a message element, or hide it when text is empty. */
  function say(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  /** The app every feature mounts on: namespaced storage, hooks, change notifications. */
  function createApp(options) {
    const config = options.config;
    const storage = options.storage;
    const prefix = "myyc:" + config.slug + ":";
    const listeners = [];
    const app = {
      config,
      doc: options.doc,
      now: options.clock || (() => new Date()),
      newId: options.newId || newId,
      hooks: {
        fields: {}, // add-form field name -> parse(text)
        badges: [], // entry -> text (or {text, className}) shown with it
        filters: [], // entries -> entries
        order: [], // entries -> entries
        entryActions: [], // entry -> {label, run} | null
        listingActions: [], // listing -> element | null
        limits: [], // entries -> reason an entry cannot be added | null
      },
      load(name, fallback) {
        try {
          const raw = storage.getItem(prefix + name);
          return raw === null ? fallback : JSON.parse(raw);
        } catch (err) {
          return fallback;
        }
      },
      save(name, value) {
        storage.setItem(prefix + name, JSON.stringify(value));
        app.changed();
      },
      onChange(listener) { listeners.push(listener); },
      changed() { for (const listener of listeners) listener(); },
      entries() { return app.load("entries", []); },
      setEntries(list) { app.save("entries", list); },
      users() { return app.load("users", []); },
      user() {
        const users = app.users();
        const current = users.find((u) => u.id === app.load("user", null));
        if (current) return current;
        const me = users[0] || { id: app.newId(), name: "You" };
        // Written without save(): user() runs while rendering, and save() re-renders.
        if (!users.length) storage.setItem(prefix + "users", JSON.stringify([me]));
        storage.setItem(prefix + "user", JSON.stringify(me.id));
        return me;
      },
      switchUser(name) {
        const result = switchUser(app.users(), name, app.newId());
        if (!result.user) return null;
        storage.setItem(prefix + "users", JSON.stringify(result.users));
        app.save("user", result.user.id);
        return result.user;
      },
    };
    return app;
  }

  const M = root.MYYC || (root.MYYC = { features: {} });
  Object.assign(M, {
    DAYS, DAY_NAMES, isoDate, weekStart, parseCents, formatCents, newId, memoryStorage,
    switchUser, readConfig, h, part, button, say, createApp,
  });
  if (typeof module === "object" && module.exports) module.exports = M;
})(typeof window === "undefined" ? globalThis : window);
