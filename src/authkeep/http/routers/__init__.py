"""Routers: thin adapters from HTTP to services."""
