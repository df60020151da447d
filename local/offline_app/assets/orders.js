/* Orders: buy an open listing at its price (it becomes sold); "my orders" lists purchases. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** {ok: true, orders, listings} after `user` buys `listingId`, or {ok: false, error}. */
  function buy(orders, listings, listingId, user, now, id) {
    const listing = listings.find((l) => l.id === listingId);
    if (!listing) return { ok: false, error: "That listing is gone." };
    if (listing.status !== "open") return { ok: false, error: "Already sold." };
    if (listing.owner_id === user.id) return { ok: false, error: "That is your own listing." };
    const order = { id, listing_id: listing.id, user_id: user.id, seller_id: listing.owner_id,
      title: listing.title, amount_cents: listing.price_cents, created_at: now.toISOString() };
    return {
      ok: true,
      orders: orders.concat([order]),
      listings: listings.map((l) => l.id === listing.id
        ? Object.assign({}, l, { status: "sold", buyer_id: user.id }) : l),
    };
  }

  function myOrders(orders, userId) {
    return orders.filter((order) => order.user_id === userId);
  }

  function mount(section, app) {
    const message = M.part(section, "message");
    const mine = M.part(section, "mine");
    const total = M.part(section, "total");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    app.hooks.listingActions.push((listing) => {
      if (listing.status !== "open" || listing.owner_id === app.user().id) return null;
      return M.button(doc, "Buy for " + M.formatCents(listing.price_cents), () => {
        const result = buy(app.load("orders", []), app.load("listings", []), listing.id,
          app.user(), app.now(), app.newId());
        M.say(message, result.ok ? "" : result.error);
        if (!result.ok) return;
        app.save("listings", result.listings);
        app.save("orders", result.orders);
      });
    });
    app.onChange(() => {
      const rows = myOrders(app.load("orders", []), app.user().id);
      mine.replaceChildren(...rows.map((order) => M.h(doc, "li", {},
        M.h(doc, "span", { textContent: order.title }),
        M.h(doc, "span", { className: "amount", textContent: M.formatCents(order.amount_cents) }))));
      total.textContent = M.formatCents(rows.reduce((sum, order) => sum + order.amount_cents, 0));
      empty.hidden = rows.length > 0;
    });
  }

  const api = { buy, myOrders, mount };
  M.features.orders = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
