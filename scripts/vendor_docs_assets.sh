#!/usr/bin/env bash
# Vendor the /docs (Swagger UI) and /redoc assets into the package, so both pages render offline.
# Pinned versions, checked against the npm registry's sha512 integrity; licence files copied alongside.
# Run from the repository root: scripts/vendor_docs_assets.sh (needs npm and network access to the registry).
set -euo pipefail

SWAGGER_VERSION=5.36.0
SWAGGER_INTEGRITY="sha512-Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A=="
REDOC_VERSION=2.5.2
REDOC_INTEGRITY="sha512-sTJfItvRkcDTojB6wdLN4M+Ua6mlZwElV21Tf8Mn7IbQF/1Os6GvgQpZyLWPGZZHbhy7GC1Or1hTMHfz1vKh5A=="

DEST="$(cd "$(dirname "$0")/.." && pwd)/aiaas/api/static/docs"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch() {  # name version integrity -> unpacked into $WORK/<name>
    local name=$1 version=$2 integrity=$3 tgz
    tgz=$(cd "$WORK" && npm pack --silent "$name@$version")
    local got="sha512-$(openssl dgst -sha512 -binary "$WORK/$tgz" | base64 -w0)"
    if [[ "$got" != "$integrity" ]]; then
        echo "integrity mismatch for $name@$version: got $got" >&2
        exit 1
    fi
    mkdir -p "$WORK/$name"
    tar -xzf "$WORK/$tgz" -C "$WORK/$name"
}

fetch swagger-ui-dist "$SWAGGER_VERSION" "$SWAGGER_INTEGRITY"
fetch redoc "$REDOC_VERSION" "$REDOC_INTEGRITY"

rm -rf "$DEST"
mkdir -p "$DEST/swagger-ui" "$DEST/redoc"
S="$WORK/swagger-ui-dist/package"
cp "$S/swagger-ui-bundle.js" "$S/swagger-ui.css" "$S/favicon-32x32.png" \
   "$S/LICENSE" "$S/NOTICE" "$S/swagger-ui-bundle.js.LICENSE.txt" "$DEST/swagger-ui/"
R="$WORK/redoc/package"
cp "$R/bundles/redoc.standalone.js" "$R/bundles/redoc.standalone.js.LICENSE.txt" "$R/LICENSE" "$DEST/redoc/"
# Source maps are not shipped; drop the comment that points at them so browsers do not ask for them.
sed -i '/^\/\/# sourceMappingURL=/d' "$DEST/swagger-ui/swagger-ui-bundle.js" "$DEST/redoc/redoc.standalone.js"
sed -i 's#/\*\# sourceMappingURL=[^*]*\*/##' "$DEST/swagger-ui/swagger-ui.css"
# Redoc's sidebar footer always loads its logo from cdn.redoc.ly (no option turns it off): an empty inline SVG
# instead, so the page asks no other host (tests/api/test_docs_offline.py renders it with other hosts refused).
LOGO="https://cdn.redoc.ly/redoc/logo-mini.svg"
grep -q "$LOGO" "$DEST/redoc/redoc.standalone.js" || { echo "redoc's logo URL moved: update this script" >&2; exit 1; }
sed -i "s#$LOGO#data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E#" "$DEST/redoc/redoc.standalone.js"
cat > "$DEST/VERSIONS" <<VERSIONS
swagger-ui-dist $SWAGGER_VERSION $SWAGGER_INTEGRITY
redoc $REDOC_VERSION $REDOC_INTEGRITY
(patched by scripts/vendor_docs_assets.sh: source-map comments removed; redoc's cdn.redoc.ly logo inlined as an empty SVG)
VERSIONS
echo "vendored swagger-ui-dist $SWAGGER_VERSION and redoc $REDOC_VERSION into $DEST"
