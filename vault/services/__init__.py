"""Domain services: every domain rule lives here, callable from the API, the CLI and jobs."""
