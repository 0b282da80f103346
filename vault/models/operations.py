"""Operational tables: KEK versions as the database knows them, and job leases."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class KekVersion(SQLModel, table=True):
    """KEK versions as the DB knows them: wrapping uses the newest, retirement is recorded."""

    __tablename__ = "kek_version"
    version: int = Field(primary_key=True)
    created_at: datetime = _ts()
    # Set under the exclusive KEK lock before the provider destroys the version: from then on no
    # new wrap under it may commit (see vault.kek).
    retiring_at: datetime | None = _ts(nullable=True)
    retired_at: datetime | None = _ts(nullable=True)


class RegionKekVersion(SQLModel, table=True):
    """The same, for the key provider of each region other than the home one (data residency:
    every region's provider numbers its own versions; the home region keeps ``kek_version``)."""

    __tablename__ = "region_kek_version"
    region: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    created_at: datetime = _ts()
    retiring_at: datetime | None = _ts(nullable=True)
    retired_at: datetime | None = _ts(nullable=True)


class JobLease(SQLModel, table=True):
    """A DB lease so that one worker at a time runs a job such as kek-cycle."""

    __tablename__ = "job_lease"
    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = _ts()
    last_run_at: datetime | None = _ts(nullable=True)
