"""SQL metadata store: tables, migrations, engine set-up and tenant-scoped repositories."""
