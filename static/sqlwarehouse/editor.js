// SQL editor: CodeMirror 6 over the server-rendered <textarea id="sql">.
//
// The textarea stays in the form (hidden) and always holds the editor's text, so the normal
// form POST works unchanged, and the page works without JavaScript. Loaded with `defer`
// after static/vendor/codemirror.min.js (window.CRCodeMirror).
//
// Contract with the page:
//   <textarea id="sql" name="sql" data-draft-key="KEY" data-schema-url="URL"
//             data-dialect="trino|duckdb" data-csp-nonce="NONCE">SERVER TEXT</textarea>
//   <div id="draft-notice" hidden></div>
//   button[name=run] and button[name=save] inside the same form.
(function () {
  "use strict";

  const CM = window.CRCodeMirror;
  const textarea = document.getElementById("sql");
  if (!CM || !textarea || !textarea.form) return;

  const DRAFT_PREFIX = "controlroom:draft:";
  const DRAFT_DELAY_MS = 300;
  const form = textarea.form;
  // defaultValue is what the server rendered; value may already be a browser-restored edit.
  const serverText = textarea.defaultValue;
  const draftKey = textarea.dataset.draftKey ? DRAFT_PREFIX + textarea.dataset.draftKey : null;
  const dialect = textarea.dataset.dialect === "duckdb" ? CM.PostgreSQL : CM.StandardSQL;
  const language = new CM.Compartment();

  // --- drafts (localStorage can be unavailable or full: drafts are a convenience, never an error)

  function readDraft() {
    if (!draftKey) return null;
    try {
      const draft = JSON.parse(window.localStorage.getItem(draftKey));
      return draft && typeof draft.text === "string" ? draft : null;
    } catch (err) {
      return null;
    }
  }

  function writeDraft(text) {
    if (!draftKey) return;
    try {
      window.localStorage.setItem(draftKey, JSON.stringify({ text: text, savedAt: new Date().toISOString() }));
    } catch (err) {
      console.warn("SQL editor: could not store the draft", err);
    }
  }

  function removeDraft() {
    if (!draftKey) return;
    try {
      window.localStorage.removeItem(draftKey);
    } catch (err) {
      // Nothing stored that we could remove.
    }
  }

  let draftTimer = null;

  function scheduleDraft() {
    window.clearTimeout(draftTimer);
    draftTimer = window.setTimeout(flushDraft, DRAFT_DELAY_MS);
  }

  function cancelDraft() {
    window.clearTimeout(draftTimer);
    draftTimer = null;
  }

  function flushDraft() {
    if (draftTimer === null) return;
    cancelDraft();
    writeDraft(view.state.doc.toString());
  }

  // --- the editor

  function setText(text) {
    view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
  }

  function runQuery() {
    const run = form.querySelector("button[name=run]");
    if (run && !run.disabled) run.click();
    return true;
  }

  const listeners = []; // workbench.js: told of every change of the text
  const labelEl = textarea.labels && textarea.labels[0];
  const draft = readDraft();
  const restored = draft !== null && draft.text !== serverText;

  const view = new CM.EditorView({
    state: CM.EditorState.create({
      doc: restored ? draft.text : serverText,
      extensions: [
        CM.basicSetup,
        // CodeMirror writes its theme into a <style> element; the page's CSP admits it by this nonce.
        CM.EditorView.cspNonce.of(textarea.dataset.cspNonce || ""),
        language.of(CM.sql({ dialect: dialect, upperCaseKeywords: false })),
        // basicSetup binds Mod-Enter to "insert blank line"; running the query wins.
        CM.Prec.highest(CM.keymap.of([{ key: "Mod-Enter", run: runQuery }])),
        CM.EditorView.contentAttributes.of({ "aria-label": labelEl ? labelEl.textContent.trim() : "SQL" }),
        CM.EditorView.updateListener.of((update) => {
          if (!update.docChanged) return;
          textarea.value = update.state.doc.toString();
          scheduleDraft();
          for (const listener of listeners) listener(textarea.value);
        }),
        CM.EditorView.theme({
          "&": { border: "1px solid #cbd5e1", borderRadius: ".25rem", background: "#fff", fontSize: "13px" },
          "&.cm-focused": { outline: "2px solid #93c5fd" },
          ".cm-scroller": {
            fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace",
            minHeight: (textarea.rows || 12) * 1.4 + "em",
            maxHeight: "70vh",
          },
        }),
      ],
    }),
  });
  textarea.value = view.state.doc.toString();
  textarea.style.display = "none";
  textarea.insertAdjacentElement("afterend", view.dom);
  if (textarea.autofocus) view.focus();

  // --- the "restored draft" notice

  const notice = document.getElementById("draft-notice");

  function hideNotice() {
    if (!notice) return;
    notice.hidden = true;
    notice.replaceChildren();
  }

  if (restored && notice) {
    const when = new Date(draft.savedAt);
    const text = document.createElement("span");
    text.textContent = "Restored unsaved text from " +
      (isNaN(when.getTime()) ? "an earlier visit" : when.toLocaleString()) + ". ";
    const discard = document.createElement("button");
    discard.type = "button";
    discard.className = "secondary";
    discard.textContent = "Discard draft";
    discard.addEventListener("click", () => {
      setText(serverText);
      cancelDraft(); // setText scheduled a write of the server text; nothing is unsaved now.
      removeDraft();
      hideNotice();
      view.focus();
    });
    notice.replaceChildren(text, discard);
    notice.hidden = false;
  }

  // --- submitting and leaving

  form.addEventListener("submit", (event) => {
    textarea.value = view.state.doc.toString();
    if (event.submitter && event.submitter.name === "save") {
      // Saved on the server from now on; a draft would only shadow the saved text.
      cancelDraft();
      removeDraft();
    } else {
      flushDraft();
    }
  });
  window.addEventListener("beforeunload", flushDraft);

  // --- schema completion, once the namespace has loaded
  //
  // lang-sql's own `schema` option builds every completion list up front, with a duplicate
  // check that is quadratic in the size of a level: a schema of 10,000 tables froze the page
  // for over a second. This source walks the plain namespace objects instead and builds (and
  // caches) a level's list only when that level is first completed. Its reading of the syntax
  // tree (dotted parents, aliases, quoted names) follows lang-sql's schema completion (MIT).

  const NAME_TYPES = { catalogOrSchema: "namespace", table: "type", column: "property" };
  const END_OF_FROM = new Set("where group having order union intersect except all distinct limit offset fetch for"
    .split(" "));
  const optionCache = new WeakMap();
  const MAX_FROM_TABLES = 20; // bounds the column list a bare name completes from

  function completionFor(label, type) {
    label = String(label);
    // Names that are not plain lower-case identifiers need quotes to mean themselves.
    return /^[a-z_][a-z_\d]*$/.test(label)
      ? { label: label, type: type }
      : { label: label, type: type, apply: '"' + label.replace(/"/g, '""') + '"' };
  }

  function optionsFor(level) {
    let options = optionCache.get(level);
    if (!options) {
      options = Array.isArray(level)
        ? level.map((column) => completionFor(column, NAME_TYPES.column))
        : Object.keys(level).map((name) =>
          completionFor(name, Array.isArray(level[name]) ? NAME_TYPES.table : NAME_TYPES.catalogOrSchema));
      optionCache.set(level, options);
    }
    return options;
  }

  function childOf(level, name) {
    if (!level || typeof level !== "object" || Array.isArray(level)) return null;
    if (Object.prototype.hasOwnProperty.call(level, name)) return level[name];
    // Unquoted identifiers are case-insensitive in Trino and DuckDB.
    const lower = name.toLowerCase();
    const key = Object.keys(level).find((k) => k.toLowerCase() === lower);
    return key === undefined ? null : level[key];
  }

  function idName(doc, node) {
    const text = doc.sliceString(node.from, node.to);
    const quoted = /^(["`[])(.*)(["`\]])$/.exec(text);
    return quoted ? quoted[2] : text;
  }

  function isName(node) {
    return !!node && (node.name === "Identifier" || node.name === "QuotedIdentifier");
  }

  function tokenBefore(node) {
    const cursor = node.cursor().moveTo(node.from, -1);
    while (/Comment/.test(cursor.name)) cursor.moveTo(cursor.from, -1);
    return cursor.node;
  }

  // The names before the dot that precedes the cursor: "tpch.tiny.na" -> ["tpch", "tiny"].
  function parentsOf(doc, node) {
    const path = [];
    while (node && node.name === ".") {
      const name = tokenBefore(node);
      if (!isName(name)) break;
      path.unshift(idName(doc, name));
      node = tokenBefore(name);
    }
    return path;
  }

  function pathOf(doc, node) {
    if (node.name !== "CompositeIdentifier") return [idName(doc, node)];
    const path = [];
    for (let part = node.firstChild; part; part = part.nextSibling) if (isName(part)) path.push(idName(doc, part));
    return path;
  }

  // Table aliases in the FROM clause of the statement around `at`: {n: ["tpch", "tiny", "nation"]}.
  function aliasesAround(doc, at) {
    let statement = at;
    while (statement && statement.name !== "Statement") statement = statement.parent;
    if (!statement) return null;
    let aliases = null;
    for (let scan = statement.firstChild, sawFrom = false, previous = null; scan; scan = scan.nextSibling) {
      const keyword = scan.name === "Keyword" ? doc.sliceString(scan.from, scan.to).toLowerCase() : null;
      let alias = null;
      if (!sawFrom) sawFrom = keyword === "from";
      else if (keyword === "as" && previous && isName(scan.nextSibling)) alias = idName(doc, scan.nextSibling);
      else if (keyword && END_OF_FROM.has(keyword)) break;
      else if (previous && isName(scan)) alias = idName(doc, scan);
      if (alias) (aliases = aliases || Object.create(null))[alias] = pathOf(doc, previous);
      previous = /Identifier$/.test(scan.name) ? scan : null;
    }
    return aliases;
  }

  // The tables named in the FROM clause (and JOINs) of the statement around `at`, as paths:
  // [["orders"], ["tpch", "tiny", "nation"]]. Aliases and ON conditions come along too; they
  // resolve to no table and are skipped by the caller.
  function tablesAround(doc, at) {
    let statement = at;
    while (statement && statement.name !== "Statement") statement = statement.parent;
    if (!statement) return [];
    const tables = [];
    for (let scan = statement.firstChild, sawFrom = false; scan; scan = scan.nextSibling) {
      const keyword = scan.name === "Keyword" ? doc.sliceString(scan.from, scan.to).toLowerCase() : null;
      if (!sawFrom) sawFrom = keyword === "from";
      else if (keyword && END_OF_FROM.has(keyword)) break;
      else if (scan.name === "Identifier" || scan.name === "QuotedIdentifier" || scan.name === "CompositeIdentifier") {
        if (tables.length < MAX_FROM_TABLES) tables.push(pathOf(doc, scan));
      }
    }
    return tables;
  }

  // Columns of the FROM tables that complete a bare name (`reve` -> `revenue`), each once.
  function fromColumns(top, doc, at) {
    const seen = new Set();
    const options = [];
    for (const path of tablesAround(doc, at)) {
      let level = top;
      for (const name of path) level = level && childOf(level, name);
      if (!Array.isArray(level)) continue;
      for (const option of optionsFor(level)) {
        if (seen.has(option.label)) continue;
        seen.add(option.label);
        options.push(Object.assign({ boost: 1 }, option));
      }
    }
    return options;
  }

  function schemaCompletionSource(top) {
    return (context) => {
      const { state, pos } = context;
      const node = CM.syntaxTree(state).resolveInner(pos, -1);
      let from = pos;
      let quoted = false;
      let parents = [];
      if (node.name === "Identifier" || node.name === "QuotedIdentifier" || node.name === "Keyword") {
        from = node.from;
        quoted = node.name === "QuotedIdentifier";
        parents = parentsOf(state.doc, tokenBefore(node));
      } else if (node.name === ".") {
        parents = parentsOf(state.doc, node);
      } else if (!context.explicit) {
        return null;
      }
      const aliases = aliasesAround(state.doc, node);
      if (aliases && parents.length === 1 && aliases[parents[0]]) parents = aliases[parents[0]];
      let level = top;
      for (const name of parents) {
        level = childOf(level, name);
        if (!level) return null;
      }
      if (typeof level !== "object") return null;
      let options = optionsFor(level);
      if (level === top && aliases) {
        options = options.concat(Object.keys(aliases).map((name) => ({ label: name, type: "constant" })));
      }
      if (level === top) options = fromColumns(top, state.doc, node).concat(options);
      if (!quoted) return { from: from, options: options, validFor: /^\w*$/ };
      const closed = state.sliceDoc(pos, pos + 1) === '"';
      return {
        from: from,
        to: closed ? pos + 1 : undefined,
        options: options.map((o) => ({ label: '"' + o.label + '"', type: o.type })),
        validFor: /^"?\w*"?$/,
      };
    };
  }

  // The default catalog's schemas and the default schema's tables also complete at the top
  // level, as they resolve in Trino: `nation`, `tiny.nation` and `tpch.tiny.nation`. Catalogs
  // win a name clash.
  function topLevel(namespace, defaultCatalog, defaultSchema) {
    const catalog = childOf(namespace, defaultCatalog || "");
    const schema = childOf(catalog, defaultSchema || "");
    const plain = (level) => (level && typeof level === "object" && !Array.isArray(level) ? level : {});
    return Object.assign({}, plain(schema), plain(catalog), namespace);
  }

  let schemaRequest = 0;

  // Resolves once the schema has loaded or failed (never rejects).
  function loadSchema(url) {
    const request = ++schemaRequest;
    if (!url) {
      textarea.dataset.schemaState = "none";
      view.dispatch({ effects: language.reconfigure(CM.sql({ dialect: dialect, upperCaseKeywords: false })) });
      return Promise.resolve();
    }
    textarea.dataset.schemaState = "loading";
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((data) => {
        if (request !== schemaRequest) return; // another connection was chosen meanwhile
        const namespace = data && data.namespace;
        if (!namespace || typeof namespace !== "object" || Array.isArray(namespace)) {
          throw new Error("the answer has no namespace object");
        }
        const top = topLevel(namespace, data.default_catalog, data.default_schema);
        view.dispatch({
          effects: language.reconfigure([
            CM.sql({ dialect: dialect, upperCaseKeywords: false }),
            dialect.language.data.of({ autocomplete: schemaCompletionSource(top) }),
          ]),
        });
        textarea.dataset.schemaState = "ready";
      })
      .catch((err) => {
        if (request !== schemaRequest) return;
        textarea.dataset.schemaState = "failed";
        console.warn("SQL editor: no table completion, the schema did not load:", err);
      });
  }

  const schemaLoaded = textarea.dataset.schemaUrl ? loadSchema(textarea.dataset.schemaUrl) : Promise.resolve();

  // --- what static/sqlwarehouse/workbench.js (the one-page editor) uses

  window.CREditor = {
    view: view,
    text: () => view.state.doc.toString(),
    setText: (text) => {
      setText(text);
      cancelDraft();
    },
    insert: (text) => {
      const { from, to } = view.state.selection.main;
      view.dispatch({ changes: { from: from, to: to, insert: text }, selection: { anchor: from + text.length } });
      view.focus();
    },
    onChange: (listener) => listeners.push(listener),
    loadSchema: loadSchema,
    schemaLoaded: schemaLoaded,
    closeCompletion: () => CM.closeCompletion(view),
  };
})();
