"""``explain``: what the next build would miss, and why, without building (issue 29).

Each report row's first step that the working tree would not find in the cache it reads, from the record kept
beside that cache (:mod:`dockercache.stores.records`) and the working tree; the same causes as the report after a
build (:mod:`dockercache.model.record`). Base image digests are not resolved here: a base image that moved shows
only after a build.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..run.records import Records, predict
from ..stores.records import RecordStore
from .environment import Environment, load, options_from, plan_for


def cmd_explain(environment: Environment, config: str | None, services: Sequence[str] | None, as_json: bool) -> int:
    cfg, ci = load(environment, config)
    plan = plan_for(environment, cfg, ci, options_from(services))
    records = Records(environment.out, RecordStore(), plan.branch, plan.commit)
    rows = predict(records, plan.targets)
    if as_json:
        document: dict[str, Any] = {
            "branch": plan.branch,
            "misses": [m.to_json() for _, m, _ in rows if m is not None],
            "rows": [
                {"target": f"{t.service}/{t.stage}", "record": found.place, "miss": m.to_json() if m else None}
                for t, m, found in rows
            ],
        }
        environment.out.document(document)
        return 0
    for target, miss, found in rows:
        if miss is not None:
            environment.out.result(miss.line().replace(": missed at", ": would miss at", 1))
        else:
            environment.out.result(f"{target.service}/{target.stage}: every step would come from cache ({found.place})")
    return 0
