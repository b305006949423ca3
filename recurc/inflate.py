"""Bounded decompression of artifacts: a damaged or hostile stream is one SpecError, and no stream
inflates past a limit the caller computes from what the artifact can hold (a zlib bomb of 2 GiB
stops after `limit` bytes instead of filling memory)."""
from __future__ import annotations

import io
import lzma
import zlib

from .errors import SpecError


def _too_big(name: str, limit: int) -> SpecError:
    return SpecError(f"the artifact's {name} stream inflates past {limit:,} bytes, more than its model can hold",
                     hint="the artifact is damaged or was not written for this spec")


def _damaged(name: str, why: str) -> SpecError:
    return SpecError(f"the artifact is damaged: not a complete {name} stream ({why})",
                     hint="re-export it; an artifact is read with the spec it was written for")


def inflate(blob: bytes, name: str, limit: int) -> bytes:
    """Decompress `blob` (zlib, lzma, zstd, brotli or none) to at most `limit` bytes."""
    if name in ("none", None):
        if len(blob) > limit:
            raise _too_big("raw", limit)
        return bytes(blob)
    try:
        if name == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(blob, limit + 1)
            if len(out) > limit:
                raise _too_big(name, limit)
            if not d.eof:
                raise _damaged(name, "it ends early")
            return out
        if name == "lzma":
            d = lzma.LZMADecompressor()
            out = d.decompress(blob, max_length=limit + 1)
            if len(out) > limit:
                raise _too_big(name, limit)
            if not d.eof:
                raise _damaged(name, "it ends early")
            return out
        if name == "zstd":
            import zstandard
            # a reader, not decompress(): the frame header's content size is the attacker's to choose
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True) as r:
                out = r.read(limit + 1)
            if len(out) > limit:
                raise _too_big(name, limit)
            if not out and blob:
                raise _damaged(name, "no data")
            return out
        if name == "brotli":
            import brotli
            d = brotli.Decompressor()
            out = d.process(blob, output_buffer_limit=limit + 1)
            if len(out) > limit:
                raise _too_big(name, limit)
            if not d.is_finished():
                raise _damaged(name, "it ends early")
            return out
    except SpecError:
        raise
    except MemoryError:
        raise _too_big(name, limit) from None
    except Exception as exc:       # zlib.error, LZMAError, ZstdError, brotli.error
        raise _damaged(name, (str(exc).splitlines() or [type(exc).__name__])[0][:120]) from None
    raise SpecError(f"unknown compressor {name!r}")
