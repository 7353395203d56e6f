"""Layer choice: the strongest layer or a clear error, never a silent step down (issue 11)."""

from __future__ import annotations

import logging

import pytest

from trl_grpo_plus.rewards import sandbox
from trl_grpo_plus.rewards.sandbox import SandboxUnavailable, layers, run_tests


@pytest.fixture
def broken_bwrap(monkeypatch):
    """bwrap cannot start (as under Ubuntu's AppArmor userns restriction); the probe cache is put back."""
    saved = dict(layers._probed), layers._chosen
    monkeypatch.setattr(layers, "_bwrap_executable", lambda: "/nonexistent/bwrap")
    layers._probed.pop("bwrap", None)
    layers._chosen = None
    yield
    layers._probed.clear()
    layers._probed.update(saved[0])
    layers._chosen = saved[1]


def test_auto_never_steps_down_to_unshare_silently(broken_bwrap, monkeypatch):
    monkeypatch.delenv(layers.FALLBACK_ENV, raising=False)
    with pytest.raises(SandboxUnavailable) as info:
        run_tests("def f():\n    return 1\n", ["assert f() == 1"])
    message = str(info.value)
    assert "bwrap:" in message and "nonexistent" in message  # why bwrap failed
    for fix in ("apparmor_restrict_unprivileged_userns", "seccomp=unconfined", layers.FALLBACK_ENV + "=unshare",
                "isolation='unshare'"):
        assert fix in message, fix


def test_the_unshare_fallback_is_an_explicit_and_logged_opt_in(broken_bwrap, monkeypatch, caplog):
    if sandbox._probe_layer("unshare") is None:
        pytest.skip("unshare does not work here")
    monkeypatch.setenv(layers.FALLBACK_ENV, "unshare")
    with caplog.at_level(logging.INFO, logger="trl_grpo_plus.rewards.sandbox"):
        rep = run_tests("def f():\n    return 1\n", ["assert f() == 1"])
    assert rep.passed and rep.layer == "unshare"
    assert any(r.levelno == logging.WARNING and "weaker unshare layer" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv(layers.FALLBACK_ENV, "none")
    layers._chosen = None
    with pytest.raises(SandboxUnavailable, match="the only fallback is 'unshare'"):
        run_tests("x = 1", ["assert x == 1"])


def test_the_chosen_layer_names_its_limits_mechanism(caplog):
    iso = sandbox.probe_isolation()
    assert iso.layer == "bwrap"
    assert "pid namespace" in iso.limits and "CPU-seconds" in iso.limits
    assert "RLIMIT_AS per process" in layers.Isolation("none", None, False).limits
    layers._chosen = None
    with caplog.at_level(logging.INFO, logger="trl_grpo_plus.rewards.sandbox"):
        sandbox.probe_isolation()
    assert any("using layer 'bwrap'" in r.getMessage() and "CPU-seconds" in r.getMessage() for r in caplog.records)


def test_none_needs_allow_unsafe():
    with pytest.raises(SandboxUnavailable, match="allow_unsafe=True"):
        run_tests("x = 1", ["assert x == 1"], isolation="none")


def test_job_uids_never_repeat_within_a_process():
    from concurrent.futures import ThreadPoolExecutor

    from trl_grpo_plus.rewards.sandbox.limits import UID_BASE, UID_SPAN, fresh_uids

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: fresh_uids(2), range(5000)))
    uids = [u for b in batches for u in b]
    assert len(set(uids)) == len(uids) == 10000  # random draws would collide after ~1,200 jobs
    assert all(UID_BASE <= u < UID_BASE + UID_SPAN for u in uids)
    assert all(b[1] == b[0] + 1 or b[1] == UID_BASE for b in batches)  # a job's two uids are adjacent
