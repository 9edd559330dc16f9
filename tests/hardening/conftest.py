"""The hardening suite uses the end-to-end stack fixtures."""

from ..e2e.conftest import *  # noqa: F403
