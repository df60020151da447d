/* Running total: each entry may carry an amount; the ledger shows the total after each one. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function hasAmount(entry) {
    return typeof entry.amount_cents === "number" && Number.isFinite(entry.amount_cents);
  }

  /** [{id, title, amount_cents, total_cents}] in the order the entries were added. */
  function runningTotals(entries) {
    let total = 0;
    return entries.filter(hasAmount).map((entry) => {
      total += entry.amount_cents;
      return { id: entry.id, title: entry.title, amount_cents: entry.amount_cents,
        total_cents: total };
    });
  }

  function totalCents(entries) {
    return entries.filter(hasAmount).reduce((sum, entry) => sum + entry.amount_cents, 0);
  }

  function mount(section, app) {
    const total = M.part(section, "total");
    const ledger = M.part(section, "ledger");
    const doc = app.doc;
    app.hooks.fields.amount_cents = M.parseCents;
    app.hooks.badges.push((entry) => hasAmount(entry)
      ? { text: M.formatCents(entry.amount_cents), className: "amount" } : null);
    app.onChange(() => {
      const entries = app.entries();
      total.textContent = M.formatCents(totalCents(entries));
      ledger.replaceChildren(...runningTotals(entries).map((row) => M.h(doc, "li", {},
        M.h(doc, "span", { textContent: row.title }),
        M.h(doc, "span", { className: "amount", textContent: M.formatCents(row.amount_cents) }),
        M.h(doc, "span", { className: "total", textContent: M.formatCents(row.total_cents) }))));
    });
  }

  const api = { runningTotals, totalCents, mount };
  M.features["running-total"] = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
