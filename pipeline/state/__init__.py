"""Durable state: SQLite in single-process mode, compacted Kafka topics when distributed."""

from pipeline.state.table import Table

__all__ = ["Table"]
