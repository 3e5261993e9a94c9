"""Workflows: provision, droplets... each ``workflow(env, options) -> Report``."""
