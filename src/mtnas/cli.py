"""`mtnas`: the Hydra entry point. Thin on purpose: validate the config, then hand over to the pipeline.

Nothing heavy is imported at module level, so `mtnas --help` answers without loading torch.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mtnas.errors import MtnasError

_STORAGE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM)


def config_dir() -> str:
    """Configs ship inside the package as `mtnas/conf` (wheel); in a source checkout they are `conf/`."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parents[1] / "conf")


def _to_run_log(level: int, message: str, exc_info=None) -> None:
    """Into the run folder's cli.log only (its file handler): the terminal has the message already."""
    record = logging.LogRecord("mtnas", level, __file__, 0, "%s", (message,), exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report_error(err: MtnasError) -> None:
    print(f"\nmtnas: {err}\n", file=sys.stderr)
    _to_run_log(logging.ERROR, f"mtnas: {err}")


class _InterruptWatch:
    """Notes Ctrl-C before passing it on: Lightning turns it into `sys.exit(1)` during `fit`, so the
    KeyboardInterrupt alone cannot tell an interrupted run from a failed one."""

    def __init__(self):
        self.seen = False

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        if callable(self.previous):
            signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        self.seen = True
        self.previous(signum, frame)

    def __exit__(self, *exc):
        if callable(self.previous):
            signal.signal(signal.SIGINT, self.previous)


def report_interrupt(out_dir: str) -> None:
    if os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
        return  # one message per run, not one per process
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a sweep resumes job by job in the same sweep folder
        again = f"the same sweep with hydra.sweep.dir={hydra_cfg.sweep.dir}"
    else:
        again = f"the same command with hydra.run.dir={out_dir}"
    message = (
        f"interrupted. Finished models, the last completed epoch and every evaluated subnet are kept in "
        f"{out_dir}; to continue, rerun {again}"
    )
    print(f"\nmtnas: {message}\n", file=sys.stderr)
    _to_run_log(logging.WARNING, f"mtnas: {message}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    with _InterruptWatch() as interrupt:
        try:
            from mtnas.config import validate

            method = validate(cfg)
            from mtnas.pipeline import run

            return run(cfg, method)
        except MtnasError as err:
            # A user's mistake: one paragraph naming the key or file, no traceback.
            report_error(err)
            sys.exit(2)
        except KeyboardInterrupt:
            report_interrupt(cfg.paths.output_dir)
            sys.exit(130)
        except OSError as err:
            if err.errno not in _STORAGE_ERRORS:
                raise
            # A full disk or a read-only / unwritable run folder: what happened and what is kept, no traceback.
            report_error(
                MtnasError(
                    f"cannot write {err.filename or cfg.paths.output_dir}: {err.strerror}. Everything written "
                    f"before is kept (artifacts are written atomically); free space or fix the folder's "
                    f"permissions, then rerun with hydra.run.dir={cfg.paths.output_dir} to continue."
                )
            )
            sys.exit(2)
        except SystemExit:
            if interrupt.seen:
                report_interrupt(cfg.paths.output_dir)
                sys.exit(130)
            raise
        except Exception as err:
            # A bug: Hydra prints the traceback; the run folder's log keeps it too.
            _to_run_log(logging.ERROR, f"mtnas: unexpected error {err!r}", sys.exc_info())
            raise


def _check_run_folder(argv: list[str]) -> None:
    """A run folder given on the command line that cannot be written (a read-only filesystem, no
    permission) would fail inside Hydra's log set-up with a traceback: say it in one paragraph first."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value:
            continue
        folder = Path(value).expanduser()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            if existing.is_dir():
                why = f"{existing} cannot be written (a read-only filesystem, or no permission)"
                fix = f"copy the run to a writable place and rerun with {key}=<the copy>, or choose another {key}"
            else:
                why, fix = f"{existing} is a file, not a folder", f"choose another {key}"
            report_error(MtnasError(f"the run folder {folder} cannot be used: {why}; {fix}."))
            sys.exit(2)


def main() -> None:
    _check_run_folder(sys.argv[1:])
    _run()


if __name__ == "__main__":
    main()
