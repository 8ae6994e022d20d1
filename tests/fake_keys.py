"""Fake keys in every known shape (``proxy_addon/redaction/shapes.py``), built at run time from
repeated filler so that no file holds a string a secret scanner would flag, and ordinary
strings that look a little like keys but are not.

The shapes come from the research notes on scanners' published rules (the README's Secrets
section names each source); the fakes follow the lengths and alphabets those rules state.
"""

from __future__ import annotations


def rep(pattern: str, n: int) -> str:
    """``pattern`` repeated and cut to ``n`` characters."""
    return (pattern * (n // len(pattern) + 1))[:n]


HEX = "0123456789abcdef"

# (what the proxy calls it, a fake): at least one for every shape
FAKES: list[tuple[str, str]] = [
    ("an Anthropic key", "sk-ant-api03-" + rep("TESTfake_0123-", 93) + "AA"),
    ("an Anthropic key", "sk-ant-admin01-" + rep("TESTfake_0123-", 93) + "AA"),
    ("an OpenRouter key", "sk-or-v1-" + rep(HEX, 64)),
    (
        "an OpenAI project, service or admin key",
        "sk-proj-TEST" + rep("FakeKey0123_-", 64) + "T3BlbkFJ" + rep("FakeKey0123_-", 74),
    ),
    ("a DeepSeek key", "sk-" + rep(HEX, 32)),
    ("an sk-... API key", "sk-test" + rep("FAKE0", 16) + "T3BlbkFJ" + rep("FAKE0", 20)),
    ("a Groq key", "gsk_" + rep("TESTfake0123", 52)),
    ("an xAI key", "xai-" + rep("TESTfake0123", 80)),
    ("a Perplexity key", "pplx-" + rep("TESTfake0123", 48)),
    ("a Replicate token", "r8_" + rep("TESTfake0123", 37)),
    ("an NVIDIA key", "nvapi-" + rep("TESTfake0123_-", 64)),
    ("a Together key", "tgp_v1_" + rep("TESTfake0123_-", 43)),
    ("a Fireworks key", "fw_" + rep("TESTfake0123", 24)),
    ("a Cerebras key", "csk-" + rep("testfake0123", 48)),
    ("a Google API key", "AIza" + rep("SyTESTfake0123_-", 35)),
    ("a Vertex AI express key", "AQ.Ab8R" + rep("TESTfake0123_-", 46)),
    ("a Google OAuth access token", "ya29." + rep("a0TESTfake0123_-", 120)),
    ("an OpenAI Realtime client secret", "ek_" + rep("TESTfake0123", 32)),
    ("a Google OAuth refresh token", "1//0" + rep("gTESTfake0123_-", 99)),
    ("a Google OAuth client secret", "GOCSPX-" + rep("TESTfake0123_-", 28)),
    ("a Hugging Face token", "hf_" + rep("TESTfakeTokenAbc", 34)),
    ("a Hugging Face organization token", "api_org_" + rep("TESTfakeTokenAbc", 34)),
    ("an AWS access key id", "AKIATESTFAKE00000000"),
    ("an AWS access key id", "ASIATESTFAKE00000000"),
    ("an AWS Bedrock API key", "ABSK" + rep("VEVTVGZha2Uw", 120)),
    (
        "an AWS Bedrock short-term API key",
        "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t" + rep("VEVTVGZha2Uw", 60),
    ),
    ("an AWS pre-signed URL's signature", "X-Amz-Signature=" + rep(HEX, 64)),
    ("an AWS pre-signed URL's session token", "X-Amz-Security-Token=" + rep("VEVTVGZh%2B", 200)),
    (
        "an Azure AI services key",
        rep("TESTfake0123", 52) + "JQQJ99" + "0A" + rep("TESTfake0123", 12) + "AAABACOGTEST",
    ),
    ("an Azure storage account key", "AccountKey=" + rep("VEVTVGZha2Uw+/", 86) + "=="),
    ("an Azure storage account key", rep("VEVTVGZha2Uw", 76) + "+ASt" + "TESTf" + "A=="),
    ("an Azure Entra client secret", "abc8Q~" + rep("TESTfake0123_~.-", 34)),
    (
        "an Azure SAS signature",
        "?sv=2024-11-04&sp=r&sig=" + rep("VEVTVGZha2Uw%2B", 40) + "%3D",
    ),
    ("a Slack token", "xoxb-1234567890-1234567890-" + rep("TESTfake0123", 24)),
    ("a Slack configuration token", "xoxe.xoxp-1-" + rep("TESTfake0123", 166)),
    ("a Slack session cookie", "xoxd-" + rep("TESTfake0123%2B", 120)),
    ("a Slack app token", "xapp-1-A0TESTFAKE0-1234567890123-" + rep(HEX, 64)),
    (
        "a Slack webhook",
        "https://hooks.slack.com/services/T00000000/B00000000/" + rep("TESTfake0123", 24),
    ),
    ("a GitHub token", "ghp_" + rep("TESTfake0123", 36)),
    (
        "a GitHub App installation token",
        "ghs_123456_eyJ"
        + rep("TESTfake0123", 40)
        + "."
        + rep("eyJ0ZXN0", 60)
        + "."
        + rep("TESTsig_-", 43),
    ),
    ("a GitHub token", "github_pat_" + rep("TESTfake0123", 22) + "_" + rep("TESTfake0123", 59)),
    ("a Stripe key", "sk_test_" + rep("TESTfake0123", 99)),
    ("a webhook signing secret", "whsec_" + rep("TESTfake0123", 32)),
    ("a LangSmith key", "lsv2_pt_" + rep(HEX, 32) + "_" + "0123456789"),
    ("a Pinecone key", "pcsk_TEST0_" + rep("TESTfake0123", 63)),
    ("a Weights & Biases key", "wandb_v1_" + rep("TESTfake0123_", 77)),
    ("an ElevenLabs key", "sk_" + rep(HEX, 48)),
    ("a Jina key", "jina_" + rep("TESTfake0123", 60)),
    ("a Tavily key", "tvly-dev-" + rep("TESTfake0123", 32)),
    ("a Firecrawl key", "fc-" + rep(HEX, 32)),
    ("a fal key", "00000000-0000-4000-8000-000000000000:" + rep(HEX, 32)),
    ("a RunPod key", "rpa_" + rep("TESTFAKE0123", 40) + "TESTfk"),
    ("a JSON web token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0." + rep("TESTsig_-", 43)),
    (
        "a private key",
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + rep("TESTfake0123+/", 64)
        + "\n-----END RSA PRIVATE KEY-----",
    ),
    ("a bearer token", "Bearer " + rep("TESTfake0123._~+/", 40)),
]

# Strings that must stay as they are: ids, hashes, model names, words
ORDINARY: list[str] = [
    "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "call_abc123XYZdef456GHI789jkl",
    "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b",
    "msg_01XFDUDYJgAACzvnptvVoYEL",
    "toolu_01A09q90qw90lq917835lq9",
    "req_011CSHoEeqs5C35K2UUqR7Fy",
    "file-abc123XYZdef456GHI789",
    "asst_abc123XYZdef456GHI789jkl",
    "org-AbCdEf0123456789abcdefgh",
    "proj_AbCdEf0123456789abcdefgh",
    "123e4567-e89b-12d3-a456-426614174000",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "gpt-4o-2024-08-06",
    "claude-3-5-sonnet-20241022",
    "task-list-manager-for-the-whole-team",
    "risk-assessment-for-the-whole-company-2024",
    "sk-learn",
    "xoxo-gossip-girl-forever-and-ever",
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "accounts/fireworks/models/llama-v3p1-8b-instruct",
    "pa-ge-title",
    "https://example.com/a/b?sig=short",
    "x = 1//0",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDw"
    "AChwGA60e6kgAAAABJRU5ErkJggg==",
    "tvly-",
    "ghs_",
]
