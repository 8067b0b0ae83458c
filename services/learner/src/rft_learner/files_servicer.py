"""gRPC face of the file store (rft.learner.v1.FilesService). A tenant's credential sees
and stores its own files only; the operator's sees all and stores as "default"."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rft.learner.v1 import files_pb2, files_pb2_grpc
from rft_common.api_keys import DEFAULT_TENANT
from rft_common.paging import InvalidPageToken, next_page_token, page_window
from rft_common.tenancy import owner_filter

from rft_learner.files import FileNotFound, FileStore, InvalidFile, StoredFile

SERVICE_NAME = files_pb2.DESCRIPTOR.services_by_name["FilesService"].full_name


def file_to_proto(stored: StoredFile) -> files_pb2.File:
    created = Timestamp()
    created.FromNanoseconds(int(stored.created_at * 1e9))
    return files_pb2.File(
        id=stored.id,
        filename=stored.filename,
        purpose=stored.purpose,
        size_bytes=stored.size_bytes,
        line_count=stored.line_count,
        sha256=stored.sha256,
        create_time=created,
    )


class FilesServicer(files_pb2_grpc.FilesServiceServicer):
    def __init__(self, store: FileStore) -> None:
        self.store = store

    async def UploadFile(self, request_iterator, context: grpc.aio.ServicerContext) -> files_pb2.UploadFileResponse:
        header: files_pb2.UploadFileHeader | None = None
        upload = await asyncio.to_thread(self.store.begin_upload)
        try:
            async for message in request_iterator:
                kind = message.WhichOneof("message")
                if header is None:
                    if kind != "header":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a header")
                    header = message.header
                    if header.purpose == files_pb2.FILE_PURPOSE_UNSPECIFIED:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "header.purpose must be set")
                elif kind == "chunk":
                    await asyncio.to_thread(upload.write, message.chunk)
                else:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only chunks may follow the header")
            if header is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload: send a header, then chunks")
            owner = owner_filter() or DEFAULT_TENANT
            stored = await asyncio.to_thread(self.store.commit, upload, header.filename, header.purpose, owner)
        except InvalidFile as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            upload.discard()
        return files_pb2.UploadFileResponse(file=file_to_proto(stored))

    async def GetFile(self, request, context):
        try:
            stored = await asyncio.to_thread(self.store.get, request.file_id, owner_filter())
        except FileNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return files_pb2.GetFileResponse(file=file_to_proto(stored))

    async def ListFiles(self, request, context):
        try:
            limit, offset = page_window(request.page_size, request.page_token)
        except InvalidPageToken as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        files = await asyncio.to_thread(self.store.list, limit, offset, request.purpose, owner_filter())
        return files_pb2.ListFilesResponse(
            files=[file_to_proto(f) for f in files], next_page_token=next_page_token(offset, limit, len(files))
        )

    async def DeleteFile(self, request, context):
        try:
            await asyncio.to_thread(self.store.delete, request.file_id, owner_filter())
        except FileNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return files_pb2.DeleteFileResponse()
