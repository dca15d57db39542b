"""The jobs on Ray: ingest, train, tune, segment (the only modules that import Ray)."""
