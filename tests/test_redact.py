"""Secrets: which headers, parameters and fields, and how they are replaced."""

from proxy_addon import redact

KEY = "sk-test-abc123"


def test_request_headers_keep_what_matters_and_mark_secrets():
    headers = [("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json"),
               ("X-Api-Key", KEY), ("api-key", KEY), ("x-goog-api-key", KEY), ("Cookie", KEY),
               ("User-Agent", "OpenAI/Python"), ("x-stainless-os", "Linux"),
               ("anthropic-version", "2023-06-01"), ("x-team-token", KEY)]
    out = redact.request_headers_for_cassette(headers, extra_secret=["X-Team-Token"])
    assert out == {"anthropic-version": "2023-06-01", "api-key": "<redacted>",
                   "authorization": "<redacted>", "content-type": "application/json",
                   "cookie": "<redacted>", "x-api-key": "<redacted>",
                   "x-goog-api-key": "<redacted>", "x-team-token": "<redacted>"}


def test_response_headers_drop_transport_and_secrets_keep_order_and_repeats():
    headers = [("content-type", "application/json"), ("content-length", "10"),
               ("content-encoding", "gzip"), ("set-cookie", "a=1"), ("set-cookie", "b=2"),
               ("x-ratelimit-remaining-requests", "0"), ("retry-after", "7")]
    assert redact.response_headers_for_cassette(headers) == [
        ["content-type", "application/json"], ["set-cookie", "<redacted>"],
        ["set-cookie", "<redacted>"], ["x-ratelimit-remaining-requests", "0"], ["retry-after", "7"]]


def test_url_secrets_and_userinfo_removed():
    url = f"https://user:{KEY}@generativelanguage.googleapis.com/v1/m:streamGenerateContent?alt=sse&key={KEY}"
    out = redact.redact_url(url)
    assert KEY not in out
    assert out == "https://generativelanguage.googleapis.com/v1/m:streamGenerateContent?alt=sse&key=<redacted>"
    assert redact.redact_url("https://api.openai.com/v1/models") == "https://api.openai.com/v1/models"


def test_body_and_form_secrets():
    body = {"api_key": KEY, "query": "weather"}
    assert redact.redact_body(body) == {"api_key": "<redacted>", "query": "weather"}
    assert body["api_key"] == KEY  # the live request is not modified
    assert redact.redact_form(f"q=x&api_key={KEY}") == "q=x&api_key=<redacted>"
    assert redact.redact_form("q=x") == "q=x"
