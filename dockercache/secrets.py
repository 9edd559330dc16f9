"""Keeping secret values out of everything dockercache prints or records.

dockercache never puts a credential into a process argument; this is the second line of defence for
values that reach text anyway (a build arg that quotes a token, an error message from a library).

Text (progress, warnings, tables) is masked as text. A JSON document is masked value by value before it is
serialised (:func:`redact_data`), so a secret that happens to look like JSON syntax cannot break it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
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


class Redactor:
    """Masks secret values (of MIN_LENGTH characters or more) and presigned URLs in text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        wanted = {v for v in values if len(v) >= MIN_LENGTH}
        wanted.update(e for v in list(wanted) for e in _escaped(v))
        self.values = tuple(sorted({*self.values, *wanted}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        text = redact_presigned(text)
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text


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
