"""Plain data across the judge boundary: a tagged binary codec that builds only builtin values.

Runs on both sides of the boundary and on the host's tests: it is stdlib-only and self-contained, and
its source is sent into the sandbox as part of the harness (see :mod:`.harness`).

What crosses: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes`` and ``list``,
``tuple``, ``dict``, ``set``, ``frozenset`` of these, by **exact** type (a subclass of ``int`` or of
``list`` is refused), at most :data:`MAX_DEPTH` containers deep and :data:`MAX_BYTES` encoded bytes.
Anything else is refused with :class:`NotPlainData`, unless the caller passes ``handle=``: then the
value becomes an opaque reference ``(id, type name, flags)`` that the other side can only pass back or
ask about (see :mod:`.judge`). The decoder checks every length against the bytes left, every depth
against the bound, and builds nothing but those builtins (and handles, when ``handle=`` is given), so
decoding a hostile message can neither run code nor allocate much more than the message's size.

Wire format (big-endian): one tag byte, then
``N``/``T``/``F`` (None/True/False); ``i`` + u32 length + signed two's-complement bytes; ``f`` + f64;
``c`` + 2 f64; ``s`` + u32 length + UTF-8 (surrogates pass); ``b`` + u32 length + raw;
``l``/``t``/``S``/``z`` (list/tuple/set/frozenset) + u32 count + items; ``d`` + u32 count + key, value
pairs; ``H`` + u64 id + u8 flags + a ``s`` type name. Messages are framed as u32 length + body.
"""

import struct

MAX_DEPTH = 64
MAX_BYTES = 64 << 20

HANDLE_CALLABLE = 1
HANDLE_ITERATOR = 2

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_C128 = struct.Struct(">dd")


class NotPlainData(TypeError):
    """A value that may not cross the boundary (its exact type is not plain data, or it is too deep or
    too large)."""


class MalformedData(ValueError):
    """Bytes that are not a well-formed plain-data message."""


def encode_plain(value, *, handle=None, convert=None, max_depth=MAX_DEPTH, max_bytes=MAX_BYTES):
    """``value`` -> bytes. For a value that is not plain data, ``convert(obj)`` may return a plain
    stand-in (the program's side turns a ``Counter`` into a ``dict``), then ``handle(obj) -> (id, flags,
    type_name)`` turns it into an opaque reference; without them such a value raises
    :class:`NotPlainData` naming its type and where it sits (``value[2]['key']``)."""
    out = bytearray()
    try:
        _encode(value, out, handle, max_depth, max_bytes, convert)
    except NotPlainData as exc:
        where = "value" + "".join("[%.40r]" % k for k in reversed(getattr(exc, "path", [])))
        raise NotPlainData("%s: %s" % (where, exc.args[0])) from None
    return bytes(out)


def _encode(x, out, handle, depth, max_bytes, convert=None):
    t = type(x)
    if x is None:
        out += b"N"
    elif t is bool:
        out += b"T" if x else b"F"
    elif t is int:
        raw = x.to_bytes((x.bit_length() + 8) // 8, "big", signed=True)
        out += b"i" + _U32.pack(len(raw)) + raw
    elif t is float:
        out += b"f" + _F64.pack(x)
    elif t is complex:
        out += b"c" + _C128.pack(x.real, x.imag)
    elif t is str:
        raw = x.encode("utf-8", "surrogatepass")
        out += b"s" + _U32.pack(len(raw)) + raw
    elif t is bytes:
        out += b"b" + _U32.pack(len(x)) + x
    elif t in _CONTAINER_TAGS:
        if depth <= 0:
            raise NotPlainData("nested deeper than %d containers (or a container holds itself)" % MAX_DEPTH)
        if len(out) > max_bytes:
            raise NotPlainData("the encoded data passes %d bytes" % max_bytes)
        out += _CONTAINER_TAGS[t] + _U32.pack(len(x))
        key = None
        try:
            if t is dict:
                for key, v in x.items():
                    _encode(key, out, handle, depth - 1, max_bytes, convert)
                    _encode(v, out, handle, depth - 1, max_bytes, convert)
            else:
                for key, item in enumerate(x):
                    _encode(item, out, handle, depth - 1, max_bytes, convert)
        except NotPlainData as exc:
            if not hasattr(exc, "path"):
                exc.path = []
            exc.path.append(key)
            raise
    elif convert is not None and convert(x) is not x:
        _encode(convert(x), out, handle, depth - 1, max_bytes, None)
    elif handle is not None:
        ref, flags, type_name = handle(x)
        name = str(type_name).encode("utf-8", "replace")[:200]
        out += b"H" + _U64.pack(ref) + bytes((flags & 0xFF,)) + b"s" + _U32.pack(len(name)) + name
    else:
        raise NotPlainData("a %s is not plain data; only None, bool, int, float, complex, str, bytes and "
                           "list/tuple/dict/set/frozenset of them (exact types) cross the boundary" % _type_name(x))
    if len(out) > max_bytes:
        raise NotPlainData("the encoded data passes %d bytes" % max_bytes)


_CONTAINER_TAGS = {list: b"l", tuple: b"t", dict: b"d", set: b"S", frozenset: b"z"}


def _type_name(x):
    t = type(x)
    mod = getattr(t, "__module__", "")
    name = getattr(t, "__qualname__", "") or getattr(t, "__name__", "?")
    if type(mod) is not str or type(name) is not str:
        return "?"
    return name if mod == "builtins" else mod + "." + name


def decode_plain(data, *, handle=None, max_depth=MAX_DEPTH):
    """bytes -> value built only from plain builtins (and ``handle(id, flags, type_name)`` results
    when given). Raises :class:`MalformedData` for anything else, trailing bytes included."""
    if type(data) is not bytes:
        data = bytes(data)
    value, pos = _decode(data, 0, handle, max_depth)
    if pos != len(data):
        raise MalformedData("%d trailing bytes after the value" % (len(data) - pos))
    return value


def _take(data, pos, n):
    end = pos + n
    if n < 0 or end > len(data):
        raise MalformedData("truncated: wanted %d bytes at offset %d of %d" % (n, pos, len(data)))
    return data[pos:end], end


def _decode(data, pos, handle, depth):
    if pos >= len(data):
        raise MalformedData("truncated: no tag at offset %d" % pos)
    tag = data[pos]
    pos += 1
    if tag == 78:  # N
        return None, pos
    if tag == 84:  # T
        return True, pos
    if tag == 70:  # F
        return False, pos
    if tag == 105:  # i
        raw, pos = _take(data, pos, 4)
        raw, pos = _take(data, pos, _U32.unpack(raw)[0])
        return int.from_bytes(raw, "big", signed=True), pos
    if tag == 102:  # f
        raw, pos = _take(data, pos, 8)
        return _F64.unpack(raw)[0], pos
    if tag == 99:  # c
        raw, pos = _take(data, pos, 16)
        re_, im = _C128.unpack(raw)
        return complex(re_, im), pos
    if tag in (115, 98):  # s, b
        raw, pos = _take(data, pos, 4)
        raw, pos = _take(data, pos, _U32.unpack(raw)[0])
        if tag == 98:
            return raw, pos
        try:
            return raw.decode("utf-8", "surrogatepass"), pos
        except UnicodeDecodeError as exc:
            raise MalformedData("bad UTF-8 in a str: %s" % exc) from None
    if tag in _CONTAINERS:
        if depth <= 0:
            raise MalformedData("nested deeper than %d containers" % MAX_DEPTH)
        raw, pos = _take(data, pos, 4)
        count = _U32.unpack(raw)[0]
        if count > len(data) - pos:  # every item takes at least one byte
            raise MalformedData("a container claims %d items in %d bytes" % (count, len(data) - pos))
        kind = _CONTAINERS[tag]
        if kind is dict:
            out = {}
            for _ in range(count):
                k, pos = _decode(data, pos, handle, depth - 1)
                v, pos = _decode(data, pos, handle, depth - 1)
                _check_hashable(k)
                out[k] = v
            return out, pos
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos, handle, depth - 1)
            items.append(item)
        if kind is list:
            return items, pos
        if kind is tuple:
            return tuple(items), pos
        for item in items:
            _check_hashable(item)
        return kind(items), pos
    if tag == 72 and handle is not None:  # H
        raw, pos = _take(data, pos, 9)
        ref, flags = _U64.unpack(raw[:8])[0], raw[8]
        name, pos = _decode(data, pos, None, 0)
        if type(name) is not str:
            raise MalformedData("a handle's type name is not a str")
        return handle(ref, flags, name), pos
    raise MalformedData("unknown tag %r at offset %d" % (bytes((tag,)), pos - 1))


_CONTAINERS = {108: list, 116: tuple, 100: dict, 83: set, 122: frozenset}


def _check_hashable(x):
    # only decoded builtins reach here: their hashes run no user code
    t = type(x)
    if t in (list, dict, set):
        raise MalformedData("a %s cannot be a dict key or set element" % t.__name__)
    if t is tuple:
        for item in x:
            _check_hashable(item)


# ---- framing: u32 length + body, over a blocking socket or pipe fd ----------------------------


def send_frame(fd, body, *, write=None):
    """Write one framed message to ``fd`` (all of it)."""
    import os

    write = write or os.write
    data = _U32.pack(len(body)) + body
    view = memoryview(data)
    while view:
        view = view[write(fd, view):]


def recv_frame(fd, *, deadline, monotonic, max_bytes=MAX_BYTES):
    """Read one framed message from ``fd`` before the ``deadline`` (a ``monotonic()`` time). Raises
    TimeoutError, EOFError (the peer closed) or MalformedData (a frame over ``max_bytes``, or bytes
    past the frame: the channel is strictly one request, one reply)."""
    import os
    import select

    buf = b""
    size = None
    while size is None or len(buf) < size:
        left = deadline - monotonic()
        if left <= 0:
            raise TimeoutError("no answer before the deadline")
        if not select.select([fd], [], [], left)[0]:
            continue
        want = 1 << 16 if size is None else min(size - len(buf), 1 << 20)
        chunk = os.read(fd, want)
        if not chunk:
            raise EOFError("the other side closed the channel")
        buf += chunk
        if size is None and len(buf) >= 4:
            size = _U32.unpack(buf[:4])[0]
            if size > max_bytes:
                raise MalformedData("a frame of %d bytes is over the %d-byte limit" % (size, max_bytes))
            buf = buf[4:]
    if len(buf) > size:
        raise MalformedData("%d bytes past the end of a frame" % (len(buf) - size))
    return buf
