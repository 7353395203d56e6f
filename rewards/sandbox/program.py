"""The program's side of the judge boundary (runs INSIDE the sandbox, in the untrusted process).

:func:`serve_program` loads the candidate program as module ``solution``, tells the judge what it
exports, then answers the judge's requests until the channel closes. Nothing here is trusted: the
program can rewrite any of it (it shares this interpreter), so the judge treats every reply as
hostile bytes and decodes it with :func:`.protocol.decode_plain`. What this side never gets is what
the judge knows: the tests and their expected values stay in the judge's process.

Exports (the first message): every top-level name of the program that does not start with ``__``:
callables and other objects as opaque handles, plain data by value, modules by name only (the judge
imports its own copy of a module the tests mention, and only under its own name).

Requests and replies (plain-data tuples):

- ``("call", handle, args, kwargs)`` -> ``("ok", result, changed)``, where ``changed`` is
  ``((position or keyword, new value), ...)`` for the list/dict/set arguments the call mutated;
- ``("setattr", handle, name, value)`` -> ``("ok", None, ())``;
- ``("unary", handle, op)`` (op: bool, len, str, int, index, float) and ``("getitem", handle, key)``;
- ``("getattr", handle, name)`` / ``("iter", handle)`` / ``("next", handle)`` -> ``("ok", value, ())``,
  or ``("stop",)`` when the iterator is exhausted;
- any exception -> ``("raise", type name, message)``; a result that cannot be sent -> ``("bad", why)``.

Values that are not plain data (instances, generators, functions) go back as handles.
"""

try:  # imported on the host (tests, docs); inside the sandbox the harness source defines these names
    from .protocol import (HANDLE_CALLABLE, HANDLE_ITERATOR, NotPlainData, decode_plain, encode_plain,
                           recv_frame, send_frame, _type_name)
except ImportError:  # pragma: no cover - concatenated harness source
    pass


def serve_program(fd, program, monotonic, describe):
    """Load ``program`` and serve the judge on ``fd`` until it closes the channel."""
    import types

    objects = {}
    ids = {}

    def handle(obj):
        key = id(obj)
        ref = ids.get(key)
        if ref is None or objects[ref] is not obj:
            ref = len(objects) + 1
            objects[ref] = obj
            ids[key] = ref
        flags = (HANDLE_CALLABLE if callable(obj) else 0)
        if isinstance(obj, types.GeneratorType) or (hasattr(type(obj), "__next__") and hasattr(type(obj), "__iter__")):
            flags |= HANDLE_ITERATOR
        return ref, flags, _type_name(obj)

    def resolve(ref, flags, type_name):
        if ref not in objects:
            raise KeyError("no object with handle %d" % ref)
        return objects[ref]

    def reply(msg):
        _flush()  # before the judge can finish: the program's process is killed when it does
        try:
            body = encode_plain(msg, handle=handle, convert=_plain_stand_in)
        except NotPlainData as exc:
            body = encode_plain(("bad", str(exc)))
        send_frame(fd, body)

    glb = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(program, "<solution>", "exec"), glb)
    except BaseException as exc:  # SystemExit too: exiting while loading is a failure
        reply(("loaded", False, describe(exc)))
        return
    exports = []
    for name, value in list(glb.items()):
        if type(name) is not str or name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):  # by name only: the judge imports its own copy
            mod_name = getattr(value, "__name__", None)
            if type(mod_name) is str:
                exports.append((name, "module", mod_name.split(".")[0]))
            continue
        if callable(value):
            exports.append((name, "handle", value))
            continue
        try:
            encode_plain(value)
            exports.append((name, "value", value))
        except NotPlainData:
            exports.append((name, "handle", value))
    reply(("loaded", True, tuple(exports)))

    while True:
        try:  # no deadline of its own: the judge's clock and the rlimits bound this process
            request = decode_plain(recv_frame(fd, deadline=monotonic() + 86400.0, monotonic=monotonic),
                                   handle=resolve)
        except EOFError:
            return
        except BaseException as exc:
            reply(("bad", "could not read the request: " + describe(exc)))
            continue
        op = request[0]
        try:
            if op == "call":
                _, fn, args, kwargs = request
                before = {k: encode_plain(v, handle=handle) for k, v in _mutable_args(args, kwargs)}
                result = fn(*args, **kwargs)
                changed = []
                for k, v in _mutable_args(args, kwargs):
                    try:
                        if encode_plain(v, handle=handle) != before[k]:
                            changed.append((k, v))
                    except NotPlainData:
                        pass
                reply(("ok", result, tuple(changed)))
            elif op == "getattr":
                reply(("ok", getattr(request[1], request[2]), ()))
            elif op == "unary":
                reply(("ok", _UNARY[request[2]](request[1]), ()))
            elif op == "getitem":
                reply(("ok", request[1][request[2]], ()))
            elif op == "setattr":
                setattr(request[1], request[2], request[3])
                reply(("ok", None, ()))
            elif op == "iter":
                reply(("ok", iter(request[1]), ()))
            elif op == "next":
                try:
                    value = next(request[1])
                except StopIteration:
                    reply(("stop",))
                else:
                    reply(("ok", value, ()))
            else:
                reply(("bad", "unknown request %r" % (op,)))
        except BaseException as exc:
            reply(("raise", type(exc).__name__, _message(exc)))


_UNARY = {"bool": bool, "len": len, "str": str, "int": int, "index": lambda x: x.__index__(), "float": float}


def _mutable_args(args, kwargs):
    for i, v in enumerate(args):
        if type(v) in (list, dict, set):
            yield i, v
    for k, v in kwargs.items():
        if type(v) in (list, dict, set):
            yield k, v


def _message(exc):
    try:
        return str(exc)[-1500:]
    except BaseException:  # an exception whose __str__ raises
        return ""


def _flush():
    """What the program printed reaches the host even when its process is killed at the end."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


_PLAIN_BASES = ((bool, bool), (int, int.__int__), (float, float.__float__), (complex, complex),
                (str, str.__str__), (bytes, bytes), (list, list), (tuple, tuple), (dict, dict),
                (set, set), (frozenset, frozenset))


def _plain_stand_in(x):
    """A value of a subclass of a plain type as its base value (``Counter`` -> ``dict``, a namedtuple
    -> ``tuple``, ``IntEnum`` -> ``int``), and a numpy scalar or array as ``.item()`` / ``.tolist()``:
    what an honest comparison with plain data would see. Anything else: ``x`` itself (a handle).
    This runs in the program's process, so it is a convenience, not a defence: the judge only ever
    decodes exact plain types."""
    for base, make in _PLAIN_BASES:
        if isinstance(x, base):
            try:
                return make(x)
            except BaseException:
                return x
    module = getattr(type(x), "__module__", "")
    if type(module) is str and module.split(".")[0] == "numpy":
        for name in ("tolist", "item"):
            fn = getattr(x, name, None)
            if fn is not None:
                try:
                    return fn()
                except BaseException:
                    pass
    return x
