"""Private Docker daemons for end-to-end tests: the benchmark's implementation (benchmarks/agents.py), one copy.

A test that must prove every cached step came from a cache store takes the ``agent`` fixture
(tests/e2e/conftest.py): its docker, buildx and dockercache calls then go to a daemon with an empty data root,
and ``fresh_agent()`` replaces that daemon with a new one.
"""

from __future__ import annotations

from benchmarks.agents import AgentError, Daemon, fresh_daemon, preflight, start_daemon

__all__ = ["AgentError", "Daemon", "fresh_daemon", "preflight", "start_daemon"]
