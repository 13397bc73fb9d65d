#!/usr/bin/env bash
# Fetch the web console's third-party assets from the npm registry, pinned, with their licences,
# into aiaas/ui/static/vendor/ (committed: the console works offline, no CDN). Run it to upgrade
# a pin (edit the versions below), then commit the result; the console serves these files as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32   # the one chart library: live training curves, usage by day (MIT); the rest is our console.js

dest=aiaas/ui/static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch <package> <version>: npm pack, unpacked into $tmp/<package>
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar -xzf ./*.tgz -C "$1" && rm ./*.tgz)
}

fetch uplot "$UPLOT_VERSION"
mkdir -p "$dest/uplot"
cp "$tmp/uplot/package/dist/uPlot.iife.min.js" "$tmp/uplot/package/dist/uPlot.min.css" "$dest/uplot/"
cp "$tmp/uplot/package/LICENSE" "$dest/uplot/LICENSE"


{
  echo "Vendored by scripts/vendor_ui_assets.sh from the npm registry; do not edit by hand."
  echo "uplot@$UPLOT_VERSION (MIT)"
  (cd "$dest" && sha256sum uplot/*)
} > "$dest/VERSIONS.txt"
echo "vendored into $dest:"; cat "$dest/VERSIONS.txt"
