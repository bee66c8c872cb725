//! Telemetry: JSON logs, Prometheus metrics and the admin HTTP server. (being written)
