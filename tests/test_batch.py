"""The one batch policy and output rule (avatarcli.batch), used by landmarks, encode and reconstruct."""

from pathlib import Path

import pytest

from avatarcli.batch import Batch, exit_code, one_line, output_paths, wants_folder
from avatarcli.errors import EXIT_OK, EXIT_SOME_FAILED, EnvironmentProblem, InputError


def test_wants_folder_and_output_paths(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.npz").write_text("x")
    assert wants_folder(tmp_path / "d") and wants_folder(Path(f"{tmp_path}/new/")) and wants_folder(tmp_path / "new")
    assert not wants_folder(tmp_path / "a.npz") and not wants_folder(tmp_path / "f.npz")
    assert output_paths(["a"], tmp_path / "a.npz", ".npz", several=False) == [tmp_path / "a.npz"]
    assert output_paths(["a"], tmp_path / "out", ".npz", several=False) == [tmp_path / "out" / "a.npz"]
    assert output_paths(["a", "b"], tmp_path / "x.npz", ".npz", several=True) == [
        tmp_path / "x.npz" / "a.npz",
        tmp_path / "x.npz" / "b.npz",
    ]
    with pytest.raises(InputError, match="this is a file"):
        output_paths(["a", "b"], tmp_path / "f.npz", ".npz", several=True)
    with pytest.raises(InputError, match="overwrite"):
        output_paths(["a", "a"], tmp_path / "d", ".npz", several=True)


def test_batch_checks_all_goes_on_and_stops_on_the_environment():
    seen = []
    b = Batch(["p0", "p1", "p2", "p3"], on_failure=lambda i, e: seen.append(i))

    def bad_reader():
        raise ValueError("boom")

    def bad_input():
        raise InputError("bad")

    assert b.check(0, lambda: "ok") == "ok"
    assert b.check(1, bad_input) is None
    assert b.check(2, bad_reader, path=Path("p2")) is None
    assert b.pending() == [0, 3] and seen == [1, 2]
    assert isinstance(b.failed[2], InputError) and "p2" in str(b.failed[2]) and "ValueError" in str(b.failed[2])
    assert b.attempt(3, lambda: 1 / 0) is None  # any crash of one input: recorded, the batch goes on
    assert one_line(b.failed[3]).startswith("internal error: ZeroDivisionError")
    with pytest.raises(EnvironmentProblem):  # the machine, not the input: stops the batch
        b.attempt(0, lambda: (_ for _ in ()).throw(EnvironmentProblem("no CUDA")))
    assert exit_code(list(b.failed.values()), single=False) == EXIT_SOME_FAILED
    assert exit_code([], single=False) == EXIT_OK == exit_code([], single=True)
    with pytest.raises(InputError, match="bad"):  # one input: its own error, raised as is
        exit_code([InputError("bad")], single=True)
