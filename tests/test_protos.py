"""The contracts: buf lint is clean and the committed stubs match protos/."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BUF = REPO / "tools" / "buf" / "node_modules" / ".bin" / "buf"
STUBS = REPO / "services" / "common" / "src"

spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
gen_protos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_protos)


def test_buf_lint_is_clean() -> None:
    assert BUF.exists(), "buf is not installed: run `make install`"
    result = subprocess.run([str(BUF), "lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_an_undocumented_field(tmp_path: pathlib.Path) -> None:
    shutil.copytree(REPO / "protos", tmp_path / "protos")
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "rft" / "common" / "v1" / "common.proto"
    proto.write_text(proto.read_text().replace("  string content = 2;", "  string content = 2;\n  int32 BadName = 3;"))
    result = subprocess.run([str(BUF), "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "BadName" in result.stdout + result.stderr


def test_committed_stubs_match_protos() -> None:
    assert gen_protos.stale_files(STUBS) == []


def test_stale_stubs_are_detected(tmp_path: pathlib.Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(REPO / "protos", protos)
    proto = protos / "rft" / "grader" / "v1" / "grader.proto"
    proto.write_text(
        proto.read_text().replace(
            "  string output_text = 1;", "  string output_text = 1;\n  // New.\n  string extra = 99;"
        )
    )
    stale = gen_protos.stale_files(STUBS, proto_root=protos)
    assert "rft/grader/v1/grader_pb2.py" in stale
    assert "rft/grader/v1/grader_pb2.pyi" in stale


@pytest.mark.parametrize("package", ["rft.rollout.v1", "rft.grader.v1", "rft.learner.v1"])
def test_every_enum_starts_with_unspecified(package: str) -> None:
    import rft.grader.v1.grader_pb2  # noqa: F401
    import rft.learner.v1.files_pb2  # noqa: F401
    import rft.learner.v1.fine_tuning_pb2  # noqa: F401
    import rft.rollout.v1.rollout_pb2  # noqa: F401
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    files = [
        f
        for f in (REPO / "protos").rglob("*.proto")
        if f.relative_to(REPO / "protos").parts[:3] == tuple(package.split("."))
    ]
    assert files
    for path in files:
        descriptor = pool.FindFileByName(str(path.relative_to(REPO / "protos")))
        for enum in descriptor.enum_types_by_name.values():
            assert enum.values[0].number == 0 and enum.values[0].name.endswith("_UNSPECIFIED"), enum.full_name
