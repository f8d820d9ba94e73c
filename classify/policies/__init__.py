"""Concept policy files shipped with pictguard (a package so wheels include the YAML)."""
