"""The `aiaas` command line. The only place that configures logging."""
