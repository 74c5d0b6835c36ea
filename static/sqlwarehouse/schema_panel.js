// The schema panel beside the one-page SQL editor: a click on a table or column name inserts it
// at the cursor, "preview" runs SELECT * FROM the table LIMIT 100 in the current tab, and the
// panel collapses (remembered). The tree itself is the schema browser's lazy htmx fragments,
// loaded by workbench.js. Loaded with `defer` after editor.js and workbench.js.
(function () {
  "use strict";

  const E = window.CREditor;
  const root = document.getElementById("workbench");
  const side = document.getElementById("schema-side");
  if (!E || !root || !side || !window.CRWorkbench) return;

  const PANEL_KEY = "controlroom:schema-panel";

  function quoted(name) {
    return /^[a-z_][a-z_\d]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
  }

  function tableName(node) {
    return [node.dataset.catalog, node.dataset.schema, node.dataset.table].filter(Boolean).map(quoted).join(".");
  }

  side.addEventListener("click", (event) => {
    const preview = event.target.closest(".preview-table");
    if (preview) {
      E.setText("SELECT * FROM " + tableName(preview) + " LIMIT 100"); // the tab follows the text
      window.CRWorkbench.run(false);
      return;
    }
    const name = event.target.closest(".insert-name");
    if (!name) return;
    E.insert(name.dataset.column !== undefined ? quoted(name.dataset.column) : tableName(name));
  });

  const toggle = document.getElementById("toggle-schema");

  function setPanel(open) {
    root.classList.toggle("schema-hidden", !open);
    toggle.setAttribute("aria-expanded", String(open));
  }

  let panelOpen = true;
  try {
    panelOpen = window.localStorage.getItem(PANEL_KEY) !== "closed";
  } catch (err) {
    // Open by default.
  }
  setPanel(panelOpen);
  toggle.addEventListener("click", () => {
    panelOpen = !panelOpen;
    setPanel(panelOpen);
    try {
      window.localStorage.setItem(PANEL_KEY, panelOpen ? "open" : "closed");
    } catch (err) {
      // Not remembered.
    }
  });
})();
