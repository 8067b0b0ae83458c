"""Generate Python stubs for protos/ into services/common/src/ (or --out DIR).

The generated modules are committed so that every service package installs without
grpcio-tools; tests/test_protos.py regenerates into a temporary directory and fails
when the committed stubs differ from what protos/ produces.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "services" / "common" / "src"
PACKAGE = "rft"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc over every .proto file; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    target = out_dir / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # Every directory on the way down becomes a regular package.
    for directory in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return sorted(p for p in target.rglob("*") if p.is_file())


def stale_files(committed_root: pathlib.Path, proto_root: pathlib.Path = PROTO_ROOT) -> list[str]:
    """Files under committed_root/rft that differ from a fresh generation of proto_root."""
    global PROTO_ROOT
    saved, PROTO_ROOT = PROTO_ROOT, proto_root
    try:
        with tempfile.TemporaryDirectory() as scratch:
            fresh_root = pathlib.Path(scratch)
            fresh = {p.relative_to(fresh_root): p.read_bytes() for p in generate(fresh_root)}
    finally:
        PROTO_ROOT = saved
    committed = {
        p.relative_to(committed_root): p.read_bytes()
        for p in (committed_root / PACKAGE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    return sorted(str(name) for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output root")
    parser.add_argument("--check", action="store_true", help="only report stubs that are stale; exit 1 if any")
    args = parser.parse_args()
    if args.check:
        stale = stale_files(args.out)
        if stale:
            sys.exit("stale generated stubs (run `make protos`):\n  " + "\n  ".join(stale))
        print("generated stubs are up to date")
        return
    files = generate(args.out)
    print(f"generated {len(files)} files under {args.out / PACKAGE}")


if __name__ == "__main__":
    main()
