// Result chart: a Chart.js chart of a query result, with controls to pick its type and columns,
// and an optional "Save chart with query" button. Loaded with `defer` after
// static/vendor/chart.umd.min.js (window.Chart).
//
// Contract with the page:
//   <div id="chart" data-rows-url="URL" data-spec='{"type":"bar","x":"col","y":["col2"]}'
//        data-save-url="URL or empty"></div>
// rows-url answers {"columns": [{"name", "type"}...], "rows": [[...]...]}; big integers and
// decimals may come as strings and are converted to numbers for plotting only.
(function () {
  "use strict";

  // Also called by workbench.js for a result loaded into the editor's page.
  function mount(root) {
    if (!root || !window.Chart || root.dataset.mounted) return;
    root.dataset.mounted = "1";

    const TYPES = ["bar", "line", "scatter"];
    const NUMERIC_TYPE = /int|decimal|double|real|float|numeric/i; // "int" covers bigint, hugeint…

    function el(tag, attrs, children) {
      const node = document.createElement(tag);
      Object.assign(node, attrs || {});
      for (const child of children || []) node.append(child);
      return node;
    }

    function toNumber(value) {
      if (value === null || value === undefined || value === "") return null;
      const n = typeof value === "number" ? value : Number(value);
      return Number.isFinite(n) ? n : null;
    }

    function parseSpec(text) {
      try {
        const spec = JSON.parse(text || "null");
        return spec && typeof spec === "object" ? spec : null;
      } catch (err) {
        return null;
      }
    }

    function csrfToken() {
      const cookie = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("csrftoken="));
      if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
      const input = document.querySelector("input[name=csrfmiddlewaretoken]");
      return input ? input.value : "";
    }

    function initialState(columns, spec) {
      const names = columns.map((c) => c.name);
      const numeric = columns.filter((c) => NUMERIC_TYPE.test(c.type || "")).map((c) => c.name);
      const x = spec && names.includes(spec.x) ? spec.x : names[0];
      const specY = spec && Array.isArray(spec.y) ? spec.y.filter((name) => names.includes(name)) : [];
      return {
        type: spec && TYPES.includes(spec.type) ? spec.type : "bar",
        x: x,
        y: specY.length ? specY : numeric.filter((name) => name !== x),
      };
    }

    function chartConfig(state, columns, rows) {
      const index = (name) => columns.findIndex((c) => c.name === name);
      const xi = index(state.x);
      let data;
      if (state.type === "scatter") {
        data = {
          datasets: state.y.map((name) => {
            const yi = index(name);
            return { label: name, data: rows.map((row) => ({ x: toNumber(row[xi]), y: toNumber(row[yi]) })) };
          }),
        };
      } else {
        data = {
          labels: rows.map((row) => (row[xi] === null ? "NULL" : String(row[xi]))),
          datasets: state.y.map((name) => {
            const yi = index(name);
            return { label: name, data: rows.map((row) => toNumber(row[yi])) };
          }),
        };
      }
      return {
        type: state.type,
        data: data,
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: { x: { type: state.type === "scatter" ? "linear" : "category", title: { display: true, text: state.x } } },
        },
      };
    }

    function render(columns, rows) {
      const state = initialState(columns, parseSpec(root.dataset.spec));
      const saveUrl = root.dataset.saveUrl || "";

      const typeSelect = el("select", { name: "chart-type" },
        TYPES.map((t) => el("option", { value: t, textContent: t, selected: t === state.type })));
      const xSelect = el("select", { name: "chart-x" },
        columns.map((c) => el("option", { value: c.name, textContent: c.name, selected: c.name === state.x })));
      const yBoxes = columns.map((c) => el("label", {}, [
        el("input", { type: "checkbox", name: "chart-y", value: c.name, checked: state.y.includes(c.name) }),
        " " + c.name,
      ]));
      const canvas = el("canvas", { role: "img" });
      canvas.setAttribute("aria-label", "Chart of the query result");
      const status = el("span", { className: "chart-status", role: "status" });
      const controls = el("div", { className: "row chart-controls" }, [
        el("label", {}, ["Chart ", typeSelect]),
        el("label", {}, ["X ", xSelect]),
        el("fieldset", { className: "row" }, [el("legend", { textContent: "Y" }), ...yBoxes]),
      ]);
      if (saveUrl) {
        const save = el("button", { type: "button", textContent: "Save chart with query" });
        save.addEventListener("click", () => saveSpec(saveUrl, state, save, status));
        controls.append(save, status);
      }
      const frame = el("div", { className: "chart-frame" }, [canvas]);
      frame.style.position = "relative";
      frame.style.height = "360px";
      root.replaceChildren(controls, frame);

      let chart = null;
      function draw() {
        // Recreated rather than updated: switching between category and linear axes is simplest so.
        if (chart) chart.destroy();
        chart = new window.Chart(canvas, chartConfig(state, columns, rows));
      }
      controls.addEventListener("change", () => {
        state.type = typeSelect.value;
        state.x = xSelect.value;
        state.y = yBoxes.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value);
        status.textContent = "";
        draw();
      });
      draw();
    }

    function saveSpec(url, state, button, status) {
      button.disabled = true;
      status.textContent = "Saving…";
      const spec = { type: state.type, x: state.x, y: state.y.slice() };
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
        body: new URLSearchParams({ spec: JSON.stringify(spec) }),
      })
        .then((response) => response.json().catch(() => ({})).then((body) => {
          if (response.ok) {
            status.textContent = "Chart saved.";
          } else {
            const message = body && body.error && body.error.message;
            status.textContent = message || "Saving the chart failed (HTTP " + response.status + ").";
          }
        }))
        .catch(() => {
          status.textContent = "Saving the chart failed: the server could not be reached.";
        })
        .finally(() => {
          button.disabled = false;
        });
    }

    root.textContent = "Loading chart…";
    fetch(root.dataset.rowsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((result) => {
        if (!result || !Array.isArray(result.columns) || !result.columns.length) {
          root.textContent = "No columns to chart.";
          return;
        }
        const rows = Array.isArray(result.rows) ? result.rows : [];
        render(result.columns, rows);
        const total = Number(result.row_count) || rows.length;
        if (rows.length < total) {
          const note = el("p", { className: "muted chart-sample", role: "note" });
          note.textContent = "Plotting the first " + rows.length.toLocaleString("en-US") + " of " +
            total.toLocaleString("en-US") + " rows.";
          root.prepend(note);
        }
      })
      .catch((err) => {
        root.textContent = "The chart data could not be loaded.";
        console.warn("Result chart:", err);
      });
  }

  window.CRChart = { mount: mount };
  mount(document.getElementById("chart"));
})();
