"""HTTP API v1 (FastAPI). The one place that maps domain errors to problem+json."""
