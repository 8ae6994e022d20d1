"""Key shapes: the well-known formats of API keys and tokens, found in any string by their form
alone (the third layer of ``secret_rules``).

Each shape needs its prefix (or a fixed marker) and a length, so ordinary ids (``chatcmpl-…``,
``call_…``, ``resp_…``, uuids, hashes, model names) are left alone. The formats were learnt from
the published rules of gitleaks, betterleaks, TruffleHog, detect-secrets, Nosey Parker,
Kingfisher, OSV-SCALIBR and Microsoft's security-utilities, and from GitHub's list of supported
secret types (``source`` names them; the README's Secrets section lists them); the patterns are
our own. Every pattern is valid for both Python's ``re`` and RE2, which scans for all of them at
once. Keys with no shape of their own (Cohere, Mistral, AWS secret keys, …) are found by name
and by value, not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shape:
    """One key format. ``pattern`` matches the key; ``keep`` (a pattern) the text before it that
    stays (the word ``Bearer``, a parameter's name); ``loose`` what the one RE2 scan of raw
    bytes looks for instead of the pattern, where a marker is both cheaper and looser (a yes
    only costs a walk); by default the pattern without its word boundaries."""

    what: str
    provider: str
    source: str
    pattern: str
    keep: str = ""
    loose: str | None = None


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# Where two shapes match at one place, the first one listed names it: the specific ``sk-``
# forms come before the generic one.
SHAPES: tuple[Shape, ...] = (
    Shape(
        "an Anthropic key",
        "Anthropic",
        "gitleaks anthropic-api-key, anthropic-admin-api-key; Kingfisher kingfisher.anthropic",
        r"\bsk-ant-(?:api|admin|oat|ort|sid)[0-9]{2}-[A-Za-z0-9_-]{40,}",
    ),
    Shape(
        "an OpenRouter key",
        "OpenRouter",
        "TruffleHog openrouter; betterleaks openrouter-api-key",
        r"\bsk-or-v[0-9]+-[0-9a-f]{64}",
    ),
    Shape(
        "an OpenAI project, service or admin key",
        "OpenAI",
        "gitleaks openai-api-key; TruffleHog openai, openaiadmin",
        r"\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,}",
    ),
    Shape(
        "a DeepSeek key",
        "DeepSeek",
        "Kingfisher kingfisher.deepseek.1; TruffleHog deepseek",
        r"\bsk-[0-9a-f]{32}\b",
    ),
    Shape(
        "an sk-... API key",
        "OpenAI (legacy, test keys), Kimi, Stability, MiniMax, Langfuse",
        "detect-secrets OpenAIDetector; Kingfisher kingfisher.openai.1",
        r"\bsk-[A-Za-z0-9_-]{16,}",
    ),
    Shape(
        "a Groq key", "Groq", "TruffleHog groq; Nosey Parker np.groq.1", r"\bgsk_[A-Za-z0-9]{50,}"
    ),
    Shape(
        "an xAI key",
        "xAI",
        "TruffleHog xai; betterleaks xai-api-key; OSV-SCALIBR grokxaiapikey",
        r"\bxai-[A-Za-z0-9_-]{70,}",
    ),
    Shape(
        "a Perplexity key",
        "Perplexity",
        "gitleaks perplexity-api-key; OSV-SCALIBR perplexityapikey",
        r"\bpplx-[A-Za-z0-9]{48,}",
    ),
    Shape(
        "a Replicate token",
        "Replicate",
        "TruffleHog replicate; betterleaks replicate-api-token",
        r"\br8_[A-Za-z0-9_-]{37,}",
    ),
    Shape(
        "an NVIDIA key",
        "NVIDIA",
        "TruffleHog nvapi; betterleaks nvidia-api-key",
        r"\bnvapi-[A-Za-z0-9_-]{60,}",
    ),
    Shape(
        "a Together key",
        "Together AI",
        "betterleaks togetherai-api-key",
        r"\btgp_v1_[A-Za-z0-9_-]{43,}",
    ),
    Shape(
        "a Fireworks key",
        "Fireworks AI",
        "no scanner rule (GitGuardian: unprefixed); community redaction code: fw_",
        r"\bfw_[A-Za-z0-9]{24,}",
    ),
    Shape("a Cerebras key", "Cerebras", "betterleaks cerebras-api-key", r"\bcsk-[a-z0-9]{48,}"),
    Shape(
        "a Google API key",
        "Google (Gemini, Cloud)",
        "gitleaks gcp-api-key; Nosey Parker np.google.5; OSV-SCALIBR gcpapikey",
        r"\bAIza[0-9A-Za-z_-]{35}",
    ),
    Shape(
        "a Vertex AI express key",
        "Google (Vertex AI)",
        "OSV-SCALIBR gcpexpressmode",
        r"\bAQ\.Ab8R[A-Za-z0-9_-]{46,}",
    ),
    Shape(
        "a Google OAuth access token",
        "Google OAuth",
        "TruffleHog googleoauth2; Nosey Parker np.google.4; OSV-SCALIBR gcpoauth2access",
        r"\bya29\.[A-Za-z0-9_-]{20,}",
    ),
    Shape(
        "an OpenAI Realtime client secret",
        "OpenAI",
        'the openai SDK\'s client_secrets docstring ("looks like `ek_1234`"); the length is ours',
        r"\bek_[A-Za-z0-9]{20,}",
    ),
    Shape(
        "a Google OAuth refresh token",
        "Google OAuth",
        "GitHub google_oauth_refresh_token (no pattern published); scanners' examples",
        r"\b1//0[A-Za-z0-9_-]{40,}",
    ),
    Shape(
        "a Google OAuth client secret",
        "Google OAuth",
        "Nosey Parker np.google.2; OSV-SCALIBR gcpoauth2client",
        r"\bGOCSPX-[A-Za-z0-9_-]{28}",
    ),
    Shape(
        "a Hugging Face token",
        "Hugging Face",
        "gitleaks huggingface-access-token; TruffleHog huggingface",
        r"\bhf_[A-Za-z0-9]{30,}",
    ),
    Shape(
        "a Hugging Face organization token",
        "Hugging Face",
        "gitleaks huggingface-organization-api-token",
        r"\bapi_org_[A-Za-z0-9]{34,}",
    ),
    Shape(
        "an AWS access key id",
        "AWS",
        "gitleaks aws-access-token; detect-secrets AWSKeyDetector; TruffleHog aws",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
    ),
    Shape(
        "an AWS Bedrock API key",
        "AWS (Bedrock)",
        "gitleaks aws-amazon-bedrock-api-key-long-lived",
        r"\bABSK[A-Za-z0-9+/]{109,}={0,2}",
    ),
    Shape(
        "an AWS Bedrock short-term API key",
        "AWS (Bedrock)",
        "gitleaks aws-amazon-bedrock-api-key-short-lived",
        r"\bbedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t[A-Za-z0-9+/=%_-]*",
    ),
    Shape(
        "an AWS pre-signed URL's signature",
        "AWS (SigV4)",
        "AWS SigV4 query authentication (X-Amz-Signature)",
        r"[0-9a-f]{64}",
        keep=r"(?i:x-amz-signature)=",
    ),
    Shape(
        "an AWS pre-signed URL's session token",
        "AWS (SigV4, STS)",
        "AWS SigV4 query authentication (X-Amz-Security-Token)",
        r"[A-Za-z0-9%+/=_-]{16,}",
        keep=r"(?i:x-amz-security-token)=",
    ),
    Shape(
        "an Azure AI services key",
        "Azure (OpenAI, AI services)",
        "Microsoft security-utilities SEC101/200, SEC101/206",
        r"\b[A-Za-z0-9]{52}JQQJ9[9DH][A-Za-z0-9][A-L][A-Za-z0-9]{16}[A-Za-z][A-Za-z0-9]{7}\b",
        loose=r"JQQJ9[9DH]",
    ),
    Shape(
        "an Azure storage account key",
        "Azure (Storage)",
        "detect-secrets AzureStorageKeyDetector; betterleaks azure-storage-account-key",
        r"[A-Za-z0-9+/]{86}==",
        keep=r"(?i:AccountKey)=",
    ),
    Shape(
        "an Azure storage account key",
        "Azure (Storage)",
        "Microsoft security-utilities SEC101/152",
        r"[A-Za-z0-9+/]{76}\+ASt[A-Za-z0-9+/]{5}[AQgw]==",
        loose=r"\+ASt[A-Za-z0-9+/]{5}[AQgw]==",
    ),
    Shape(
        "an Azure Entra client secret",
        "Azure (Entra ID)",
        "gitleaks azure-ad-client-secret; Microsoft security-utilities SEC101/156",
        r"\b[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
        loose=r"[0-9]Q~",
    ),
    Shape(
        "an Azure SAS signature",
        "Azure (SAS)",
        "TruffleHog azuresastoken; GitHub azure_sas_token",
        r"[A-Za-z0-9%+/=]{40,}",
        keep=r"[?&]sig=",
    ),
    Shape(
        "a Slack token",
        "Slack",
        "gitleaks slack-*-token; TruffleHog slack; detect-secrets SlackDetector",
        r"\bxox[abceoprs]-[0-9][A-Za-z0-9-]{10,}",
    ),
    Shape(
        "a Slack configuration token",
        "Slack",
        "gitleaks slack-config-access-token; OSV-SCALIBR slacktoken",
        r"\bxoxe\.xox[bp]-[0-9]-[A-Za-z0-9]{140,}",
    ),
    Shape(
        "a Slack session cookie",
        "Slack",
        "betterleaks slack-session-cookie",
        r"\bxoxd-[A-Za-z0-9%/+_=-]{40,}",
    ),
    Shape(
        "a Slack app token",
        "Slack",
        "gitleaks slack-app-token; OSV-SCALIBR slacktoken",
        r"\bxapp-[0-9]{1,10}-[A-Za-z0-9]{8,}-[0-9]{8,}-[A-Za-z0-9]{32,}",
    ),
    Shape(
        "a Slack webhook",
        "Slack",
        "gitleaks slack-webhook-url; TruffleHog slackwebhook",
        r"[A-Za-z0-9/+_-]{40,}",
        keep=r"hooks\.slack\.com/(?:services|workflows|triggers)/",
    ),
    Shape(
        "a GitHub token",
        "GitHub",
        "gitleaks github-pat, github-oauth, github-app-token; detect-secrets GitHubTokenDetector",
        r"\bgh[pousr]_[A-Za-z0-9]{36,}",
    ),
    Shape(
        "a GitHub App installation token",
        "GitHub",
        "GitHub changelog 2026-04-24 (ghs_<app id>_<JWT>)",
        r"\bghs_[0-9]+_[A-Za-z0-9._-]{36,}",
    ),
    Shape(
        "a GitHub token",
        "GitHub",
        "gitleaks github-fine-grained-pat",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    ),
    Shape(
        "a Stripe key",
        "Stripe",
        "gitleaks stripe-access-token; detect-secrets StripeDetector",
        r"\b[rs]k_(?:live|test|prod)_[A-Za-z0-9]{10,}",
    ),
    Shape(
        "a webhook signing secret",
        "Stripe (and Svix)",
        "OSV-SCALIBR stripeapikeys",
        r"\bwhsec_[A-Za-z0-9+/=]{32,}",
    ),
    Shape(
        "a LangSmith key",
        "LangSmith",
        "TruffleHog langsmith; betterleaks langchain-langsmith-*",
        r"\blsv2_(?:pt|sk)_[0-9a-f]{32}_[0-9a-f]{10}\b",
    ),
    Shape(
        "a Pinecone key",
        "Pinecone",
        "TruffleHog pinecone; betterleaks pinecone-api-key",
        r"\bpcsk_[A-Za-z0-9]{5,6}_[A-Za-z0-9]{63}\b",
    ),
    Shape(
        "a Weights & Biases key",
        "Weights & Biases",
        "betterleaks weights-and-biases-api-key-v1",
        r"\bwandb_v1_[A-Za-z0-9_]{77}",
    ),
    Shape("an ElevenLabs key", "ElevenLabs", "TruffleHog elevenlabs", r"\bsk_[0-9a-f]{48}\b"),
    Shape("a Jina key", "Jina AI", "Nosey Parker np.jina.1", r"\bjina_[A-Za-z0-9]{60}\b"),
    Shape(
        "a Tavily key",
        "Tavily",
        "Nosey Parker np.tavily.1; Kingfisher kingfisher.tavily.1",
        r"\btvly-(?:dev-)?[A-Za-z0-9]{32}\b",
    ),
    Shape("a Firecrawl key", "Firecrawl", "Nosey Parker np.firecrawl.1", r"\bfc-[0-9a-f]{32}\b"),
    Shape("a fal key", "fal.ai", "Kingfisher kingfisher.falai.1", rf"\b{_UUID}:[0-9a-f]{{32}}\b"),
    Shape(
        "a RunPod key",
        "RunPod",
        "betterleaks runpod-api-key",
        r"\brpa_[A-Z0-9]{40}[A-Za-z0-9]{6}",
    ),
    Shape(
        "a JSON web token",
        "any (OAuth, Entra ID, Realtime client secrets)",
        "gitleaks jwt; detect-secrets JwtTokenDetector",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ),
    Shape(
        "a private key",
        "any (PEM)",
        "gitleaks private-key; detect-secrets PrivateKeyDetector",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        # its whitespace written in any of its encoded forms
        loose=r"PRIVATE(?:\s|\\[nrt]|\+|%20)KEY",
    ),
    Shape(
        "a bearer token",
        "any",
        "ours: the credential after the word Bearer",
        r"[A-Za-z0-9._~+/=-]{16,}",
        keep=r"\b[Bb]earer\s+",
        loose=r"[Bb]earer(?:\s|\\[nrt]|\+|%20|%09)",
    ),
)


def loose(shape: Shape) -> str:
    """What the one scan of raw bytes looks for: no word boundary, which an escape such as
    JSON's ``\\nsk-...`` hides."""
    if shape.loose is not None:
        return shape.loose
    return (shape.keep + shape.pattern).replace(r"\b", "")
