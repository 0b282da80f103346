"""Who may do what: permissions, the role table, the object rules, and the one scope filter.

Deny by default. Three pieces, each written once:

- :func:`decide` ``(actor, permission, resource)``: the role table, then the object rules as
  predicates (tenant scope, four-eyes by owner, who may revoke, who reviews break-glass).
  Content reads are not a role permission at all: only a grant opens content, admin included.
- :func:`authorize`: :func:`decide`, and every denial it returns is audited (in a short
  transaction of its own, aggregated per actor, permission and reason so that a scan cannot
  flood the chain) before it is raised.
- :func:`visible` ``(statement, actor)``: the scope filter every list and get goes through
  (NetBox's ``RestrictedQuerySet.restrict()`` is the model).

What a principal gets for a resource outside its scope (README, "Scope"): a read by id answers
404, exactly like a missing one; a tenant named in a write answers 403; a list is filtered.
Anything that covers every tenant (chain verification, checkpoints) needs a principal over all
tenants and answers 403 ``all-tenants-required`` to the others.
"""

from vault.authz.roles import REVOKER_ROLES, ROLE_PERMISSIONS, Actor, P, Permission
from vault.authz.rules import (
    EVERY_TENANT,
    Denial,
    Resource,
    authorize,
    decide,
    objects,
    tenant,
)
from vault.authz.scope import (
    get_visible,
    get_visible_many,
    scope_params,
    visible,
    visible_prepared,
)

__all__ = [
    "EVERY_TENANT",
    "REVOKER_ROLES",
    "ROLE_PERMISSIONS",
    "Actor",
    "Denial",
    "P",
    "Permission",
    "Resource",
    "authorize",
    "decide",
    "get_visible",
    "get_visible_many",
    "objects",
    "scope_params",
    "tenant",
    "visible",
    "visible_prepared",
]  # fmt: skip
