"""Settings, errors, ids. Imports nothing else of aiaas."""
