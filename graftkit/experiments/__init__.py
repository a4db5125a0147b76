"""Experiments of `graftkit reproduce`, one module per method (imported by graftkit.registry.load_all)."""
