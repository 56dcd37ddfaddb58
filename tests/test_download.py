"""itbench.data.download: sha1-checked downloads from a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import pytest
from helpers_data import LocalServer, files_in, refused_url, sha1_of

from itbench.data.download import DEFAULT_BASE_URL, base_url, fetch_file, file_sha1
from itbench.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, several chunks


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "data.bin").write_bytes(PAYLOAD)
    with LocalServer(folder) as server:
        yield server, hashlib.sha1(PAYLOAD).hexdigest()


def test_file_sha1_matches_hashlib(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert file_sha1(tmp_path / "f") == hashlib.sha1(PAYLOAD).hexdigest()


def test_base_url_precedence(monkeypatch):
    monkeypatch.delenv("ITBENCH_MIRROR", raising=False)
    assert base_url() == DEFAULT_BASE_URL == "https://brainscore-storage.s3.amazonaws.com/brainio-brainscore/"
    monkeypatch.setenv("ITBENCH_MIRROR", "http://env.example/x")
    assert base_url() == "http://env.example/x/"
    assert base_url("http://arg.example/") == "http://arg.example/"


def test_download_then_no_second_download(served, tmp_path):
    server, sha1 = served
    dest = tmp_path / "dest"
    path = fetch_file("data.bin", sha1, dest, mirror=server.url, progress=False)
    assert path == dest / "data.bin" and path.read_bytes() == PAYLOAD
    again = fetch_file("data.bin", sha1.upper(), dest, mirror=server.url, progress=False)
    assert again == path and server.requests["data.bin"] == 1
    assert files_in(dest) == {"data.bin"}


def test_mirror_from_environment(served, tmp_path, monkeypatch):
    server, sha1 = served
    monkeypatch.setenv("ITBENCH_MIRROR", server.url.rstrip("/"))
    fetch_file("data.bin", sha1, tmp_path / "dest", progress=False)
    assert server.requests["data.bin"] == 1


def test_wrong_local_file_is_replaced(served, tmp_path):
    server, sha1 = served
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data.bin").write_bytes(b"stale")
    fetch_file("data.bin", sha1, dest, mirror=server.url, progress=False)
    assert sha1_of(dest / "data.bin") == sha1


def test_progress_bar_goes_to_stderr(served, tmp_path, capsys):
    server, sha1 = served
    fetch_file("data.bin", sha1, tmp_path / "dest", mirror=server.url, progress=True)
    err = capsys.readouterr().err
    assert "downloading data.bin from 127.0.0.1" in err and ("B/s" in err or "100%" in err)


@pytest.mark.parametrize("as_url", [False, True])
def test_local_folder_mirror(tmp_path, as_url):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "data.bin").write_bytes(PAYLOAD)
    mirror = folder.as_uri() if as_url else str(folder)
    path = fetch_file("data.bin", hashlib.sha1(PAYLOAD).hexdigest(), tmp_path / "dest", mirror=mirror)
    assert path.read_bytes() == PAYLOAD and files_in(tmp_path / "dest") == {"data.bin"}
    with pytest.raises(DownloadError, match="mirror folder .* has no other.bin"):
        fetch_file("other.bin", "0" * 40, tmp_path / "dest", mirror=mirror)


def test_http_404_names_status_and_url(served, tmp_path):
    server, _ = served
    with pytest.raises(DownloadError, match=r"answered 404 for http://127\.0\.0\.1:\d+/absent\.bin"):
        fetch_file("absent.bin", "0" * 40, tmp_path / "dest", mirror=server.url, progress=False)
    assert files_in(tmp_path / "dest") == set()


def test_sha1_mismatch_names_both_and_keeps_nothing(served, tmp_path):
    server, actual = served
    wrong = "1" * 40
    with pytest.raises(DownloadError) as err:
        fetch_file("data.bin", wrong, tmp_path / "dest", mirror=server.url, progress=False)
    message = str(err.value)
    assert "checksum mismatch for data.bin" in message and f"expected sha1 {wrong}" in message
    assert f"got {actual}" in message
    assert files_in(tmp_path / "dest") == set()


def test_offline_says_host_unreachable_and_how_to_proceed(tmp_path):
    url = refused_url()
    with pytest.raises(DownloadError) as err:
        fetch_file("data.bin", "0" * 40, tmp_path / "dest", mirror=url, progress=False)
    message = str(err.value)
    assert f"could not reach {url[7:-1]}" in message
    assert "--mirror" in message and str(tmp_path / "dest" / "data.bin") in message
    assert files_in(tmp_path / "dest") == set()


def test_interrupted_download_leaves_nothing_and_rerun_restarts(served, tmp_path):
    server, sha1 = served
    server.truncate["data.bin"] = len(PAYLOAD) // 3
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="was interrupted .* partial file was discarded"):
        fetch_file("data.bin", sha1, dest, mirror=server.url, progress=False)
    assert files_in(dest) == set()
    del server.truncate["data.bin"]
    assert fetch_file("data.bin", sha1, dest, mirror=server.url, progress=False).read_bytes() == PAYLOAD
    assert server.requests["data.bin"] == 2


def test_leftovers_of_a_killed_run_are_cleared(served, tmp_path):
    server, sha1 = served
    dest = tmp_path / "dest"
    stale = dest / ".partial-data.bin"
    stale.mkdir(parents=True)
    (stale / "tmpabc123").write_bytes(PAYLOAD[:1000])
    fetch_file("data.bin", sha1, dest, mirror=server.url, progress=False)
    assert files_in(dest) == {"data.bin"}
