/* Start the app: mount every section marked data-feature with its feature's code. */
(function (root) {
  "use strict";
  const M = root.MYYC;

  function openStorage() {
    try {
      const storage = root.localStorage;
      storage.getItem("myyc");
      return storage;
    } catch (err) {
      return M.memoryStorage();
    }
  }

  /** Mount the features of `doc` and render once; returns the app. */
  function boot(doc, storage, options) {
    const config = M.readConfig(doc);
    const app = M.createApp(Object.assign({ config, storage, doc }, options || {}));
    const planned = new Map(config.features.map((feature) => [feature.key, feature]));
    for (const section of Array.from(doc.querySelectorAll("[data-feature]"))) {
      const feature = planned.get(section.getAttribute("data-feature"));
      if (!feature) continue;
      const code = feature.module === "notes" ? M.generic : M.features[feature.key];
      if (code) code.mount(section, app, feature);
    }
    app.changed();
    return app;
  }

  M.boot = boot;
  if (typeof module === "object" && module.exports) {
    module.exports = { boot };
  } else if (root.document) {
    boot(root.document, openStorage());
  }
})(typeof window === "undefined" ? globalThis : window);
