"""callvault: the service (config, metadata, blob stores, domain services, API and CLI)."""

__version__ = "0.1.0"
