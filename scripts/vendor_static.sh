#!/usr/bin/env bash
# Refresh vendored front-end assets from the npm registry (run by hand; the output is committed
# so the run command needs no network). Versions are pinned here.
#
# - htmx: the registry tarball's minified build, copied as is.
# - CodeMirror 6 (+ SQL language and autocomplete): bundled once with esbuild into one IIFE that
#   sets window.CRCodeMirror, so pages load it with a plain <script> tag and no build step.
# - Chart.js: its UMD build (sets window.Chart), copied as is.
#
# Everything is installed into a temporary directory outside the repository, so no
# node_modules or lockfile ever lands in the work tree.
set -euo pipefail
HTMX_VERSION=2.0.11
# `codemirror` is the CM6 meta package (basicSetup). Its npm "latest" tag points at 6.65.7,
# which is CodeMirror 5 re-published; 6.0.x is the CM6 line we want.
CODEMIRROR_VERSION=6.0.2
CM_STATE_VERSION=6.7.6
CM_VIEW_VERSION=6.43.15
CM_LANGUAGE_VERSION=6.13.1
CM_COMMANDS_VERSION=6.11.1
CM_AUTOCOMPLETE_VERSION=6.20.4
CM_LANG_SQL_VERSION=6.10.0
ESBUILD_VERSION=0.28.2
CHARTJS_VERSION=4.6.1

cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "htmx.org@${HTMX_VERSION}" >/dev/null && tar xzf htmx.org-*.tgz)
cp "$work/package/dist/htmx.min.js" static/vendor/htmx.min.js

build="$work/build"
mkdir -p "$build"
cat >"$build/package.json" <<'JSON'
{"name": "controlroom-vendor-build", "private": true}
JSON
# The @codemirror/* packages are pinned explicitly (not only through `codemirror`'s ^6 ranges)
# so that exactly one copy of each ends up in the bundle: two copies of @codemirror/state
# break CodeMirror at run time.
(cd "$build" && npm install --no-audit --no-fund --silent --save-exact \
    "codemirror@${CODEMIRROR_VERSION}" \
    "@codemirror/state@${CM_STATE_VERSION}" \
    "@codemirror/view@${CM_VIEW_VERSION}" \
    "@codemirror/language@${CM_LANGUAGE_VERSION}" \
    "@codemirror/commands@${CM_COMMANDS_VERSION}" \
    "@codemirror/autocomplete@${CM_AUTOCOMPLETE_VERSION}" \
    "@codemirror/lang-sql@${CM_LANG_SQL_VERSION}" \
    "esbuild@${ESBUILD_VERSION}" \
    "chart.js@${CHARTJS_VERSION}")

cat >"$build/entry.js" <<'JS'
// The subset of CodeMirror 6 that static/sqlwarehouse/editor.js uses, as one global.
export { EditorView, keymap } from "@codemirror/view";
export { EditorState, Compartment, Prec } from "@codemirror/state";
export { syntaxTree } from "@codemirror/language";
export { basicSetup } from "codemirror";
export { autocompletion, startCompletion, closeCompletion, acceptCompletion, completionStatus, currentCompletions }
  from "@codemirror/autocomplete";
export { sql, StandardSQL, PostgreSQL, SQLDialect } from "@codemirror/lang-sql";
JS
"$build/node_modules/.bin/esbuild" "$build/entry.js" --bundle --minify --format=iife \
    --global-name=CRCodeMirror --target=es2020 --legal-comments=eof --log-level=warning \
    --metafile="$build/meta.json" --outfile="$build/codemirror.min.js"
# Every npm package esbuild put into the bundle, with its version, licence and copyright line:
# printed below and kept as the bundle's leading comment, since the packages' own licence files
# are not part of the minified output.
notice=$(cd "$build" && node -e '
  const fs = require("fs"), path = require("path");
  const names = new Set();
  for (const input of Object.keys(require("./meta.json").inputs)) {
    const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) names.add(m[1]);
  }
  const out = [...names].sort().map((name) => {
    const dir = path.resolve("node_modules", name);
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    const license = fs.readdirSync(dir).find((f) => /^licen[sc]e/i.test(f));
    const copyright = license
      ? (fs.readFileSync(path.join(dir, license), "utf8").match(/^Copyright.*$/m) || [""])[0] : "";
    return `${name}@${pkg.version} (${pkg.license}) ${copyright}`.trim();
  });
  console.log(out.join("\n"));')
{ printf '/*! Control Room CodeMirror bundle, made by scripts/vendor_static.sh from:\n%s\n*/\n' "$notice"
  cat "$build/codemirror.min.js"; } >static/vendor/codemirror.min.js
cp "$build/node_modules/chart.js/dist/chart.umd.min.js" static/vendor/chart.umd.min.js

echo "wrote:"
for f in htmx.min.js codemirror.min.js chart.umd.min.js; do
  printf '  static/vendor/%-20s %8d bytes\n' "$f" "$(wc -c <"static/vendor/$f")"
done
echo "  htmx.org ${HTMX_VERSION}; codemirror ${CODEMIRROR_VERSION}; chart.js ${CHARTJS_VERSION}; esbuild ${ESBUILD_VERSION}"
echo "  bundled into codemirror.min.js:"
echo "$notice" | sed 's/^/    /'
