"""BuildKit's Dockerfile checks as dockercache reads them: the findings of ``docker buildx build --call=check``.

:func:`parse_check_result` turns the JSON that ``--call=check,format=json`` prints into :class:`CheckFinding`
values, each naming its rule, file and line; running the check is the Docker adapter's job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckFinding:
    """One finding of BuildKit's Dockerfile checks (``docker buildx build --call=check``)."""

    rule: str
    """The check's rule (``JSONArgsRecommended``), or ``error`` when the Dockerfile could not be checked."""
    message: str
    file: str
    line: int | None
    url: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.rule}: {self.message}{f' ({self.url})' if self.url else ''}"


def parse_check_result(text: str, dockerfile: str) -> tuple[CheckFinding, ...]:
    """Findings from ``--call=check,format=json`` output: BuildKit's lint result, ``{"warnings": [{"ruleName",
    "description", "url", "detail", "location": {"sourceIndex", "ranges": [{"start": {"line"}}]}}], "sources":
    [{"filename"}], "buildError": {"message", "location"}}``. ValueError when it is no such document."""
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("warnings", []), (list, type(None))):
        raise ValueError("not a check result")
    sources = [s.get("filename") or s.get("fileName") or dockerfile for s in document.get("sources") or []]

    def place(location: Any) -> tuple[str, int | None]:
        if not isinstance(location, dict):
            return dockerfile, None
        index = location.get("sourceIndex", 0)
        file = sources[index] if isinstance(index, int) and 0 <= index < len(sources) else dockerfile
        ranges = location.get("ranges") or [{}]
        line = (ranges[0].get("start") or {}).get("line") if isinstance(ranges[0], dict) else None
        return file, line if isinstance(line, int) and line > 0 else None

    findings = []
    for warning in document.get("warnings") or []:
        file, line = place(warning.get("location"))
        message = warning.get("detail") or warning.get("description") or ""
        findings.append(CheckFinding(str(warning.get("ruleName", "?")), message, file, line, warning.get("url", "")))
    error = document.get("buildError")
    if isinstance(error, dict):
        file, line = place(error.get("location"))
        findings.append(CheckFinding("error", str(error.get("message", "")), file, line))
    return tuple(findings)
