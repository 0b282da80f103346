"""Tenant-level privacy office: four-eyes changes (:mod:`.changes`), the effective per-tenant
policy (:mod:`.policy`), offboarding (:mod:`.offboarding`) and their routes."""
