from __future__ import annotations

import json

from dockercache.secrets import MASK, Redactor, redact_data, secret_values


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


def test_secrets_of_six_characters_or_more_are_masked_longest_first() -> None:
    env = {"NPM_TOKEN": "abcdef", "API_KEY": "abcde", "DB_PASSWORD": "0abcdef99"}
    # Six characters is enough (Buildkite's agent draws the line there); shorter values are too common to mask.
    # Longer values come first, so a secret that contains another is masked whole, not left with a head and a tail.
    values = secret_values(env, extra=("uvwxyz", "vwxyz"))
    assert values[0] == "0abcdef99" and sorted(values[1:]) == ["abcdef", "uvwxyz"]
    assert Redactor(secret_values(env))("token 0abcdef99 then abcdef") == f"token {MASK} then {MASK}"


def test_redactor_add_keeps_the_longest_first_and_ignores_short_values() -> None:
    redact = Redactor(["abcdef", "abc"])
    redact.add(["0abcdef99", "xyz", "uvwxyz"])
    assert redact("0abcdef99 abcdef uvwxyz xyz abc") == f"{MASK} {MASK} {MASK} xyz abc"


def test_ordinary_short_words_in_secret_named_variables_are_not_secrets() -> None:
    """``DEPLOY_TOKEN=main`` or ``USE_API_KEY=true`` would otherwise rename every branch and stage printed."""
    env = {"DEPLOY_TOKEN": "main", "USE_API_KEY": "true", "CI_PASSWORD": "test", "NPM_TOKEN": "password1"}
    assert secret_values(env) == ("password1",)
    redact = Redactor(secret_values(env))
    assert redact("branch main, test true; password1") == f"branch main, test true; {MASK}"


def test_a_secret_is_masked_as_a_json_string_would_quote_it() -> None:
    """As Buildkite also masks a value quoted by Go's %q: an error message may carry it escaped."""
    secret = 'pa"ss\\wörd'
    redact = Redactor([secret])
    for text in (secret, json.dumps(secret), json.dumps(secret, ensure_ascii=False)):
        assert "ss" not in redact(text), text


def test_redact_data_masks_strings_and_keeps_the_shape() -> None:
    secret = "s3cr3t-value"
    data = {
        "branch": "main",
        "args": {"NPM_TOKEN": secret, "URL": f"https://x/?t={secret}"},
        secret: 1,
        "tags": ["a", secret, 3, None, True],
    }
    assert redact_data(data, Redactor([secret])) == {
        "branch": "main",
        "args": {"NPM_TOKEN": MASK, "URL": f"https://x/?t={MASK}"},
        MASK: 1,
        "tags": ["a", MASK, 3, None, True],
    }


def test_redact_data_never_merges_keys_that_mask_alike() -> None:
    redact = Redactor(["first-secret", "second-secret"])
    masked = redact_data({"first-secret": 1, "second-secret": 2, "kept": 3}, redact)
    assert masked == {MASK: 1, f"{MASK}#2": 2, "kept": 3}


def test_a_secret_that_looks_like_json_syntax_leaves_the_document_whole() -> None:
    data = {"stage": "final", "status": "ok", "bytes": 123456, "error": None}
    text = json.dumps(data, indent=2)
    for secret in ('"stage": ', '",\n  "', "123456", "null\n}", '{\n  "'):
        assert secret in text  # masking the serialised text would break the document here
        assert json.loads(json.dumps(redact_data(data, Redactor([secret])), indent=2)) == data, secret
