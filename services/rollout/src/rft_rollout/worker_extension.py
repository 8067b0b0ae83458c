"""Code that runs inside vLLM's worker process (the one holding the model).

vLLM mixes `WeightReloadExtension` into its worker class (engine argument
`worker_extension_cls`), so the server calls its methods by name through
`AsyncLLM.collective_rpc`, with no pickled code crossing the process boundary. The
module must stay importable by the worker: plain imports only.
"""

from __future__ import annotations

import traceback


class WeightReloadExtension:
    """Loads a safetensors file into the running model in place."""

    def rft_reload_weights(self, path: str, expected: dict[str, list[int]]) -> dict[str, object]:
        """Replace every weight with the tensors of `path`. `expected` maps each
        state-dict name to its shape.

        The whole file is read into memory and checked before the first parameter
        changes, so a file that is unreadable, truncated or does not match the model is
        refused with the old weights intact: {"applied": False, "error": why}. An
        exception means the engine failed while applying. Every state-dict key is
        applied, a tied lm_head.weight included: leaving it out would keep the old
        output layer.
        """
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except Exception as exc:  # noqa: BLE001 - any read failure is a refusal
            return {"applied": False, "error": f"cannot read {path}: {exc}"}
        unknown = sorted(set(tensors) - set(expected))
        missing = sorted(set(expected) - set(tensors))
        wrong = [name for name, tensor in tensors.items() if name in expected and list(tensor.shape) != expected[name]]
        if unknown or missing or wrong:
            error = (
                f"weights do not match the model: unknown {unknown[:5]}, missing {missing[:5]}, bad shape {wrong[:5]}"
            )
            return {"applied": False, "error": error}
        self.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return {"applied": True, "error": ""}

    def rft_receive_weights(self, transfer: dict) -> dict[str, object]:
        """Join a CollectiveWeights transfer as rank 1 + this worker's rank and receive
        every tensor of `transfer["specs"]` (name, dtype, shape, size, checksum) into
        buffers: host memory under gloo, this worker's device under NCCL. Checksums are
        checked on host buffers. Nothing is applied: `rft_apply_received` does that.

        Returns {"received", "error", "kind"}: kind "broken" when the transfer itself
        failed (the sender went away or gave up, a timeout; sending it again may work),
        "checksum" for bytes that do not match their checksum, "refused" when this
        worker cannot hold the update (out of memory). The old weights serve on.
        """
        import torch
        from rft_common import collective
        from rft_common.weights import checksum

        self.rft_discard_received()
        group, failed = None, True
        try:
            timeout = float(transfer["timeout_seconds"])
            store = collective.session_store(
                collective.connect_store(transfer["store_address"], timeout), transfer["session"]
            )
            rank = 1 + int(self.rank)  # type: ignore[attr-defined]
            collective.announce_ready(store, rank)
            if not collective.wait_for_go(store, timeout):
                return {"received": False, "error": "the sender abandoned the transfer", "kind": "broken"}
            backend = transfer["backend"]
            group = collective.join_group(store, rank, int(transfer["world"]), backend, timeout)
            device = self.device if backend == "nccl" else torch.device("cpu")  # type: ignore[attr-defined]
            received = {}
            algorithm = transfer["checksum_algorithm"]
            for name, dtype, shape, size, expected in transfer["specs"]:
                buffer = torch.empty(size, dtype=torch.uint8, device=device)
                collective.broadcast_bytes(group, buffer)
                if expected and algorithm != "none" and buffer.device.type == "cpu":
                    actual = checksum(memoryview(buffer.numpy()), algorithm)
                    if actual != expected:
                        error = f"tensor {name!r}: {algorithm} {actual}, expected {expected}"
                        return {"received": False, "error": error, "kind": "checksum"}
                received[name] = buffer.view(getattr(torch, dtype)).reshape(shape)
            self._rft_received = (transfer["session"], received)
            failed = False
            return {"received": True, "error": "", "kind": ""}
        except torch.OutOfMemoryError as exc:
            return {"received": False, "error": f"no room for the update beside the model: {exc}", "kind": "refused"}
        except Exception as exc:  # noqa: BLE001 - a broken transfer is a refusal, never a dead engine
            traceback.clear_frames(exc.__traceback__)  # they hold the group; see close_group
            error = f"receiving over {transfer.get('backend')} failed: {exc}"
            return {"received": False, "error": error, "kind": "broken"}
        finally:
            collective.close_group(group, failed)
            group = None  # gloo closes its connections when the object goes

    def rft_apply_received(self, session: str) -> dict[str, object]:
        """Load the tensors `rft_receive_weights` received for `session`, every state-dict
        key, into the running model; then let the buffers go."""
        held = getattr(self, "_rft_received", None)
        if held is None or held[0] != session:
            return {"applied": False, "error": f"no weights received for transfer {session!r}"}
        self._rft_received = None
        self.reload_weights(weights_iterator=iter(held[1].items()), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return {"applied": True, "error": ""}

    def rft_discard_received(self) -> None:
        """Drop weights received and not applied."""
        self._rft_received = None
