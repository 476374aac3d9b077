"""Faust's `--datadir` is honoured (`import faust` exports it as FAUST_DATADIR before the app is built), or refused."""

from __future__ import annotations

from types import SimpleNamespace

from app.faust_compat.options import data_dir
from app.main import settings_datadir_conflict
from app.settings import Settings


def test_the_flag_wins_over_worker_data_dir():
    settings = Settings.from_env({"WORKER_DATA_DIR": "/var/lib/worker"})
    assert data_dir(settings, environ={}) == "/var/lib/worker"
    assert data_dir(settings, environ={"FAUST_DATADIR": "/mnt/state"}) == "/mnt/state"
    assert data_dir(settings, environ={"F_DATADIR": "{conf.name}-data"}) == "/var/lib/worker"  # the CLI's default


def test_a_flag_given_after_the_app_was_built_is_refused_by_name(monkeypatch, tmp_path):
    built = SimpleNamespace(conf=SimpleNamespace(datadir=tmp_path / "built"))
    monkeypatch.delenv("FAUST_DATADIR", raising=False)
    assert settings_datadir_conflict(built) is None
    monkeypatch.setenv("FAUST_DATADIR", str(tmp_path / "built"))
    assert settings_datadir_conflict(built) is None
    monkeypatch.setenv("FAUST_DATADIR", str(tmp_path / "other"))
    message = settings_datadir_conflict(built)
    assert "--datadir" in message and "WORKER_DATA_DIR" in message and "other" in message
