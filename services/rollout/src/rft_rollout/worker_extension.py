"""Code that runs inside vLLM's worker process (the one holding the model).

vLLM mixes `WeightReloadExtension` into its worker class (engine argument
`worker_extension_cls`), so the server calls its methods by name through
`AsyncLLM.collective_rpc`, with no pickled code crossing the process boundary. The
module must stay importable by the worker: plain imports only.
"""

from __future__ import annotations


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
