"""The harness that runs INSIDE the sandbox, started as ``python -I -S -c <this file's source>``.

It is plain stdlib code with no imports from this package, because the sandbox cannot see the
repository. Two modes:

one-shot (``_main``)
    fd 0 carries one ``marshal`` payload (key, program, tests, limits), read to EOF and then
    replaced by /dev/null, so user code never sees it; fd 1 / fd 2 are pipes the host reads into
    capped tails; fd N (``result_fd`` in the payload) is the result channel, a pipe the host opened
    before this process started.
fork server (``_serve``, argv ``serve``; the host is root)
    a pristine interpreter that reads framed jobs on stdin and forks one child per job (see
    :func:`_serve`); the child gets the same three channels as fds 1, 2 and 3.

Before any user code runs: read the payload; (unshare layer) mount private tmpfs dirs; drop to the
job's unprivileged uid when root (this also makes the process non-dumpable); enter the working dir;
set no_new_privs/non-dumpable where that did not already happen; lower the rlimits; bind every
function used later to a local (HMAC over the C-level ``_sha256``, ``os.write``, ``exec``, the
builtins); send a signed ``hello`` record. Then the program runs, then each test, and after EACH
test one record ``seq kind index ok seconds detail mac`` is written to the result fd. ``mac`` is
HMAC-SHA256 over the other fields with the per-run key, so text a program prints, an early
``os._exit(0)``, or a ``sys.exit`` inside a test cannot turn into a passing record.

Not covered: in assert-style tests, a program that deliberately walks the interpreter's heap or
frames (``gc``, ``sys._getframe``, ``f_trace``, ``ctypes``) can find the key or steer the harness,
since it shares the process with it. stdin/stdout cases run the program in a forked child without
the result channel, and the host compares the output.
"""

import os
import sys


def _read_all(fd):
    raw = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(raw)
        raw.append(chunk)


def _stdin_to_devnull():
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _recorder(key, result_fd):
    """record(kind, index, ok, seconds, detail): one signed line on ``result_fd``."""
    import _sha256

    sha256 = _sha256.sha256
    write = os.write
    # HMAC-SHA256 (RFC 2104) with a 32-byte key: H((K ^ opad) || H((K ^ ipad) || m))
    block = key + bytes(32)
    ipad = bytes(b ^ 0x36 for b in block)
    opad = bytes(b ^ 0x5C for b in block)
    seq = [0]

    def record(kind, index, ok, seconds, detail):
        detail = str(detail).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        body = ("%d\t%s\t%d\t%d\t%.4f\t%s" % (seq[0], kind, index, 1 if ok else 0, seconds, detail)).encode("utf-8")
        mac = sha256(opad + sha256(ipad + body).digest()).hexdigest()
        data = body + b"\t" + mac.encode() + b"\n"
        seq[0] += 1
        while data:
            data = data[write(result_fd, data):]

    return record


def _drop_privileges(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("harness: could regain root after dropping privileges; refusing to run")


def _apply_limits(limits):
    import resource

    def setlim(name, value):
        lim = getattr(resource, name)
        soft, hard = resource.getrlimit(lim)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(lim, (value, value))

    setlim("RLIMIT_CORE", 0)
    setlim("RLIMIT_CPU", int(limits["cpu_s"]))
    setlim("RLIMIT_FSIZE", int(limits["fsize_mb"]) << 20)
    setlim("RLIMIT_NOFILE", int(limits["nofile"]))
    if limits.get("nproc"):
        setlim("RLIMIT_NPROC", int(limits["nproc"]))
    setlim("RLIMIT_AS", int(limits["memory_mb"]) << 20)


def _main():
    """One-shot mode: this process runs exactly one program, then exits."""
    import marshal
    import resource  # noqa: F401  before the uid drop: the install may not be readable after it

    payload = marshal.loads(_read_all(0))
    _stdin_to_devnull()
    sys.path.extend(payload.get("sys_path", ()))
    limits = payload["limits"]
    result_fd = payload["result_fd"]
    record = _recorder(payload.pop("key"), result_fd)

    # ---- privilege drop and private mounts (only our code has run so far) ----
    uid = limits.get("uid")
    if limits.get("private_tmp"):
        _private_mounts(limits.get("tmp_mb", 64), limits.get("expose", ()), 0o1777)
    dropped = os.getuid() == 0 and uid is not None
    if not dropped or limits.get("nnp"):
        import ctypes  # noqa: F401  (used by _prctl_hardening after the drop)
    if dropped:
        _drop_privileges(uid)
    if limits.get("chdir"):
        os.chdir(limits["chdir"])
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    if not dropped or limits.get("nnp"):
        # setuid() away from root already made us non-dumpable; bwrap already set no_new_privs
        _prctl_hardening()
    _apply_limits(limits)
    _run_job(payload, record, limits, result_fd)


def _serve():
    """Fork-server mode (host runs as root): this pristine interpreter never runs user code. It
    reads length-prefixed ``marshal`` jobs on stdin; per job it forks a child that drops to the
    job's private uid, works in a fresh 0700 dir, and runs :func:`_run_job`. After the child ends
    (or the deadline passes) every process of that uid is killed and the dir is deleted; then one
    framed reply goes to stdout: the raw signed records, capped stdout/stderr tails, flags."""
    import _sha256  # noqa: F401  imported once here, not in every forked job
    import marshal
    import resource  # noqa: F401
    import select
    import signal
    import struct
    import time

    def read_exact(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(0, n - len(buf))
            if not chunk:
                raise SystemExit(0)  # the host closed the pipe: shut down
            buf += chunk
        return buf

    def reply(obj):
        data = marshal.dumps(obj)
        data = struct.pack(">Q", len(data)) + data
        while data:
            data = data[os.write(1, data):]

    setup = marshal.loads(read_exact(struct.unpack(">Q", read_exact(8))[0]))
    sys.path.extend(setup.get("sys_path", ()))
    if setup.get("private_tmp"):
        _private_mounts(setup.get("tmp_mb", 64), setup.get("expose", ()), 0o711)
    os.chmod("/tmp", 0o711)  # jobs write only in their own dir, never in a dir a later job reads
    for shared in ("/dev/shm", "/var/tmp"):
        try:
            os.chmod(shared, 0o711)
        except OSError:
            pass
    reply({"ready": True})
    monotonic = time.monotonic
    tail = int(setup.get("tail_bytes", 4096))
    n = 0
    while True:
        job = marshal.loads(read_exact(struct.unpack(">Q", read_exact(8))[0]))
        n += 1
        limits = job["limits"]
        uid = limits["uid"]
        res_cap = int(limits["result_cap"])
        jobdir = "/tmp/job%d" % n
        os.mkdir(jobdir, 0o700)
        os.chown(jobdir, uid, uid)
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        start = monotonic()
        pid = os.fork()
        if pid == 0:  # child: becomes the job
            try:
                os.setsid()
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.dup2(res_w, 3)
                _stdin_to_devnull()
                os.closerange(4, 1 << 16)
                _drop_privileges(uid)
                os.chdir(jobdir)
                os.environ.clear()
                os.environ.update(job["env"])
                os.environ["HOME"] = os.environ["TMPDIR"] = jobdir
                _apply_limits(limits)
                _run_job(job, _recorder(job["key"], 3), limits, 3)
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException as exc:  # a harness failure (user code's own errors are recorded)
                try:
                    os.write(2, ("harness: %r\n" % (exc,)).encode())
                except BaseException:
                    pass
            finally:
                os._exit(0)
        os.close(res_w)
        os.close(out_w)
        os.close(err_w)
        bufs = {res_r: bytearray(), out_r: bytearray(), err_r: bytearray()}
        open_fds = [res_r, out_r, err_r]
        deadline = start + float(limits["wall_s"])
        timed_out = False
        status = None
        flooded = False
        while open_fds:
            left = deadline - monotonic()
            if left <= 0:
                timed_out = True
                break
            exited = False
            if status is None:
                wpid, st = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    status, exited = st, True  # what it wrote is already in the pipes
            ready, _, _ = select.select(open_fds, [], [], 0 if exited else min(left, 0.05))
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.remove(fd)
                    continue
                buf = bufs[fd]
                buf += chunk
                if fd == res_r:
                    if len(buf) > res_cap:
                        flooded = True
                        open_fds = []
                        break
                elif len(buf) > 2 * tail:
                    del buf[:-tail]
            if exited and not ready:
                break  # drained; whatever still holds the pipes is an orphan, killed below
        if status is None:  # timed out, or pipes closed before the exit was seen: reap it first,
            try:  # a zombie would keep kill(-1) in _cleanup_uid succeeding
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            _, status = os.waitpid(pid, 0)
        _cleanup_uid(uid, jobdir, signal, select)
        for fd in (res_r, out_r, err_r):
            os.close(fd)
        try:
            os.rmdir(jobdir)
        except OSError:  # a dir the job made unremovable: it stays on the sandbox's tmpfs
            pass
        reply({"res": bytes(bufs[res_r]), "out": bytes(bufs[out_r][-tail:]), "err": bytes(bufs[err_r][-tail:]),
               "timed_out": timed_out or flooded, "exit": os.waitstatus_to_exitcode(status),
               "seconds": monotonic() - start})


def _uid_alive(uid):
    """Is any live (not zombie) process other than this one running as ``uid``? Reads
    /proc/PID/status, which stays readable for non-dumpable processes. kill(-1) itself cannot
    tell: it reports success whenever it met a process it may not signal (pid 2 under bwrap)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/status" % name, "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.split(b"\n") if b":" in line)
        if fields.get(b"State", b"").strip().startswith(b"Z"):
            continue
        if int(fields.get(b"Uid", b"-1 ").split()[0]) == uid:
            return True
    return False


def _cleanup_uid(uid, jobdir, signal, select):
    """One helper that becomes ``uid``: SIGKILL every process of that uid with kill(-1) (which
    spares only the caller), repeated until none is left; then empty the job dir. Running as the
    job's uid, a symlink planted in the dir cannot make it delete anything the job could not.
    Meanwhile this server reaps whatever dies (it is pid 1 of its namespace in the unshare layer,
    so killed orphans are re-parented to it)."""
    pid = os.fork()
    if pid == 0:
        try:
            _drop_privileges(uid)
            for _ in range(2000):
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
                if not _uid_alive(uid):
                    break
                select.select([], [], [], 0.001)  # let the killed ones die
            for root, dirs, files in os.walk(jobdir, topdown=False):
                for name in files:
                    os.unlink(os.path.join(root, name))
                for name in dirs:
                    full = os.path.join(root, name)
                    os.unlink(full) if os.path.islink(full) else os.rmdir(full)
        except BaseException:
            pass
        finally:
            os._exit(0)
    while True:
        try:
            if os.waitpid(-1, 0)[0] == pid:
                return
        except ChildProcessError:
            return


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


def _describe(exc):
    try:
        text = "%s: %s" % (type(exc).__name__, exc)
    except BaseException:  # a user exception whose __str__ raises
        text = type(exc).__name__
    return text[-1500:]


def _run_io(payload, program, record, monotonic, limits, result_fd):
    """One fork per stdin/stdout case; the child runs the program as __main__ with the case's stdin.

    The captured stdout goes back in the signed record (hex); the host compares it with the
    expected output, which never enters the sandbox.
    """
    import select
    import signal

    code = compile(program, "<solution>", "exec")
    record("loaded", 0, True, 0.0, "")
    cap = int(limits["case_output_bytes"])
    deadline = monotonic() + float(limits["wall_s"])
    for i, stdin_text in enumerate(payload["tests"]):
        t0 = monotonic()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: user code from here on
            try:
                os.close(result_fd)
                os.close(in_w)
                os.close(out_r)
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.close(in_r)
                os.close(out_w)
                os.setpgid(0, 0)
                status = 0
                try:
                    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
                except SystemExit as exc:
                    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    status = 1
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                except BaseException:
                    status = status or 1
                os._exit(status & 0xFF)
            finally:
                os._exit(1)
        os.close(in_r)
        os.close(out_w)
        data = stdin_text.encode("utf-8")
        out = bytearray()
        truncated = False
        os.set_blocking(in_w, False)
        if not data:
            os.close(in_w)
            in_w = -1
        while True:
            left = deadline - monotonic()
            if left <= 0:
                break
            wfds = [in_w] if in_w >= 0 else []
            r, w, _ = select.select([out_r], wfds, [], min(left, 0.5))
            if w:
                try:
                    data = data[os.write(in_w, data[:65536]):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # the program stopped reading its input
                    data = b""
                if not data:
                    os.close(in_w)
                    in_w = -1
            if r:
                chunk = os.read(out_r, 65536)
                if not chunk:
                    break
                if len(out) < cap:
                    out += chunk[: cap - len(out)]
                if len(out) >= cap:
                    truncated = True
                    break
        timed_out = monotonic() >= deadline
        if in_w >= 0:
            os.close(in_w)
        os.close(out_r)
        if timed_out or truncated:
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
        if not (timed_out or truncated):
            # wait for the child to exit, bounded by the run's deadline
            while True:
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    break
                if monotonic() >= deadline:
                    timed_out = True
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    break
                select.select([], [], [], 0.002)
        else:
            _, status = os.waitpid(pid, 0)
        code_ = os.waitstatus_to_exitcode(status)
        detail = "%s %d %s" % ("timeout" if timed_out else ("truncated" if truncated else "exit"), code_, bytes(out).hex())
        record("case", i, code_ == 0 and not timed_out and not truncated, monotonic() - t0, detail)
        if timed_out:
            return
    record("done", 0, True, 0.0, "")


def _prctl_hardening():
    """no_new_privs (setuid binaries cannot raise privileges) and non-dumpable (other processes of
    the same uid, such as a forked test child, cannot open this process's /proc/PID/fd/N)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:
        pass


def _private_mounts(tmp_mb, expose, tmp_mode):
    """(unshare layer, still root inside a private mount namespace) Fresh size-capped tmpfs over the
    world-writable dirs, so nothing written there reaches the host. For each ``(hide, path)`` in
    ``expose``: a tmpfs over ``hide`` (e.g. /root, which the dropped uid cannot enter) with only the
    Python install ``path`` bound back, read-only."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384

    def mount(src, target, fstype, flags, opts):
        if libc.mount(src, target.encode(), fstype, flags, opts) != 0:
            raise OSError(ctypes.get_errno(), "harness: mount on %s failed" % target)

    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(target):
            mount(b"tmpfs", target, b"tmpfs", 0, ("size=%dm,mode=%o" % (tmp_mb, tmp_mode)).encode())
    # open every path before hiding anything: two paths may sit under the same hidden dir
    fds = [(hide, path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for hide, path in expose]
    hidden = set()
    for hide, path, fd in fds:
        if hide not in hidden:
            hidden.add(hide)
            mount(b"tmpfs", hide, b"tmpfs", 0, b"size=1m,mode=755")
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(("/proc/self/fd/%d" % fd).encode(), path, None, ms_bind | ms_rec, None)
        mount(None, path, None, ms_remount | ms_bind | ms_rdonly, None)
        os.close(fd)


if __name__ == "__main__":
    _serve() if sys.argv[1:] == ["serve"] else _main()
