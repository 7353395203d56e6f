"""Running a job on the host: a fresh sandboxed interpreter per job (:func:`run_fresh`), or a warm
fork server per worker (:func:`run_forkserver`, the default as root).

Both send the harness two frames (:func:`job_frames`): the program's part first, then the judge's
part (tests, setup, record key), so the harness can start the program's process before the tests
are in its memory (see :mod:`.harness`).
"""

import atexit
import logging
import marshal
import os
import secrets
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .cases import guard_name, sandbox_tests
from .layers import Isolation, bwrap_prefix, hidden_python_paths, site_dirs, unshare_command, user_unshare_mounts
from .limits import CLEAN_ENV, RESULT_CAP, fresh_uids, job_limits
from .report import TAIL_BYTES, TestReport, build_report

logger = logging.getLogger("trl_grpo_plus.rewards.sandbox")

_HERE = Path(__file__).parent
# The harness runs from source inside the sandbox: its modules, in dependency order, as one script.
HARNESS_SOURCE = "\n\n".join((_HERE / f"{name}.py").read_text()
                              for name in ("protocol", "program", "judge", "in_process", "stdio", "harness"))


@dataclass(frozen=True)
class Job:
    """One program and its normalised tests, with every option of :func:`run_tests`."""

    program: str
    items: tuple
    mode: str
    float_tol: float | None = None
    timeout_s: float = 5.0
    memory_mb: int = 1024
    setup_code: str = ""
    nproc: int = 32
    fsize_mb: int = 16
    tmp_mb: int = 64
    output_bytes: int = 1 << 20
    eq_guard: bool = True
    judge: str = "isolated"


def _frame(obj) -> bytes:
    data = marshal.dumps(obj)
    return len(data).to_bytes(8, "big") + data


def job_frames(job: Job, key: bytes, limits: dict, **first_extra) -> bytes:
    """The two frames the harness reads: the program's part, then the judge's part."""
    guard = guard_name() if (job.eq_guard and job.judge == "in_process") else None
    first = {"program": job.program, "mode": job.mode, "judge": job.judge, "limits": limits, **first_extra}
    second = {"key": key, "tests": sandbox_tests(job.items, job.mode, guard), "setup": job.setup_code,
              "guard": guard}
    return _frame(first) + _frame(second)


def _uids(job: Job) -> tuple:
    if os.geteuid() != 0:
        return (None, None)
    if job.mode == "assert" and job.judge == "isolated":
        return tuple(fresh_uids(2))
    return (fresh_uids(1)[0], None)


def _limits(job: Job, iso: Isolation) -> dict:
    root = os.geteuid() == 0
    # NPROC counts per user: without a namespace or a private uid it would count the caller's processes
    limits = job_limits(timeout_s=job.timeout_s, memory_mb=job.memory_mb, fsize_mb=job.fsize_mb,
                        output_bytes=job.output_bytes, nproc=job.nproc if (root or iso.layer != "none") else 0,
                        n_items=len(job.items), uids=_uids(job))
    limits.update(tmp_mb=job.tmp_mb, nnp=iso.layer == "unshare",  # bwrap sets no_new_privs itself
                  namespaces="try" if iso.layer != "none" else "")  # the fork server requires them
    if iso.layer == "none":  # no pid namespace to sum over: rlimits per process and the wall clock only
        limits.update(job_cpu_s=0, job_memory_mb=0, wall_s=job.timeout_s)
    return limits


def run_fresh(iso: Isolation, job: Job) -> TestReport:
    """Run ``job`` in a new sandbox around a new ``python -I``."""
    start = time.monotonic()
    key = secrets.token_bytes(32)
    root = os.geteuid() == 0
    limits = _limits(job, iso)
    workdir = None
    python = [sys.executable, "-I", "-S", "-c", HARNESS_SOURCE]
    if iso.layer == "bwrap":
        cmd = [*bwrap_prefix(iso.executable, root, job.tmp_mb), *python]
    elif iso.layer == "unshare" and root:
        # root in a private mount namespace: fresh tmpfs /tmp is the working dir, and the Python
        # install is re-exposed if it sits under a dir the dropped uid cannot enter (e.g. /root)
        limits.update(private_tmp=True, chdir="/tmp", expose=hidden_python_paths())
        cmd = unshare_command(root) + python
    elif iso.layer == "unshare":
        # a normal user: private tmpfs over the world-writable dirs and /run, and the user's home and
        # this interpreter's install bound read-only (a planted .pth would run code on the host)
        hide, expose, readonly = user_unshare_mounts()
        limits.update(private_tmp=True, chdir="/tmp", hide=hide, expose=expose, readonly=readonly)
        cmd = unshare_command(root) + python
    else:
        workdir = tempfile.mkdtemp(prefix="trl-grpo-plus-sandbox-")
        limits["chdir"] = workdir
        cmd = python
    r_fd, w_fd = os.pipe()
    data = job_frames(job, key, limits, result_fd=w_fd, sys_path=site_dirs())
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w_fd,), env=dict(CLEAN_ENV, HOME=workdir or "/tmp"),
                                cwd=workdir or "/", start_new_session=True, close_fds=True)
    except OSError as exc:
        os.close(r_fd)
        os.close(w_fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc), layer=iso.layer)
    os.close(w_fd)
    try:
        out, err, res, timed_out = _pump(proc, data, r_fd, deadline=start + limits["wall_s"] + 1.0,
                                         result_cap=limits["result_cap"])
    finally:
        os.close(r_fd)
        _reap(proc, [u for u in (limits["uid"], limits["judge_uid"]) if u is not None] if iso.layer == "none" else [])
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    exceeded = {124: "cpu", 125: "memory"}.get(proc.returncode, "")  # the harness's own verdict on the budget
    return build_report(iso, key, job, out, err, res, timed_out or exceeded == "cpu", proc.returncode,
                        time.monotonic() - start, exceeded=exceeded)


class _ForkServer:
    """One sandbox (bwrap or unshare) holding a pristine interpreter that forks one child per job
    (``harness._serve``). Used by one thread at a time, through :data:`_servers`."""

    def __init__(self, iso: Isolation, tmp_mb: int):
        python = [sys.executable, "-I", "-S", "-c", HARNESS_SOURCE, "serve"]
        if iso.layer == "bwrap":
            cmd = [*bwrap_prefix(iso.executable, os.geteuid() == 0, tmp_mb), *python]
        else:
            cmd = unshare_command(True) + python
        self.pid = os.getpid()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(CLEAN_ENV, HOME="/tmp"), cwd="/", start_new_session=True)
        os.set_blocking(self.proc.stderr.fileno(), False)
        setup = {"sys_path": site_dirs(), "private_tmp": iso.layer == "unshare", "tmp_mb": tmp_mb,
                 "expose": hidden_python_paths() if iso.layer == "unshare" else [],
                 "tail_bytes": TAIL_BYTES}
        try:
            self._send(setup)
            if self._recv(time.monotonic() + 30) != {"ready": True}:
                raise RuntimeError("fork server did not report ready")
        except Exception:
            self.close()
            raise

    def _send(self, obj) -> None:
        data = marshal.dumps(obj)
        self.proc.stdin.write(len(data).to_bytes(8, "big") + data)
        self.proc.stdin.flush()

    def _read(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("fork server did not answer in time")
            ready = select.select([fd], [], [], left)[0]
            if ready:
                chunk = os.read(fd, n - len(buf))
                if not chunk:
                    raise EOFError("fork server exited: " + self.stderr_tail())
                buf += chunk
        return bytes(buf)

    def _recv(self, deadline: float, max_bytes: int = 1 << 31):
        size = int.from_bytes(self._read(8, deadline), "big")
        if size > max_bytes:
            raise EOFError(f"fork server sent a {size}-byte reply (limit {max_bytes}): closing it")
        return marshal.loads(self._read(size, deadline))

    def run(self, frames: bytes, deadline: float, max_bytes: int) -> dict:
        self.proc.stdin.write(frames)
        self.proc.stdin.flush()
        reply = self._recv(deadline, max_bytes)
        if not isinstance(reply, dict) or not {"out", "err", "res", "timed_out", "exit"} <= reply.keys():
            raise EOFError("fork server sent a malformed reply: closing it")
        return reply

    def stderr_tail(self) -> str:
        try:
            return (os.read(self.proc.stderr.fileno(), 1 << 16) or b"").decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        self.proc.wait()


_fallback_warned: list[bool] = []
_servers_lock = threading.Lock()
_servers: dict[tuple, list[_ForkServer]] = {}


def _acquire_server(iso: Isolation, tmp_mb: int) -> _ForkServer:
    key = (iso.layer, iso.executable, tmp_mb)
    with _servers_lock:
        idle = _servers.setdefault(key, [])
        while idle:
            server = idle.pop()
            if server.pid == os.getpid() and server.proc.poll() is None:
                return server
    return _ForkServer(iso, tmp_mb)


def _release_server(iso: Isolation, tmp_mb: int, server: _ForkServer) -> None:
    with _servers_lock:
        _servers.setdefault((iso.layer, iso.executable, tmp_mb), []).append(server)


def shutdown_servers() -> None:
    """Stop every idle fork server of this process (also done at interpreter exit)."""
    with _servers_lock:
        servers = [s for idle in _servers.values() for s in idle]
        _servers.clear()
    for server in servers:
        if server.pid == os.getpid():
            server.close()


atexit.register(shutdown_servers)


def run_forkserver(iso: Isolation, job: Job) -> TestReport:
    """Run ``job`` on an idle fork server of this worker (started on first use; root only)."""
    start = time.monotonic()
    key = secrets.token_bytes(32)
    limits = _limits(job, iso)
    data = job_frames(job, key, limits, env=dict(CLEAN_ENV))
    for attempt in range(2):
        try:
            server = _acquire_server(iso, job.tmp_mb)
        except Exception as exc:  # the one-shot path still works wherever the probe passed
            if not _fallback_warned:
                _fallback_warned.append(True)
                logger.warning("code sandbox: the %s fork server does not start (%r); starting a fresh "
                               "interpreter per program instead", iso.layer, exc)
            return run_fresh(iso, job)
        try:
            reply = server.run(data, deadline=start + limits["wall_s"] + 5.0,
                               max_bytes=limits["result_cap"] + 4 * TAIL_BYTES + 4096)
        except TimeoutError:
            server.close()
            return build_report(iso, key, job, b"", b"", b"", True, None, time.monotonic() - start)
        except (EOFError, OSError) as exc:
            server.close()  # died between jobs or during this one: retry once on a fresh server
            if attempt == 0 and time.monotonic() - start < job.timeout_s:
                continue
            return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc), layer=iso.layer)
        _release_server(iso, job.tmp_mb, server)
        if reply.get("failed"):
            return TestReport(False, 0.0, "sandbox_error", stderr_tail=reply["err"].decode("utf-8", "replace"),
                              layer=iso.layer, duration_s=time.monotonic() - start)
        return build_report(iso, key, job, reply["out"], reply["err"], reply["res"], reply["timed_out"],
                            reply["exit"], time.monotonic() - start, exceeded=reply.get("exceeded", ""))
    raise AssertionError("unreachable")  # pragma: no cover


def _pump(proc, data: bytes, r_fd: int, *, deadline: float, result_cap: int = RESULT_CAP):
    """Feed stdin, read stdout/stderr into capped tails and the result channel, until the harness
    process exits or the deadline passes (then the whole session is SIGKILLed)."""
    tails = {"out": bytearray(), "err": bytearray()}
    res = bytearray()
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    sel.register(r_fd, selectors.EVENT_READ, "res")
    timed_out = False
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # something outside the pid namespace still holds a pipe (layer "none")
            for sk, _ in sel.select(timeout=min(0.1, deadline - now)):
                name = sk.data
                if name == "in":
                    try:
                        data = data[os.write(proc.stdin.fileno(), data[:1 << 16]):]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        data = b""
                    if not data:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                fd = sk.fd
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(sk.fileobj)
                    continue
                if name == "res":
                    res += chunk
                    if len(res) > result_cap:
                        timed_out = True  # flooding the result channel; stop here
                        return bytes(tails["out"]), bytes(tails["err"]), bytes(res), timed_out
                else:
                    buf = tails[name]
                    buf += chunk
                    if len(buf) > 2 * TAIL_BYTES:
                        del buf[:-TAIL_BYTES]
    finally:
        sel.close()
    return bytes(tails["out"][-TAIL_BYTES:]), bytes(tails["err"][-TAIL_BYTES:]), bytes(res), timed_out


def _reap(proc, uids) -> None:
    """SIGKILL the sandbox's session, wait for it, and (layer ``none`` as root) every process left
    under the run's private uid."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass
    proc.wait()
    for uid in uids:
        _kill_uid(uid)


def _kill_uid(uid: int) -> None:
    # kill(-1) as the run's uid reaches exactly the processes of that uid (none of ours)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
