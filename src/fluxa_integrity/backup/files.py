"""Backup files: compression codecs, and writers that hash and size the bytes as they hit disk.

The file checksum is of the bytes on disk (compressed), so `verify` can check a file without
decompressing it; the content hash of a collection is of the raw BSON (see snapshot.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from ..errors import FluxaError

COMPRESSIONS = ("zstd", "gzip", "none")
SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
CHUNK = 1 << 20


def check_compression(name: str) -> str:
    if name not in COMPRESSIONS:
        raise FluxaError(f"unknown compression {name!r}",
                         "use zstd (default), gzip (mongorestore --gzip can read it) or none")
    return name


class _HashingSink(io.RawIOBase):
    """A file that keeps the sha256 and size of everything written to it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.f.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


class HashedWriter:
    """Write (optionally compressed) bytes to ``path``; ``close()`` returns (sha256, size)."""

    def __init__(self, path: Path, compression: str):
        self.path = path
        self._raw = open(path, "wb")
        self._sink = _HashingSink(self._raw)
        if compression == "zstd":
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._sink, closefd=False)
        elif compression == "gzip":  # mtime=0: the same data gives the same file
            self._stream = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=6, mtime=0)
        else:
            self._stream = self._sink

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def close(self) -> tuple[str, int]:
        if self._stream is not self._sink:
            self._stream.close()
        self._raw.flush()
        self._raw.close()
        return self._sink.sha.hexdigest(), self._sink.size

    def abort(self) -> None:
        """Close without finishing (after a failed write, e.g. a full disk) and delete the file."""
        try:
            self._raw.close()  # may fail flushing what is buffered: the file goes anyway
        except OSError:
            pass
        finally:
            self.path.unlink(missing_ok=True)


def open_decompressed(path: Path, compression: str) -> BinaryIO:
    f = open(path, "rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


def iter_raw_documents(path: Path, compression: str) -> Iterator[bytes]:
    """The raw BSON documents of a .bson file (mongodump format: documents back to back)."""
    buf = bytearray()
    pos = 0
    with open_decompressed(path, compression) as f:
        while True:
            chunk = f.read(CHUNK)
            if chunk:
                buf += chunk
            while len(buf) - pos >= 4:
                n = int.from_bytes(buf[pos:pos + 4], "little")
                if n < 5:
                    raise FluxaError(f"{path}: corrupt BSON (document length {n} at byte {pos})",
                                     "the file is damaged; use another backup")
                if len(buf) - pos < n:
                    break
                yield bytes(buf[pos:pos + n])
                pos += n
            if not chunk:
                if pos != len(buf):
                    raise FluxaError(f"{path}: truncated BSON ({len(buf) - pos} trailing bytes)",
                                     "the file is damaged; use another backup")
                return
            if pos > CHUNK:  # keep memory flat: drop what was consumed
                del buf[:pos]
                pos = 0


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
