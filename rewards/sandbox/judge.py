"""The judge: runs a program's assert-style tests in a process of its own (INSIDE the sandbox).

The tests (and the expected values in them) live only here. Every name the program exports is bound
in the tests' namespace to a :class:`Remote` proxy (functions, classes, other objects) or to its value
(plain data). Calling a proxy sends the arguments, as plain data, to the program's process
(:mod:`.program`) and decodes the reply with :func:`.protocol.decode_plain`, so what comes back is
plain data or another opaque proxy: never an object whose behaviour the program chose. An
``__eq__`` that always says yes, a patched ``math.isclose`` or a frame walk that reads the expected
value cannot reach this process.

What a proxy can do: be called, be passed back as an argument, have attributes read and set
(``obj.x``, ``obj.x = 1`` with a plain value or another proxy: MBPP builds trees this way), be iterated (a returned generator or iterator is drained one item per request). What it cannot do
is take part in a judgement: comparing, hashing, truth-testing, ``len``, ``str``, arithmetic or
indexing a proxy raises :class:`Unjudgeable`, and the test is reported as *unjudgeable* rather than
failed or passed. Arguments the test passes must be plain data or proxies; a lambda or an instance
of a class the test defines is unjudgeable too. list/dict/set arguments that the program mutates
in place are updated here from the program's reply.

Per-test outcome records: ``test`` (ok or not), ``unjudged`` (the test needed behaviour across the
boundary), and the run ends early (no ``done``) when the program stops answering: a ``timeout``
or ``crashed`` detail on the test that was waiting.
"""

try:  # imported on the host (tests, docs); inside the sandbox the harness source defines these names
    from .protocol import (HANDLE_ITERATOR, MalformedData, NotPlainData, decode_plain, encode_plain,
                           recv_frame, send_frame)
except ImportError:  # pragma: no cover - concatenated harness source
    pass


class Unjudgeable(BaseException):
    """The test needs something that cannot cross the boundary as data. A BaseException, so a test's
    own ``except Exception`` does not swallow it."""


class ProgramGone(BaseException):
    """The program's process stopped answering (``timeout``) or died (``crashed``)."""

    def __init__(self, how, detail):
        super().__init__("%s: %s" % (how, detail))
        self.how = how


class ProgramError(Exception):
    """The program raised an exception that is not a builtin one; ``type_name`` says which."""

    def __init__(self, type_name, message):
        super().__init__("%s: %s" % (type_name, message))
        self.type_name = type_name


class Channel:
    """Request/reply over the socket to the program's process, bounded by the run's deadline."""

    def __init__(self, fd, deadline, monotonic):
        self.fd, self.deadline, self.monotonic = fd, deadline, monotonic
        self.requests = 0

    def ask(self, request):
        try:
            body = encode_plain(request, handle=_proxy_ref)
        except NotPlainData as exc:
            raise Unjudgeable("an argument is not plain data: %s" % exc) from None
        try:
            send_frame(self.fd, body)
            raw = recv_frame(self.fd, deadline=self.deadline, monotonic=self.monotonic)
        except TimeoutError:
            raise ProgramGone("timeout", "the program did not answer before the time limit") from None
        except (EOFError, OSError) as exc:
            raise ProgramGone("crashed", "the program's process ended (%s)" % exc) from None
        self.requests += 1
        try:
            reply = decode_plain(raw, handle=lambda ref, flags, name: Remote(self, ref, flags, name))
        except MalformedData as exc:
            raise Unjudgeable("the program's reply is not plain data: %s" % exc) from None
        if type(reply) is not tuple or not reply or type(reply[0]) is not str:
            raise Unjudgeable("the program's reply is not a well-formed message")
        return reply

    def result(self, request):
        reply = self.ask(request)
        kind = reply[0]
        if kind == "ok" and len(reply) == 3 and type(reply[2]) is tuple:
            return reply[1], reply[2]
        if kind == "raise" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            raise _program_exception(reply[1], reply[2])
        if kind == "stop" and len(reply) == 1:
            raise StopIteration
        if kind == "bad" and len(reply) == 2 and type(reply[1]) is str:
            raise Unjudgeable("the program's answer cannot cross the boundary: " + reply[1][-500:])
        raise Unjudgeable("the program's reply is not a well-formed message")


def _program_exception(type_name, message):
    import builtins

    cls = builtins.__dict__.get(type_name)
    # never StopIteration: raised from a call inside map()/filter(), it would end the iteration and
    # make `assert all(map(f, xs))` pass without one answer
    if (isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins"
            and not issubclass(cls, (StopIteration, StopAsyncIteration))):
        try:
            return cls(message)
        except BaseException:
            pass
    return ProgramError(type_name, message)


def _proxy_ref(obj):
    if type(obj) is Remote:
        return object.__getattribute__(obj, "_ref"), 0, ""
    raise NotPlainData("a %s is not plain data and not one of the program's own objects" % type(obj).__name__)


def _unjudgeable(what):
    def refuse(self, *args):
        raise Unjudgeable("the test %s a %s from the program: only plain data can be judged"
                          % (what, object.__getattribute__(self, "_type")))
    return refuse


def _remote_unary(op, result_type):
    def ask(self):
        value = object.__getattribute__(self, "_channel").result(("unary", self, op))[0]
        if type(value) is not result_type:
            raise Unjudgeable("%s() of a %s from the program gave a %s, not a %s"
                              % (op, object.__getattribute__(self, "_type"), type(value).__name__, result_type.__name__))
        return value
    return ask


class Remote:
    """An object that lives in the program's process: callable, iterable, attributes readable."""

    __slots__ = ("_channel", "_ref", "_flags", "_type")

    def __init__(self, channel, ref, flags, type_name):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_type", type_name)

    def __call__(self, *args, **kwargs):
        channel = object.__getattribute__(self, "_channel")
        result, changed = channel.result(("call", self, args, kwargs))
        for key, value in changed:
            target = args[key] if type(key) is int and 0 <= key < len(args) else kwargs.get(key) if type(key) is str else None
            _update_in_place(target, value)
        return result

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return object.__getattribute__(self, "_channel").result(("getattr", self, name))[0]

    def __iter__(self):
        if object.__getattribute__(self, "_flags") & HANDLE_ITERATOR:
            return self
        return object.__getattribute__(self, "_channel").result(("iter", self))[0]

    def __next__(self):
        return object.__getattribute__(self, "_channel").result(("next", self))[0]

    def __repr__(self):
        return "<program object: %s>" % object.__getattribute__(self, "_type")

    def __setattr__(self, name, value):
        object.__getattribute__(self, "_channel").result(("setattr", self, name, value))

    # Unary questions about the object alone: the program could have returned the answer itself, so
    # asking it gives a test nothing it would not trust anyway. Nothing of the test's goes along.
    __bool__ = _remote_unary("bool", bool)
    __len__ = _remote_unary("len", int)
    __str__ = _remote_unary("str", str)
    __int__ = _remote_unary("int", int)
    __index__ = _remote_unary("index", int)
    __float__ = _remote_unary("float", float)

    def __getitem__(self, key):  # the key is an input, like a call's argument
        return object.__getattribute__(self, "_channel").result(("getitem", self, key))[0]

    # Everything that would send one of the test's values (an expected one, typically) to the
    # program, or that needs the object's behaviour against it: never asked, unjudgeable.
    __eq__ = _unjudgeable("compares")
    __ne__ = _unjudgeable("compares")
    __lt__ = __le__ = __gt__ = __ge__ = _unjudgeable("orders")
    __hash__ = _unjudgeable("hashes")
    __format__ = __bytes__ = _unjudgeable("formats")
    __complex__ = __round__ = _unjudgeable("converts")
    __contains__ = __setitem__ = __delitem__ = _unjudgeable("looks inside")
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = \
        __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = \
        __abs__ = __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __invert__ = \
        __lshift__ = __rshift__ = __matmul__ = _unjudgeable("does arithmetic with")
    __enter__ = __exit__ = _unjudgeable("uses as a context manager")


def _update_in_place(target, value):
    """Mirror an in-place change the program made to a list/dict/set argument."""
    t = type(target)
    if t is list and type(value) is list:
        target[:] = value
    elif t is dict and type(value) is dict:
        target.clear()
        target.update(value)
    elif t is set and type(value) is set:
        target.clear()
        target.update(value)


_PROGRAM_PREFIX = "__program_builtin_"


def _subject_calls(test, filename, shadows):
    """The test compiled so that a program function named like a builtin (MBPP 126 defines ``sum``) is
    called only as the test's subject: the whole condition of an ``assert``, or the left side of its
    comparison, with literal arguments only (``assert sum(10, 15) == 6``). Everywhere else the name is
    the builtin, so ``def abs(v): return 0`` cannot judge ``abs(f(x) - y) < 1e-6``, nor ``all`` decide an
    ``assert all(...)``, nor ``max`` compute an expected ``max([1, 2])``."""
    if not shadows:
        return compile(test, filename, "exec")
    import ast

    try:
        tree = ast.parse(test)
    except SyntaxError:
        return compile(test, filename, "exec")  # raises the same SyntaxError in the test

    def literal(node):
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return literal(node.operand)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(literal(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(k is not None and literal(k) for k in node.keys) and all(literal(v) for v in node.values)
        return False

    def subject(node):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node = node.operand
        if isinstance(node, ast.Compare):
            node = node.left
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in shadows
                and all(literal(a) for a in node.args) and all(literal(k.value) for k in node.keywords)):
            node.func = ast.copy_location(ast.Name(_PROGRAM_PREFIX + node.func.id, ast.Load()), node.func)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            subject(node.test)
    return compile(tree, filename, "exec")


def _names_in(sources):
    """Every identifier the tests mention (bare names and attribute roots), read without running them."""
    import ast

    names = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def run_judge(fd, tests, setup, record, deadline, monotonic, describe):
    """Wait for the program to load, then run each test against its exports; one record per test."""
    import builtins

    channel = Channel(fd, deadline, monotonic)
    t0 = monotonic()
    try:
        raw = recv_frame(fd, deadline=deadline, monotonic=monotonic)
        hello = decode_plain(raw, handle=lambda ref, flags, name: Remote(channel, ref, flags, name))
        if type(hello) is not tuple or len(hello) != 3 or hello[0] != "loaded":
            raise MalformedData("the program's first message is not a load report")
    except TimeoutError:
        record("test", 0, False, monotonic() - t0, "timeout: the program did not finish loading in time")
        return
    except (EOFError, OSError):
        return  # the program's process ended while loading: no "done", reported as crashed
    except MalformedData as exc:
        record("loaded", 0, False, monotonic() - t0, "the program's load report is not plain data: %s" % exc)
        record("done", 0, True, 0.0, "")
        return
    if hello[1] is not True:
        record("loaded", 0, False, monotonic() - t0, str(hello[2])[-1500:])
        record("done", 0, True, 0.0, "")
        return
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    shadows = {}
    mentioned = _names_in(tests + (setup,))
    for item in hello[2] if type(hello[2]) is tuple else ():
        if type(item) is tuple and len(item) == 3 and type(item[0]) is str and item[0].isidentifier():
            name, kind, value = item
            if kind == "module":
                if name == value and name in mentioned:  # `import sys` in the program, `sys.x` in a test
                    try:
                        namespace[name] = __import__(name)
                    except BaseException:
                        pass
            elif name in builtins.__dict__:
                shadows[name] = value  # a program's `sum` (MBPP 126): see _subject_calls
            else:
                namespace[name] = value
    if setup:
        try:
            exec(compile(setup, "<test_setup>", "exec"), namespace)
        except Unjudgeable as exc:
            record("loaded", 0, True, monotonic() - t0, "")
            for i in range(len(tests)):
                record("unjudged", i, False, 0.0, "test setup: " + describe(exc))
            record("done", 0, True, 0.0, "")
            return
        except ProgramGone as exc:
            record("test", 0, False, monotonic() - t0, "test setup: " + str(exc))
            return
        except BaseException as exc:
            record("loaded", 0, False, monotonic() - t0, "test setup failed: " + describe(exc))
            record("done", 0, True, 0.0, "")
            return
    record("loaded", 0, True, monotonic() - t0, "")
    for name, value in shadows.items():
        namespace[_PROGRAM_PREFIX + name] = value
    for i, test in enumerate(tests):
        t0 = monotonic()
        try:
            exec(_subject_calls(test, "<test %d>" % i, shadows), namespace)
        except Unjudgeable as exc:
            record("unjudged", i, False, monotonic() - t0, describe(exc))
        except ProgramGone as exc:
            record("test", i, False, monotonic() - t0, str(exc))
            return
        except BaseException as exc:
            record("test", i, False, monotonic() - t0, describe(exc))
        else:
            record("test", i, True, monotonic() - t0, "")
    record("done", 0, True, 0.0, "requests=%d" % channel.requests)
