"""Run model-written code in a contained child process, never in this process.

The candidate and its tests go to a separate ``python -I -B`` subprocess in a fresh temporary
directory, with an empty environment, stdin/stdout/stderr detached, a wall-clock timeout, resource
limits (CPU seconds, address space, file size, no core files, no new processes, few open files) set
in ``preexec_fn`` and again inside the child, and an audit hook in the child that refuses process
creation, sockets, file writes/removals and ctypes.  That is containment for sloppy or accidental
code from small models, not a security boundary against a determined attacker (no namespaces or
seccomp).
"""
from __future__ import annotations

import json
import math
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

CODE_TIMEOUT_S = 5.0            # wall-clock seconds per code_eval run
CODE_MEMORY_BYTES = 512 * 2**20  # address-space limit of the code_eval child
CODE_FILE_BYTES = 1 * 2**20      # largest file the child may write (it may only write its result)
MAX_CODE_CHARS = 50_000          # longer candidates are not run at all

_HARNESS = r'''
import builtins, json, os, resource, sys

def _limits(cpu, mem, fsize):
    for res, val in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
                     (resource.RLIMIT_FSIZE, (fsize, fsize)), (resource.RLIMIT_CORE, (0, 0)),
                     (resource.RLIMIT_NPROC, (0, 0)), (resource.RLIMIT_NOFILE, (64, 64))):
        try:
            resource.setrlimit(res, val)
        except (ValueError, OSError):
            pass

with open("payload.json", encoding="utf-8") as f:
    P = json.load(f)
os.remove("payload.json")
_limits(P["cpu"], P["mem"], P["fsize"])
_out = open("result.json", "w", encoding="utf-8")

_BLOCKED = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
            "os.killpg", "subprocess.Popen", "socket.connect", "socket.bind", "socket.sendto",
            "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname", "os.remove", "os.rmdir",
            "os.rename", "os.replace", "shutil.rmtree", "os.chmod", "os.chown", "os.link",
            "os.symlink", "os.truncate", "os.mkdir", "os.chdir", "os.putenv", "os.unsetenv",
            "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.addressof",
            "os.setuid", "os.setgid", "pty.spawn", "webbrowser.open", "urllib.Request",
            "http.client.connect"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _hook(event, args):
    if event in _BLOCKED:
        raise PermissionError("sandbox: " + event + " is not allowed")
    if event == "open":
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS):
            raise PermissionError("sandbox: writing files is not allowed")
    elif event == "import" and args[0] in ("ctypes", "_ctypes", "cffi"):
        raise PermissionError("sandbox: importing " + args[0] + " is not allowed")

def _finish(**result):
    result["nonce"] = P["nonce"]
    _out.write(json.dumps(result))
    _out.flush()
    os._exit(0)

ns = {"__name__": "__candidate__", "__builtins__": builtins}
sys.addaudithook(_hook)
try:
    try:
        exec(compile(P["code"], "candidate.py", "exec"), ns)
    except SystemExit:
        pass
except BaseException as e:
    _finish(ok=False, stage="load", passed=0, total=len(P["tests"]), error=repr(e)[:300])
for name, target in P["aliases"].items():
    if target in ns:
        ns[name] = ns[target]
passed, error = 0, ""
for t in P["tests"]:
    try:
        exec(compile(t, "test.py", "exec"), ns)
        passed += 1
    except BaseException as e:
        error = error or (t[:120] + ": " + repr(e)[:200])
_finish(ok=passed == len(P["tests"]), stage="tests", passed=passed, total=len(P["tests"]), error=error)
'''


def _child_limits(cpu: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the forked child before exec; only C calls, no imports
        for res, val in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                         (resource.RLIMIT_AS, (CODE_MEMORY_BYTES, CODE_MEMORY_BYTES)),
                         (resource.RLIMIT_FSIZE, (CODE_FILE_BYTES, CODE_FILE_BYTES)),
                         (resource.RLIMIT_CORE, (0, 0)),
                         (resource.RLIMIT_NPROC, (0, 0))):
            try:
                resource.setrlimit(res, val)
            except (ValueError, OSError):
                pass
    return apply


def run_sandboxed(code: str, tests: list[str], aliases: dict[str, str] | None = None,
                  timeout: float = CODE_TIMEOUT_S) -> dict:
    """Run code then each test snippet in a contained child python; never in this process.

    Returns the child's report {ok, stage, passed, total, error} or {ok: False, error: why}."""
    if len(code) > MAX_CODE_CHARS:
        return {"ok": False, "stage": "size", "error": "candidate code too long"}
    cpu = max(1, math.ceil(timeout))
    nonce = secrets.token_hex(16)
    payload = {"code": code, "tests": tests, "aliases": aliases or {}, "nonce": nonce,
               "cpu": cpu, "mem": CODE_MEMORY_BYTES, "fsize": CODE_FILE_BYTES}
    python = sys.executable or "/usr/bin/python3"
    with tempfile.TemporaryDirectory(prefix="switchyard-grade-") as tmp:
        work = Path(tmp)
        (work / "harness.py").write_text(_HARNESS, encoding="utf-8")
        (work / "payload.json").write_text(json.dumps(payload), encoding="utf-8")
        try:
            proc = subprocess.Popen([python, "-I", "-B", "-S", "harness.py"], cwd=tmp, env={},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                                    preexec_fn=_child_limits(cpu))
        except OSError as exc:
            return {"ok": False, "stage": "spawn", "error": f"could not start sandbox: {exc}"}
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
            return {"ok": False, "stage": "timeout", "error": f"timed out after {timeout:g}s"}
        if proc.returncode == -signal.SIGXCPU:  # the CPU-seconds limit: a timeout by another clock
            return {"ok": False, "stage": "timeout", "error": f"timed out: CPU time limit of {cpu}s reached"}
        try:
            result = json.loads((work / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"ok": False, "stage": "crash", "error": f"child exited {proc.returncode} without a result"}
    if not isinstance(result, dict) or result.get("nonce") != nonce:
        return {"ok": False, "stage": "crash", "error": "child result not trustworthy"}
    result.pop("nonce", None)
    return result
