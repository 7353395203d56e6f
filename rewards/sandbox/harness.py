"""The harness's entry points INSIDE the sandbox, started as ``python -I -S -c <source>``.

The source sent is :data:`.HARNESS_SOURCE`: this file with :mod:`.protocol`, :mod:`.program`,
:mod:`.judge`, :mod:`.in_process` and :mod:`.stdio` before it, plain stdlib code (the sandbox cannot see
the repository). Two modes:

one-shot (:func:`_main`)
    fd 0 carries two ``marshal`` frames from the host: first the program's part (program, limits,
    mode), then the judge's part (tests, setup, the record key). fd 1 / fd 2 are pipes the host reads
    into capped tails; ``result_fd`` is the result channel the host opened before this process.
fork server (:func:`_serve`, argv ``serve``; the host is root)
    a pristine interpreter that never reads job data: per job it forks a *job leader* that reads the
    job's two frames from fd 0 itself, runs the job as below, collects its output and replies on fd 1.
    So no job's data (program, tests, output) is ever in the memory a later job is forked from.

A job (:func:`_run`) with the isolated judge (assert-style tests, the default): the leader reads the
program's frame and forks the **program** process at once, before the tests are read, so the tests
never enter the program's memory; then it reads the judge's frame and forks the **judge** process,
which alone holds the result channel and runs the tests through proxies (:mod:`.judge`). They talk
over a socket pair with plain data (:mod:`.protocol`). As root each gets its own unprivileged uid;
otherwise both are non-dumpable, so neither can read the other's memory or file descriptors.
With ``judge="in_process"`` or stdin/stdout cases one process runs the job as before.

Before any user code runs, in the process that will run it: private mounts (unshare layer), the
uid drop when root (which also makes it non-dumpable), the working dir, no_new_privs/non-dumpable
where that did not already happen, the rlimits, and the result channel closed in the program.
Each result is a record ``seq kind index ok seconds detail mac`` on the result fd, signed with the
run's HMAC key (kept from the in-process harness, where the program shares the process).
"""

import os
import sys


def _read_frame(fd):
    """One length-prefixed frame (u64 size + body) from ``fd``; reads exactly that many bytes, so
    what follows in the pipe stays there for the next reader. Exit 3 on EOF before a frame starts."""
    head = b""
    while len(head) < 8:
        chunk = os.read(fd, 8 - len(head))
        if not chunk:
            if not head:
                os._exit(3)
            raise EOFError("truncated frame header")
        head += chunk
    size = int.from_bytes(head, "big")
    parts, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("truncated frame")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


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


def _describe(exc):
    try:
        text = "%s: %s" % (type(exc).__name__, exc)
    except BaseException:  # a user exception whose __str__ raises
        text = type(exc).__name__
    return text[-1500:]


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


def _prctl_hardening():
    """no_new_privs (setuid binaries cannot raise privileges) and non-dumpable (other processes of
    the same uid cannot open this process's memory or /proc/PID/fd/N)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:
        pass


def _drop_capabilities():
    """Empty the effective, permitted, inheritable and ambient capability sets (capset(2)). The uid
    drop does this as root; without it (a normal user's sandbox) the harness held CAP_SYS_ADMIN in the
    sandbox's user namespace to make each job's namespaces, and user code must not."""
    libc, ctypes = _libc()

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:  # _LINUX_CAPABILITY_VERSION_3
        err = ctypes.get_errno()
        raise OSError(err, "harness: capset failed: %s" % os.strerror(err))


def _become(uid, workdir, env, limits):
    """The last steps before untrusted (or judged) code runs in this process."""
    dropped = uid is not None and os.getuid() == 0
    if dropped:
        _drop_privileges(uid)
    if workdir:
        os.chdir(workdir)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    # the uid drop empties the permitted and effective sets, not the inheritable one; without a drop
    # (a normal user's sandbox) the harness held CAP_SYS_ADMIN in the sandbox's user namespace
    _drop_capabilities()
    if not dropped or limits.get("nnp"):
        _prctl_hardening()  # setuid() away from root already made us non-dumpable; bwrap set no_new_privs
    _apply_limits(limits)


_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x40000000, 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
_libc_cache = []


def _libc():
    if not _libc_cache:
        import ctypes

        _libc_cache.append((ctypes.CDLL(None, use_errno=True), ctypes))
    return _libc_cache[0]


def _fork_in_new_pid_namespace(required, way_back=True):
    """fork(), the child being pid 1 of a new pid namespace: when it ends, the kernel kills every
    process left in it (no orphan survives a job). -> (pid, whether the namespace was made). The
    caller returns to its own pid namespace at once, so its later children (cleanup helpers) are not
    in the job's. Needs CAP_SYS_ADMIN (root, or the sandbox's own user namespace)."""
    libc, ctypes = _libc()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWPID) != 0:
            err = ctypes.get_errno()
            if required:
                raise OSError(err, "harness: unshare(CLONE_NEWPID) failed: %s" % os.strerror(err))
            return os.fork(), False
        pid = os.fork()
        if pid and libc.setns(own, _CLONE_NEWPID) != 0 and way_back:
            # as a normal user the sandbox's pid namespace belongs to bwrap's user namespace and the
            # way back is refused; the leader then forks nothing after the job's processes (the uid
            # cleanup helpers exist only when jobs get their own uids), so only that case needs it
            err = ctypes.get_errno()
            raise OSError(err, "harness: setns back to the harness's pid namespace failed: %s" % os.strerror(err))
        return pid, True
    finally:
        os.close(own)


def _private_world(tmp_mb, uid):
    """In the job's process, pid 1 of its own pid namespace: its own mount, IPC and network namespaces,
    a /proc of its pid namespace, fresh size-capped tmpfs over /tmp, /var/tmp and /dev/shm, and a
    0700 working dir there. Nothing of an earlier or concurrent job is visible, and nothing it leaves
    (files, SysV/POSIX IPC objects, sockets) outlives it. -> the working dir."""
    libc, ctypes = _libc()

    def check(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, "harness: %s failed: %s" % (what, os.strerror(err)))

    check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWNET), "unshare(mount, ipc, net)")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "making / private")
    check(libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None), "mounting /proc")
    opts = ("size=%dm,mode=1777" % tmp_mb).encode()
    for target in _world_writable_dirs():  # read before any job ran: /tmp, /dev/shm, /run/lock, ...
        if os.path.isdir(target):  # (a dir under /run is gone once the unshare layer hid /run)
            check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts), "mounting " + target)
    workdir = "/tmp/job"
    os.mkdir(workdir, 0o700)
    if uid is not None and os.getuid() == 0:
        os.chown(workdir, uid, uid)
    return workdir


def _spawn(body, pid_ns=""):
    """Fork a job process that runs ``body(in_new_pid_namespace)`` and exits; a failure of the harness
    itself goes to stderr. ``pid_ns``: "" (plain fork), "try" or "required" (pid 1 of a new pid
    namespace, see :func:`_fork_in_new_pid_namespace`; its value is ``(mode, way_back)``). -> pid."""
    if pid_ns:
        pid, in_ns = _fork_in_new_pid_namespace(pid_ns[0] == "required", pid_ns[1])
    else:
        pid, in_ns = os.fork(), False
    if pid == 0:
        try:
            body(in_ns)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:
            _harness_failure(exc)
        finally:
            os._exit(0)
    return pid


def _run(first, read_second, result_fd, workdirs, env, namespaces):
    """Start one job's processes. ``namespaces``: "required" (the fork server: each job needs its own),
    "try" (a fresh sandbox per job already isolates jobs), or "" (layer none).
    -> (pid whose exit ends the job, [pids to kill at the end], the program's pid)."""
    import time

    limits = first["limits"]
    pid_ns = (namespaces, limits.get("uid") is not None) if namespaces else ""

    def enter(in_ns):
        """The last steps before user code, in the process that will run it."""
        workdir = _private_world(int(limits.get("tmp_mb", 64)), limits.get("uid")) if in_ns else workdirs[0]
        _stdin_to_devnull()
        os.setsid()
        _become(limits.get("uid"), workdir, env, limits)

    if first["mode"] == "assert" and first["judge"] == "isolated":
        import socket

        prog_sock, judge_sock = socket.socketpair()
        prog_fd, judge_fd = prog_sock.detach(), judge_sock.detach()

        def judge(_):  # it alone reads the tests (from fd 0) and holds the result channel
            judge_fd_, result_fd_, stdin = _keep_fds(judge_fd, result_fd, 0)
            second = read_second(stdin)
            _stdin_to_devnull()
            os.close(stdin)
            os.setsid()
            record = _recorder(second["key"], result_fd_)
            deadline = time.monotonic() + float(limits["wall_s"])
            _become(limits.get("judge_uid"), workdirs[1], env, limits)
            record("hello", 0, True, 0.0, "uid=%d judge=isolated" % os.getuid())
            run_judge(judge_fd_, tuple(second["tests"]), second.get("setup") or "", record, deadline,
                      time.monotonic, _describe)

        def program(in_ns):  # forked from a leader that never read the tests
            (prog_fd_,) = _keep_fds(prog_fd)
            enter(in_ns)
            serve_program(prog_fd_, first["program"], time.monotonic, _describe)

        judge_pid = _spawn(judge)
        os.close(judge_fd)
        program_pid = _spawn(program, pid_ns)
        os.close(prog_fd)
        return judge_pid, [judge_pid, program_pid], program_pid

    second = read_second(0)

    def one_process(in_ns):  # the in-process judge, or the stdin/stdout cases' runner
        (result_fd_,) = _keep_fds(result_fd)
        enter(in_ns)
        payload = dict(first, **second)
        _run_job(payload, _recorder(payload.pop("key"), result_fd_), limits, result_fd_)

    pid = _spawn(one_process, pid_ns)
    return pid, [pid], pid


class _Budget:
    """The job's own CPU time and memory, summed over every process in its pid namespace(s) (those
    that /proc lists with more than one NSpid), polled by the leader: ``timeout_s`` CPU-seconds and
    ``memory_mb`` of RSS in all. A job that passes either is killed; the kill ends its namespace."""

    def __init__(self, limits):
        self.cpu_s = float(limits.get("job_cpu_s") or 0)
        self.rss = int(limits.get("job_memory_mb") or 0) << 20
        self.tick = float(os.sysconf("SC_CLK_TCK"))
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.exceeded = ""

    def check(self):
        """-> "" or what was exceeded ("cpu" / "memory")."""
        if self.exceeded or not (self.cpu_s or self.rss):
            return self.exceeded
        cpu = rss = 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/status" % name, "rb") as f:
                    status = f.read()
                nspid = status.split(b"NSpid:", 1)[1].split(b"\n", 1)[0].split()
                if len(nspid) < 2:
                    continue
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                with open("/proc/%s/statm" % name, "rb") as f:
                    rss += int(f.read().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue
            cpu += sum(int(x) for x in fields[11:15]) / self.tick  # utime stime cutime cstime
        if self.cpu_s and cpu > self.cpu_s:
            self.exceeded = "cpu"
        elif self.rss and rss > self.rss:
            self.exceeded = "memory"
        return self.exceeded


def _keep_fds(*fds):
    """Close every descriptor but 0, 1, 2 and ``fds``, which move to 3, 4, ...; -> their new numbers.
    Run in a job's process before anything else, so the program holds nothing of the leader's
    (the reply pipe to the host, the other side's socket, the result channel)."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]
    for k, fd in enumerate(high):
        os.dup2(fd, 3 + k)
    os.closerange(3 + len(fds), 1 << 16)
    return list(range(3, 3 + len(fds)))


def _harness_failure(exc):
    try:
        os.write(2, ("harness: %r\n" % (exc,)).encode())
    except BaseException:
        pass


def _preload():
    """Import, while still root, every module a job's processes use: after the uid drop the install may
    not be readable (a pyenv under /root), and on the fork server each import is then paid once, not
    once per job."""
    import _sha256  # noqa: F401
    import ast  # noqa: F401
    import fcntl  # noqa: F401
    import resource  # noqa: F401
    import select  # noqa: F401
    import signal  # noqa: F401
    import socket  # noqa: F401
    import time  # noqa: F401
    import traceback  # noqa: F401
    import types  # noqa: F401

    _libc()  # ctypes: namespaces, mounts, capabilities, prctl


def _job_dirs(base, limits):
    """(program's dir, judge's dir) when the job does not get a private /tmp: as root a 0700 dir per
    uid under a root-owned base the job cannot change, else the base itself."""
    if os.getuid() != 0:
        return base, base
    os.chmod(base, 0o711)
    dirs = []
    for name, uid in (("p", limits.get("uid")), ("j", limits.get("judge_uid"))):
        d = os.path.join(base, name)
        os.mkdir(d, 0o700)
        if uid is not None:
            os.chown(d, uid, uid)
        dirs.append(d)
    return tuple(dirs)


def _kill(pids):
    import signal

    for pid in pids:
        for target in (pid, -pid):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass


def _main():
    """One-shot mode: this process runs exactly one job, then exits (the sandbox then ends every
    process left in its pid namespace). Exit code 124: the job passed its CPU budget; 125: its memory."""
    import marshal
    import select
    import time

    first = marshal.loads(_read_frame(0))
    sys.path.extend(first.get("sys_path", ()))
    _preload()
    limits = first["limits"]
    _world_writable_dirs()
    if limits.get("private_tmp"):
        _private_mounts(limits.get("tmp_mb", 64), limits.get("expose", ()), 0o1777, limits.get("readonly", ()),
                        limits.get("hide", ()))
    if os.getuid() != 0:
        _prctl_hardening()  # the tests may sit in this process's memory: same uid as the program
    workdirs = _job_dirs(limits.get("chdir") or os.getcwd(), limits)
    start = time.monotonic()
    main_pid, pids, program_pid = _run(first, lambda fd: marshal.loads(_read_frame(fd)), first["result_fd"],
                                       workdirs, None, limits.get("namespaces", ""))
    os.close(first["result_fd"])
    _stdin_to_devnull()
    budget = _Budget(limits)
    deadline = start + float(limits["wall_s"]) + 0.5
    next_check = 0.0
    while time.monotonic() < deadline:
        if os.waitpid(main_pid, os.WNOHANG)[0]:
            break
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.02
            if budget.check():
                _kill([program_pid])  # its namespace ends with it; the judge then reports the test
        select.select([], [], [], 0.002)
    _kill(pids)
    os._exit({"cpu": 124, "memory": 125}.get(budget.exceeded, 0))


def _serve():
    """Fork-server mode (host runs as root): this pristine interpreter never runs user code and never
    reads job data. Per job it forks a leader (:func:`_lead`) and waits for it; the leader reads the
    job from fd 0, replies on fd 1 and exits. Exit code 3 from a leader means the host closed fd 0."""
    import marshal
    import select
    import struct

    _preload()

    setup = marshal.loads(_read_frame(0))
    sys.path.extend(setup.get("sys_path", ()))
    _world_writable_dirs()
    if setup.get("private_tmp"):
        _private_mounts(setup.get("tmp_mb", 64), setup.get("expose", ()), 0o711, setup.get("readonly", ()))
    for shared in ("/tmp", "/dev/shm", "/var/tmp"):  # judges write only in their own dirs
        try:
            os.chmod(shared, 0o711)
        except OSError:
            pass
    data = marshal.dumps({"ready": True})
    os.write(1, struct.pack(">Q", len(data)) + data)
    n = 0
    while True:
        select.select([0], [], [])
        n += 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _lead(n, setup)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                _harness_failure(exc)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 3:
            raise SystemExit(0)  # the host closed the pipe: shut down


def _lead(n, setup):
    """One job on the fork server: read it, run it, clean up, reply. A failure of the harness itself is
    sent as a reply too (status ``sandbox_error`` on the host), so the host never waits it out."""
    import marshal
    import struct

    reply_fd = os.dup(1)
    try:
        reply = _lead_job(n, setup)
    except SystemExit:
        raise
    except BaseException as exc:
        reply = {"res": b"", "out": b"", "err": ("harness: %r\n" % (exc,)).encode(), "timed_out": False,
                 "exit": None, "seconds": 0.0, "failed": True}
    data = marshal.dumps(reply)
    data = struct.pack(">Q", len(data)) + data
    while data:
        data = data[os.write(reply_fd, data):]


def _lead_job(n, setup):
    import marshal
    import select
    import signal
    import time

    monotonic = time.monotonic
    first = marshal.loads(_read_frame(0))
    limits = first["limits"]
    judge_uid = limits.get("judge_uid")
    judge_dir = "/tmp/job%d" % n  # the judge's; the program's process gets a private /tmp of its own
    os.mkdir(judge_dir, 0o700)
    if judge_uid is not None:
        os.chown(judge_dir, judge_uid, judge_uid)
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    start = monotonic()
    main_pid, pids, program_pid = _run(first, lambda fd: marshal.loads(_read_frame(fd)), res_w,
                                       (judge_dir, judge_dir), first["env"], "required")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # the leader keeps no end of the job's pipes (and no more of fd 0)
    for fd in (devnull, res_w, out_w, err_w):
        os.close(fd)
    tail = int(setup.get("tail_bytes", 4096))
    res_cap = int(limits["result_cap"])
    bufs = {res_r: bytearray(), out_r: bytearray(), err_r: bytearray()}
    open_fds = [res_r, out_r, err_r]
    deadline = start + float(limits["wall_s"])
    budget = _Budget(limits)
    next_check = 0.0
    timed_out = flooded = False
    status = None
    while open_fds:
        now = monotonic()
        left = deadline - now
        if left <= 0:
            timed_out = True
            break
        if now >= next_check:
            next_check = now + 0.02
            if budget.check():
                _kill([program_pid])  # its pid namespace ends with it; the judge then reports the test
        if status is None:
            wpid, st = os.waitpid(main_pid, os.WNOHANG)
            if wpid:
                status = st  # what it wrote is already in the pipes
        exited = status is not None
        ready, _, _ = select.select(open_fds, [], [], 0 if exited else min(left, 0.02))
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
            break  # drained; whatever still holds the pipes (the program's process) is killed below
    _kill([p for p in pids if p != main_pid or status is None])
    for pid in pids:  # reap them first: a zombie would keep kill(-1) in _cleanup_uid succeeding
        try:
            _, st = os.waitpid(pid, 0)
        except ChildProcessError:
            continue
        if pid == main_pid and status is None:
            status = st
    # the program's processes ended with its pid namespace; the judge's uid is checked all the same
    for uid in (limits.get("uid"), judge_uid):
        if uid is not None and _uid_alive(uid):
            _cleanup_uid(uid, None, signal, select)
    try:  # most judges leave no file: then no cleanup helper is forked
        os.rmdir(judge_dir)
    except OSError:
        if judge_uid is not None:
            _cleanup_uid(judge_uid, judge_dir, signal, select)
        else:
            _remove_tree(judge_dir)
        try:
            os.rmdir(judge_dir)
        except OSError:  # a dir the job made unremovable: it stays on the sandbox's tmpfs
            pass
    return {"res": bytes(bufs[res_r]), "out": bytes(bufs[out_r][-tail:]), "err": bytes(bufs[err_r][-tail:]),
            "timed_out": timed_out or flooded or budget.exceeded == "cpu", "exceeded": budget.exceeded,
            "exit": os.waitstatus_to_exitcode(status), "seconds": monotonic() - start}


def _remove_tree(top):
    """Empty ``top`` without following links (run as the uid that owns what is in it)."""
    for root, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            full = os.path.join(root, name)
            os.unlink(full) if os.path.islink(full) else os.rmdir(full)


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
    spares only the caller), repeated until none is left; then empty the job dir, if one is given. Running as the
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
            if jobdir:
                _remove_tree(jobdir)
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


_WRITABLE_DIRS = []


def _world_writable_dirs():
    """Every directory a stranger may write to, two levels under /, /var, /run and /dev (plus /tmp,
    /var/tmp, /dev/shm), as seen now: the dirs each job gets a fresh tmpfs over. Read once, before any
    job, and kept for the jobs."""
    if not _WRITABLE_DIRS:
        import stat

        found = {"/tmp", "/var/tmp", "/dev/shm"}
        for top in ("/", "/var", "/run", "/dev", "/run/lock"):
            try:
                names = os.listdir(top)
            except OSError:
                continue
            for path in [top] + [os.path.join(top, n) for n in names]:
                if path.startswith(("/proc", "/sys")):
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002:
                    found.add(path)
        _WRITABLE_DIRS.extend(sorted(d for d in found if os.path.isdir(d) and not os.path.islink(d)))
    return _WRITABLE_DIRS


def _private_mounts(tmp_mb, expose, tmp_mode, readonly=(), hide=()):
    """(unshare layer, still root of a private mount namespace) A fresh size-capped tmpfs over ``/run``
    (the host's unix sockets and lock dirs) and over every world-writable dir, so nothing written
    there reaches the host and no host socket is reachable by path. For each ``(hide, path)`` in
    ``expose``: a tmpfs over ``hide`` (e.g. /root, which the dropped uid cannot enter) with only the
    Python install ``path`` bound back, read-only; each dir in ``hide`` (a normal user's home) gets an
    empty tmpfs. Each dir in ``readonly`` (the install outside the home) is bound onto itself
    read-only."""
    libc, ctypes = _libc()
    ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384

    def mount(src, target, fstype, flags, opts):
        if libc.mount(src, target.encode(), fstype, flags, opts) != 0:
            raise OSError(ctypes.get_errno(), "harness: mount on %s failed" % target)

    mount(None, "/", None, ms_rec | _MS_PRIVATE, None)
    writable = _world_writable_dirs()
    # open every path before hiding anything: two paths may sit under the same hidden dir
    fds = [(top, path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for top, path in expose]
    ro = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in readonly if os.path.isdir(path)]
    if os.path.isdir("/run") and not os.path.islink("/run"):
        mount(b"tmpfs", "/run", b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,mode=755")
    for target in writable:
        if os.path.isdir(target) and not target.startswith("/run/"):
            mount(b"tmpfs", target, b"tmpfs", _MS_NOSUID | _MS_NODEV,
                  ("size=%dm,mode=%o" % (tmp_mb, tmp_mode)).encode())
    hidden = set()
    for top in hide:
        if os.path.isdir(top):
            hidden.add(top)
            mount(b"tmpfs", top, b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,mode=755")
    for top, path, fd in fds:
        if top not in hidden:
            hidden.add(top)
            mount(b"tmpfs", top, b"tmpfs", 0, b"size=1m,mode=755")
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(("/proc/self/fd/%d" % fd).encode(), path, None, ms_bind | ms_rec, None)
        mount(None, path, None, ms_remount | ms_bind | ms_rdonly, None)
        os.close(fd)
    for path, fd in ro:
        os.makedirs(path, mode=0o755, exist_ok=True)  # it may lie under a dir a tmpfs now covers
        mount(("/proc/self/fd/%d" % fd).encode(), path, None, ms_bind | ms_rec, None)
        mount(None, path, None, ms_remount | ms_bind | ms_rdonly | _MS_NOSUID, None)
        os.close(fd)


if __name__ == "__main__":
    _serve() if sys.argv[1:] == ["serve"] else _main()
