"""The harness that runs INSIDE the sandbox, started as ``python -I -c <this file's source>``.

It is plain stdlib code with no imports from this package, because the sandbox cannot see the
repository. The host starts it with:

- fd 0: a pipe carrying one JSON payload (key, program, tests, limits), read to EOF and then
  replaced by /dev/null, so user code never sees the payload;
- fd 1 / fd 2: pipes the host reads into capped tails;
- fd N (``result_fd`` in the payload): the result channel, a pipe the host opened before this process started.

Order of events, all before any user code runs: read the payload, lower the rlimits, drop to the
unprivileged uid when started as root (and mount private tmpfs dirs when in the ``unshare``
layer), mark the process non-dumpable, bind every function the harness needs to local names
(C-level ``_hashlib.hmac_digest``, ``os.write``), send a signed ``hello`` record. Then the program is
executed, then each test, and after EACH test one record ``seq kind index ok seconds detail mac`` is
written to the result fd. ``mac`` is HMAC-SHA256 over the other fields with the per-run key, so text a program
prints, an early ``os._exit(0)``, or a test whose exception got swallowed by ``sys.exit`` cannot turn
into a passing record.

Not covered: a program that deliberately walks the interpreter's heap or frames (``gc``,
``sys._getframe``, ``ctypes``) can find the key, since it shares the process with the harness.
"""

import os
import sys


def _main():
    import _hashlib
    import json
    import resource
    import time
    import traceback

    raw = b""
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        raw += chunk
    payload = json.loads(raw.decode("utf-8"))
    del raw
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    key = bytes.fromhex(payload.pop("key"))
    sys.path.extend(payload.get("sys_path", ()))
    limits = payload["limits"]
    hmac_digest = _hashlib.hmac_digest
    write = os.write
    monotonic = time.monotonic
    result_fd = payload["result_fd"]
    seq = [0]

    def record(kind, index, ok, seconds, detail):
        detail = str(detail).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        body = "%d\t%s\t%d\t%d\t%.4f\t%s" % (seq[0], kind, index, 1 if ok else 0, seconds, detail)
        mac = hmac_digest(key, body.encode("utf-8"), "sha256").hex()
        data = (body + "\t" + mac + "\n").encode("utf-8")
        seq[0] += 1
        while data:
            data = data[write(result_fd, data):]

    # ---- privilege drop and private mounts (only our code has run so far) ----
    uid = limits.get("uid")
    if limits.get("private_tmp"):
        _private_mounts(limits.get("tmp_mb", 64), limits.get("expose", ()))
    if os.getuid() == 0 and uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise SystemExit("harness: could regain root after dropping privileges; refusing to run")
    if limits.get("chdir"):
        os.chdir(limits["chdir"])
    os.environ["HOME"] = os.getcwd()
    _prctl_hardening()

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

    record("hello", 0, True, 0.0, "uid=%d" % os.getuid())

    mode = payload["mode"]
    program = payload["program"]
    if mode == "io":
        _run_io(payload, program, record, monotonic, limits, result_fd)
        return

    # ---- assert mode: program, then setup, then one record per test ----
    glb = {"__name__": "solution", "__builtins__": __builtins__}
    t0 = monotonic()
    try:
        exec(compile(program, "<solution>", "exec"), glb)
        if payload.get("setup"):
            exec(compile(payload["setup"], "<test_setup>", "exec"), glb)
    except BaseException as exc:  # SystemExit too: exiting early is a failure, not a pass
        record("loaded", 0, False, monotonic() - t0, _describe(exc, traceback))
        record("done", 0, True, 0.0, "")
        return
    record("loaded", 0, True, monotonic() - t0, "")
    for i, test in enumerate(payload["tests"]):
        t0 = monotonic()
        try:
            exec(compile(test, "<test %d>" % i, "exec"), glb)
        except BaseException as exc:
            record("test", i, False, monotonic() - t0, _describe(exc, traceback))
        else:
            record("test", i, True, monotonic() - t0, "")
    record("done", 0, True, 0.0, "")


def _describe(exc, traceback):
    try:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException:
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
                    os.waitpid(pid, 0)
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


def _private_mounts(tmp_mb, expose):
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
            mount(b"tmpfs", target, b"tmpfs", 0, ("size=%dm,mode=1777" % tmp_mb).encode())
    for hide, path in expose:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
        mount(b"tmpfs", hide, b"tmpfs", 0, b"size=1m,mode=755")
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(("/proc/self/fd/%d" % fd).encode(), path, None, ms_bind | ms_rec, None)
        mount(None, path, None, ms_remount | ms_bind | ms_rdonly, None)
        os.close(fd)


if __name__ == "__main__":
    _main()
