"""The fork server that runs the CLI tests' commands (tests/forkserver.py) ends a command as a fresh process
does: the same exit code, stdout and stderr, whichever way the command ends."""

from __future__ import annotations

import pytest

from .conftest import TINY, run_cli

pytestmark = pytest.mark.slow  # fresh processes: ~8 s of imports each


@pytest.mark.parametrize(
    ("prog", "args", "code"),
    [
        ("mtnas", [*TINY, "stage=search"], 2),  # a config error: one paragraph
        ("mtnas-export", ["--help"], 0),  # argparse prints and exits
        ("mtnas-export", ["a", "b", "c", "d"], 2),  # argparse's usage error
        ("mtnas-report", ["missing-folder"], 2),  # mtnas's own error
    ],
)
def test_a_command_run_by_the_fork_server_ends_as_a_fresh_process_does(
    tmp_path, cache_dir, monkeypatch, prog, args, code
):
    forked = run_cli(args, tmp_path, cache_dir, prog=prog)
    monkeypatch.setenv("MTNAS_TEST_FRESH_PROCESSES", "1")
    fresh = run_cli(args, tmp_path, cache_dir, prog=prog)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == code and forked.stdout + forked.stderr
