"""A guard for the rule "no object-store or key-provider call while a DB transaction is open".

``guard(ctx)`` wraps ``ctx.store`` and ``ctx.keys``: each public call first asks
:func:`vault.txcount.open_transactions` how many transactions this runtime context has open
(helper threads started with ``vault.txcount.carry`` count as their parent) and records a
violation when it is not zero. Violations are also raised, but code that swallows errors
(best-effort cleanup) could hide that, so the fixture checks the record at teardown.
"""

from __future__ import annotations

import traceback
from typing import Any

from vault.context import Context
from vault.txcount import open_transactions


class Guarded:
    def __init__(self, inner: Any, what: str, violations: list[str]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_violations", violations)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() sees the wrapped store or key provider
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        local = getattr(type(self._inner), "LOCAL", frozenset())
        if name.startswith("_") or not callable(attr) or name in local:
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            count = open_transactions()
            if count:
                where = "".join(traceback.format_stack(limit=8)[:-1])
                message = f"{self._what}.{name}() called with {count} DB transaction(s) open"
                self._violations.append(f"{message}\n{where}")
                raise AssertionError(message)
            return attr(*args, **kwargs)

        return guarded


def guard(ctx: Context) -> list[str]:
    """Wrap the context's stores and keys (every region's); returns the (live) list of
    violations."""
    violations: list[str] = []
    ctx.store = Guarded(ctx.store, "store", violations)  # type: ignore[assignment]
    ctx.keys = Guarded(ctx.keys, "keys", violations)  # type: ignore[assignment]
    for name in list(ctx.regional_stores):
        ctx.regional_stores[name] = Guarded(ctx.regional_stores[name], f"store[{name}]", violations)  # type: ignore[assignment]
        ctx.regional_keys[name] = Guarded(ctx.regional_keys[name], f"keys[{name}]", violations)  # type: ignore[assignment]
    return violations
