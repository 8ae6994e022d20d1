"""Incremental decoders for compressed bodies (``content-encoding``: gzip, deflate, br, zstd),
and a whole body decoded within a size limit, so a decompression bomb is never expanded."""

from __future__ import annotations

import zlib
from typing import Any


class Decoder:
    """An incremental decoder for a compressed body (``content-encoding``): feed it chunks as
    they arrive; ``finished`` says whether the compressed stream reached its own end."""

    def __init__(self, content_encoding: str) -> None:
        enc = content_encoding.strip().lower()
        self._obj: Any
        if enc in ("gzip", "x-gzip", "deflate"):
            self._obj = zlib.decompressobj(
                16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS
            )
        elif enc == "br":
            import brotli  # type: ignore[import-untyped]

            self._obj = brotli.Decompressor()
        elif enc == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                from backports import zstd  # type: ignore[no-redef,unused-ignore]
            self._obj = zstd.ZstdDecompressor()
        else:
            raise ValueError(f"unsupported content-encoding {content_encoding!r}")
        self._kind = "br" if enc == "br" else "zstd" if enc == "zstd" else "zlib"

    def feed(self, chunk: bytes, limit: int = -1) -> bytes:
        """The bytes ``chunk`` decodes to; with ``limit`` >= 0, at most about that many (the
        rest of a chunk that decodes to more is left undecoded)."""
        if self._kind == "br":
            return self._obj.process(
                chunk, **({"output_buffer_limit": max(limit, 1)} if limit >= 0 else {})
            )
        if self._kind == "zlib":
            return self._obj.decompress(chunk, max(limit, 0))  # 0: no limit
        return self._obj.decompress(chunk, max_length=limit)

    @property
    def finished(self) -> bool:
        return bool(self._obj.is_finished() if self._kind == "br" else self._obj.eof)


def decoder_for(content_encoding: str) -> Decoder | None:
    """A decoder for this ``content-encoding``, None for identity; ValueError if unknown."""
    if content_encoding.strip().lower() in ("", "identity"):
        return None
    return Decoder(content_encoding)


def decode_limited(raw: bytes, content_encoding: str, limit: int) -> bytes | None:
    """A whole body decoded, or None when it cannot be: an unknown or broken encoding, or more
    than ``limit`` bytes once decoded (a decompression bomb is never expanded in memory)."""
    try:
        decoder = decoder_for(content_encoding)
        if decoder is None:
            return raw
        out = decoder.feed(raw, limit + 1)
    except Exception:  # noqa: BLE001 - any decoding fault means: not decodable
        return None
    return out if len(out) <= limit else None
