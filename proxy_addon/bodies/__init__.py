"""What bodies and streams hold: SSE / NDJSON splitting and framing, content decoding, the live
taps, multipart uploads, WebSocket messages, and what the user saw (``reassemble``).
"""
