"""Transport: SSH sessions with pinned host keys, batched scripts, bounded fan-out."""
