/* Bids: bid on someone else's open listing; each listing shows its highest bid. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** The highest bid on `listingId`, or null. */
  function highestBid(bids, listingId) {
    let best = null;
    for (const bid of bids) {
      if (bid.listing_id === listingId && (!best || bid.amount_cents > best.amount_cents)) {
        best = bid;
      }
    }
    return best;
  }

  /** {ok: true, bids} with the new bid, or {ok: false, error}. */
  function placeBid(bids, listing, user, amountCents, now, id) {
    if (!listing || listing.status !== "open") return { ok: false, error: "This listing is closed." };
    if (listing.owner_id === user.id) return { ok: false, error: "You cannot bid on your own listing." };
    if (amountCents === null || amountCents <= 0) return { ok: false, error: "Enter an amount, e.g. 20.00." };
    const top = highestBid(bids, listing.id);
    if (top && amountCents <= top.amount_cents) {
      return { ok: false, error: "Bid more than " + M.formatCents(top.amount_cents) + "." };
    }
    const bid = { id, listing_id: listing.id, user_id: user.id, user_name: user.name,
      amount_cents: amountCents, created_at: now.toISOString() };
    return { ok: true, bids: bids.concat([bid]) };
  }

  /** The user's bids, newest first, each with its listing and whether it leads. */
  function myBids(bids, listings, userId) {
    return bids.filter((bid) => bid.user_id === userId).reverse().map((bid) => ({
      bid,
      listing: listings.find((listing) => listing.id === bid.listing_id) || null,
      leading: highestBid(bids, bid.listing_id).id === bid.id,
    }));
  }

  function mount(section, app) {
    const message = M.part(section, "message");
    const mine = M.part(section, "mine");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    app.hooks.listingActions.push((listing) => {
      const bids = app.load("bids", []);
      const top = highestBid(bids, listing.id);
      const box = M.h(doc, "span", { className: "bid" }, M.h(doc, "span", {
        className: "highest",
        textContent: top ? "Highest bid " + M.formatCents(top.amount_cents) + " by " + top.user_name
          : "No bids yet" }));
      if (listing.status !== "open" || listing.owner_id === app.user().id) return box;
      const amount = M.h(doc, "input", { inputMode: "decimal", placeholder: "Your bid",
        className: "bid-amount" });
      amount.setAttribute("aria-label", "Bid on " + listing.title);
      box.append(amount, M.button(doc, "Bid", () => {
        const result = placeBid(app.load("bids", []), listing, app.user(),
          M.parseCents(amount.value), app.now(), app.newId());
        M.say(message, result.ok ? "" : result.error);
        if (result.ok) app.save("bids", result.bids);
      }));
      return box;
    });
    app.onChange(() => {
      const rows = myBids(app.load("bids", []), app.load("listings", []), app.user().id);
      mine.replaceChildren(...rows.map((row) => M.h(doc, "li", {},
        M.h(doc, "span", { textContent: row.listing ? row.listing.title : "(removed listing)" }),
        M.h(doc, "span", { className: "amount", textContent: M.formatCents(row.bid.amount_cents) }),
        M.h(doc, "span", { className: row.leading ? "badge leading" : "badge",
          textContent: row.leading ? "highest" : "outbid" }))));
      empty.hidden = rows.length > 0;
    });
  }

  const api = { highestBid, placeBid, myBids, mount };
  M.features.bids = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
