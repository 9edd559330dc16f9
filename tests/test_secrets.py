from __future__ import annotations

from dockercache.secrets import MASK, Redactor, secret_values


def test_secret_values_by_name() -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "REGISTRY_PASSWORD": "hunter22",
        "HOME": "/root",
        "GITHUB_TOKEN": "ab",
    }
    values = secret_values(env)
    assert set(values) == {"wJalrXUtnFEMI", "hunter22"}
    redact = Redactor(values)
    assert redact("login hunter22 with wJalrXUtnFEMI at /root") == f"login {MASK} with {MASK} at /root"
