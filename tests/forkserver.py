"""A fork server for the tests that run mtnas's commands (`mtnas`, `mtnas-export`, …) as a user would.

Every such command spends ~7 s of its life importing torch, torchvision, torchmetrics, Lightning and timm
before it reads its config: most of a tiny CLI test's time. This server imports them once, then forks a child
per command. The child becomes that command: its own working directory, environment, argv, stdin from
/dev/null, stdout and stderr to files; it then runs the console script's entry point and ends through the
interpreter's own shutdown (non-daemon threads joined, atexit handlers, SystemExit codes, an uncaught
KeyboardInterrupt ending the process by SIGINT), exactly as `python <venv>/bin/mtnas ARGS` would.
The server itself never runs a torch op, so no thread pool exists when it forks.

Protocol (one request at a time): a JSON line on stdin, {"exe", "prog", "args", "cwd", "env", "stdout",
"stderr", "timeout"}; a JSON line back on stdout, {"returncode"} or {"timeout": true} (the child was killed).

Run as a script (`python tests/forkserver.py`), not with -m: Lightning's DDP launcher restarts the command from
`sys.argv` when `__main__` has no module spec, which is what a console script looks like.
"""

from __future__ import annotations

import atexit
import gc
import io
import json
import os
import signal
import sys
import tempfile
import time
import weakref


def preload() -> None:
    """Import what a run imports, so that no child pays for it."""
    import importlib
    import pkgutil

    import mtnas

    for module in pkgutil.walk_packages(mtnas.__path__, "mtnas."):
        importlib.import_module(module.name)
    import pytorch_lightning  # noqa: F401


def server_temporary_folders() -> list[tempfile.TemporaryDirectory]:
    """Temporary folders the imports created (wandb makes two); they are the server's, not its children's."""
    return [obj for obj in gc.get_objects() if isinstance(obj, tempfile.TemporaryDirectory)]


def leave_cleanups_to_the_server(folders: list[tempfile.TemporaryDirectory]) -> None:
    """In a child: at its exit, do not remove what the server made at import (a fresh process would have
    made its own); the next child would find wandb's media folder gone."""
    for folder in folders:
        atexit.unregister(folder.cleanup)
    for finalizer in list(weakref.finalize._registry):  # noqa: SLF001 (the server's, still pending)
        finalizer.atexit = False


def wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"timeout": True}
        time.sleep(0.01)


def serve() -> dict:
    """Answer requests until stdin closes (then exit); return a request only in the child forked for it."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        sys.stdout.write(json.dumps(wait(pid, request["timeout"])) + "\n")
        sys.stdout.flush()
    sys.exit(0)


def become(request: dict):
    """In the child: take on the command's process state; return its entry point."""
    from importlib.metadata import entry_points

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    # New stream objects on the new descriptors (the server's own are pipes to the test process).
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    for fd, name, errors in ((1, "stdout", "strict"), (2, "stderr", "backslashreplace")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors=errors,
            line_buffering=True,
            write_through=bool(os.environ.get("PYTHONUNBUFFERED")) or fd == 2,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [request["exe"], *request["args"]]
    sys.path[0] = os.path.dirname(request["exe"])  # a console script's sys.path[0] is its bin folder
    (entry,) = entry_points(group="console_scripts", name=request["prog"])
    return entry.load()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the test session reaches the children itself
    preload()
    folders = server_temporary_folders()
    request = serve()
    leave_cleanups_to_the_server(folders)
    command = become(request)
    sys.exit(command())
