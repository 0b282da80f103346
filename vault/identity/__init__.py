"""Identity: tenants, principals and their API keys (models in :mod:`vault.models.identity`)."""
