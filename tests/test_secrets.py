from __future__ import annotations

import json
import time

from dockercache.secrets import MASK, MIN_LENGTH, Redactor, redact_data, secret_values, shorten


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


# ------------------------------------------------------------------------------- what a cut leaves of a secret

SECRET = "apikeySECRET456xyzQ9wLmN3pR7tV2bC8dF0gH"  # 40 characters, none of its windows an ordinary word
WIDTHS = (40, 80, 110, 120)


def leaks(secret: str, text: str) -> list[str]:
    """The pieces of ``secret`` of MIN_LENGTH characters or more that ``text`` shows (none, when masked well)."""
    windows = (secret[i : i + MIN_LENGTH] for i in range(len(secret) - MIN_LENGTH + 1))
    return [window for window in windows if window in text]  # a longer piece shows one of these


def straddling(width: int, secret: str = SECRET) -> list[str]:
    """Lines with ``secret`` at every offset around ``width``: wholly before a cut there, across it at each of its
    characters, wholly after it; long enough to be cut there even once the secret is masked."""
    lines = []
    for start in range(max(0, width - len(secret) - 4), width + 2):
        head = ("padding " * 40)[:start]
        lines.append(f"{head}{secret} and the rest of the line, {'tail ' * 12}")
    return lines


def test_the_head_of_a_secret_that_a_cut_left_is_masked() -> None:
    redact = Redactor([SECRET])
    for kept in range(MIN_LENGTH, len(SECRET)):
        head = SECRET[:kept]
        for text in (f"RUN echo {head}...", f"RUN echo {head}…", f"RUN echo {head}", f"echo {head}\nnext line"):
            assert leaks(SECRET, redact(text)) == [], text
        assert redact(f"RUN echo {head}...") == f"RUN echo {MASK}..."
        assert redact(f"echo {head}\r\nnext {head}") == f"echo {MASK}\r\nnext {MASK}"


def test_the_tail_of_a_secret_where_a_cut_started_the_text_is_masked() -> None:
    """A value wrapped across two lines, or a name cut from the left, starts a line with the secret's last part."""
    redact = Redactor([SECRET])
    for kept in range(MIN_LENGTH, len(SECRET)):
        tail = SECRET[-kept:]
        for text in (f"...{tail} rest", f"…{tail} rest", f"{tail} rest", f"first line\n{tail} rest"):
            assert leaks(SECRET, redact(text)) == [], text
        head = MASK if len(SECRET) - kept >= MIN_LENGTH else SECRET[:-kept]  # five characters are no secret
        assert redact(f"token {SECRET[:-kept]}\n{tail} refused") == f"token {head}\n{MASK} refused"
    assert redact(f"{SECRET[-5:]} and {SECRET[-12:]} mid-line") == f"{SECRET[-5:]} and {SECRET[-12:]} mid-line"


def test_a_cut_that_leaves_less_than_six_characters_and_ordinary_words_are_left_alone() -> None:
    """Five characters or fewer of a secret are not one (``MIN_LENGTH``); nor is its head in the middle of a line,
    where no cut made it."""
    redact = Redactor(["mainline-deploy-key-9f3e", SECRET])
    for text in ("branch main...", "branch main", "mainl...", "the main line...", "apike…", "x apikeySEC and so on"):
        assert redact(text) == text


def test_a_secret_whose_head_repeats_in_a_line_is_masked_only_where_a_cut_ends_it() -> None:
    redact = Redactor([SECRET])
    text = f"apikeys: apikeySECRET x, {SECRET}, apikeySECRET45..."
    assert redact(text) == f"apikeys: apikeySECRET x, {MASK}, {MASK}..."


def test_every_line_of_a_secret_of_several_lines_is_masked_on_its_own() -> None:
    """A key file printed line by line (a step's output, the first line of an error) shows it one line at a time."""
    key = "-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END TEST KEY-----\n"
    redact = Redactor([key])
    for line in key.splitlines():
        assert redact(f"    {line}") == f"    {MASK}"
    assert redact(f"error: {key.splitlines()[0]}\nand more") == f"error: {MASK}\nand more"


def test_shorten_masks_then_cuts_whatever_the_width_and_the_secrets_offset() -> None:
    redact = Redactor([SECRET])
    for width in WIDTHS:
        for line in straddling(width):
            short = shorten(line, width, redact)
            assert len(short) <= width and leaks(SECRET, short) == [], (width, line)
            # Text cut by someone else (cut first, masked after) is caught by the head-at-a-cut rule.
            assert leaks(SECRET, redact(shorten(line, width, str))) == [], (width, line)
    assert shorten("a" * 50, 10, str) == "aaaaaaa..." and shorten("abc", 10, str) == "abc"
    assert shorten("abcdef", 2, str) == "ab"


def test_cut_masking_stays_cheap_on_long_lines() -> None:
    """The redactor runs on every progress line: a few secrets, lines of a few KB."""
    redact = Redactor([SECRET, "another-secret-value-77", "third/Secret+Value=="])
    lines = ["  DONE 1.1s [base 2/4] RUN echo " + "padding " * 500, "apikey... " * 400, SECRET[:20] * 200]
    started = time.perf_counter()
    for _ in range(200):
        for line in lines:
            redact(line)
    assert time.perf_counter() - started < 5.0  # about 0.5 s on a loaded CI machine; quadratic work takes minutes
