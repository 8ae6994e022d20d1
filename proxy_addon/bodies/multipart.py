"""multipart/form-data bodies as their fields: values for fields, a SHA-256 per uploaded file.

Uploads are identified by their content, never by the random boundary, so the same file sent
twice matches, and the file bytes themselves need not be stored.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from typing import Any


def fields(content_type: str, raw: bytes) -> list[dict[str, Any]] | None:
    """The parts of a multipart body in order, or None when it is not one."""
    if not raw or "boundary=" not in content_type:
        return None
    try:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
    except (ValueError, TypeError, UnicodeError):
        return None
    if not msg.is_multipart():
        return None
    parts: list[dict[str, Any]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = b""
        filename = part.get_filename()
        if filename is None and part.get_content_maintype() == "text":
            parts.append({"name": name, "value": payload.decode("utf-8", "replace")})
        else:
            parts.append(
                {
                    "name": name,
                    "filename": filename,
                    "content_type": part.get_content_type(),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                    "size": len(payload),
                }
            )
    return parts
