"""Only the lifecycle owner, ``vault/lifecycle.py``, writes a recording's status.

A recording's status (``RecordingStatus``) never changes alone: the move, the clearing of what
the tombstone must not keep (wrapped DEK, call id, digests) and the audit event that proves it
belong in one transaction. One module owns that, so every move gets all three; a second writer
could move a recording without its audit event or leave a tombstone that still names a call.
This test reads every module under ``vault/`` and ``jobs/`` (migrations aside) with ``ast`` and
fails on any other write of the status, in any form: attribute assignment, ``setattr``,
``update``/``insert`` values and the dicts handed to them, the ``Recording`` constructor, raw
SQL. The checker's own tests below keep it from passing by going blind.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENUM, MODEL = "RecordingStatus", "Recording"
# Calls whose arguments or keywords carry the new values of a statement.
WRITES = {"values", "update", "on_conflict_do_update", "sqlmodel_update", "execute",
          "bulk_update_mappings", "bulk_insert_mappings"}
# Calls that name the table a chain writes: ``sa.update(Recording)``, ``query(Recording)``.
STATEMENTS = {"update", "insert", "query"}
# Objects that are obviously a recording: a snake_case word rec, recs, record(s), recording(s).
REC_NAME = re.compile(r"(?:^|_)rec(?:ord|ording)?s?\d*(?:_|$)")
RAW_SQL = re.compile(
    r"update\s+\"?recording\"?\s+set\s+(?:(?!\bwhere\b)[^;])*\bstatus\s*="
    r"|insert\s+into\s+\"?recording\"?\s*\([^)]*\bstatus\b",
    re.IGNORECASE,
)


def _aliases(tree: ast.Module, name: str) -> set[str]:
    """``name`` plus ``import ... name as X`` from any module and ``X = name`` (transitively)."""
    names = {name}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names if a.name == name}
    while True:
        new = {
            t.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Name) and node.value.id in names
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        } - names
        if not new:
            return names
        names |= new


def _callee(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


class _Checker:
    def __init__(self, tree: ast.Module) -> None:
        self.enums, self.models = _aliases(tree, ENUM), _aliases(tree, MODEL)
        self.bound: dict[str, ast.expr] = {  # names bound to a dict literal or dict(...) call
            node.targets[0].id: node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Dict | ast.Call)  # entries() keeps dict(...) only
        }
        self.found: dict[int, str] = {}
        for node in ast.walk(tree):  # breadth first: a call is seen before the dicts inside it
            self.visit(node)

    def enum(self, node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id in self.enums) or (
            isinstance(node, ast.Attribute) and node.attr == ENUM)

    def model(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "__table__":
            return self.model(node.value)
        return (isinstance(node, ast.Name) and node.id in self.models) or (
            isinstance(node, ast.Attribute) and node.attr == MODEL)

    def member(self, node: ast.expr | None) -> bool:
        """``S.stored``, ``S.stored.value``, ``RecordingStatus("stored")``, ``S["stored"]``."""
        if isinstance(node, ast.Attribute):
            return self.enum(node.value) or (node.attr == "value" and self.member(node.value))
        if isinstance(node, ast.Call | ast.Subscript):
            return self.enum(node.func if isinstance(node, ast.Call) else node.value)
        if isinstance(node, ast.IfExp):
            return self.member(node.body) or self.member(node.orelse)
        if isinstance(node, ast.BoolOp | ast.Tuple | ast.List):
            return any(self.member(v) for v in (
                node.values if isinstance(node, ast.BoolOp) else node.elts))
        return isinstance(node, ast.NamedExpr) and self.member(node.value)

    def recordish(self, node: ast.expr) -> bool:
        while isinstance(node, ast.Subscript | ast.Starred):
            node = node.value
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
        return bool(REC_NAME.search(name.lower()))

    def column(self, node: ast.expr) -> bool:
        """``Recording.status``, ``col(Recording.status)``, ``Recording.__table__.c.status``."""
        if isinstance(node, ast.Call):
            return any(self.column(a) for a in node.args)
        if not (isinstance(node, ast.Attribute) and node.attr == "status"):
            return False
        return any(isinstance(n, ast.expr) and self.model(n) for n in ast.walk(node.value))

    def targets(self, node: ast.expr) -> bool:
        """Whether a statement chain (``sa.update(Recording).where(...)``) writes Recording."""
        while isinstance(node, ast.Call | ast.Attribute | ast.Subscript):
            if isinstance(node, ast.Call):
                if _callee(node.func) in STATEMENTS and node.args and self.model(node.args[0]):
                    return True
                node = node.func
            else:
                node = node.value
        return self.model(node) or (isinstance(node, ast.Name) and self.recordish(node))

    def entries(self, node: ast.expr | None, depth: int = 0) -> list[tuple[ast.expr, bool]]:
        """(value, keyed by the column) of each status entry of a dict, ``dict()``, list."""
        if isinstance(node, ast.Name) and depth < 5:
            return self.entries(self.bound.get(node.id), depth + 1)
        if isinstance(node, ast.List | ast.Tuple):
            return [e for elt in node.elts for e in self.entries(elt, depth)]
        out: list[tuple[ast.expr, bool]] = []
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    out += self.entries(value, depth + 1)
                elif (isinstance(key, ast.Constant) and key.value == "status") or self.column(key):
                    out.append((value, not isinstance(key, ast.Constant)))
        elif isinstance(node, ast.Call) and _callee(node.func) == "dict":
            out += [e for arg in node.args for e in self.entries(arg, depth + 1)]
            for kw in node.keywords:
                out += [(kw.value, False)] if kw.arg == "status" else (
                    self.entries(kw.value, depth + 1) if kw.arg is None else [])
        return out

    def add(self, node: ast.AST, form: str) -> None:
        self.found.setdefault(getattr(node, "lineno", 0), form)

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self.assignment(target, node.value)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, ast.Dict) and any(self.member(v) for v, _ in self.entries(node)):
            self.add(node, "status dict with a RecordingStatus member")
        elif isinstance(node, ast.Constant) and RAW_SQL.search(str(node.value)):
            self.add(node, "raw SQL writes recording.status")

    def assignment(self, target: ast.expr, value: ast.expr | None) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            same = isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(
                target.elts) and not any(isinstance(e, ast.Starred) for e in target.elts)
            for i, elt in enumerate(target.elts):
                sub = value.elts[i] if same and isinstance(value, ast.Tuple | ast.List) else value
                self.assignment(elt.value if isinstance(elt, ast.Starred) else elt, sub)
        elif isinstance(target, ast.Attribute) and target.attr == "status" and (
                self.recordish(target.value) or self.member(value)):
            self.add(target, "assignment to .status")

    def call(self, node: ast.Call) -> None:
        func, name = node.func, _callee(node.func)
        kws = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        if name in ("setattr", "__setattr__"):  # setattr(x, "status", v), x.__setattr__(...)
            args = list(node.args)
            if isinstance(func, ast.Attribute) and name == "__setattr__" and not (
                    isinstance(func.value, ast.Name) and func.value.id == "object"):
                args.insert(0, func.value)
            if len(args) >= 3 and isinstance(args[1], ast.Constant) and args[1].value == "status" \
                    and (self.recordish(args[0]) or self.member(args[2])):
                self.add(node, "setattr of status")
        ctor = self.model(func) or (isinstance(func, ast.Attribute) and self.model(func.value)
                                    and func.attr in ("model_validate", "model_construct"))
        spread = [*node.args, *(kw.value for kw in node.keywords if not kw.arg)]
        if ctor and ("status" in kws or any(self.entries(a) for a in spread)):
            self.add(node, "Recording constructed with a status")
        if name not in WRITES:
            return
        ours = (isinstance(func, ast.Attribute) and self.targets(func.value)) or bool(
            node.args and self.targets(node.args[0]))
        if "status" in kws and (ours or self.member(kws["status"])):
            self.add(node, f"status= in .{name}()")
        payload = [*node.args, *(kw.value for kw in node.keywords if kw.arg in (None, "set_"))]
        for value, by_column in (e for arg in payload for e in self.entries(arg)):
            if ours or by_column or self.member(value):
                self.add(node, f"status entry in .{name}()")


def status_writes(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    return sorted(_Checker(ast.parse(source, filename)).found.items())


def _findings(paths: list[Path]) -> list[str]:
    return [f"{p.relative_to(ROOT).as_posix()}:{line}: {form}"
            for p in paths for line, form in status_writes(p.read_text(), str(p))]


def _owner_files() -> list[Path]:
    return [p for p in [ROOT / "vault/lifecycle.py", *(ROOT / "vault/lifecycle").rglob("*.py")]
            if p.is_file()]


def _scanned_files() -> list[Path]:
    owner, migrations = set(_owner_files()), ROOT / "vault/migrations"
    return sorted(
        p for p in [*(ROOT / "vault").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
        if p not in owner and migrations not in p.parents
        and ROOT / "vault/lifecycle" not in p.parents
    )


def test_only_the_lifecycle_owner_writes_recording_status() -> None:
    found = _findings(_scanned_files())
    assert not found, (
        "a recording's status is written outside vault/lifecycle.py; move these writes behind "
        "the lifecycle owner:\n" + "\n".join(found)
    )


P = "from vault.models import Recording, RecordingStatus as RS\nS = RS\n"
WRITERS = {
    "rec-name-any-value": P + "rec.status = 'stored'",
    "attr-chain-rec": P + "self.recording.status = value",
    "alias-member": P + "job.status = S.failed",
    "annotated-call": P + "thing.status: str = RS('stored')",
    "tuple-unpacking": P + "a.status, b.x = RecordingStatus.stored, now",
    "augmented": P + "recs[0].status += suffix",
    "transitive-alias-value": P + "T = S\nrow.status = T.stored.value if ok else T.failed",
    "module-path-import": "from vault.models.core import RecordingStatus as X\no.status = X.stored",
    "setattr-member": P + "setattr(obj, 'status', S.disposed)",
    "setattr-rec": P + "setattr(rec, 'status', new)",
    "update-any-value": P + "sa.update(Recording).where(Recording.id == i).values(status=new)",
    "values-member-unknown-target": P + "stmt.values(status=S.stored)",
    "update-table-dict": P + "sa.update(Recording.__table__).values({'status': 'failed'})",
    "values-dict-spread": P + "q.values(**{'status': S.stored})",
    "upsert-set": P + "insert(Recording).values(id=i).on_conflict_do_update(\n"
                      "    index_elements=['id'], set_=dict(status=v))",
    "column-key": P + "update(Recording).values({Recording.status: v})",
    "query-update": P + "session.query(Recording).filter(f).update({'status': v})",
    "bulk-execute": P + "session.execute(sa.update(Recording), [{'id': i, 'status': v}])",
    "ctor-any-value": P + "Recording(id=i, status='pending')",
    "ctor-spread-literal": P + "Recording(**{'id': i, 'status': v})",
    "ctor-spread-name": P + "d = {'id': i, 'status': v}\nRecording(**d)",
    "ctor-validate": P + "Recording.model_validate({'status': v})",
    "bare-member-dict": P + "params = {'status': S.stored}",
    "raw-sql": P + "session.execute(text(\"UPDATE recording SET status = 'failed' WHERE id=1\"))",
}
READERS = {
    "comparison": P + "ok = Recording.status == S.stored",
    "select-where": P + "q = select(Recording).where(col(Recording.status).in_([S.stored]))",
    "read": P + "if rec.status in (S.disposed, S.failed):\n    seen = rec.status",
    "other-enum": "from vault.models import AccessRequestStatus as S\n"
                  "req.status, req.decided_at = S.expired, now",
    "other-model": "from vault.models import ErasureStatus\nE = ErasureStatus\n"
                   "ErasureRequest(status=E.pending)\nsa.update(Grant).values(status='x')",
    "string-on-other-object": P + "job.status = 'done'\ndirection.status = 'left'",
    "string-status-dict": P + "audit(session, details={'status': 'failed', 'n': 1})",
    "update-without-status": P + "sa.update(Recording).where(Recording.status == S.stored)"
                             ".values(updated_at=now)",
    "sql-filter-only": P + "text('UPDATE recording SET size = 1 WHERE status = :s')",
}


@pytest.mark.parametrize("source", WRITERS.values(), ids=WRITERS.keys())
def test_checker_catches_each_form_of_write(source: str) -> None:
    found = status_writes(source)
    assert found, f"no write found in:\n{source}"
    first = P.count("\n") + 1 if source.startswith(P) else 1  # never the imports
    assert all(line >= first for line, _ in found), found


@pytest.mark.parametrize("source", READERS.values(), ids=READERS.keys())
def test_checker_ignores_reads_and_other_statuses(source: str) -> None:
    assert status_writes(source) == []


def test_guard_against_a_blind_checker_the_owner_itself_writes_status() -> None:
    """GUARD: the checker, pointed at the lifecycle owner, must find its writes.

    If this fails the checker has gone blind to how the owner writes, and the ownership test
    above would then pass whatever the other modules do.
    """
    owner = _owner_files()
    if not owner:
        pytest.fail("vault/lifecycle.py does not exist (yet): the lifecycle owner must be "
                    "written before this test is committed")
    assert _findings(owner), (
        "the checker finds no status write in the lifecycle owner "
        f"({', '.join(p.relative_to(ROOT).as_posix() for p in owner)}): it has gone blind"
    )
