"""The provisioning engine: resources (facts -> changes), batched scripts, phase runner."""
