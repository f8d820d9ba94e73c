"""Remote classifier workers: the server that leases scan requests to them over HTTPS, the
worker that pulls them (``pictguard run classify --remote URL``), and the fedi-safety
``/api/v1/pop`` protocol for existing fedi-safety workers."""
