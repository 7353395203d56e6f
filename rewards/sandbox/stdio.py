"""stdin/stdout cases (INSIDE the sandbox): one fork per case runs the program as ``__main__`` with the
case's input; this process reads what it prints and sends it to the host in a record. The expected
outputs never enter the sandbox: the host compares them (:func:`.cases.outputs_match`).
"""


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
                    _, status = os.waitpid(pid, 0)
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
