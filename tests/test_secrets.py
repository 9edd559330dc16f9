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
