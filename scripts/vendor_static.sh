#!/usr/bin/env bash
# Refresh vendored front-end assets from the npm registry (run by hand; the output is committed
# so the run command needs no network). Versions are pinned here.
set -euo pipefail
HTMX_VERSION=2.0.11
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@${HTMX_VERSION}" >/dev/null && tar xzf htmx.org-*.tgz)
cp "$work/package/dist/htmx.min.js" static/vendor/htmx.min.js
echo "static/vendor/htmx.min.js <- htmx.org ${HTMX_VERSION}"
