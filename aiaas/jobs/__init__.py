"""Job lifecycle and backends: local worker processes claiming jobs from the store under leases."""
