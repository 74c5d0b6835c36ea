// The one-page SQL editor: query tabs kept per workspace in localStorage, runs that load their
// results into the page (htmx fragments of the execution view with embed=1), the schema panel
// (click to insert, preview), LIMIT and Format SQL. Loaded with `defer` after editor.js
// (window.CREditor), chart.js and result_tools.js (copy as TSV, share links, the confirmation
// before SQL that writes); schema_panel.js comes after it.
//
// Contract with templates/sqlwarehouse/editor.html: #workbench carries the URLs in data-*;
// #editor-form holds connection/environment/limit and the Run and Explain buttons; #results
// is replaced by each result fragment.
(function () {
  "use strict";

  const E = window.CREditor;
  const root = document.getElementById("workbench");
  const form = document.getElementById("editor-form");
  if (!E || !root || !form) return;

  const TABS_KEY = "controlroom:tabs:" + root.dataset.workspace;
  const MAX_TABS = 20;
  const SAVE_DELAY_MS = 300;
  const textarea = document.getElementById("sql");
  const tabBar = document.getElementById("query-tabs");
  const runNote = document.getElementById("run-note");
  const connection = form.elements.connection;
  const environment = form.elements.environment;
  const savedInput = form.elements.saved;

  // --- storage (a convenience: never an error when localStorage is unavailable or full)

  function readStore() {
    try {
      const store = JSON.parse(window.localStorage.getItem(TABS_KEY));
      if (store && Array.isArray(store.tabs) && store.tabs.length) return store;
    } catch (err) {
      // Unreadable: start again.
    }
    return null;
  }

  let store = readStore();
  let saveTimer = null;

  function persist() {
    window.clearTimeout(saveTimer);
    saveTimer = null;
    try {
      window.localStorage.setItem(TABS_KEY, JSON.stringify(store));
    } catch (err) {
      console.warn("SQL editor: could not store the tabs", err);
    }
  }

  function persistSoon() {
    window.clearTimeout(saveTimer);
    saveTimer = window.setTimeout(persist, SAVE_DELAY_MS);
  }

  function newTab(fields) {
    const number = store ? store.tabs.reduce((n, t) => Math.max(n, t.number || 0), 0) + 1 : 1;
    return Object.assign({ id: "t" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6), number: number,
      title: "Query " + number, sql: "", connection: connection ? connection.value : "",
      environment: environment ? environment.value : "dev", execution: null, saved: null }, fields);
  }

  function current() {
    return store.tabs.find((t) => t.id === store.active) || store.tabs[0];
  }

  // --- the page's own request decides the tab: a shared execution or saved query, SQL passed in
  // the URL (Open in editor), or else the tab the user left.

  const params = new URLSearchParams(window.location.search);
  const serverText = textarea.defaultValue;
  const serverExecution = root.dataset.execution || null;
  const serverSaved = savedInput ? savedInput.value : null;
  const fromServer = { sql: serverText, connection: connection ? connection.value : "",
    environment: environment ? environment.value : "dev" };

  if (!store) {
    let text = serverText;
    try { // the single draft of the editor before tabs
      const legacy = JSON.parse(window.localStorage.getItem(root.dataset.legacyDraft || ""));
      if (legacy && typeof legacy.text === "string" && !serverSaved && !serverExecution) text = legacy.text;
    } catch (err) {
      // No old draft.
    }
    store = { tabs: [], active: null };
    const tab = newTab(Object.assign({}, fromServer, { sql: text, execution: serverExecution, saved: serverSaved }));
    store.tabs.push(tab);
    store.active = tab.id;
  } else if (serverExecution) {
    const tab = store.tabs.find((t) => String(t.execution) === serverExecution) ||
      addTab(Object.assign({}, fromServer, { execution: serverExecution, saved: serverSaved }));
    store.active = tab.id;
  } else if (serverSaved) {
    // The tab it was saved from (a save reloads the page), else the tab that has it open, else a new one.
    let tab = store.tabs.find((t) => t.saved === "saving") || store.tabs.find((t) => String(t.saved) === serverSaved);
    if (tab && tab.saved === "saving") Object.assign(tab, { saved: serverSaved, sql: serverText });
    tab = tab || addTab(Object.assign({}, fromServer, { saved: serverSaved }));
    if (root.dataset.savedTitle && /^Query \d+$/.test(tab.title)) tab.title = root.dataset.savedTitle;
    store.active = tab.id;
  } else if (params.has("sql") || params.has("table_version")) {
    store.active = addTab(fromServer).id;
  } else if (params.has("connection") && fromServer.connection) {
    // A link that names a connection (the schema page, a bookmark) chooses it for the tab left open.
    current().connection = fromServer.connection;
  }

  for (const tab of store.tabs) if (tab.saved === "saving") tab.saved = null; // the save did not happen

  function addTab(fields) {
    if (store.tabs.length >= MAX_TABS) store.tabs.shift();
    const tab = newTab(fields);
    store.tabs.push(tab);
    return tab;
  }

  // --- tabs

  function renderTabs() {
    const items = store.tabs.map((tab) => {
      const label = document.createElement("button");
      label.type = "button";
      label.className = "tab-label";
      label.textContent = tab.title;
      label.title = "Double-click to rename";
      label.addEventListener("click", () => switchTo(tab.id));
      label.addEventListener("dblclick", () => rename(tab, item));
      const close = document.createElement("button");
      close.type = "button";
      close.className = "tab-close";
      close.textContent = "×";
      close.setAttribute("aria-label", "Close " + tab.title);
      close.addEventListener("click", () => closeTab(tab.id));
      const item = document.createElement("span");
      item.className = "query-tab";
      item.setAttribute("role", "tab");
      item.setAttribute("aria-selected", String(tab.id === store.active));
      item.dataset.tab = tab.id;
      item.append(label, close);
      return item;
    });
    const add = document.createElement("button");
    add.type = "button";
    add.className = "tab-add";
    add.id = "add-tab";
    add.textContent = "+";
    add.title = "New query tab";
    add.addEventListener("click", () => {
      const tab = addTab({});
      switchTo(tab.id, { keepCurrent: true });
      E.view.focus();
    });
    tabBar.replaceChildren(...items, add);
  }

  function rename(tab, item) {
    const input = document.createElement("input");
    input.type = "text";
    input.value = tab.title;
    input.maxLength = 60;
    input.setAttribute("aria-label", "Tab name");
    let done = false;
    const finish = (keep) => {
      if (done) return;
      done = true;
      if (keep && input.value.trim()) tab.title = input.value.trim();
      persist();
      renderTabs();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    item.replaceChildren(input);
    input.focus();
    input.select();
  }

  function closeTab(id) {
    const index = store.tabs.findIndex((t) => t.id === id);
    if (index < 0) return;
    store.tabs.splice(index, 1);
    if (!store.tabs.length) store.tabs.push(newTab({}));
    if (store.active === id) {
      store.active = store.tabs[Math.min(index, store.tabs.length - 1)].id;
      show(current());
    }
    persist();
    renderTabs();
  }

  function switchTo(id, options) {
    if (id === store.active && !(options && options.keepCurrent)) return;
    current().sql = E.text();
    store.active = id;
    show(current());
    persist();
    renderTabs();
  }

  // Puts a tab's SQL, connection and last result on the page.
  function show(tab) {
    showing = true;
    E.setText(tab.sql || "");
    showing = false;
    if (connection && tab.connection && connection.value !== String(tab.connection) &&
        [...connection.options].some((o) => o.value === String(tab.connection))) {
      connection.value = String(tab.connection);
      connectionChanged();
    }
    if (environment && tab.environment) environment.value = tab.environment;
    if (savedInput) savedInput.disabled = String(tab.saved || "") !== savedInput.value;
    if (tab.execution) loadResults(tab.execution);
    else clearResults();
    setUrl(tab.execution);
  }

  let showing = false;
  E.onChange((text) => {
    if (showing) return;
    current().sql = text;
    persistSoon();
  });
  window.addEventListener("beforeunload", () => {
    current().sql = E.text();
    persist();
  });

  // --- results

  function resultsElement() {
    return document.getElementById("results");
  }

  // A replaced result's chart would stay in Chart.js's registry: destroy it with its panel.
  function releaseCharts(panel) {
    if (!window.Chart || !panel) return;
    for (const chart of Object.values(window.Chart.instances)) if (panel.contains(chart.canvas)) chart.destroy();
  }

  function setUrl(execution) {
    const url = new URL(window.location.href);
    for (const name of ["execution", "sql", "table_version", "connection"]) url.searchParams.delete(name);
    if (execution) url.searchParams.set("execution", execution);
    window.history.replaceState(window.history.state, "", url.pathname + url.search);
  }

  function clearResults() {
    releaseCharts(resultsElement());
    const fresh = document.createElement("div");
    fresh.id = "results";
    fresh.className = "results";
    resultsElement().replaceWith(fresh);
  }

  function showMessage(text, kind) {
    const box = document.createElement("div");
    box.id = "results";
    box.className = "results";
    const list = document.createElement("ul");
    list.className = "messages";
    const item = document.createElement("li");
    item.className = kind || "error";
    item.id = kind === "info" ? "run-info" : "run-error";
    item.textContent = text;
    list.append(item);
    box.append(list);
    releaseCharts(resultsElement());
    resultsElement().replaceWith(box);
  }

  function loadResults(id) {
    if (String(resultsElement().dataset.execution || "") === String(id)) return;
    const url = root.dataset.resultsUrl.replace(/\/0\/$/, "/" + encodeURIComponent(id) + "/") + "?embed=1";
    window.htmx.ajax("GET", url, { target: "#results", swap: "outerHTML" }).catch(() => clearResults());
  }

  // A results panel the run answered with. Its rows go into the page at once; htmx takes the panel
  // (its own requests, such as the stored result's, and the chart) in the next task, so the rows
  // are painted first: htmx's swap of a 25-row panel cost about 6 ms before any row could show.
  function showPanel(html) {
    releaseCharts(resultsElement());
    const holder = document.createElement("template");
    holder.innerHTML = html.trim();
    const panel = holder.content.firstElementChild;
    if (!panel || panel.id !== "results") {
      window.htmx.swap(resultsElement(), html, { swapStyle: "outerHTML", swapDelay: 0, settleDelay: 0 });
      return;
    }
    resultsElement().replaceWith(panel);
    setTimeout(() => {
      if (!panel.isConnected) return; // replaced meanwhile (another run)
      window.htmx.process(panel);
      const chart = panel.querySelector("#chart");
      if (chart && window.CRChart) window.CRChart.mount(chart);
    }, 0);
  }

  document.body.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "results") releaseCharts(event.detail.target);
  });
  document.body.addEventListener("htmx:afterSettle", () => {
    const chart = document.querySelector("#results #chart");
    if (chart && window.CRChart) window.CRChart.mount(chart);
  });
  document.body.addEventListener("htmx:responseError", (event) => {
    if (event.detail.target && event.detail.target.id === "results") {
      showMessage("That result is not available (it may have been removed, or is someone else's).", "info");
    }
  });

  function csrfToken() {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    }).then((response) => response.json().catch(() => ({ error: "The server answered HTTP " + response.status + "." })));
  }

  let running = false;

  function run(explain, confirmed) {
    if (running) return;
    const tab = current();
    tab.sql = E.text();
    const body = new FormData(form);
    for (const name of ["save", "run", "explain"]) body.delete(name);
    // A selection runs alone (as in SQL Lab and Databricks SQL); the tab keeps all its text.
    const selection = E.view.state.selection.main;
    const selected = selection.empty ? "" : E.view.state.sliceDoc(selection.from, selection.to);
    body.set("sql", selected.trim() ? selected : tab.sql);
    if (explain) body.set("explain", "1");
    if (confirmed) body.set("confirmed", "1");
    running = true;
    E.closeCompletion();
    // Said only when the answer is slow: a fast one paints its rows without this note flickering first.
    const slow = setTimeout(() => { runNote.textContent = "Running…"; }, 150);
    post(root.dataset.runUrl, body)
      .then((answer) => {
        running = false;
        clearTimeout(slow);
        runNote.textContent = "";
        if (answer.panel) { // an inline run's first rows: on screen before the rest, which waits a task
          showPanel(answer.panel);
          setTimeout(() => afterRun(answer, tab, explain), 0);
          return null;
        }
        return afterRun(answer, tab, explain);
      })
      .catch(() => {
        running = false;
        clearTimeout(slow);
        runNote.textContent = "";
        showMessage("The server could not be reached; the query was not run.");
      });
  }

  // What follows a run's answer: a confirmation to ask for, the parameter fields, an error, or
  // the execution this tab now shows (its panel, unless the answer carried it).
  function afterRun(answer, tab, explain) {
    if (answer.confirm) {
      return window.CRResultTools.confirmWrites(answer.confirm).then((yes) => {
        if (yes) run(explain, true);
        else runNote.textContent = "Not run.";
      });
    }
    if (Array.isArray(answer.parameters)) syncParams(answer.parameters);
    if (answer.error) {
      showMessage(answer.error);
      return null;
    }
    tab.execution = String(answer.execution);
    tab.connection = connection ? connection.value : tab.connection;
    tab.environment = environment ? environment.value : tab.environment;
    setUrl(tab.execution);
    if (!answer.panel) loadResults(tab.execution);
    setTimeout(persist, 0); // localStorage after the rows are painted
    return null;
  }

  form.addEventListener("submit", (event) => {
    const submitter = event.submitter;
    if (submitter && submitter.name === "save") { // the page reloads on the saved query: this tab holds it
      current().sql = E.text();
      current().saved = "saving";
      persist();
      return;
    }
    if (!submitter || (submitter.name !== "run" && submitter.name !== "explain")) return;
    event.preventDefault();
    run(submitter.name === "explain", false);
  });

  // --- parameter fields: one per :name the server found in the SQL last run (values kept per name)

  const paramBox = document.getElementById("param-values");

  function syncParams(names) {
    if (!paramBox) return;
    const values = {};
    for (const input of paramBox.querySelectorAll("input")) values[input.name.slice(6)] = input.value;
    paramBox.replaceChildren(...names.map((name) => {
      const input = document.createElement("input");
      input.type = "text";
      input.name = "param." + name;
      input.value = values[name] || "";
      const label = document.createElement("label");
      label.append(":" + name + " ", input);
      return label;
    }));
    paramBox.hidden = !names.length;
    const empty = names.find((name) => !values[name]);
    if (empty) paramBox.querySelector('input[name="param.' + CSS.escape(empty) + '"]').focus();
  }

  // --- connection: completion and schema panel follow it

  function connectionChanged() {
    if (!connection) return;
    const id = encodeURIComponent(connection.value);
    const env = environment ? environment.value : "dev";
    const completion = root.dataset.completionUrl.replace("/0/", "/" + id + "/") + "?environment=" + encodeURIComponent(env);
    loadTree(E.loadSchema(completion), root.dataset.treeUrl + "?connection=" + id + "&environment=" + encodeURIComponent(env));
  }

  // The tree loads once completion has read the schema: the first read of a connection's schema
  // then happens once, not twice at the same time.
  function loadTree(after, url) {
    after.then(() => {
      if (document.getElementById("schema-browser")) {
        window.htmx.ajax("GET", url, { target: "#schema-browser", swap: "outerHTML" });
      }
    });
  }

  if (connection) {
    connection.addEventListener("change", () => {
      current().connection = connection.value;
      persist();
      connectionChanged();
    });
  }
  if (environment) {
    environment.addEventListener("change", () => {
      current().environment = environment.value;
      persist();
      connectionChanged();
    });
  }

  // --- Format SQL

  document.getElementById("format-sql").addEventListener("click", () => {
    const body = new FormData();
    body.set("sql", E.text());
    body.set("connection", connection ? connection.value : "");
    runNote.textContent = "Formatting…";
    post(root.dataset.formatUrl, body).then((answer) => {
      runNote.textContent = answer.error || "";
      if (typeof answer.sql === "string" && answer.sql) E.setText(answer.sql);
    }).catch(() => {
      runNote.textContent = "The server could not be reached.";
    });
  });

  window.CRWorkbench = { tabs: () => store, run: (explain) => run(!!explain, false) };

  // --- start

  renderTabs();
  const tree = document.getElementById("schema-browser");
  if (tree && tree.dataset.src) loadTree(E.schemaLoaded, tree.dataset.src);
  const first = current();
  if (first.sql !== E.text() || serverExecution !== (first.execution ? String(first.execution) : null)) {
    show(first);
  } else {
    setUrl(first.execution);
  }
  persist();
})();
