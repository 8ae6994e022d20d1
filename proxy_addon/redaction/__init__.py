"""Secrets: what counts as one (``secret_rules``) and the one redaction step over a recording
(``redact``).
"""
