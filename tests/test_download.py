"""``mvl download`` against a local HTTP server (127.0.0.1) serving tiny MSD-format archives.

The server (``download_helpers``) supports ``Range`` requests and can be told, per path, to drop
the connection half-way, answer 500, or serve what it holds; every request it sees is logged with
its ``Range`` header.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import nibabel as nib
import pytest
from download_helpers import TASK, ServerState, make_archive, md5_of, server  # noqa: F401 - server is a fixture

from medvisionllama.data import download as dl
from medvisionllama.errors import InputError


FAST = dict(retries=2, timeout=5.0, backoff=0.0, progress=False)


def _serve(state: ServerState, data: bytes, path: str = f"/{TASK}.tar") -> str:
    state.files[path] = data
    return path


def _no_leftovers(data_dir: Path) -> None:
    assert not (data_dir / TASK).exists()
    left = [p.name for p in data_dir.iterdir()] if data_dir.exists() else []
    assert not [n for n in left if n.startswith(f".{TASK}")], left  # no temp extraction folder
    cache = data_dir / ".downloads"
    assert not cache.exists() or not list(cache.glob("*.part")), list(cache.iterdir())


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
def test_clean_download(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert target == tmp_path / "data" / TASK
    assert dl.missing_files(target) == []
    assert not (target / "imagesTr" / "._case_0.nii.gz").exists()  # resource forks skipped
    img = nib.load(target / "imagesTr" / "case_1.nii.gz")
    assert img.shape == (16, 16, 8)
    marker = json.loads((target / dl.MARKER).read_text())
    assert marker["md5"] == md5_of(data) and marker["url"] == base + path
    assert not (tmp_path / "data" / ".downloads").exists()  # archive removed, empty cache removed
    assert state.requests == [(path, None)]


def test_short_task_name_and_url_template(server, tmp_path):
    base, state = server
    data = make_archive()
    _serve(state, data)
    target = dl.download_task("Task09", tmp_path / "data", url=base + "/{task}.tar", md5=md5_of(data), **FAST)
    assert target.name == TASK and (target / "dataset.json").is_file()


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    base, state = server
    data = make_archive(cases=3)
    path = _serve(state, data)
    state.actions[path] = ["drop"]
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 2
    assert state.requests[0] == (path, None)
    resumed_range = state.requests[1][1]
    assert resumed_range is not None and resumed_range.startswith("bytes=")
    offset = int(resumed_range[len("bytes="):].rstrip("-"))
    assert 0 < offset < len(data)  # resumed mid-file, not from zero
    assert dl.missing_files(target) == []


def test_resume_from_existing_part_file(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    cache = tmp_path / "data" / ".downloads"
    cache.mkdir(parents=True)
    (cache / f"{TASK}{dl.PART_SUFFIX}").write_bytes(data[:1000])  # left by an interrupted earlier run
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert state.requests == [(path, "bytes=1000-")]


def test_wrong_checksum_retries_then_fails_cleanly(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    wrong = "0" * 32
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=wrong, **FAST)
    message = str(info.value)
    assert base + path in message and wrong in message and md5_of(data) in message
    assert [r for r in state.requests] == [(path, None), (path, None)]  # once more from zero
    _no_leftovers(tmp_path / "data")


def test_truncated_archive_is_an_error_and_leaves_nothing(server, tmp_path):
    base, state = server
    data = make_archive(cases=3)
    truncated = data[: len(data) // 2 + 100]
    path = _serve(state, truncated)
    with pytest.raises(dl.DownloadError, match="truncated|incomplete"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(truncated), **FAST)
    _no_leftovers(tmp_path / "data")
    assert not (tmp_path / "data" / ".downloads" / f"{TASK}{dl.ARCHIVE_SUFFIX}").exists()


def test_archive_without_dataset_json_is_rejected(server, tmp_path):
    base, state = server
    data = make_archive(task="Task02_Heart")  # the wrong task's archive
    path = _serve(state, data)
    with pytest.raises(dl.DownloadError, match=f"{TASK}/dataset.json"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    _no_leftovers(tmp_path / "data")


@pytest.mark.parametrize("evil", ["../evil.txt", f"{TASK}/../../evil.txt", "/tmp/mvl-evil.txt"])
def test_unsafe_members_are_rejected(server, tmp_path, evil):
    base, state = server
    data = make_archive(extra={evil: b"x"})
    path = _serve(state, data)
    with pytest.raises(dl.DownloadError, match="refusing to extract"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    _no_leftovers(tmp_path / "data")
    assert not (tmp_path / "evil.txt").exists()


def test_404_fails_at_once(server, tmp_path):
    base, state = server
    url = base + "/missing.tar"
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=url, md5="0" * 32, **FAST)
    assert url in str(info.value) and "404" in str(info.value)
    assert len(state.requests) == 1  # no retry
    _no_leftovers(tmp_path / "data")


def test_500_is_retried_then_fails(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    state.actions[path] = ["500"] * 10
    with pytest.raises(dl.DownloadError) as info:
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert base + path in str(info.value) and "500" in str(info.value)
    assert len(state.requests) == FAST["retries"] + 1
    _no_leftovers(tmp_path / "data")


def test_500_then_success(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    state.actions[path] = ["500"]
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 2 and dl.missing_files(target) == []


def test_connection_refused_is_retried_then_fails(tmp_path):
    url = "http://127.0.0.1:9/none.tar"  # discard port: nothing listens
    with pytest.raises(dl.DownloadError, match="gave up after 3 attempts"):
        dl.download_task(TASK, tmp_path / "data", url=url, md5="0" * 32, **FAST)


def test_unwritable_target_names_the_folder(server, tmp_path):
    base, state = server
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data_dir = blocker / "data"  # cannot be created, even by root
    with pytest.raises(InputError, match=str(data_dir)):
        dl.download_task(TASK, data_dir, url=base + "/x.tar", md5="0" * 32, **FAST)
    assert state.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_target_names_the_folder(server, tmp_path):
    base, _ = server
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            dl.download_task(TASK, data_dir, url=base + "/x.tar", md5="0" * 32, **FAST)
    finally:
        data_dir.chmod(0o755)


def test_present_task_is_not_fetched_again(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 1
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert len(state.requests) == 1
    # a different expected md5 means a different archive: the folder holds another download, which
    # is left alone (it is refused before any request) until the user moves it aside
    other = make_archive(cases=3)
    state.files[path] = other
    before = {p: p.read_bytes() for p in (tmp_path / "data" / TASK).rglob("*") if p.is_file()}
    with pytest.raises(InputError, match=r"holds another download .*move it aside or delete it"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(other), **FAST)
    assert len(state.requests) == 1
    assert {p: p.read_bytes() for p in (tmp_path / "data" / TASK).rglob("*") if p.is_file()} == before
    (tmp_path / "data" / TASK).rename(tmp_path / "data" / "moved-aside")
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(other), **FAST)
    assert len(state.requests) == 2
    assert (target / "imagesTr" / "case_2.nii.gz").is_file()


def test_complete_folder_without_marker_is_accepted(server, tmp_path):
    base, state = server
    data = make_archive()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    (tmp_path / "data" / TASK / "imagesTr" / "._case_0.nii.gz").unlink()
    dl.download_task(TASK, tmp_path / "data", url=base + "/missing.tar", md5="0" * 32, **FAST)
    assert state.requests == []
    # a folder missing a listed file is not complete
    (tmp_path / "data" / TASK / "labelsTr" / "case_1.nii.gz").unlink()
    assert not dl.is_present(tmp_path / "data" / TASK, None)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("marker", ["lists its files", "older marker without the list"])
def test_redownload_never_deletes_a_file_the_user_added(server, tmp_path, marker):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    target = dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    recorded = json.loads((target / dl.MARKER).read_text())
    assert sorted(recorded["paths"]) == sorted(k for k in _files(target) if k != dl.MARKER)
    if marker != "lists its files":
        (target / dl.MARKER).write_text(json.dumps({k: v for k, v in recorded.items() if k != "paths"}))
    (target / "my_annotations.txt").write_text("three weeks of work")
    (target / "labelsTr" / "notes").mkdir()
    (target / "labelsTr" / "notes" / "case_0.txt").write_text("liver tip missed")
    # complete: nothing to do, the user's files are still there
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert (target / "my_annotations.txt").read_text() == "three weeks of work" and len(state.requests) == 1
    # incomplete (a downloaded label deleted): replacing the folder would delete the user's files
    (target / "labelsTr" / "case_1.nii.gz").unlink()
    before = _files(target)
    with pytest.raises(InputError, match=r"did not write \(labelsTr/notes/case_0.txt, my_annotations.txt\)"):
        dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert _files(target) == before and len(state.requests) == 1
    # the user moves their files out: the download replaces the folder
    (target / "my_annotations.txt").rename(tmp_path / "my_annotations.txt")
    (target / "labelsTr" / "notes" / "case_0.txt").unlink()
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), **FAST)
    assert dl.missing_files(target) == [] and len(state.requests) == 2


def test_cache_dir_never_deletes_a_file_it_did_not_make(server, tmp_path):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    cache = tmp_path / "my-cache"
    cache.mkdir()
    (cache / f"{TASK}.tar").write_bytes(b"the user's own, other tarball")  # not the expected md5
    (cache / f"{TASK}.tar.part").write_bytes(b"also the user's")
    (cache / "notes.txt").write_text("mine")
    users = _files(cache)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), cache_dir=cache, **FAST)
    assert _files(cache) == users and len(state.requests) == 1  # our archive came and went; theirs stayed
    # the user's copy of the right archive is used as it is, without a request, and kept
    shutil.rmtree(tmp_path / "data" / TASK)
    (cache / f"{TASK}.tar").write_bytes(data)
    users = _files(cache)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), cache_dir=cache, **FAST)
    assert dl.missing_files(tmp_path / "data" / TASK) == [] and len(state.requests) == 1
    assert _files(cache) == users
    # an empty cache folder the user made stays; one the download made goes
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    shutil.rmtree(tmp_path / "data" / TASK)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), cache_dir=empty, **FAST)
    assert empty.is_dir() and list(empty.iterdir()) == []
    shutil.rmtree(tmp_path / "data" / TASK)
    dl.download_task(TASK, tmp_path / "data", url=base + path, md5=md5_of(data), cache_dir=tmp_path / "made", **FAST)
    assert not (tmp_path / "made").exists()


@pytest.mark.slow
def test_the_workflow_downloads_from_the_configured_mirror(server, tmp_path):
    """data.msd_mirror reaches `mvl download --url` through the download rule: the real Snakemake
    job fetches <mirror>/<task>.tar from the local server (whose tiny archive then fails MONAI's
    md5, which the mirror does not change)."""
    import subprocess

    import yaml
    from conftest import copy_project, env_with_venv, tiny_config

    base, state = server
    _serve(state, make_archive())
    project = copy_project(tmp_path / "project")
    config = tiny_config()
    config["data"].update(source="msd", dir="userdata", tasks=[TASK], msd_mirror=base + "/msd/")
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}
    state.files[f"/msd/{TASK}.tar"] = state.files.pop(f"/{TASK}.tar")
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "--cores", "1", f"userdata/{TASK}"], cwd=project, env=env_with_venv(),
                            capture_output=True, text=True, timeout=600)
    log_file = project / "logs" / "download_task" / f"{TASK}.log"
    assert log_file.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    log = log_file.read_text()
    assert result.returncode != 0 and [p for p, _ in state.requests] == [f"/msd/{TASK}.tar"] * 2, log
    assert f"checksum mismatch for {base}/msd/{TASK}.tar" in log
    assert not (project / "userdata" / TASK).exists()


def test_cli(server, tmp_path, capsys):
    base, state = server
    data = make_archive()
    path = _serve(state, data)
    argv = ["--task", TASK, "--data-dir", str(tmp_path / "data"), "--url", base + path,
            "--md5", md5_of(data), "--retries", "1", "--backoff", "0", "--no-progress"]
    assert dl.main(argv) == 0
    assert (tmp_path / "data" / TASK / "dataset.json").is_file()
    argv_bad = ["--task", TASK, "--data-dir", str(tmp_path / "other"), "--url", base + "/nope.tar",
                "--md5", "0" * 32, "--retries", "0", "--no-progress"]
    with pytest.raises(dl.DownloadError, match="404"):  # `mvl` prints it on one line, exit 2
        dl.main(argv_bad)
    from medvisionllama.cli import main as mvl

    capsys.readouterr()
    assert mvl(["download"] + argv_bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvl download: error: cannot download") and "404" in err and "\n" not in err


def test_cli_through_mvl(server, tmp_path):
    from medvisionllama.cli import main as mvl

    assert mvl(["download", "--task", TASK, "--url", "http://127.0.0.1:9/x.tar", "--md5", "xyz"]) == 2


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown task"):
        dl.download_task("Task99_Nothing", "data", url="http://x/", md5="0" * 32)
    with pytest.raises(InputError, match="md5"):
        dl.download_task(TASK, "data", url="http://x/", md5="abc")


def test_monai_sources_cover_the_ten_tasks():
    from monai.apps import DecathlonDataset

    from medvisionllama.tasks import TASKS

    assert set(DecathlonDataset.resource) == set(TASKS) == set(DecathlonDataset.md5)
    source = dl.monai_source(TASK)
    assert source.url.endswith(f"/{TASK}.tar") and len(source.md5) == 32
