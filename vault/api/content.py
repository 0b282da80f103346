"""Placeholder router; filled in by the access/playback work (#4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
