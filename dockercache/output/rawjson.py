"""Splitting buildx's ``--progress=rawjson`` stream into what it is made of: pretty-printed JSON objects (BuildKit
SolveStatus), possibly followed by plain text when a build fails. Framing only: what an object means is
:mod:`.progress`'s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class RawJsonDecoder:
    """Turns chunks of the stream into JSON objects and plain-text lines."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> Iterator[dict[str, Any] | str]:
        self._buffer += text
        while True:
            stripped = self._buffer.lstrip()
            if not stripped:
                self._buffer = ""
                return
            if stripped[0] == "{":
                try:
                    obj, end = self._decoder.raw_decode(stripped)
                except json.JSONDecodeError:
                    self._buffer = stripped
                    return  # an object still arriving
                self._buffer = stripped[end:]
                if isinstance(obj, dict):
                    yield obj
                continue
            line, sep, rest = stripped.partition("\n")
            if not sep:
                self._buffer = stripped
                return
            self._buffer = rest
            yield line.rstrip()

    def close(self) -> Iterator[dict[str, Any] | str]:
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            try:
                obj = json.loads(rest)
            except json.JSONDecodeError:
                yield from rest.splitlines()
            else:
                if isinstance(obj, dict):
                    yield obj
