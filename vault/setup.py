"""``init``: schema, keyring, bucket, KEK bookkeeping and the bootstrap admin. Idempotent.

Also what a process that does not migrate (the worker) checks first: that the schema is the one
this code was written for.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import Engine

from vault import kek_versions
from vault.context import Context
from vault.db import current_revision, migrate
from vault.errors import MisconfiguredError
from vault.identity import principals
from vault.identity.owners import owner_of, owner_refs


def initialise(
    ctx: Context, *, now: datetime, deliver_key: Callable[[str], None] | None = None
) -> str | None:
    """Bring everything up to date; return a bootstrap admin key only on the very first run.

    ``deliver_key`` stores that key (e.g. :func:`write_secret_file`) inside the transaction that
    creates the admin: if it cannot be stored, no admin is created and the next run tries again.
    """
    migrate(ctx.db.engine, owner_refs=lambda owners: owner_refs(ctx.keys, owners))
    for region in ctx.regions():
        ctx.store_for(region).ensure_bucket()
        kek_versions.record_provider_versions(ctx, now=now, region=region)
    owner = owner_of(ctx.keys, principals.BOOTSTRAP_OWNER)  # before the transaction
    with ctx.db.transaction() as session:
        key = principals.bootstrap_admin(session, owner=owner, now=now, rng=ctx.rng)
        if key is not None and deliver_key is not None:
            deliver_key(key)
        return key


def write_secret_file(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` with mode 0600, atomically (a reader never sees half)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    except OSError as exc:
        raise MisconfiguredError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def require_current_schema(engine: Engine) -> None:
    """Refuse to run on a database that ``init`` has not brought to this code's revision."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(resources.files("vault") / "migrations"))
    head = script.get_current_head()
    current = current_revision(engine)
    if current == head:
        return
    if current is None:
        raise MisconfiguredError("the database has no callvault schema yet; run `callvault init`")
    if current in {rev.revision for rev in script.walk_revisions()}:
        raise MisconfiguredError(
            f"the database schema is at revision {current}, this callvault needs {head}; "
            "run `callvault init` to migrate it"
        )
    raise MisconfiguredError(
        f"the database schema ({current}) is newer than this callvault ({head}); upgrade callvault"
    )
