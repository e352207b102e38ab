"""Fault injection: hostile inputs and an unlucky machine end in one line, exit 2, nothing lost.

Covers (issue 12): dataset.json entries that leave the task folder (2), ``mvl predict`` writing
over its input (3), ``mvl download`` and folders it did not make (4), full disks, read-only folders
and corrupted checkpoints (6), truncated archives (7) and incomplete sharded LLM checkpoints (8).
Full disks are small tmpfs mounts and read-only folders read-only tmpfs remounts (root can write
through ``chmod``); downloads go to a local HTTP server on 127.0.0.1 (``download_helpers``).

Every command runs through ``medvisionllama.cli.main`` in this process: an uncaught exception
(what would print a traceback) fails the test, and each test checks the one ``error:`` line, the
exit status and that nothing half-written was left and nothing of the user's was lost.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from data_helpers import first_case, make_task, tree_bytes
from download_helpers import TASK, make_archive, md5_of, server  # noqa: F401 - server is a fixture

from medvisionllama.cli import main as mvl_main
from medvisionllama.data.download import ARCHIVE_SUFFIX, PART_SUFFIX

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_TRAIN = ["--model", "vit", "--seed", "0", "--no-progress"]


def settings_file(folder: Path, epochs: int) -> Path:
    """The tiny run's settings as `mvl train` and `mvl evaluate` read them (--config)."""
    path = folder / f"settings-{epochs}.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"patch_size": 4, "hidden_size": 16, "num_layers": 1, "num_heads": 2},
        "training": {"epochs": epochs, "batch_size": 4, "lr": 1e-2, "augment": "off", "device": "cpu"},
    }))
    return path


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def mvl(capsys, *argv: str | Path) -> tuple[int, str]:
    """Run ``mvl *argv``; returns (exit status, the one error line, or "" on success)."""
    capsys.readouterr()
    code = mvl_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) <= 1, err
    if code:
        assert errors, f"exit {code} without an error line: {err!r}"
        assert errors[0].startswith(f"mvl {argv[0]}: error: "), errors[0]
    return code, errors[0] if errors else ""


def temporaries(folder: Path) -> list[str]:
    """Hidden names under ``folder``: temporary files and folders of atomic writes
    (``.{name}.xxxx.tmp``, ``.{name}.old``); the download marker and cache are not counted."""
    return [p.name for p in folder.rglob(".*") if p.name not in {".mvl-download.json", ".downloads"}]


class Mounts:
    """Small tmpfs mounts under a test's folder, unmounted at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.points: list[Path] = []

    def tmpfs(self, name: str, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = self.root / name
        point.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
        self.points.append(point)
        return point

    def read_only(self, point: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def mounts(tmp_path):
    m = Mounts(tmp_path / "mnt")
    try:
        yield m
    finally:
        m.unmount_all()


def fill(point: Path) -> None:
    """Use up every free byte of the file system at ``point``."""
    with open(point / "filler", "wb", buffering=0) as fh:
        block = b"\0" * 65536
        while True:
            try:
                if not fh.write(block):
                    break
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A synthetic Task09, its split and preprocessed folder, and a one-epoch tiny ViT run."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import split_task
    from medvisionllama.data.synthesize import synthesize_task

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    data = synthesize_task(TASK, root / "data" / TASK, cases=8, seed=0, max_dim=16)
    split_task(data, root / "split.json", seed=0)
    preprocess_task(data, "16x16x8", root / "pre")
    run = root / "run"
    assert mvl_main(["train", "--preprocessed", str(root / "pre"), "--split", str(root / "split.json"),
                     "--run-dir", str(run), "--config", str(settings_file(root, 1)), *TINY_TRAIN]) == 0
    return {"root": root, "data": data, "split": root / "split.json", "pre": root / "pre", "run": run}


def train_argv(tiny_run: dict[str, Path], run_dir: Path, epochs: int = 2) -> list[str | Path]:
    return ["train", "--preprocessed", tiny_run["pre"], "--split", tiny_run["split"], "--run-dir", run_dir,
            "--config", settings_file(tiny_run["root"], epochs), *TINY_TRAIN]


def set_dataset(task_dir: Path, edit) -> None:
    dataset = json.loads((task_dir / "dataset.json").read_text())
    edit(dataset)
    (task_dir / "dataset.json").write_text(json.dumps(dataset))


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def members_of(archive: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


# --------------------------------------------------------------------------------------------
# 2. dataset.json entries must stay inside the task folder
# --------------------------------------------------------------------------------------------
def _outside_entry(task_dir: Path, how: str) -> str:
    """Point the first training image (or, for ``test``, a test entry) outside ``task_dir``;
    returns the entry's name as messages give it."""
    image, _ = first_case(task_dir)
    outside = task_dir.parent.parent / "outside.nii.gz"
    shutil.copy(image, outside)
    if how == "dotdot":
        set_dataset(task_dir, lambda d: d["training"][0].update(image="../../outside.nii.gz"))
    elif how == "absolute":
        set_dataset(task_dir, lambda d: d["training"][0].update(image=str(outside)))
    elif how == "symlink":
        image.unlink()
        image.symlink_to(outside)
    elif how == "test":
        set_dataset(task_dir, lambda d: d["test"].append("./imagesTs/../../../outside.nii.gz"))
        return f"test[{len(json.loads((task_dir / 'dataset.json').read_text())['test']) - 1}]"
    return "training[0].image"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "test"])
def test_dataset_entry_outside_the_task_folder_is_refused(capsys, tmp_path, how):
    task_dir = make_task(tmp_path / "data")
    entry = _outside_entry(task_dir, how)
    output = tmp_path / "pre"
    code, line = mvl(capsys, "preprocess", "--task-dir", task_dir, "--size", "16x16x8", "--output", output)
    assert code == 2
    assert f"{task_dir / 'dataset.json'}: {entry}" in line and "outside the task folder" in line
    assert not output.exists() and not temporaries(tmp_path)
    code, line = mvl(capsys, "split", "--task-dir", task_dir, "--output", tmp_path / "split.json")
    assert code == 2 and entry in line and not (tmp_path / "split.json").exists()


def test_links_into_a_dvc_cache_are_followed(capsys, tmp_path):
    """``dvc config cache.type symlink`` checks files out as links into the cache: still the task's."""
    task_dir = make_task(tmp_path / "data")
    image, label = first_case(task_dir)
    for number, path in enumerate((image, label)):
        cached = tmp_path / "dvc-cache" / "files" / "md5" / "ab" / f"{number:030d}"
        cached.parent.mkdir(parents=True, exist_ok=True)
        path.rename(cached)
        path.symlink_to(cached)
    code, _ = mvl(capsys, "split", "--task-dir", task_dir, "--output", tmp_path / "split.json")
    assert code == 0 and (tmp_path / "split.json").is_file()


def test_dataset_json_that_is_a_link_out_of_the_folder_is_refused(capsys, tmp_path):
    task_dir = make_task(tmp_path / "data")
    moved = tmp_path / "elsewhere.json"
    (task_dir / "dataset.json").rename(moved)
    (task_dir / "dataset.json").symlink_to(moved)
    code, line = mvl(capsys, "split", "--task-dir", task_dir, "--output", tmp_path / "split.json")
    assert code == 2 and "dataset.json (a link)" in line and "outside the task folder" in line


def test_archive_listing_a_file_outside_is_refused(server, capsys, tmp_path):
    base, state = server
    members = [(n, d) if not n.endswith("dataset.json") else
               (n, json.dumps({**json.loads(d), "test": ["../../../../etc/passwd"]}).encode())
               for n, d in members_of(make_archive())]
    data = tar_of(members)
    state.files["/a.tar"] = data
    code, line = mvl(capsys, "download", "--task", TASK, "--data-dir", tmp_path / "data", "--url", base + "/a.tar",
                     "--md5", md5_of(data), "--retries", "0", "--no-progress")
    assert code == 2
    assert f"{TASK}/dataset.json: test[0] '../../../../etc/passwd'" in line and "outside the task folder" in line
    assert not (tmp_path / "data" / TASK).exists() and not temporaries(tmp_path)


def test_present_folder_listing_a_file_outside_is_refused_without_network(server, capsys, tmp_path):
    base, state = server
    task_dir = make_task(tmp_path / "data")
    set_dataset(task_dir, lambda d: d["test"].append("/etc/passwd"))
    before = tree_bytes(task_dir)
    code, line = mvl(capsys, "download", "--task", TASK, "--data-dir", tmp_path / "data",
                     "--url", base + "/a.tar", "--md5", "0" * 32, "--retries", "0", "--no-progress")
    assert code == 2 and "'/etc/passwd'" in line and "outside the task folder" in line
    assert state.requests == [] and tree_bytes(task_dir) == before


# --------------------------------------------------------------------------------------------
# 3. mvl predict never writes over its input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same-file", "relative-spelling", "symlink-to-input", "parent-folder",
                                 "same-folder", "inside-folder", "symlink-to-folder"])
def test_predict_refuses_an_output_that_is_its_input(tiny_run, capsys, tmp_path, monkeypatch, how):
    images = tmp_path / "images"
    shutil.copytree(tiny_run["data"] / "imagesTs", images)
    image = sorted(images.iterdir())[0]
    monkeypatch.chdir(tmp_path)
    source: Path | str = image
    if how == "same-file":
        output: Path | str = image
    elif how == "relative-spelling":
        output = f"./images/../images/{image.name}"
    elif how == "symlink-to-input":
        output = tmp_path / "link.nii.gz"
        output.symlink_to(image)
    elif how == "parent-folder":
        output = images  # a file's output folder: writes images/{case}.nii.gz, the input itself
    elif how == "same-folder":
        source, output = images, "images/."
    elif how == "inside-folder":
        source, output = images, images / "segmentations"
    else:
        source, output = images, tmp_path / "linked"
        output.symlink_to(images)
    before = tree_bytes(images)
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, line = mvl(capsys, "predict", "--checkpoint", tiny_run["run"] / "checkpoint_best.pt",
                     "--input", source, "--output", output, "--device", "cpu")
    assert code == 2 and "--output" in line and ("input" in line)
    assert tree_bytes(images) == before and sorted(p.name for p in images.iterdir()) == sorted(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_predict_to_another_folder_still_works(tiny_run, capsys, tmp_path):
    code, _ = mvl(capsys, "predict", "--checkpoint", tiny_run["run"] / "checkpoint_best.pt",
                  "--input", tiny_run["data"] / "imagesTs", "--output", tmp_path / "segs", "--device", "cpu")
    assert code == 0 and len(list((tmp_path / "segs").glob("*.nii.gz"))) == len(list((tiny_run["data"] / "imagesTs").iterdir()))


# --------------------------------------------------------------------------------------------
# 4. mvl download never deletes a folder it did not make
# --------------------------------------------------------------------------------------------
def _download(capsys, base: str, data_dir: Path, data: bytes, *extra: str) -> tuple[int, str]:
    return mvl(capsys, "download", "--task", TASK, "--data-dir", data_dir, "--url", base + "/a.tar",
               "--md5", md5_of(data), "--retries", "0", "--backoff", "0", "--no-progress", *extra)


def test_download_leaves_a_users_incomplete_folder_alone(server, capsys, tmp_path):
    base, state = server
    data = make_archive()
    state.files["/a.tar"] = data
    task_dir = make_task(tmp_path / "data", cases=3)
    (task_dir / "my-notes.txt").write_text("mine")
    first_case(task_dir)[1].unlink()  # incomplete now
    before = tree_bytes(task_dir)
    code, line = _download(capsys, base, tmp_path / "data", data)
    assert code == 2
    assert f"{task_dir}: exists, is incomplete" in line and "not made by `mvl download`" in line
    assert "move it aside or delete it" in line
    assert tree_bytes(task_dir) == before and state.requests == []


def test_download_leaves_another_download_alone_and_replaces_its_own(server, capsys, tmp_path):
    base, state = server
    old = make_archive(cases=2)
    state.files["/a.tar"] = old
    assert _download(capsys, base, tmp_path / "data", old)[0] == 0
    task_dir = tmp_path / "data" / TASK
    first_case(task_dir)[0].unlink()  # our own download, now incomplete: ours to replace ...
    (task_dir / "extra.txt").write_text("x")  # ... but for the file the user added: refused, naming it
    before = tree_bytes(task_dir)
    code, line = _download(capsys, base, tmp_path / "data", old)
    assert code == 2 and "did not write (extra.txt)" in line and tree_bytes(task_dir) == before
    (task_dir / "extra.txt").unlink()
    assert _download(capsys, base, tmp_path / "data", old)[0] == 0
    assert first_case(task_dir)[0].is_file()
    new = make_archive(cases=3)  # another archive: the folder holds a different download
    state.files["/a.tar"] = new
    before, requests = tree_bytes(task_dir), len(state.requests)
    code, line = _download(capsys, base, tmp_path / "data", new)
    assert code == 2 and "holds another download" in line and md5_of(old) in line
    assert tree_bytes(task_dir) == before and len(state.requests) == requests


def test_download_leaves_a_folder_with_a_damaged_or_linked_marker_alone(server, capsys, tmp_path):
    base, state = server
    data = make_archive()
    state.files["/a.tar"] = data
    task_dir = make_task(tmp_path / "data")
    first_case(task_dir)[1].unlink()
    elsewhere = tmp_path / "marker.json"
    elsewhere.write_text(json.dumps({"md5": md5_of(data)}))  # claims the right md5, but from outside
    (task_dir / ".mvl-download.json").symlink_to(elsewhere)
    before = tree_bytes(task_dir)
    code, line = _download(capsys, base, tmp_path / "data", data)
    assert code == 2 and ".mvl-download.json is unreadable or a link" in line
    assert tree_bytes(task_dir) == before and state.requests == []


def test_download_into_an_empty_folder(server, capsys, tmp_path):
    base, state = server
    data = make_archive()
    state.files["/a.tar"] = data
    (tmp_path / "data" / TASK).mkdir(parents=True)
    assert _download(capsys, base, tmp_path / "data", data)[0] == 0
    assert (tmp_path / "data" / TASK / "dataset.json").is_file()


# --------------------------------------------------------------------------------------------
# 6. full disks and read-only folders: one line naming the path, exit 2, nothing half-written
# --------------------------------------------------------------------------------------------
def test_disk_full_during_download(server, capsys, mounts):
    base, state = server
    data = make_archive(cases=12)
    state.files["/a.tar"] = data
    small = mounts.tmpfs("small", "64k")
    assert len(data) > 64 * 1024
    code, line = _download(capsys, base, small / "data", data)
    assert code == 2
    assert line.endswith(f"{small / 'data' / '.downloads' / (TASK + PART_SUFFIX)}: No space left on device")
    assert not (small / "data" / TASK).exists() and not temporaries(small)


def test_disk_full_during_extraction_keeps_the_archive(server, capsys, tmp_path, mounts):
    base, state = server
    data = make_archive(cases=12)
    state.files["/a.tar"] = data
    small = mounts.tmpfs("small", "64k")
    cache = tmp_path / "cache"
    code, line = _download(capsys, base, small / "data", data, "--cache-dir", str(cache))
    assert code == 2 and line.endswith(f"{small / 'data' / TASK}: No space left on device")
    assert not (small / "data" / TASK).exists() and not temporaries(small)
    assert (cache / f"{TASK}{ARCHIVE_SUFFIX}").read_bytes() == data  # verified archive kept for the next attempt


def test_disk_full_during_preprocessing(tiny_run, capsys, mounts):
    disk = mounts.tmpfs("disk", "1m")
    fill(disk)
    output = disk / "pre"
    code, line = mvl(capsys, "preprocess", "--task-dir", tiny_run["data"], "--size", "16x16x8", "--output", output)
    assert code == 2 and line.endswith(f"{output}: No space left on device")
    assert not output.exists() and not temporaries(disk)


def test_disk_full_during_checkpointing(tiny_run, capsys, mounts):
    disk = mounts.tmpfs("disk", "1m")
    fill(disk)
    run = disk / "run"
    code, line = mvl(capsys, *train_argv(tiny_run, run, epochs=1))
    assert code == 2 and line.endswith("checkpoint_best.pt: No space left on device")
    assert str(run) in line
    assert not list(run.glob("checkpoint*")) and not temporaries(disk)


def test_disk_full_during_evaluation(tiny_run, capsys, mounts):
    disk = mounts.tmpfs("disk", "4m")
    run = disk / "run"
    shutil.copytree(tiny_run["run"], run)
    before = tree_bytes(run)
    fill(disk)
    code, line = mvl(capsys, "evaluate", "--run-dir", run, "--preprocessed", tiny_run["pre"], "--split",
                     tiny_run["split"], "--data-dir", tiny_run["data"], "--config", settings_file(tiny_run["root"], 1),
                     "--no-progress")
    assert code == 2 and line.endswith("No space left on device") and str(run) in line
    assert tree_bytes(run) == before and not temporaries(disk)


def test_read_only_results(tiny_run, capsys, mounts):
    results = mounts.tmpfs("results", "1m")
    (results / "runs").mkdir()
    mounts.read_only(results)
    code, line = mvl(capsys, "split", "--task-dir", tiny_run["data"], "--output", results / "splits" / "t.json")
    assert code == 2 and line == f"mvl split: error: {results / 'splits'}: Read-only file system"
    code, line = mvl(capsys, "preprocess", "--task-dir", tiny_run["data"], "--size", "16x16x8",
                     "--output", results / "pre")
    assert code == 2 and line == f"mvl preprocess: error: {results / 'pre'}: Read-only file system"
    code, line = mvl(capsys, *train_argv(tiny_run, results / "runs", epochs=1))
    assert code == 2 and line == f"mvl train: error: {results / 'runs' / 'checkpoint_best.pt'}: Read-only file system"
    assert sorted(p.name for p in results.iterdir()) == ["runs"] and not list((results / "runs").iterdir())


def test_read_only_data_folder_for_download(server, capsys, mounts):
    base, state = server
    data_dir = mounts.tmpfs("data", "1m")
    mounts.read_only(data_dir)
    code, line = _download(capsys, base, data_dir, make_archive())
    assert code == 2 and line == (f"mvl download: error: data folder {str(data_dir)!r} is not writable: "
                                  "Read-only file system")
    assert state.requests == [] and list(data_dir.iterdir()) == []


def test_read_only_folder_through_the_real_command(tiny_run, mounts):
    """The same through a separate ``mvl`` process: its whole stderr is the one line."""
    import sys

    results = mounts.tmpfs("results", "1m")
    mounts.read_only(results)
    done = subprocess.run([sys.executable, "-m", "medvisionllama.cli", "split", "--task-dir", str(tiny_run["data"]),
                           "--output", str(results / "t.json")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"mvl split: error: {results / 't.json'}: Read-only file system\n"
    assert list(results.iterdir()) == []


# --------------------------------------------------------------------------------------------
# 6. corrupted checkpoints are refused in one line, never with advice to load unsafely
# --------------------------------------------------------------------------------------------
def _flip_inside_tensor_data(path: Path, count: int = 256) -> None:
    """Invert ``count`` bytes in the middle of the largest tensor record of a torch zip file."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size > count
    name_length = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length + (info.file_size - count) // 2
    raw[start: start + count] = bytes(b ^ 0xFF for b in raw[start: start + count])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flipped", "random"])
def test_corrupted_checkpoint_is_refused_on_resume_and_predict(tiny_run, capsys, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    last = run / "checkpoint_last.pt"
    if damage == "flipped":
        _flip_inside_tensor_data(last)
        torch.load(last, weights_only=True)  # torch itself does not notice
    else:
        last.write_bytes(random.Random(0).randbytes(last.stat().st_size))
    before = tree_bytes(run)
    code, line = mvl(capsys, *train_argv(tiny_run, run, epochs=2))
    assert code == 2 and line.startswith(f"mvl train: error: {last}: corrupt")
    assert "weights_only" not in line and "unsafe" not in line
    assert tree_bytes(run) == before  # nothing overwritten, no training from a damaged state
    code, line = mvl(capsys, "predict", "--checkpoint", last, "--input", first_case(tiny_run["data"])[0],
                     "--output", tmp_path / "seg.nii.gz", "--device", "cpu")
    assert code == 2 and f"{last}: corrupt" in line and "weights_only" not in line
    assert not (tmp_path / "seg.nii.gz").exists()


def test_checkpoint_without_checksum_is_refused(tiny_run, tmp_path):
    from medvisionllama.errors import InputError
    from medvisionllama.checkpoint import load_checkpoint

    old = torch.load(tiny_run["run"] / "checkpoint_last.pt", weights_only=True)
    del old["checksum"]
    old["format"] = 1
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(InputError, match=r"old\.pt: checkpoint format 1 has no content checksum.*delete it"):
        load_checkpoint(tmp_path / "old.pt")
    old["format"] = 2  # the current format with its checksum stripped
    torch.save(old, tmp_path / "stripped.pt")
    with pytest.raises(InputError, match=r"stripped\.pt: checkpoint has no sha256 content checksum"):
        load_checkpoint(tmp_path / "stripped.pt")


def test_intact_checkpoint_resumes(tiny_run, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    assert mvl(capsys, *train_argv(tiny_run, run, epochs=2)) == (0, "")
    assert len((run / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs


# --------------------------------------------------------------------------------------------
# 7. a truncated archive says so
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", ["at-a-header", "inside-a-header", "inside-data"])
def test_truncated_archive_says_truncated(server, capsys, tmp_path, cut):
    base, state = server
    members = members_of(make_archive(cases=3))
    members.sort(key=lambda m: m[0].endswith("dataset.json"))  # dataset.json last, past the cut
    whole = tar_of(members)
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        third = tar.getmembers()[2]
    end = {"at-a-header": third.offset, "inside-a-header": third.offset + 100,
           "inside-data": third.offset_data + 10}[cut]
    data = whole[:end]
    state.files["/a.tar"] = data
    code, line = _download(capsys, base, tmp_path / "data", data)
    assert code == 2 and "corrupt or truncated" in line and f"{TASK}{ARCHIVE_SUFFIX}" in line
    assert "no " + TASK + "/dataset.json" not in line
    assert not (tmp_path / "data" / TASK).exists() and not temporaries(tmp_path)


# --------------------------------------------------------------------------------------------
# 8. an incomplete sharded LLM checkpoint never passes mvl extract-layer
# --------------------------------------------------------------------------------------------
LAYER = 2


@pytest.fixture
def sharded(tmp_path, monkeypatch) -> Path:
    """A 4-layer tiny Llama saved by transformers in small shards, as registry entry ``tiny-llama``."""
    from test_llm_sources import tiny_llama_config
    from transformers import LlamaForCausalLM

    from medvisionllama.llm import LLM_REGISTRY, LLMSpec

    monkeypatch.setitem(LLM_REGISTRY, "tiny-llama", LLMSpec("tiny-llama", "x/tiny-llama", "llama", tiny_llama_config))
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(tmp_path / "ckpt", max_shard_size="40KB")
    return tmp_path / "ckpt"


def _shard_of(checkpoint: Path, key: str) -> Path:
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    return checkpoint / index["weight_map"][key]


def _rewrite_shard(shard: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(shard)
    edit(tensors)
    save_file(tensors, shard, metadata={"format": "pt"})


def _extract(capsys, checkpoint: Path, output: Path) -> tuple[int, str]:
    return mvl(capsys, "extract-layer", "--llm", "tiny-llama", "--layer", str(LAYER), "--weights", checkpoint,
               "--output", output)


def test_complete_sharded_checkpoint_extracts(sharded, capsys, tmp_path):
    assert _extract(capsys, sharded, tmp_path / "layer.safetensors") == (0, "")
    assert (tmp_path / "layer.safetensors").is_file()


def test_missing_layer_weight_is_refused_before_writing(sharded, capsys, tmp_path):
    key = f"model.layers.{LAYER}.mlp.up_proj.weight"
    _rewrite_shard(_shard_of(sharded, key), lambda t: t.pop(key))
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"][key]
    index_path.write_text(json.dumps(index))
    output = tmp_path / "out" / "layer.safetensors"
    code, line = _extract(capsys, sharded, output)
    assert code == 2 and line == f"mvl extract-layer: error: directory:{sharded}: missing weight(s) for the LLM layer: mlp.up_proj.weight"
    assert not output.exists() and not (output.parent.exists() and list(output.parent.iterdir()))


def test_misshaped_layer_weight_is_refused_before_writing(sharded, capsys, tmp_path):
    key = f"model.layers.{LAYER}.self_attn.o_proj.weight"
    _rewrite_shard(_shard_of(sharded, key), lambda t: t.update({key: torch.zeros(3, 5)}))
    output = tmp_path / "layer.safetensors"
    code, line = _extract(capsys, sharded, output)
    assert code == 2 and f"directory:{sharded}" in line and "'self_attn.o_proj.weight' has shape (3, 5)" in line
    assert not output.exists() and not temporaries(tmp_path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_layer_weight_is_refused_before_writing(sharded, capsys, tmp_path, value):
    """One NaN (or infinite) weight planted in the shard that holds it: the extraction names the
    tensor and the source, and writes nothing."""
    key = f"model.layers.{LAYER}.self_attn.v_proj.weight"

    def plant(tensors):
        tensors[key] = tensors[key].clone()
        tensors[key][1, 2] = value

    _rewrite_shard(_shard_of(sharded, key), plant)
    output = tmp_path / "out" / "layer.safetensors"
    code, line = _extract(capsys, sharded, output)
    kind = "1 NaN, 0 infinite" if value != value else "0 NaN, 1 infinite"
    assert code == 2 and line.startswith(f"mvl extract-layer: error: directory:{sharded}: layer {LAYER} weight "
                                         f"self_attn.v_proj.weight holds 1 non-finite value(s) ({kind})"), line
    assert not output.exists() and not (output.parent.exists() and list(output.parent.iterdir()))


def test_missing_shard_file_is_one_line(sharded, capsys, tmp_path):
    shard = _shard_of(sharded, f"model.layers.{LAYER}.mlp.down_proj.weight")
    shard.unlink()
    output = tmp_path / "layer.safetensors"
    code, line = _extract(capsys, sharded, output)
    assert code == 2 and line == (f"mvl extract-layer: error: {sharded}: model.safetensors.index.json lists shard "
                                  f"{shard.name!r}, which is missing")
    assert not output.exists()
