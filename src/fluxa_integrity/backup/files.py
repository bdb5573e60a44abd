"""Backup files: compression codecs, and writers that hash and size the bytes as they hit disk.

The file checksum is of the bytes on disk (compressed), so `verify` can check a file without
decompressing it; the content hash of a collection is of the raw BSON (see snapshot.py).

A zstd data file is written seekable: an independent frame every ``FRAME_BYTES`` of BSON, ended
on a document boundary, and a seek table after the last one in zstd's seekable format (a
skippable frame every zstd decoder passes over: `zstd -d` and other readers see the file as
before). A check's partition (checks/sources.py) then starts decompressing at a frame of the
middle instead of decompressing and throwing away everything before it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from ..errors import FluxaError

COMPRESSIONS = ("zstd", "gzip", "none")
SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
CHUNK = 1 << 20
#: BSON bytes per zstd frame of a seekable file: fine cuts for partitions, ratio barely changed
FRAME_BYTES = 1 << 20
_SKIPPABLE_MAGIC = 0x184D2A5E  # zstd skippable frame (the seek table's envelope)
_SEEKABLE_MAGIC = 0x8F92EAB1  # zstd seekable format's footer


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
    """Write (optionally compressed) bytes to ``path``; ``close()`` returns (sha256, size).

    ``documents=True`` promises that every ``write()`` is whole BSON documents: a zstd file is
    then cut into frames on those boundaries and gets a seek table (see the module's doc)."""

    def __init__(self, path: Path, compression: str, documents: bool = False):
        self.path = path
        self._raw = open(path, "wb")
        self._sink = _HashingSink(self._raw)
        self._frames: list[tuple[int, int]] | None = None  # (compressed, BSON) bytes per frame
        if compression == "zstd":
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._sink, closefd=False)
            if documents:
                self._frames, self._frame_at, self._frame_raw = [], 0, 0
        elif compression == "gzip":  # mtime=0: the same data gives the same file
            self._stream = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=6, mtime=0)
        else:
            self._stream = self._sink

    def write(self, data: bytes) -> None:
        self._stream.write(data)
        if self._frames is not None:
            self._frame_raw += len(data)
            if self._frame_raw >= FRAME_BYTES:
                self._end_frame()

    def _end_frame(self) -> None:
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._frames.append((self._sink.size - self._frame_at, self._frame_raw))
        self._frame_at, self._frame_raw = self._sink.size, 0

    def close(self) -> tuple[str, int]:
        if self._frames is not None and self._frame_raw:
            self._end_frame()
        if self._stream is not self._sink:
            self._stream.close()
        if self._frames is not None:
            if self._sink.size > self._frame_at:  # close() ends with an empty frame of its own
                self._frames.append((self._sink.size - self._frame_at, 0))
            self._sink.write(_seek_table(self._frames))
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


def _seek_table(frames: list[tuple[int, int]]) -> bytes:
    """zstd's seekable format: a skippable frame holding (compressed, decompressed) sizes per
    frame, then a footer (frame count, descriptor: no checksums, magic)."""
    body = b"".join(struct.pack("<II", c, d) for c, d in frames) + struct.pack("<IBI", len(frames), 0, _SEEKABLE_MAGIC)
    return struct.pack("<II", _SKIPPABLE_MAGIC, len(body)) + body


def seek_table(path: Path) -> list[tuple[int, int]] | None:
    """Where each frame of a seekable zstd file starts: ``[(file offset, BSON offset)]``, the
    last entry being the end of both; None when the file has no seek table or one that does not
    add up to the file (then a reader walks the stream, which names any damage it meets)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 17:
                return None
            f.seek(size - 9)
            count, desc, magic = struct.unpack("<IBI", f.read(9))
            entry = 12 if desc & 0x80 else 8
            table = 8 + count * entry + 9
            if magic != _SEEKABLE_MAGIC or desc & 0x7F or table > size:
                return None
            f.seek(size - table)
            head, length = struct.unpack("<II", f.read(8))
            body = f.read(count * entry)
    except OSError:
        return None
    if head != _SKIPPABLE_MAGIC or length != table - 8 or len(body) != count * entry:
        return None
    out, c_at, d_at = [], 0, 0
    for k in range(count):
        c, d = struct.unpack_from("<II", body, k * entry)
        out.append((c_at, d_at))
        c_at, d_at = c_at + c, d_at + d
    if c_at != size - table:
        return None
    out.append((c_at, d_at))
    return out


def open_decompressed(path: Path, compression: str, at: int = 0, stop: int | None = None) -> BinaryIO:
    """The decompressed stream of a file; ``at`` and ``stop``: file offsets where zstd frames
    start (from ``seek_table``), to read the frames between them only."""
    f = open(path, "rb")
    if at:
        f.seek(at)
    if compression == "zstd":
        return _ZstdFrames(f, None if stop is None else stop - at)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return f


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a file of zstd frames, one after another (skippable frames such
    as a seek table give none). Ending inside a frame is an EOFError, as gzip's reader does:
    zstandard's stream_reader would end the stream quietly there, and a truncated seekable file
    would then read as a shorter one ending on a document boundary."""

    def __init__(self, f: BinaryIO, limit: int | None = None):
        self.f, self.dctx, self.obj, self.left = f, zstandard.ZstdDecompressor(), None, limit
        self.piece, self.at, self.rest, self.done = b"", 0, b"", False

    def readable(self) -> bool:
        return True

    def _step(self) -> None:
        data, self.rest = self.rest or self._read(), b""
        if not data:
            if self.obj is not None:
                raise EOFError("the file ends inside a zstd frame (truncated)")
            self.done = True
            return
        if self.obj is None:
            self.obj = self.dctx.decompressobj()
        self.piece, self.at = self.obj.decompress(data), 0
        if self.obj.eof:  # the frame ended: what follows starts the next one
            self.rest, self.obj = self.obj.unused_data, None

    def _read(self) -> bytes:
        if self.left is None:
            return self.f.read(CHUNK)
        data = self.f.read(min(CHUNK, self.left))
        self.left -= len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer is not the end: b"" is), or all that is left."""
        if n < 0:
            out = [self.piece[self.at:]]
            while not self.done:
                self._step()
                out.append(self.piece)
            self.piece, self.at = b"", 0
            return b"".join(out)
        while self.at >= len(self.piece) and not self.done:
            self._step()
        got = self.piece[self.at:self.at + n]
        self.at += len(got)
        return got

    def close(self) -> None:
        self.f.close()
        super().close()


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
