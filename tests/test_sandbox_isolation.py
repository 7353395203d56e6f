"""Per-job isolation (issue 11), as root and as a normal user, for every working layer.

The hostile programs live in ``tests/sandbox_isolation_checks.py``. As root they run here, then again
as a normal user that this test creates (``useradd``), through ``runuser`` and a venv of the system
Python that sees this environment's packages; without root, they run as the current (normal) user.
When no normal user can be had (no root, or no matching system Python, or the checkout is not
readable by other users), the normal-user half skips, saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from trl_grpo_plus.rewards import sandbox

import sandbox_isolation_checks as checks  # noqa: E402  (tests/ is on sys.path under pytest)

HERE = Path(__file__).resolve().parent
USER = "trlgp-sandbox-test"
NAMES = sorted(checks.CHECKS)


def _layers():
    return [layer for layer in ("bwrap", "unshare") if sandbox._probe_layer(layer) is not None]


_results: dict = {}


def _here(layer):
    if layer not in _results:
        _results[layer] = checks.run_checks(layer)
    return _results[layer]


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["bwrap", "unshare"])
@pytest.mark.parametrize("name", NAMES)
def test_isolation_as_this_user(layer, name):
    if layer not in _layers():
        pytest.skip(f"layer {layer} does not work here: {sandbox.layers._probe_errors.get(layer)}")
    ok, detail = _here(layer)[name]
    assert ok, f"{name} on {layer} as uid {os.geteuid()}: {detail}"


def _system_python():
    for cand in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", shutil.which("python3") or ""):
        if cand and os.path.exists(cand):
            out = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
            if out.stdout.strip() == str(tuple(sys.version_info[:2])):
                return cand
    return None


@pytest.fixture(scope="module")
def normal_user():
    """(runuser prefix, interpreter) for a normal user that sees this environment's packages."""
    if os.geteuid() != 0:
        pytest.skip("not root: the checks above already ran as a normal user")
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        pytest.skip("runuser/useradd not available")
    python = _system_python()
    if python is None:
        pytest.skip(f"no system python {sys.version_info[0]}.{sys.version_info[1]} to build the user's venv")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"useradd failed: {made.stderr.strip()}")
    info = pwd.getpwnam(USER)
    venv = tempfile.mkdtemp(prefix="trlgp-user-venv-")
    os.chown(venv, info.pw_uid, info.pw_gid)
    run = ["runuser", "-u", USER, "--"]
    made = subprocess.run(run + [python, "-m", "venv", "--without-pip", venv + "/v"], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"the user's venv: {made.stderr.strip()[-300:]}")
    target = next(Path(venv, "v", "lib").glob("python*/site-packages"))
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    target.joinpath("zz_trlgp_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in paths) + "\n")
    interp = str(Path(venv, "v", "bin", "python"))
    probe = subprocess.run(run + [interp, "-c", "import trl_grpo_plus.rewards.sandbox"], capture_output=True,
                           text=True, cwd="/")
    if probe.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"the normal user cannot import this checkout (permissions?): {probe.stderr.strip()[-300:]}")
    yield run, interp
    shutil.rmtree(venv, ignore_errors=True)


_user_results: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["bwrap", "unshare"])
@pytest.mark.parametrize("name", NAMES)
def test_isolation_as_a_normal_user(normal_user, layer, name):
    run, interp = normal_user
    if layer not in _user_results:
        out = subprocess.run(run + [interp, str(HERE / "sandbox_isolation_checks.py"), layer],
                             capture_output=True, text=True, cwd="/", timeout=600)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULTS ")]
        if not line:
            pytest.fail(f"the checks did not run as {USER}: {out.stderr[-1500:]}")
        _user_results[layer] = json.loads(line[-1][len("RESULTS "):])
    ok, detail = _user_results[layer][name]
    if not ok and "does not work here" in detail:
        pytest.skip(detail)
    assert ok, f"{name} on {layer} as {USER}: {detail}"
