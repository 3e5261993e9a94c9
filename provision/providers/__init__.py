"""Droplet providers: one interface (providers.base.Provider), two implementations."""
