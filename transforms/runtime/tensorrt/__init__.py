"""TensorRT: sidecar (no TensorRT needed), engine, builder, engine cache, loader and runner."""
