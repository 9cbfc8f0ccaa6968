"""The OTLP sidecar: receivers, forwarding and the serve command's runtime."""
