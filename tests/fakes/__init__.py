"""Test doubles for external services (e.g. a local DigitalOcean API)."""
