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


def test_presigned_urls_lose_their_signatures_and_key_ids() -> None:
    v2 = "GET http://s3:9000/b/cache/blobs/sha256/ab?AWSAccessKeyId=AKIAX123&Signature=nT31%2Bk%3D&Expires=17"
    v4 = (
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAX123%2F2026"
        "&X-Amz-Signature=f00d"
    )
    redact = Redactor()
    assert redact(v2) == (
        "GET http://s3:9000/b/cache/blobs/sha256/ab?AWSAccessKeyId=[redacted]&Signature=[redacted]&Expires=17"
    )
    assert (
        "AKIAX123" not in redact(v4) and "f00d" not in redact(v4) and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in redact(v4)
    )


def test_secrets_of_four_characters_or_more_are_masked_longest_first() -> None:
    env = {"NPM_TOKEN": "abcd", "API_KEY": "abc", "DB_PASSWORD": "0abcd99"}
    # Four characters is enough; shorter values are too common to mask. Longer values come first, so a
    # secret that contains another is masked whole, not left with a head and a tail.
    values = secret_values(env, extra=("wxyz", "xyz"))
    assert values[0] == "0abcd99" and sorted(values[1:]) == ["abcd", "wxyz"]
    assert Redactor(secret_values(env))("token 0abcd99 then abcd") == f"token {MASK} then {MASK}"


def test_redactor_add_keeps_the_longest_first_and_ignores_short_values() -> None:
    redact = Redactor(["abcd"])
    redact.add(["0abcd99", "xyz", "wxyz"])
    assert redact("0abcd99 abcd wxyz xyz") == f"{MASK} {MASK} {MASK} xyz"
