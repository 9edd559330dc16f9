"""Keeping secret values out of everything dockercache prints or records.

dockercache never puts a credential into a process argument; this is the second line of defence for
values that reach text anyway (a build arg that quotes a token, an error message from a library).

Text (progress, warnings, tables) is masked as text. A JSON document is masked value by value before it is
serialised (:func:`redact_data`), so a secret that happens to look like JSON syntax cannot break it.

Text is masked before it is shortened, never after: a secret cut in two no longer matches, and its first part
would be printed. :func:`shorten` is the one way to shorten text (it masks, then cuts); for text that others
cut (BuildKit, a library's message), the redactor also masks what a cut leaves of a secret at a line's either end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|SESSION_KEY|API_KEY", re.I)
MASK = "[redacted]"

#: The shortest value treated as a secret. As Buildkite's agent (``LengthMin = 6`` in buildkite/agent
#: internal/redact/redact.go, ``RedactLengthMin`` in older releases): a variable named like a secret whose value is
#: an ordinary short word (``DEPLOY_TOKEN=main``, ``USE_API_KEY=true``) is not a secret, and masking it
#: everywhere would rename branches and stages in every line printed.
MIN_LENGTH = 6


def secret_values(env: Mapping[str, str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Values of variables whose names say they are secret (at least MIN_LENGTH characters, longest first)."""
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_LENGTH}
    values.update(v for v in extra if len(v) >= MIN_LENGTH)
    return tuple(sorted(values, key=len, reverse=True))


#: Query parameters of presigned S3 URLs that carry a signature, a credential or a session token (SigV4 and V2).
PRESIGNED = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|x-amz-security-token)"
    r"=[^&\s\"'<>]+"
)


def redact_presigned(text: str) -> str:
    """Mask the secret parts of any presigned URL in ``text``."""
    return PRESIGNED.sub(lambda m: f"{m[1]}={MASK}", text)


def _escaped(value: str) -> set[str]:
    """How ``value`` reads inside a JSON string (a library's error message may quote it so), when that differs."""
    return {json.dumps(value, ensure_ascii=ascii)[1:-1] for ascii in (False, True)} - {value}


#: Where a cut ends the text it kept: before ``...`` or ``…``, at a line break, at the end of the text (read
#: backwards: where a cut started it).
_CUT = re.compile(r"(?=\.\.\.|…|[\r\n]|\Z)")
ELLIPSIS = "..."


def _lines(value: str) -> set[str]:
    """The lines of a multi-line value (a key file), each of MIN_LENGTH characters or more: text printed line by
    line (a step's output, the first line of an error) carries them one at a time."""
    if "\n" not in value and "\r" not in value:
        return set()
    return {line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LENGTH}


def _matched(text: str, start: int, value: str) -> int:
    """How many characters of ``value`` ``text`` holds from ``start`` (its first MIN_LENGTH are known to match)."""
    low, high = MIN_LENGTH, min(len(value), len(text) - start)
    while low < high:  # a binary search: every test is one C-level comparison
        middle = (low + high + 1) // 2
        if text.startswith(value[:middle], start):
            low = middle
        else:
            high = middle - 1
    return low


def _mask_heads(text: str, values: Sequence[str], mask: str) -> str:
    """``text`` with the head (MIN_LENGTH characters or more) of any of ``values`` masked where a cut ends it.

    Cheap on the common line: one substring search per value finds no head and nothing else is done.
    """
    spans: list[tuple[int, int]] = []
    for value in values:
        head = value[:MIN_LENGTH]
        start = text.find(head)
        while start != -1:
            end = start + _matched(text, start, value)
            # The last cut within the match masks the most of the secret. The search ends three characters
            # past the match: far enough to see an ellipsis that starts where the match ends, no further.
            limit = min(len(text), end + len(ELLIPSIS))
            cuts = [m.start() for m in _CUT.finditer(text, start + MIN_LENGTH, limit)]
            cuts = [c for c in cuts if c <= end]
            if cuts:
                spans.append((start, cuts[-1]))
            start = text.find(head, start + 1)
    if not spans:
        return text
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    out: list[str] = []
    done = 0
    for start, end in merged:
        out += [text[done:start], mask]
        done = end
    return "".join(out) + text[done:]


class Redactor:
    """Masks secret values (of MIN_LENGTH characters or more) and presigned URLs in text.

    Also masks the first part of a secret (MIN_LENGTH characters or more) where a cut left it: right before
    ``...`` or ``…``, at the end of a line, at the end of the text; and its last part where a cut started the
    text (after ``...`` or ``…``, at the start of a line or of the text). Text dockercache shortens is masked
    first (:func:`shorten`); this is for text others cut (a vertex name, a library's message).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: tuple[str, ...] = ()
        self._reversed: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        wanted = {v for v in values if len(v) >= MIN_LENGTH}
        wanted.update(line for v in list(wanted) for line in _lines(v))
        wanted.update(e for v in list(wanted) for e in _escaped(v))
        self.values = tuple(sorted({*self.values, *wanted}, key=len, reverse=True))
        self._reversed = tuple(v[::-1] for v in self.values)

    def __call__(self, text: str) -> str:
        text = redact_presigned(text)
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        text = _mask_heads(text, self.values, MASK)
        # The tail of a secret where a cut started the text (a line wrapped in the middle of a value, a name cut
        # from the left): the same search, backwards.
        return _mask_heads(text[::-1], self._reversed, MASK[::-1])[::-1]


def shorten(text: str, width: int, redact: Callable[[str], str]) -> str:
    """``text`` masked by ``redact``, then cut to ``width`` characters (ending in ``...`` when cut).

    The one way dockercache shortens what it prints or records: masking comes first, so a cut never leaves
    part of a secret that the redactor would no longer recognise.
    """
    text = redact(text)
    if len(text) <= width:
        return text
    if width < len(ELLIPSIS):
        return text[:width]
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


def redact_data(data: Any, redact: Callable[[str], str]) -> Any:
    """``data`` (what ``json.dumps`` takes) with ``redact`` applied to every string in it, keys included.

    Only strings change, so the document keeps its shape and always serialises; numbers, booleans and null
    carry no secret. A key is masked as any other string (a key can hold a value: a target named after a
    variable); should two keys of one object mask to the same text, the later ones are numbered, never merged.
    """
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            masked = redact(key) if isinstance(key, str) else key
            if masked in out:
                masked = next(f"{masked}#{n}" for n in range(2, len(data) + 2) if f"{masked}#{n}" not in out)
            out[masked] = redact_data(value, redact)
        return out
    if isinstance(data, list | tuple):
        return [redact_data(item, redact) for item in data]
    return data
