"""`python -m app workers`: the options that shape each worker's environment."""

from __future__ import annotations

import pytest

from app.ops.cli import _parser
from app.ops.workers import Workers, worker_command
from app.settings import Settings


@pytest.mark.parametrize("option, setting, expected", [
    ("debug", "INFO", "DEBUG"),     # the option wins
    (None, "WARNING", "WARNING"),   # else LOG_LEVEL
    (None, "INFO", "INFO"),
])
def test_the_workers_log_at_the_level_asked(option, setting, expected):
    argv = ["workers", "--count", "1"] + (["--log-level", option] if option else [])
    args = _parser().parse_args(argv)
    workers = Workers(args.count, 6066, "127.0.0.1", args.log_level,
                      Settings.from_env({"LOG_LEVEL": setting, "LOG_FORMAT": "json"}))
    # The worker's logging config reads LOG_LEVEL; Faust's -l alone is ignored, so both must say it.
    assert workers.environment()["LOG_LEVEL"] == expected
    assert worker_command("127.0.0.1", 6066, workers.log_level)[-2:] == ["-l", expected.lower()]


def test_an_unknown_log_level_is_refused(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["workers", "--log-level", "verbose"])
    assert "invalid choice: 'VERBOSE'" in capsys.readouterr().err
