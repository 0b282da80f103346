"""How the CLI reports trouble: one line on stderr, exit code 2, never a traceback.

- every domain error (``VaultError``: store, key provider, configuration, bad input) prints its
  title and detail;
- a database that is missing or unreachable prints what to do, not SQLAlchemy's page;
- a malformed ``CALLVAULT_*`` value names the environment variable, not the settings field;
- a ``CALLVAULT_*`` variable that is no setting (a typo) is warned about, with the closest name;
- credentials in a URL are masked in every message.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
import sqlalchemy as sa
import typer

from crypto.errors import CryptoError
from vault.config import Settings
from vault.errors import VaultError
from vault.policy import PolicyError

__all__ = ["clean_errors", "fail", "mask", "settings_from_env"]

F = TypeVar("F", bound=Callable[..., Any])
PREFIX = "CALLVAULT_"
# user:password@ in any URL; the password is replaced.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


def fail(message: str) -> None:
    typer.echo(f"error: {mask(message)}", err=True)
    raise typer.Exit(2)


def _database(exc: sa.exc.SQLAlchemyError) -> str:
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else ""
        return f"the database is unavailable ({first}); check CALLVAULT_DATABASE_URL"
    if isinstance(exc, sa.exc.ProgrammingError):
        return "the database has no callvault schema; run `callvault init`"
    return f"database error: {type(exc).__name__}"


def _setting_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
    return f"{PREFIX}{field.upper()}: {err.get('msg', 'invalid value')}"


def clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaultError as exc:
            if not exc.public_detail:  # operator detail (a setting, the store): it is for us
                fail(exc.detail)
            fail(f"{exc.title}: {exc.detail}" if exc.detail != exc.title else exc.title)
        except pydantic.ValidationError as exc:  # before ValueError: it is one
            fail(_setting_error(exc))
        except sa.exc.SQLAlchemyError as exc:
            fail(_database(exc))
        except (PolicyError, CryptoError, ValueError, OSError) as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def settings_from_env() -> Settings:
    """Settings from the environment, warning (once, on stderr) about unknown variables."""
    known = Settings.env_names()
    ignored = {f"{PREFIX}CRASH_AT", f"{PREFIX}TEST_POSTGRES_URL"}  # test hooks, not settings
    for name in sorted(os.environ):
        if name.startswith(PREFIX) and name not in known and name not in ignored:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            typer.echo(f"warning: {name} is not a callvault setting and is ignored{hint}", err=True)
    return Settings()
