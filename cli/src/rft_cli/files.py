"""`rft files upload|list|get|delete`: the JSONL datasets jobs train and validate on."""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import AsyncIterator

from rft.learner.v1 import files_pb2, files_pb2_grpc

from rft_cli.common import add_command, add_group, learner
from rft_cli.output import EXIT_OK, CliError, print_json, print_table, timestamp, warn
from rft_cli.services import Connections

CHUNK_BYTES = 1 << 20
PURPOSES = {"fine-tune": files_pb2.FILE_PURPOSE_FINE_TUNE}
COLUMNS = ["id", "filename", "examples", "bytes", "created"]


def file_row(f: files_pb2.File) -> dict[str, object]:
    return {
        "id": f.id,
        "filename": f.filename,
        "examples": f.line_count,
        "bytes": f.size_bytes,
        "created": timestamp(f.create_time),
    }


async def _upload_stream(path: pathlib.Path, purpose: int) -> AsyncIterator[files_pb2.UploadFileRequest]:
    yield files_pb2.UploadFileRequest(header=files_pb2.UploadFileHeader(filename=path.name, purpose=purpose))
    total = path.stat().st_size
    show = total > 8 * CHUNK_BYTES and sys.stderr.isatty()
    sent = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sent += len(chunk)
            if show:
                print(f"\ruploading {path.name}: {100 * sent // total}%", end="", file=sys.stderr)
            yield files_pb2.UploadFileRequest(chunk=chunk)
    if show:
        print(file=sys.stderr)


async def upload_file(args: argparse.Namespace, conns: Connections, path_text: str) -> files_pb2.UploadFileResponse:
    """Upload one file (also used by `jobs create` when given a path instead of an id)."""
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise CliError(f"{path}: no such file (expected a JSONL dataset)")
    stub = learner(args, conns, files_pb2_grpc.FilesServiceStub)
    purpose = PURPOSES[getattr(args, "purpose", "fine-tune")]
    response = await stub.UploadFile(_upload_stream(path, purpose))
    for message in response.warnings:
        warn(message)
    return response


async def upload(args: argparse.Namespace, conns: Connections) -> int:
    response = await upload_file(args, conns, args.path)
    if args.json:
        print_json(response)
    else:
        print_table([file_row(response.file)], COLUMNS)
    return EXIT_OK


async def list_files(args: argparse.Namespace, conns: Connections) -> int:
    stub = learner(args, conns, files_pb2_grpc.FilesServiceStub)
    response = await stub.ListFiles(files_pb2.ListFilesRequest(page_size=args.limit))
    if args.json:
        print_json(response)
    else:
        print_table([file_row(f) for f in response.files], COLUMNS, empty="(no files)")
    return EXIT_OK


async def get(args: argparse.Namespace, conns: Connections) -> int:
    stub = learner(args, conns, files_pb2_grpc.FilesServiceStub)
    response = await stub.GetFile(files_pb2.GetFileRequest(file_id=args.file_id))
    if args.json:
        print_json(response)
    else:
        print_table([file_row(response.file)], COLUMNS)
    return EXIT_OK


async def delete(args: argparse.Namespace, conns: Connections) -> int:
    stub = learner(args, conns, files_pb2_grpc.FilesServiceStub)
    await stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=args.file_id))
    if args.json:
        print_json({"deleted": args.file_id})
    else:
        print(f"deleted {args.file_id}")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_group(commands, "files", "upload and manage dataset files (learner)")
    sub = add_command(
        actions,
        "upload",
        upload,
        "upload a JSONL dataset; every line is validated",
        epilog='Each line: {"messages": [{"role": "user", "content": "..."}], ...other fields (the item)}.\n'
        "A file with any bad line is refused (exit 1) and each bad line is listed with its number.",
    )
    sub.add_argument("path", help="JSONL file")
    sub.add_argument("--purpose", choices=sorted(PURPOSES), default="fine-tune", help="what the file is for")
    sub = add_command(actions, "list", list_files, "list uploaded files, newest first")
    sub.add_argument("--limit", type=int, default=50, help="how many to show (default %(default)s)")
    sub = add_command(actions, "get", get, "show one file")
    sub.add_argument("file_id", help="file id (file-...)")
    sub = add_command(actions, "delete", delete, "delete one file (refused while an unfinished job uses it)")
    sub.add_argument("file_id", help="file id (file-...)")
