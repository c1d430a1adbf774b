"""Long saves and loads show bytes and rate on a terminal, and nothing anywhere else."""

from __future__ import annotations

import io

import pytest

from pytest_madcache.util.progress import Progress, human_bytes
from pytest_madcache.store import Store


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_bytes_total_and_rate():
    out = Terminal()
    progress = Progress("Loading run_1_abcdef12", total=300 * 1024**2, stream=out)
    progress.update(120 * 1024**2)
    progress.close()
    text = out.getvalue()
    assert text.startswith("\rLoading run_1_abcdef12  120.00 MB / 300.00 MB  ")
    assert text.rstrip().endswith("/s") and text.endswith("\n")


def test_logs_and_ci_output_stay_quiet():
    out = io.StringIO()  # not a terminal
    progress = Progress("Saving", stream=out)
    progress.update(5 * 1024**2)
    progress.close()
    assert out.getvalue() == ""
    assert progress.done == 5 * 1024**2


@pytest.mark.parametrize("n, text", [(512, "512 B"), (1536, "1.50 KB"), (3.24 * 1024**3, "3.24 GB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.engine
def test_a_store_save_draws_progress_only_when_asked(engine, images, cache_dir, capfd):
    built = images.make({"w.bin": 3_000_000})
    Store(cache_dir, engine=engine, progress=False).save(built.image_id, "a" * 64, image_name="quiet")
    assert "Saving" not in capfd.readouterr().err
    Store(cache_dir / "2", engine=engine, progress=True).save(built.image_id, "b" * 64, image_name="loud")
    err = capfd.readouterr().err
    assert "Saving " in err and "MB" in err and "/s" in err
