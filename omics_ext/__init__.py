"""Omics methods (CLEIT)."""
