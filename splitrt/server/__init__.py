"""The tail server: a KServe v2 / Triton-compatible gRPC service (grpc.aio)."""
