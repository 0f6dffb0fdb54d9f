"""Issue 22, defect 5: an output directory has one writer, nothing in it is replaced without --overwrite, and
a result appears whole or not at all (`plmlens.outputs`)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from plmlens import outputs
from plmlens.outputs import Interrupted, OutputError, OutputSet, claim_file, claim_output

RUN = OutputSet(("heads.csv", "layers.csv", "summary.json"), record="summary.json", stale=("report.html", "figures"))


def finished_run(directory: Path, tag: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in RUN.names:
        (directory / name).write_text(tag)
    (directory / "report.html").write_text(tag)
    (directory / "figures").mkdir(exist_ok=True)
    (directory / "figures" / "heads_contact.png").write_text(tag)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_an_existing_file_is_not_an_output_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        claim_output(path, RUN)


def test_an_earlier_output_is_kept_unless_overwrite(tmp_path):
    finished_run(tmp_path / "r", "old")
    with pytest.raises(OutputError) as caught:
        claim_output(tmp_path / "r", RUN)
    assert "already holds heads.csv, layers.csv, summary.json" in one_line(caught.value)
    assert "--overwrite" in str(caught.value)
    assert (tmp_path / "r" / "summary.json").read_text() == "old"
    with claim_output(tmp_path / "r", RUN, overwrite=True):
        pass
    with claim_output(tmp_path / "r", RUN, resume=True):
        pass


def test_other_files_in_the_directory_are_not_an_earlier_output(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "ablation.json").write_text("{}")
    with claim_output(tmp_path / "r", RUN) as claim:
        assert claim.existing() == []


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    with claim_output(tmp_path / "r", RUN):
        # flock conflicts between two opens of the file, in one process as in two.
        with pytest.raises(OutputError, match=f"another plmlens process is writing here \\(pid {os.getpid()}\\)"):
            claim_output(tmp_path / "r", RUN)
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from plmlens.outputs import *; "
             f"claim_output({str(tmp_path / 'r')!r}, OutputSet(('x',)))"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert other.returncode != 0 and "another plmlens process is writing here" in other.stderr
    with claim_output(tmp_path / "r", RUN):  # released: the next writer gets it
        pass


def test_a_full_disk_and_no_permission_are_one_line_errors_at_the_start(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(outputs.os, "fsync", full)
        with pytest.raises(OutputError) as caught:
            claim_output(tmp_path / "r", RUN)
    assert one_line(caught.value) == f"{tmp_path / 'r'}: cannot write here (no space left on the device)"
    assert not list((tmp_path / "r").glob(".plmlens-probe-*"))

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputError) as caught:
        claim_output(tmp_path / "new" / "r", RUN)
    assert one_line(caught.value) == f"{tmp_path / 'new' / 'r'}: cannot write here (permission denied)"


def test_commit_replaces_the_earlier_output_whole(tmp_path):
    finished_run(tmp_path / "r", "old")
    (tmp_path / "r" / "probe").mkdir()  # another command's output stays
    with claim_output(tmp_path / "r", RUN, overwrite=True) as claim, claim.staged() as staging:
        (staging / "heads.csv").write_text("new")
        (staging / "summary.json").write_text("new")
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    # layers.csv was not written this time: the old one is gone rather than left stale beside the new run.
    assert names == [".plmlens.lock", "heads.csv", "probe", "summary.json"]
    assert (tmp_path / "r" / "heads.csv").read_text() == "new"


def test_a_failed_save_leaves_the_earlier_output_as_it_was(tmp_path):
    finished_run(tmp_path / "r", "old")
    with (
        claim_output(tmp_path / "r", RUN, overwrite=True) as claim,
        pytest.raises(OSError, match="No space"),
        claim.staged() as staging,
    ):
        (staging / "heads.csv").write_text("new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for name in (*RUN.names, "report.html"):
        assert (tmp_path / "r" / name).read_text() == "old"
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".staging")]


def test_the_record_is_moved_last_and_signals_wait_for_the_moves(tmp_path, monkeypatch):
    finished_run(tmp_path / "r", "old")
    moved: list[str] = []
    replace = outputs._replace

    def replace_and_signal(source: Path, target: Path) -> None:
        if not moved:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the moves
        # The record was removed before anything moved: no reader sees the old record beside new files.
        assert not (tmp_path / "r" / "summary.json").exists()
        moved.append(target.name)
        replace(source, target)

    monkeypatch.setattr(outputs, "_replace", replace_and_signal)
    with claim_output(tmp_path / "r", RUN, overwrite=True) as claim:
        staging = claim.staging()
        for name in RUN.names:
            (staging / name).write_text("new")
        with pytest.raises(Interrupted) as caught:
            claim.commit(staging)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert moved == ["heads.csv", "layers.csv", "summary.json"]
    assert all((tmp_path / "r" / name).read_text() == "new" for name in RUN.names)
    assert not (tmp_path / "r" / "report.html").exists() and not (tmp_path / "r" / "figures").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_leftovers_of_a_killed_process_are_removed_on_the_next_start(tmp_path):
    directory = tmp_path / "r"
    directory.mkdir()
    (directory / ".heads.csv.abc123.tmp").write_text("half")
    (directory / ".staging-1-deadbeef.tmp").mkdir()
    (directory / ".staging-1-deadbeef.tmp" / "heads.csv").write_text("half")
    (directory / ".replaced-figures-0011").mkdir()
    (directory / "keep.tmp").write_text("not ours")
    with claim_output(directory, RUN):
        pass
    assert sorted(p.name for p in directory.iterdir()) == [".plmlens.lock", "keep.tmp"]


def test_claim_file(tmp_path):
    path = tmp_path / "set.proteins.npz"
    with claim_file(path):
        path.write_text("x")
    with pytest.raises(OutputError, match=r"already holds set\.proteins\.npz"):
        claim_file(path)
    with claim_file(path, overwrite=True):
        pass
    with pytest.raises(OutputError, match="is a directory"):
        claim_file(tmp_path)


def test_a_deferral_inside_another_defers_to_the_outer_one():
    done = []
    with pytest.raises(Interrupted) as caught, outputs.deferred_signals():
        with outputs.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
        done.append("inner block ended without raising")
    assert done and caught.value.exit_code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
