"""Hostile programs against per-job isolation (issue 11), runnable as root and as a normal user.

``run_checks(layer)`` runs every check in this process and returns ``{name: (ok, detail)}``;
``tests/test_sandbox_isolation.py`` calls it directly (as root) and through ``runuser`` as a normal
user (``python tests/sandbox_isolation_checks.py LAYER`` prints the results as JSON).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import sys
import tempfile
import time

from trl_grpo_plus.rewards.sandbox import run_many, run_tests


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def check_orphan_racing_the_cleanup(layer):
    marker = "racer-" + secrets.token_hex(5)
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:  # a daemon that keeps forking, racing whatever kills it\n"
        "        while True:\n"
        "            try:\n"
        "                if os.fork() == 0:\n"
        f"                    os.execv('/bin/sleep', ['{marker}', '60'])\n"
        "            except OSError:\n"
        "                time.sleep(0.001)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "def f():\n    return 1\n"
    )
    rep = run_tests(program, ["assert f() == 1"], isolation=layer, timeout_s=5, nproc=64)
    time.sleep(0.3)
    left = processes_with(marker)
    t0 = time.monotonic()
    after = run_tests("def f():\n    return 1\n", ["assert f() == 1"], isolation=layer)
    return (rep.passed and not left and after.passed,
            f"status={rep.status} left={len(left)} next job {time.monotonic() - t0:.2f}s")


_SHM = (
    "import ctypes, ctypes.util\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.shmat.restype = ctypes.c_void_p\n"
    "rt = ctypes.CDLL(ctypes.util.find_library('rt') or 'librt.so.1', use_errno=True)\n"
    "KEY, NAME = 0x7e11a5, b'/trl-grpo-plus-mq'\n"
)


def check_sysv_shm_and_posix_mq_across_jobs(layer):
    writer = _SHM + (
        "shm = libc.shmget(KEY, 1 << 20, 0o1666)  # IPC_CREAT | 0666\n"
        "addr = libc.shmat(shm, None, 0)\n"
        "ctypes.memmove(addr, b'SECRET-FROM-JOB-1', 17)\n"
        "mq = rt.mq_open(NAME, 0o102, 0o666, None)  # O_CREAT | O_RDWR\n"
        "rt.mq_send(mq, b'SECRET', 6, 0)\n"
        "def made():\n    return [shm >= 0, mq >= 0]\n"
    )
    reader = _SHM + (
        "def seen():\n"
        "    shm = libc.shmget(KEY, 0, 0)\n"
        "    mq = rt.mq_open(NAME, 2)  # O_RDWR, no O_CREAT\n"
        "    return [shm, mq]\n"
    )
    first = run_tests(writer, ["assert made() == [True, True]"], isolation=layer)
    second = run_tests(reader, ["assert seen() == [-1, -1]"], isolation=layer)
    return first.passed and second.passed, f"writer {first.status} {first.results[0].error[:80]}; reader {second.status} {second.results[0].error[:80]}"


def check_tmpfs_filled_under_a_locked_dir(layer):
    filler = (
        "import os\n"
        "os.mkdir('locked')\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        with open('locked/f%d' % n, 'wb') as f:\n"
        "            f.write(b'x' * (1 << 20))\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "os.chmod('locked', 0)\n"
        "def f():\n    return n > 0\n"
    )
    first = run_tests(filler, ["assert f()"], isolation=layer, fsize_mb=64, tmp_mb=64, timeout_s=10)
    writer = "def f():\n    with open('big', 'wb') as fh:\n        fh.write(b'y' * (8 << 20))\n    return True\n"
    second = run_tests(writer, ["assert f()"], isolation=layer)
    return first.passed and second.passed, f"filler {first.status}; next job {second.status} {second.results[0].error[:80]}"


def check_cpu_hog_beside_honest_jobs(layer):
    # about 0.3 s of CPU here: starved by 32 busy processes, it needs far more wall time than timeout_s
    n = 10_000_000
    honest = "def f(n):\n    return sum(i * i for i in range(n))\n"
    tests = [f"assert f({n}) == {(n - 1) * n * (2 * n - 1) // 6}"]
    hog = (
        "import os\n"
        "for _ in range(31):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        while True:\n"
        "            pass\n"
        "while True:\n"
        "    pass\n"
    )
    # a GRPO group on two workers: the hog starts beside the first honest job
    jobs = [dict(program=hog, tests=tests)] + [dict(program=honest, tests=tests)] * 3
    reps = run_many(jobs, workers=2, isolation=layer, timeout_s=3, nproc=64)
    scores = [r.fraction for r in reps]
    return scores == [0.0, 1.0, 1.0, 1.0], f"scores={scores} statuses={[r.status for r in reps]}"


def check_memory_fan_out(layer):
    program = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(400 << 20)  # touched: zero-filled\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "time.sleep(20)\n"
        "def f():\n    return 1\n"
    )
    t0 = time.monotonic()
    rep = run_tests(program, ["assert f() == 1"], isolation=layer, memory_mb=1024, timeout_s=10, nproc=64)
    took = time.monotonic() - t0
    killed = "memory budget" in rep.stderr_tail
    return not rep.passed and killed, f"status={rep.status} killed_for_memory={killed} took={took:.1f}s"


def check_no_new_privs_and_no_capabilities(layer):
    # NoNewPrivs and empty capability sets, and a setuid-root binary that would act as root without
    # them: `passwd -S root` shows root's real shadow entry (with its last-change date) only to root.
    # Inside, it must be refused, or (a normal user's unshare layer runs as uid 0 of its own user
    # namespace) show placeholders instead of the host's entry.
    import re
    import subprocess

    real = ""
    if os.geteuid() == 0 and os.path.exists("/usr/bin/passwd"):
        real = subprocess.run(["/usr/bin/passwd", "-S", "root"], capture_output=True, text=True).stdout.strip()
    program = (
        "import os, subprocess\n"
        "def f():\n"
        "    fields = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
        "    return [fields['NoNewPrivs'].strip()] + [fields[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb')]\n"
        "def passwd():\n"
        "    if not (os.path.exists('/usr/bin/passwd') and os.stat('/usr/bin/passwd').st_mode & 0o4000):\n"
        "        return ''\n"
        "    out = subprocess.run(['/usr/bin/passwd', '-S', 'root'], capture_output=True, text=True)\n"
        "    return '' if out.returncode != 0 else out.stdout.strip()\n"
    )
    zero = "0000000000000000"
    rep = run_tests(program, [f"assert f() == ['1', '{zero}', '{zero}', '{zero}', '{zero}']",
                              "SEEN = passwd()\nprint('passwd:', repr(SEEN))"], isolation=layer)
    seen = re.findall(r"passwd: '(.*)'", rep.stdout_tail)
    leaked = bool(seen and seen[0] and ((real and seen[0] == real) or re.search(r"\d{4}-\d{2}-\d{2}", seen[0])))
    return rep.passed and not leaked, f"{rep.status} {[r.error[:160] for r in rep.results if not r.passed]} passwd={seen}"


def world_writable_host_dirs() -> list[str]:
    """Every directory a normal user may write to under /, /var, /run, /dev and /tmp (two levels)."""
    found = set()
    for top in ("/", "/var", "/run", "/dev", "/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        try:
            entries = [top] + [os.path.join(top, e) for e in os.listdir(top)]
        except OSError:
            continue
        for path in entries:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002:
                found.add(path)
    return sorted(found)


def check_writes_to_every_world_writable_host_dir(layer):
    marker = "ww-" + secrets.token_hex(5)
    dirs = world_writable_host_dirs()
    program = (
        "import os\n"
        f"for d in {dirs!r}:\n"
        "    try:\n"
        f"        with open(os.path.join(d, '{marker}'), 'w') as f:\n"
        "            f.write('x')\n"
        "    except OSError:\n"
        "        pass\n"
        "def f():\n    return 1\n"
    )
    rep = run_tests(program, ["assert f() == 1"], isolation=layer)
    leaked = [d for d in dirs if os.path.exists(os.path.join(d, marker))]
    for d in leaked:
        os.unlink(os.path.join(d, marker))
    return rep.passed and not leaked, f"{len(dirs)} dirs tried; reached the host: {leaked}"


def check_host_unix_sockets(layer):
    marker = secrets.token_hex(5)
    servers, paths = [], []
    for d in ("/run", "/tmp", "/var/tmp", tempfile.gettempdir()):
        path = os.path.join(d, f"trlgp-{marker}.sock")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            os.chmod(path, 0o777)
            s.listen(4)
            s.setblocking(False)
            servers.append(s)
            paths.append(path)
        except OSError:
            pass
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0trlgp-{marker}")
    abstract.listen(4)
    abstract.setblocking(False)
    servers.append(abstract)
    program = (
        "import socket, glob\n"
        f"targets = {paths!r} + glob.glob('/run/**/*.sock', recursive=True) + glob.glob('/var/run/*.sock')\n"
        f"targets += ['\\0trlgp-{marker}']\n"
        "reached = []\n"
        "for t in targets:\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    s.settimeout(0.5)\n"
        "    try:\n"
        "        s.connect(t)\n"
        "        reached.append(t)\n"
        "    except OSError:\n"
        "        pass\n"
        "def f():\n    return reached\n"
    )
    try:
        rep = run_tests(program, ["assert f() == []"], isolation=layer)
        accepted = 0
        for s in servers:
            try:
                s.accept()[0].close()
                accepted += 1
            except (BlockingIOError, OSError):
                pass
    finally:
        for s in servers:
            s.close()
        for p in paths:
            try:
                os.unlink(p)
            except OSError:
                pass
    return rep.passed and accepted == 0, f"{rep.status} {rep.results[0].error[:200]} accepted={accepted}"


def check_home_and_install_are_out_of_reach(layer):
    # a secret 0600 file in the home dir, and the interpreter's site-packages: the program must
    # neither read the one nor plant a .pth file in the other (it would run on the host as the user)
    import site

    home = os.path.expanduser("~")
    secret = os.path.join(home, f".trlgp-secret-{secrets.token_hex(4)}")
    with open(secret, "w") as f:
        f.write("TOP-SECRET")
    os.chmod(secret, 0o600)
    targets = [os.path.join(d, f"zz-trlgp-{secrets.token_hex(4)}.pth") for d in site.getsitepackages()]
    targets.append(os.path.join(home, f".trlgp-planted-{secrets.token_hex(4)}"))
    program = (
        "import os\n"
        "try:\n"
        f"    SEEN = open({secret!r}).read()\n"
        "except OSError as e:\n"
        "    SEEN = type(e).__name__\n"
        f"for t in {targets!r}:\n"
        "    try:\n"
        "        with open(t, 'w') as f:\n"
        "            f.write('import os; os.system(\"echo pwned\")\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "def f():\n    return SEEN\n"
    )
    try:
        rep = run_tests(program, ["assert f() != 'TOP-SECRET'"], isolation=layer)
        planted = [t for t in targets if os.path.exists(t)]
    finally:
        os.unlink(secret)
        for t in targets:
            if os.path.exists(t):
                os.unlink(t)
    return rep.passed and not planted, f"{rep.status} {rep.results[0].error[:80]} planted={planted}"


def check_a_concurrent_jobs_files(layer):
    marker = secrets.token_hex(5)
    writer = (
        "import os, time\n"
        f"open('answer-{marker}', 'w').write('42')\n"
        f"open('/tmp/answer-{marker}', 'w').write('42')\n"
        "time.sleep(1.5)\n"
        "def f():\n    return 1\n"
    )
    reader = (
        "import os, time, glob\n"
        "time.sleep(0.5)\n"
        f"FOUND = glob.glob('/tmp/**/answer-{marker}', recursive=True) + glob.glob('/proc/*/cwd/answer-{marker}')\n"
        "def f():\n    return FOUND\n"
    )
    reps = run_many([dict(program=writer, tests=["assert f() == 1"]), dict(program=reader, tests=["assert f() == []"])],
                    workers=2, isolation=layer)
    return all(r.passed for r in reps), f"{[r.status for r in reps]} {reps[1].results[0].error[:120]}"


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def run_checks(layer: str, names=None) -> dict:
    out = {}
    for name in names or CHECKS:
        try:
            out[name] = CHECKS[name](layer)
        except Exception as exc:  # a check that crashes is a failed check, with its reason
            out[name] = (False, f"check raised {exc!r}")
    return out


if __name__ == "__main__":
    layer = sys.argv[1] if len(sys.argv) > 1 else "bwrap"
    print("RESULTS " + json.dumps(run_checks(layer, sys.argv[2:] or None)))
