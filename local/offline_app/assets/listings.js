/* Listings: create one (the local user owns it), list and search them. Bids and orders add
   their controls to each listing through app.hooks.listingActions. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  /** {ok: true, listing} or {ok: false, error}. */
  function createListing(fields, owner, now, id) {
    const title = String(fields.title || "").trim().slice(0, 200);
    if (!title) return { ok: false, error: "Give the listing a title." };
    const price = M.parseCents(fields.price);
    if (price === null || price <= 0) return { ok: false, error: "Enter a price, e.g. 25.00." };
    return { ok: true, listing: {
      id, owner_id: owner.id, owner_name: owner.name, title,
      description: String(fields.description || "").trim().slice(0, 2000),
      price_cents: price, status: "open", created_at: now.toISOString(),
    } };
  }

  function searchListings(listings, query) {
    const words = String(query || "").toLowerCase().split(/\s+/).filter(Boolean);
    return listings.filter((listing) => {
      const text = (listing.title + " " + listing.description).toLowerCase();
      return words.every((word) => text.includes(word));
    });
  }

  /** Only the owner removes a listing, and only while it is open. */
  function removeListing(listings, id, user) {
    return listings.filter((l) => !(l.id === id && l.owner_id === user.id && l.status === "open"));
  }

  function mount(section, app) {
    const form = M.part(section, "form");
    const title = M.part(section, "title");
    const price = M.part(section, "price");
    const description = M.part(section, "description");
    const message = M.part(section, "message");
    const search = M.part(section, "search");
    const list = M.part(section, "list");
    const empty = M.part(section, "empty");
    const doc = app.doc;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const fields = { title: title.value, price: price.value, description: description.value };
      const result = createListing(fields, app.user(), app.now(), app.newId());
      if (!result.ok) return M.say(message, result.error);
      M.say(message, "");
      title.value = "";
      price.value = "";
      description.value = "";
      app.save("listings", app.load("listings", []).concat([result.listing]));
    });
    const render = () => {
      const me = app.user();
      const shown = searchListings(app.load("listings", []), search.value);
      list.replaceChildren(...shown.map((listing) => {
        const mine = listing.owner_id === me.id;
        const item = M.h(doc, "li", { className: "item listing " + listing.status },
          M.h(doc, "div", { className: "item-text" },
            M.h(doc, "strong", { textContent: listing.title }),
            M.h(doc, "span", { className: "badge amount",
              textContent: M.formatCents(listing.price_cents) }),
            M.h(doc, "span", { className: "badge",
              textContent: mine ? "yours" : "by " + listing.owner_name }),
            listing.status === "sold" ? M.h(doc, "span", { className: "badge sold",
              textContent: "sold" }) : null,
            listing.description ? M.h(doc, "span", { className: "notes",
              textContent: listing.description }) : null));
        const actions = M.h(doc, "div", { className: "actions" });
        for (const action of app.hooks.listingActions) {
          const control = action(listing);
          if (control) actions.append(control);
        }
        if (mine && listing.status === "open") {
          actions.append(M.button(doc, "Remove", () =>
            app.save("listings", removeListing(app.load("listings", []), listing.id, me))));
        }
        item.append(actions);
        return item;
      }));
      empty.hidden = shown.length > 0;
    };
    search.addEventListener("input", render);
    app.onChange(render);
  }

  const api = { createListing, searchListings, removeListing, mount };
  M.features.listings = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window === "undefined" ? globalThis : window);
