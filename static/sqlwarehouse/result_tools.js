// The result panel's tools on the one-page SQL editor: copy the rows shown as TSV (exact values
// from data-v, not the grouped digits), copy a share link, and the dialog that asks before SQL
// that writes runs (workbench.js calls window.CRResultTools.confirmWrites with the server's
// statement kinds). No state of its own: it reads the #results panel in the page.
(function () {
  "use strict";

  // --- asking before SQL that writes (the server names the statements: sqlcheck's kinds)

  function confirmWrites(kinds) {
    return new Promise((resolve) => {
      const dialog = document.createElement("dialog");
      dialog.className = "confirm-write";
      dialog.id = "confirm-write";
      const title = document.createElement("h2");
      title.textContent = "Run SQL that changes data?";
      const text = document.createElement("p");
      text.append("This SQL will run ");
      kinds.forEach((kind, i) => {
        const code = document.createElement("code");
        code.textContent = kind;
        text.append(i ? ", " : "", code);
      });
      text.append(". It cannot be undone from here.");
      const buttons = document.createElement("form");
      buttons.method = "dialog";
      buttons.className = "row";
      const cancel = document.createElement("button");
      cancel.value = "cancel";
      cancel.className = "secondary";
      cancel.textContent = "Cancel";
      const go = document.createElement("button");
      go.value = "run";
      go.className = "danger";
      go.id = "confirm-run";
      go.textContent = "Run it";
      buttons.append(cancel, go);
      dialog.append(title, text, buttons);
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "run");
        dialog.remove();
        if (window.CREditor) window.CREditor.view.focus();
      });
      document.body.append(dialog);
      dialog.showModal();
      cancel.focus();
    });
  }

  // --- copy as TSV (the rows shown, exact values) and share links

  function resultTsv() {
    const table = document.querySelector("#results #result");
    if (!table) return "";
    const clean = (text) => text.replace(/[\t\r\n]+/g, " ");
    const lines = [];
    for (const row of table.rows) {
      const cells = [...row.cells].slice(1); // the row number column
      lines.push(cells.map((cell) => {
        if (cell.tagName === "TH") {
          const link = cell.querySelector("a");
          return clean(link ? link.textContent : cell.textContent).trim();
        }
        return clean(cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent);
      }).join("\t"));
    }
    return lines.join("\n") + "\n";
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("#copy-tsv, #share-link");
    if (!button) return;
    const note = document.getElementById("result-note");
    const text = button.id === "copy-tsv" ? resultTsv() : button.dataset.url;
    copy(text).then(() => {
      if (note) note.textContent = button.id === "copy-tsv"
        ? "Copied " + (document.querySelectorAll("#results #result tr").length - 1) + " rows as TSV."
        : "Link copied: colleagues who may see this result open it in their editor.";
    }).catch(() => {
      if (note) note.textContent = button.id === "copy-tsv" ? "Copying failed." : text;
    });
  });

  window.CRResultTools = { confirmWrites: confirmWrites, resultTsv: resultTsv };
})();
