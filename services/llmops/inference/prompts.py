"""Versioned prompt templates. Each registration of a name makes a new version; a label
(``production``) points at one version of a name and picks the default. Stored in SQLite."""
from __future__ import annotations

import json
import sqlite3
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmops.common.errors import InvalidArgument, NotFound

FIELDS = {"question", "contexts"}
PRODUCTION = "production"

DEFAULTS = {
    "chat": (
        "You are a helpful assistant. Answer clearly and concisely.",
        "{question}",
    ),
    "rag": (
        "You are a helpful assistant for Python programmers. Answer the question using only the "
        "context below. If the context does not contain the answer, say that you do not know.",
        "Context:\n{contexts}\n\nQuestion: {question}\nAnswer:",
    ),
}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str
    labels: tuple[str, ...] = field(default_factory=tuple)
    created_at: str = ""

    def render_user(self, question: str, contexts: list[str]) -> str:
        joined = "\n\n".join(f"[{i + 1}] {c}" for i, c in enumerate(contexts))
        return self.user.format(question=question, contexts=joined)


def check_template_text(text: str, what: str) -> None:
    """A template takes plain ``{question}`` and ``{contexts}`` only: no other field, no attribute
    or index, and no format spec or conversion (``{question:>900000000}`` would allocate a
    gigabyte on every request rendered with it)."""
    try:
        parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not a valid template: {exc}") from None
    for f, spec, conv in parts:
        if spec or conv:
            shown = f"{{{f}{'!' + conv if conv else ''}{':' + spec[:40] if spec else ''}}}"
            raise InvalidArgument(f"{what} uses a format spec or conversion in {shown}; fields are plain "
                                  "{question} and {contexts}")
    names = {f for f, _, _ in parts}
    unknown = names - FIELDS
    if unknown:
        raise InvalidArgument(f"{what} uses unknown field(s) {sorted(unknown)}; allowed: {{question}}, {{contexts}}")


class PromptRegistry:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._versions: dict[str, list[PromptTemplate]] = {}   # resolve's cache; a change here clears its name
        self._changes = 0   # counts changes, so a read that raced a change is not cached
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS prompt_templates (name TEXT NOT NULL, version INTEGER NOT NULL, "
                "system TEXT NOT NULL, user TEXT NOT NULL, labels TEXT NOT NULL, created_at TEXT NOT NULL, "
                "PRIMARY KEY (name, version))"
            )
        for name, (system, user) in DEFAULTS.items():
            if not self.list(name):
                self.register(name, system, user, [PRODUCTION])

    def register(self, name: str, system: str, user: str, labels: list[str] | None = None) -> PromptTemplate:
        if not name or not all(c.isalnum() or c in "_-." for c in name):
            raise InvalidArgument(f"template name {name!r} must be non-empty: letters, digits, '_', '-', '.'")
        if not user.strip():
            raise InvalidArgument("template `user` text is empty")
        check_template_text(system, "`system`")
        check_template_text(user, "`user`")
        labels = sorted(set(labels or []))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = (self._db.execute("SELECT MAX(version) FROM prompt_templates WHERE name=?",
                                            (name,)).fetchone()[0] or 0) + 1
                for label in labels:  # a label names one version: move it here
                    for v, raw in self._db.execute(
                            "SELECT version, labels FROM prompt_templates WHERE name=?", (name,)).fetchall():
                        old = json.loads(raw)
                        if label in old:
                            old.remove(label)
                            self._db.execute("UPDATE prompt_templates SET labels=? WHERE name=? AND version=?",
                                             (json.dumps(old), name, v))
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self._db.execute("INSERT INTO prompt_templates VALUES (?,?,?,?,?,?)",
                                 (name, version, system, user, json.dumps(labels), created))
                self._db.execute("COMMIT")
                self._forget(name)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return PromptTemplate(name, version, system, user, tuple(labels), created)

    def set_label(self, name: str, version: int, label: str) -> PromptTemplate:
        """Move ``label`` to version ``version`` of ``name`` (so ``production`` can go back)."""
        if not label or not all(c.isalnum() or c in "_-." for c in label) or len(label) > 100:
            raise InvalidArgument(f"label {label!r} must be 1-100 of letters, digits, '_', '-', '.'")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = {v: json.loads(raw) for v, raw in self._db.execute(
                    "SELECT version, labels FROM prompt_templates WHERE name=?", (name,)).fetchall()}
                if not rows:
                    self._db.execute("ROLLBACK")
                    known = sorted({n for (n,) in self._db.execute("SELECT DISTINCT name FROM prompt_templates")})
                    raise NotFound(f"prompt template {name!r} not found; known templates: {', '.join(known)}")
                if version not in rows:
                    self._db.execute("ROLLBACK")
                    raise NotFound(f"prompt template {name!r} has no version {version}; versions: "
                                   f"{', '.join(str(v) for v in sorted(rows))}")
                for v, labels in rows.items():
                    want = sorted(set(labels) | {label}) if v == version else [x for x in labels if x != label]
                    if want != labels:
                        self._db.execute("UPDATE prompt_templates SET labels=? WHERE name=? AND version=?",
                                         (json.dumps(want), name, v))
                self._db.execute("COMMIT")
                self._forget(name)
            except (NotFound, InvalidArgument):
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return next(t for t in self.list(name) if t.version == version)

    def put(self, t: PromptTemplate) -> bool:
        """Keep a template version made on another replica (read from the config topic), with the
        version number it has there; False when this version is already here."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO prompt_templates VALUES (?,?,?,?,?,?)",
                                   (t.name, t.version, t.system, t.user, json.dumps([]), t.created_at))
            self._forget(t.name)
        return cur.rowcount > 0

    def _forget(self, name: str) -> None:
        """Called with the lock held, after a change of ``name``."""
        self._changes += 1
        self._versions.pop(name, None)

    def list(self, name: str = "") -> list[PromptTemplate]:
        sql = "SELECT name, version, system, user, labels, created_at FROM prompt_templates"
        args: tuple = ()
        if name:
            sql += " WHERE name=?"
            args = (name,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY name, version", args).fetchall()
        return [PromptTemplate(n, v, s, u, tuple(json.loads(lb)), c) for n, v, s, u, lb, c in rows]

    def resolve(self, name: str, version: int | None = None) -> PromptTemplate:
        """The version asked for, else the one labelled production, else the newest (cached per name:
        this runs on every request)."""
        versions = self._versions.get(name)
        if versions is None:
            seen = self._changes
            versions = self.list(name)
            if versions:
                with self._lock:
                    if self._changes == seen:
                        self._versions[name] = versions
        if not versions:
            known = sorted({t.name for t in self.list()})
            raise NotFound(f"prompt template {name!r} not found; known templates: {', '.join(known)}")
        if version is None:
            for t in versions:
                if PRODUCTION in t.labels:
                    return t
            return versions[-1]
        for t in versions:
            if t.version == version:
                return t
        raise NotFound(f"prompt template {name!r} has no version {version}; versions: "
                       f"{', '.join(str(t.version) for t in versions)}")
