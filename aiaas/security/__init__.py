"""Keys, scopes and the policy table, rate limits, quotas, audit, encryption. No FastAPI here."""
