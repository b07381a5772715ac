"""`mtnas`: the Hydra entry point. Thin on purpose: validate the config, then hand over to the pipeline.

Nothing heavy is imported at module level, so `mtnas --help` answers without loading torch.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mtnas.errors import MtnasError


def config_dir() -> str:
    """Configs ship inside the package as `mtnas/conf` (wheel); in a source checkout they are `conf/`."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parents[1] / "conf")


def report_error(err: MtnasError) -> None:
    print(f"\nmtnas: {err}\n", file=sys.stderr)
    # The run folder's log keeps the error too (its file handler only: the terminal has it already).
    record = logging.LogRecord("mtnas", logging.ERROR, __file__, 0, "mtnas: %s", (err,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    try:
        from mtnas.config import validate

        validate(cfg)
        from mtnas.pipeline import run

        return run(cfg)
    except MtnasError as err:
        # A user's mistake: one paragraph naming the key or file, no traceback.
        report_error(err)
        sys.exit(2)


def main() -> None:
    _run()


if __name__ == "__main__":
    main()
