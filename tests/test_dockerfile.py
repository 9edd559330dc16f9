from __future__ import annotations

from dockercache.dockerfile import parse_stages


def test_stages_names_and_labels() -> None:
    text = """# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM --platform=$BUILDPLATFORM ${BASE} AS Base
RUN echo \\
  FROM not-a-stage AS nope
FROM base
from scratch as final
"""
    stages = parse_stages(text)
    assert [(s.name, s.label) for s in stages] == [("base", "base"), (None, "stage-1"), ("final", "final")]
