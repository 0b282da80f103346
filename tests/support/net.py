"""Loopback helpers shared by the test servers (the launchers' own, from vault.devstack)."""

from __future__ import annotations

from vault.devstack.procs import free_port

__all__ = ["free_port"]
