"""`rft`: the command-line client of the RFT services.

Exit codes scripts can trust: 0 success, 1 the service refused or failed the request
(the message says why), 2 bad usage, 3 the service could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format
from rft.learner.v1 import files_pb2, files_pb2_grpc
from rft_common.client import aio_channel

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
CHUNK_BYTES = 1 << 20
PURPOSES = {"fine-tune": files_pb2.FILE_PURPOSE_FINE_TUNE}


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def _file_row(f: files_pb2.File) -> dict[str, object]:
    created = datetime.datetime.fromtimestamp(f.create_time.seconds, datetime.timezone.utc)
    return {
        "id": f.id,
        "filename": f.filename,
        "examples": f.line_count,
        "bytes": f.size_bytes,
        "created": created.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _emit(args: argparse.Namespace, message, rows: list[dict[str, object]], columns: list[str]) -> None:
    if args.json:
        print(json_format.MessageToJson(message, preserving_proto_field_name=True))
    else:
        _print_table(rows, columns)


async def _upload_stream(path: pathlib.Path, purpose: int) -> AsyncIterator[files_pb2.UploadFileRequest]:
    yield files_pb2.UploadFileRequest(header=files_pb2.UploadFileHeader(filename=path.name, purpose=purpose))
    total = path.stat().st_size
    sent = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sent += len(chunk)
            if total > 8 * CHUNK_BYTES and sys.stderr.isatty():
                print(f"\ruploading {path.name}: {100 * sent // total}%", end="", file=sys.stderr)
            yield files_pb2.UploadFileRequest(chunk=chunk)
    if total > 8 * CHUNK_BYTES and sys.stderr.isatty():
        print(file=sys.stderr)


async def files_command(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = files_pb2_grpc.FilesServiceStub(channel)
    if args.files_command == "upload":
        path = pathlib.Path(args.path)
        if not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return EXIT_USAGE
        response = await stub.UploadFile(_upload_stream(path, PURPOSES[args.purpose]))
        _emit(args, response, [_file_row(response.file)], ["id", "filename", "examples", "bytes", "created"])
        for warning in response.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    elif args.files_command == "list":
        response = await stub.ListFiles(files_pb2.ListFilesRequest(page_size=args.limit))
        _emit(
            args, response, [_file_row(f) for f in response.files], ["id", "filename", "examples", "bytes", "created"]
        )
    elif args.files_command == "get":
        response = await stub.GetFile(files_pb2.GetFileRequest(file_id=args.file_id))
        _emit(args, response, [_file_row(response.file)], ["id", "filename", "examples", "bytes", "created"])
    elif args.files_command == "delete":
        response = await stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=args.file_id))
        if args.json:
            print(json.dumps({"deleted": args.file_id}))
        else:
            print(f"deleted {args.file_id}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft", description="Client of the RFT services (files, jobs, graders).")
    parser.add_argument(
        "--learner",
        default=os.environ.get("RFT_LEARNER_ADDRESS", "127.0.0.1:50053"),
        help="learner address host:port [env RFT_LEARNER_ADDRESS; default %(default)s]",
    )
    parser.add_argument("--token", default=os.environ.get("RFT_TOKEN", ""), help="bearer token [env RFT_TOKEN]")
    parser.add_argument(
        "--tls-ca", default=os.environ.get("RFT_TLS_CA", ""), help="CA bundle to verify TLS [env RFT_TLS_CA]"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    files = commands.add_parser("files", help="upload and manage dataset files")
    files_commands = files.add_subparsers(dest="files_command", required=True, metavar="ACTION")
    upload = files_commands.add_parser("upload", help="upload a JSONL dataset (every line is validated)")
    upload.add_argument("path", help='JSONL file: one {"messages": [...], ...} object per line')
    upload.add_argument("--purpose", choices=sorted(PURPOSES), default="fine-tune", help="what the file is for")
    listing = files_commands.add_parser("list", help="list uploaded files, newest first")
    listing.add_argument("--limit", type=int, default=50, help="how many to show")
    for name, text in (("get", "show one file"), ("delete", "delete one file")):
        sub = files_commands.add_parser(name, help=text)
        sub.add_argument("file_id", help="file id (file-...)")
    return parser


async def run(args: argparse.Namespace) -> int:
    channel = aio_channel(args.learner, tls_ca_file=args.tls_ca, token=args.token)
    async with channel:
        try:
            if args.command == "files":
                return await files_command(args, channel)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                print(f"error: cannot reach the learner at {args.learner}: {exc.details()}", file=sys.stderr)
                return EXIT_UNREACHABLE
            print(f"error ({exc.code().name}): {exc.details()}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
