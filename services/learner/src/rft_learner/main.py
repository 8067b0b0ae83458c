"""`rft-learner serve`: entry point. Parses config first; imports the service after."""

from __future__ import annotations

import os
import sys

from rft_common.config import parse_serve_command
from rft_common.runtime import run_service

from rft_learner.config import LearnerConfig


def main(argv: list[str] | None = None) -> None:
    config = parse_serve_command("rft-learner", LearnerConfig, "RFT_LEARNER", argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    from rft_learner.trainer.devices import learner_dist_backend, resolve_placement, torchrun_local_rank

    try:  # before any service starts: a flag this machine cannot honour is a usage error
        local = torchrun_local_rank()  # under torchrun each rank takes its own GPU (cuda:LOCAL_RANK)
        placement = resolve_placement(config.device, config.precision, *(local or (None,)))
        backend = learner_dist_backend(config.dist_backend, placement.device, world)
    except ValueError as exc:
        sys.exit(f"rft-learner: {exc}")
    if world > 1:  # under torchrun: rank 0 is the service, the others its trainer ranks
        if int(os.environ.get("RANK", "0")) > 0:
            from rft_learner.trainer.rank_worker import serve_ranks

            serve_ranks(placement.device, backend)
            return
        if config.trainer_ranks not in (1, world):
            sys.exit(f"rft-learner: --trainer-ranks {config.trainer_ranks} but torchrun started {world} ranks")
        config = config.model_copy(update={"trainer_ranks": world})
    try:  # a malformed keys file or catalogue is a usage error, reported before anything starts
        from rft_common.api_keys import ApiKeys

        from rft_learner.http_api.models import ModelCatalogue

        ApiKeys.load(config.api_keys_file)
        ModelCatalogue.parse(config.model_catalogue)
    except (OSError, ValueError) as exc:
        sys.exit(f"rft-learner: {exc}")
    if placement.device.type != "cpu" and config.trainer_ranks > 1 and world == 1:
        sys.exit(
            "rft-learner: the ranks --trainer-ranks starts run on CPU (gloo); for several GPU ranks start the "
            "learner with torchrun --nproc-per-node N --no-python rft-learner serve ..."
        )
    from rft_learner.app import serve

    if world == 1:
        run_service("rft-learner", config, lambda: serve(config))
        return
    from rft_learner.trainer.ranks import join_torchrun_ranks, release_torchrun_ranks

    join_torchrun_ranks(backend, placement.device)
    try:
        run_service("rft-learner", config, lambda: serve(config))
    finally:
        release_torchrun_ranks()


if __name__ == "__main__":
    main(sys.argv[1:])
