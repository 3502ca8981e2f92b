"""A submission's working_dir zip is stored under its digest whole or not at all, also when two
submissions of the same folder race (controller.service.store_package)."""
from __future__ import annotations

import threading

from trainyard.controller.service import store_package


def test_racing_writers_of_one_package_leave_the_whole_zip_and_no_temporary_file(tmp_path):
    package = bytes(range(256)) * 4096  # 1 MiB: large enough for writes to interleave
    for round_ in range(8):  # a race: several rounds, so that a shared temporary name shows
        target = tmp_path / f"pkg{round_}.zip"
        errors: list[BaseException] = []
        start = threading.Barrier(16)

        def submit():
            try:
                start.wait()
                store_package(target, package)
            except BaseException as exc:  # noqa: BLE001 - the test reports any of them
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], (round_, errors[:1])
        assert target.read_bytes() == package
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pkg{i}.zip" for i in range(8)]


def test_an_existing_package_is_not_written_again(tmp_path):
    target = tmp_path / "d.zip"
    target.write_bytes(b"kept")
    store_package(target, b"other")
    assert target.read_bytes() == b"kept"


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import trainyard.controller.service as service

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(service.os, "replace", refuse)
    target = tmp_path / "e.zip"
    try:
        store_package(target, b"zip")
    except OSError as exc:
        assert "disk full" in str(exc)
    else:
        raise AssertionError("the failed rename was not reported")
    assert list(tmp_path.iterdir()) == []
