"""Reading values out of documents: dotted paths, BSON type names, hashes for compact key sets.

Hashes come one at a time (``key_hash``) or a column at a time (``key_hashes``, numpy int64),
with equal results: the scan hashes a batch's columns, other code single values, and their key
sets meet. Dates become epoch milliseconds a column at a time too (``dates_ms``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from operator import attrgetter

import numpy as np
from bson import Decimal128, Int64, ObjectId, Timestamp
from bson.binary import Binary
from bson.regex import Regex
from bson.tz_util import FixedOffset


class _Missing:
    """The type of MISSING: its own class, so a column's set of types tells absent values apart."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # a field that is absent, as distinct from a field holding null
MissingType = _Missing
NONE = np.iinfo(np.int64).min  # "no value" in an int64 column (never a hash: hashes are >= 0)


def get_path(doc: dict, path: str):
    """Value at a dotted path, or MISSING. Arrays are not traversed (a path names one value)."""
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def bson_type(value) -> str:
    """The $type alias of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, (Decimal128, Decimal)):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, (bytes, Binary)):
        return "binData"
    if isinstance(value, Regex):
        return "regex"
    return type(value).__name__


NUMBER_TYPES = {"int", "long", "double", "decimal"}


def type_matches(value, allowed: list[str]) -> bool:
    t = bson_type(value)
    return t in allowed or ("number" in allowed and t in NUMBER_TYPES)


_M64 = (1 << 64) - 1
_C1, _C2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3's 64-bit finaliser
_SEED = 0x9E3779B97F4A7C15
_OID = np.dtype([("a", "<u8"), ("b", "<u4")])  # an ObjectId's 12 bytes as 8 + 4
_oid_bytes = ObjectId.binary.fget


def _slot_reader():
    """ObjectId keeps its 12 bytes in a slot: reading it with attrgetter is a C call, where the
    ``binary`` property is a Python one (a third of the cost of hashing a column). Used only
    when this pymongo's slot holds exactly what ``binary`` returns."""
    get = attrgetter("_ObjectId__id")
    probe = ObjectId()
    try:
        return get if get(probe) == probe.binary and type(get(probe)) is bytes else _oid_bytes
    except AttributeError:
        return _oid_bytes


_oid_bytes = _slot_reader()


def _fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * _C1) & _M64
    x ^= x >> 33
    x = (x * _C2) & _M64
    return x ^ (x >> 33)


def _fmix_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x *= np.uint64(_C1)  # uint64 arrays wrap: the same arithmetic as _fmix's & _M64
    x ^= x >> np.uint64(33)
    x *= np.uint64(_C2)
    return x ^ (x >> np.uint64(33))


def _oid_hash(raw: bytes) -> int:
    a, b = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
    return _fmix(a ^ _fmix(b ^ _SEED)) >> 1


_DATE_TAG = 0xD47E_0000_0000_0D47  # keeps a date's mix apart from an ObjectId's


def _date_hash(ms: int) -> int:
    return _fmix(_fmix((ms & _M64) ^ _DATE_TAG)) >> 1


def date_hashes(ms: np.ndarray) -> np.ndarray:
    """key_hash of each date of a column, from its epoch ms (``dates_ms``), as ``_date_hash``."""
    with np.errstate(over="ignore"):
        x = ms.astype(np.int64).view(np.uint64) ^ np.uint64(_DATE_TAG)
        return (_fmix_np(_fmix_np(x)) >> np.uint64(1)).view(np.int64)


def oid_hashes(raw: bytes) -> np.ndarray:
    """key_hash of each ObjectId in ``raw``, their 12-byte binaries back to back."""
    cols = np.frombuffer(raw, dtype=_OID)
    with np.errstate(over="ignore"):
        x = cols["a"] ^ _fmix_np(cols["b"].astype(np.uint64) ^ np.uint64(_SEED))
        return (_fmix_np(x) >> np.uint64(1)).view(np.int64)


def key_hash(value) -> int:
    """A 63-bit hash of a BSON value, stable across processes (Python's hash() is salted).

    Equal values hash equal; distinct values collide with probability ~2**-63 per pair, which
    could hide one dangling reference in a set of billions - accepted for an 8-byte key.
    ObjectIds, the ids of nearly every reference, are mixed arithmetically (MurmurHash3's
    finaliser over their two words, ``oid_hashes`` does it for a column in numpy: ~50x cheaper
    per id than a BLAKE2b call), and so are dates (their epoch ms: equal instants hash equal,
    whatever the tzinfo a client decoded them with); every other type goes through BLAKE2b. The mix is not a
    cryptographic hash: ids crafted to collide could hide a reference, which nobody writing
    an application's ids has reason to do.
    """
    if isinstance(value, ObjectId):
        return _oid_hash(value.binary)
    if isinstance(value, datetime):  # the instant, as MongoDB compares dates (a column: date_hashes)
        return _date_hash(_to_ms(value))
    if isinstance(value, str):
        raw = b"s" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bool):
        raw = b"b1" if value else b"b0"
    elif isinstance(value, int):
        raw = b"i" + str(value).encode()
    elif isinstance(value, float) and value.is_integer():
        raw = b"i" + str(int(value)).encode()  # 3.0 matches 3 as MongoDB compares them
    else:
        raw = b"x" + type(value).__name__.encode() + repr(value).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") >> 1


def key_hashes(values: list) -> np.ndarray:
    """``key_hash`` of every value, as an int64 array: ObjectIds vectorised, the rest one by one."""
    n = len(values)
    kinds = set(map(type, values))
    if n and kinds == {ObjectId}:
        return oid_hashes(b"".join(map(_oid_bytes, values)))
    if n and kinds == {datetime}:
        return date_hashes(dates_ms(values))
    out = np.empty(n, dtype=np.int64)
    oids = [i for i, v in enumerate(values) if type(v) is ObjectId]
    if oids:
        out[oids] = oid_hashes(b"".join([values[i].binary for i in oids]))
    if len(oids) < n:
        rest = set(oids)
        for i, v in enumerate(values):
            if i not in rest:
                out[i] = key_hash(v)
    return out


_UTC = timezone.utc
_tzinfo = attrgetter("tzinfo")


def dates_ms(values: list) -> np.ndarray:
    """Epoch milliseconds of each value that is a date, NONE for every other value.

    A column of dates sharing one fixed-offset tzinfo (what a client decodes: bson's utc) or
    none (naive, taken as UTC as ``facts.to_ms`` takes it) is subtracted from an epoch in that
    same tzinfo - plain arithmetic, where ``datetime.timestamp`` calls the tzinfo's Python
    ``utcoffset`` per value. Dates decoded from BSON hold whole milliseconds, so rounding the
    float seconds is exact (its error stays under 0.001 ms up to year 9999)."""
    n = len(values)
    if n and set(map(type, values)) == {datetime}:
        tzs = set(map(_tzinfo, values))
        tz = tzs.pop() if len(tzs) == 1 else False
        if tz is None or isinstance(tz, (timezone, FixedOffset)):
            epoch = _EPOCH_NAIVE if tz is None else (_EPOCH + tz.utcoffset(None)).replace(tzinfo=tz)
            secs = np.fromiter(map(_total_seconds, map(epoch.__rsub__, values)), dtype=np.float64, count=n)
            return np.rint(secs * 1000.0).astype(np.int64)
    out = np.full(n, NONE, dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, datetime):
            out[i] = _to_ms(v)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_total_seconds = timedelta.total_seconds


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def normalise_key(value, case_insensitive: bool):
    if case_insensitive and isinstance(value, str):
        return value.casefold()
    return value


def doc_time(doc: dict, fields: tuple[str, ...] = ("timestamp", "createdAt", "lastUpdated")) -> datetime | None:
    """The time a document is about: its first date field, else its ObjectId's creation time."""
    for f in fields:
        v = doc.get(f)
        if isinstance(v, datetime):
            return v
    _id = doc.get("_id")
    if isinstance(_id, ObjectId):
        return _id.generation_time
    return None


def short_repr(value, limit: int = 120):
    """A JSON-friendly, bounded rendering of an offending value for samples."""
    if value is MISSING:
        return {"$missing": True}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) <= limit else value[:limit] + "..."
    if isinstance(value, (datetime, ObjectId)):
        return value
    if isinstance(value, dict) and len(value) <= 10:
        return {str(k): short_repr(v, limit) for k, v in value.items()}
    if isinstance(value, list) and len(value) <= 10:
        return [short_repr(v, limit) for v in value]
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
