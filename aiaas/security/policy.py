"""The policy table: every route of the API and the scope it needs.

`None` means public (health, metrics, docs). The API looks every request up here; a
test enumerates the OpenAPI spec and fails when a route is missing or stale.
"""

from __future__ import annotations

PUBLIC = None

POLICY: dict[tuple[str, str], str | None] = {
    # Health, metrics and docs.
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # Organisations and keys.
    ("GET", "/v1/organizations/me"): "read",
    ("POST", "/v1/api_keys"): "admin",
    ("GET", "/v1/api_keys"): "admin",
    ("DELETE", "/v1/api_keys/{key_id}"): "admin",
}


def required_scope(method: str, path_template: str) -> str | None:
    """The scope a route needs. A route missing from the table is refused (fail closed)."""
    try:
        return POLICY[(method.upper(), path_template)]
    except KeyError:
        raise LookupError(f"route {method} {path_template} is not in the policy table") from None
