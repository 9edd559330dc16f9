"""Keeping secret values out of everything dockercache prints or records.

dockercache never puts a credential into a process argument; this is the second line of defence for
values that reach text anyway (a build arg that quotes a token, an error message from a library).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|SESSION_KEY|API_KEY", re.I)
MASK = "[redacted]"


def secret_values(env: Mapping[str, str], extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Values of variables whose names say they are secret (at least 4 characters, longest first)."""
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 4}
    values.update(v for v in extra if len(v) >= 4)
    return tuple(sorted(values, key=len, reverse=True))


#: Query parameters of presigned S3 URLs that carry a signature, a credential or a session token (SigV4 and V2).
PRESIGNED = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|x-amz-security-token)"
    r"=[^&\s\"'<>]+"
)


def redact_presigned(text: str) -> str:
    """Mask the secret parts of any presigned URL in ``text``."""
    return PRESIGNED.sub(lambda m: f"{m[1]}={MASK}", text)


class Redactor:
    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = tuple(values)

    def add(self, values: Iterable[str]) -> None:
        self.values = tuple(sorted({*self.values, *(v for v in values if len(v) >= 4)}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        text = redact_presigned(text)
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text
