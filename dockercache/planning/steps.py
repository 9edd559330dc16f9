"""A target's step inputs from the working tree (issue 29): the :class:`~dockercache.model.record.Record` a build keeps
beside its cache, and that the next build (or ``dockercache explain``) compares the working tree with.

Steps are numbered as BuildKit's Dockerfile frontend numbers them in progress (``[deps 2/3]``): ``FROM`` of an
image (not ``scratch``, not another stage) is step 1, then every ``ADD``, ``COPY``, ``RUN`` and ``WORKDIR``. The
context is walked as BuildKit receives it (:mod:`.context`, ``.dockerignore`` applied) and only the files a
``COPY``/``ADD``/``RUN --mount=type=bind`` names are read. Build argument values are hashed with the record's salt.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..model.record import Record, StageRecord, StepRecord, arg_hash
from ..model.skip import ContextScan, Entry, Unavailable
from .context import file_digest, scan_context
from .dockerfile import PLATFORM_ARGS, expand, global_args, logical_lines, split_instruction

_STEPS = frozenset({"ADD", "COPY", "RUN", "WORKDIR"})
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_REMOTE = re.compile(r"^(?:https?://|git@|git://)", re.IGNORECASE)
FILE_DIGEST_LENGTH = 16


@dataclass
class _Step:
    n: int
    keyword: str
    text: str
    before: list[str]
    flags: list[str]
    words: list[str]
    scope: dict[str, str]
    """The build arguments in scope, with their values (never kept: hashed into the record)."""


@dataclass
class _Stage:
    index: int
    label: str
    base: str
    base_args: dict[str, str]
    parent: str | None
    steps: list[_Step] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    scope: dict[str, str] = field(default_factory=dict)


def parse_steps(text: str, args: Mapping[str, str]) -> list[_Stage]:
    """Every stage with its numbered steps, the arguments each sees, and what its ``FROM`` is."""
    declared = global_args(text)
    values = dict(PLATFORM_ARGS)
    for name, default in declared.items():
        if name in args:
            values[name] = args[name]
        elif default is not None:
            values[name] = expand(default, values)[0]
    stages: list[_Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            _, words = split_instruction(rest)
            image = words[0] if words else ""
            called = words[2].lower() if len(words) > 2 and words[1].upper() == "AS" else None
            base = expand(image, values)[0]
            used = {v: values.get(v, "") for v in _VARIABLE.findall(image) if v not in PLATFORM_ARGS}
            labels = {s.label for s in stages} | {str(s.index) for s in stages}
            parent = next((s.label for s in stages if base.lower() in (s.label, str(s.index))), None)
            stage = _Stage(len(stages), called or f"stage-{len(stages)}", base, used, parent)
            if base.lower() != "scratch" and base.lower() not in labels:
                stage.steps.append(_Step(1, "FROM", f"FROM {base}", [], [], [base], {}))
            stages.append(stage)
        elif not stages:
            continue
        elif keyword == "ARG":
            stage = stages[-1]
            for word in split_instruction(rest)[1]:
                name, equals, default = word.partition("=")
                if name in args:
                    stage.scope[name] = args[name]
                elif equals:
                    stage.scope[name] = expand(default, {**values, **stage.scope})[0]
                else:  # no default: the global one, else unset (as empty: it still counts as declared)
                    stage.scope[name] = values.get(name, "")
            stages[-1].pending.append(line)
        elif keyword in _STEPS:
            stage = stages[-1]
            flags, words = split_instruction(rest)
            n = len(stage.steps) + 1
            stage.steps.append(_Step(n, keyword, line, stage.pending, flags, words, dict(stage.scope)))
            stage.pending = []
        else:
            stages[-1].pending.append(line)
    return stages


def _sees(step: _Step) -> dict[str, str]:
    """The arguments a step's cache key depends on: all in scope for RUN (its environment), else those it names."""
    if step.keyword == "RUN":
        return step.scope
    named = set(_VARIABLE.findall(step.text))
    return {k: v for k, v in step.scope.items() if k in named}


def _from(flags: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--from=`` of COPY/ADD, and the ``from=`` and bind ``source=`` of RUN's mounts."""
    source = None
    binds: list[str] = []
    for flag in flags:
        name, _, value = flag.partition("=")
        if name.lower() == "--from":
            source = value
        elif name.lower() == "--mount":
            parts = dict(p.partition("=")[::2] for p in value.split(","))
            if parts.get("from"):
                binds.append("from:" + parts["from"])
            elif parts.get("type", "") == "bind":
                binds.append(parts.get("source") or parts.get("src") or ".")
    return source, binds


@dataclass
class Files:
    """The context as BuildKit receives it, each file's digest read once when a step names it."""

    scan: ContextScan
    read: Callable[[Path], str] = file_digest
    _digests: dict[str, str] = field(default_factory=dict)

    def digest(self, entry: Entry) -> str:
        if entry.path not in self._digests:
            content = self.read(self.scan.root / entry.path) if entry.kind == "file" else ""
            line = json.dumps([entry.kind, entry.mode, entry.link, content], separators=(",", ":"))
            self._digests[entry.path] = hashlib.sha256(line.encode(errors="surrogateescape")).hexdigest()
        return self._digests[entry.path][:FILE_DIGEST_LENGTH]

    def under(self, source: str) -> dict[str, str] | None:
        """Path -> digest of every entry a source names (a file, a directory and what is in it, a wildcard);
        None when it names nothing that can be pinned (a URL)."""
        if _REMOTE.search(source):
            return None
        path = source.strip()
        while path.startswith(("./", "/")):
            path = path[2:] if path.startswith("./") else path[1:]
        path = path.rstrip("/")
        if path in ("", "."):
            return {e.path: self.digest(e) for e in self.scan.entries}
        wild = any(c in path for c in "*?[")
        depth = path.count("/")
        found: dict[str, str] = {}
        heads = [e.path for e in self.scan.entries if e.path.count("/") == depth]
        heads = [h for h in heads if fnmatch.fnmatchcase(h, path)] if wild else [h for h in heads if h == path]
        for entry in self.scan.entries:
            if any(entry.path == h or entry.path.startswith(h + "/") for h in heads):
                found[entry.path] = self.digest(entry)
        return found


def _step_files(step: _Step, files: Files | None) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """What a step copies from the context (None: nothing, or not known) and the stages it uses."""
    source, binds = _from(step.flags)
    uses = [b.removeprefix("from:") for b in binds if b.startswith("from:")]
    sources: list[str] = []
    if step.keyword in ("COPY", "ADD"):
        if source:
            uses.append(source)
        else:
            sources = [expand(w, step.scope)[0] for w in step.words[:-1]]
    sources += [b for b in binds if not b.startswith("from:")]
    if not sources or files is None:
        return None, tuple(u.lower() for u in uses)
    found: dict[str, str] = {}
    for name in sources:
        under = files.under(name)
        if under is None:
            return None, tuple(u.lower() for u in uses)
        found.update(under)
    return dict(sorted(found.items())), tuple(u.lower() for u in uses)


def record_of(
    text: str,
    args: Mapping[str, str],
    graph: Sequence[str],
    files: Files | None,
    salt: str,
) -> Record:
    """The record of a target's graph (its stages' labels) from the Dockerfile's text and the context's files."""
    wanted = set(graph)
    stages: dict[str, StageRecord] = {}
    for stage in parse_steps(text, args):
        if stage.label not in wanted:
            continue
        steps = []
        for step in stage.steps:
            copied, uses = _step_files(step, files)
            hashed = {k: arg_hash(salt, k, v) for k, v in sorted(_sees(step).items())}
            steps.append(StepRecord(step.n, step.text, tuple(step.before), copied, hashed, uses))
        base_args = {k: arg_hash(salt, k, v) for k, v in sorted(stage.base_args.items())}
        stages[stage.label] = StageRecord(stage.label, stage.base, tuple(steps), None, base_args, stage.parent)
    return Record(salt, stages)


def new_salt() -> str:
    return secrets.token_hex(8)


def working_tree(context: Path, dockerfile: Path) -> tuple[str, Files | None]:
    """The Dockerfile's text and the context's files (None when the context cannot be walked)."""
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    try:
        return text, Files(scan_context(context, dockerfile))
    except Unavailable:
        return text, None
