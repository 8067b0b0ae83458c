"""Generate and StreamGenerate through a real gRPC client against real vLLM."""

from __future__ import annotations

from rft.common.v1 import common_pb2
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import greedy, text_prompt, token_prompt

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44], [60, 3, 61], [70, 71]]


def generate(rollout, prompts, **sampling) -> rollout_pb2.GenerateResponse:
    return rollout.stub.Generate(
        rollout_pb2.GenerateRequest(prompts=prompts, sampling=rollout_pb2.SamplingParams(**sampling)), timeout=120
    )


def test_chat_prompt_is_rendered_with_the_models_chat_template(rollout, models) -> None:
    from transformers import AutoTokenizer

    messages = [("system", "Be brief."), ("user", "What is 2+2?")]
    prompt = rollout_pb2.Prompt(
        chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages])
    )
    response = generate(rollout, [prompt], max_tokens=4, temperature=0.0)

    tokenizer = AutoTokenizer.from_pretrained(models.base_dir)
    expected_text = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(response.results[0].prompt_token_ids) == expected_text
    assert list(response.results[0].prompt_token_ids) == tokenizer.encode(expected_text, add_special_tokens=False)


def test_text_and_token_id_prompts_give_the_same_completion(rollout, models) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(models.base_dir).encode("hello world")
    response = generate(rollout, [text_prompt("hello world"), token_prompt(ids)], max_tokens=12, temperature=0.0)
    by_text, by_ids = response.results
    assert list(by_text.prompt_token_ids) == list(by_ids.prompt_token_ids) == ids
    assert list(by_text.samples[0].token_ids) == list(by_ids.samples[0].token_ids)


def test_n_samples_with_text_token_ids_logprobs_and_version(rollout) -> None:
    response = generate(rollout, [token_prompt(ids) for ids in PROMPTS], n=3, max_tokens=10, temperature=1.0)
    assert [r.prompt_index for r in response.results] == list(range(len(PROMPTS)))
    total = 0
    for result, ids in zip(response.results, PROMPTS, strict=True):
        assert list(result.prompt_token_ids) == ids
        assert [s.sample_index for s in result.samples] == [0, 1, 2]
        for sample in result.samples:
            assert sample.prompt_index == result.prompt_index
            assert 0 < len(sample.token_ids) <= 10
            assert len(sample.logprobs) == len(sample.token_ids)
            assert all(lp <= 0.0 for lp in sample.logprobs)
            assert sample.finish_reason in (rollout_pb2.FINISH_REASON_STOP, rollout_pb2.FINISH_REASON_LENGTH)
            assert sample.policy_version == rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest()).policy_version
            total += len(sample.token_ids)
    assert response.completion_tokens == total
    assert response.prompt_tokens == sum(len(ids) for ids in PROMPTS)


def test_seed_makes_sampling_reproducible_and_samples_differ(rollout) -> None:
    request = dict(n=4, max_tokens=16, temperature=1.0, seed=1234)
    first = generate(rollout, [token_prompt(PROMPTS[0])], **request).results[0].samples
    second = generate(rollout, [token_prompt(PROMPTS[0])], **request).results[0].samples
    other_seed = generate(rollout, [token_prompt(PROMPTS[0])], **{**request, "seed": 99}).results[0].samples
    assert [list(s.token_ids) for s in first] == [list(s.token_ids) for s in second]
    assert [list(s.logprobs) for s in first] == [list(s.logprobs) for s in second]
    # Each of the n samples has its own seed (seed + index), so they differ.
    assert len({tuple(s.token_ids) for s in first}) > 1
    assert [list(s.token_ids) for s in first] != [list(s.token_ids) for s in other_seed]


def test_max_tokens_ends_with_finish_reason_length(rollout) -> None:
    samples = generate(rollout, [token_prompt(ids) for ids in PROMPTS], max_tokens=3, temperature=1.0, seed=5)
    lengths = [s for r in samples.results for s in r.samples if s.finish_reason == rollout_pb2.FINISH_REASON_LENGTH]
    assert lengths and all(len(s.token_ids) == 3 for s in lengths)


def test_stop_string_ends_the_sample_and_is_not_in_the_text(rollout) -> None:
    # Cut a greedy completion at the first printable ASCII character after its start.
    candidates = []
    for ids, full in zip(PROMPTS, greedy(rollout.stub, PROMPTS, max_tokens=24), strict=True):
        positions = [i for i, char in enumerate(full.text) if i >= 2 and char.isascii() and char.isprintable()]
        if positions:
            candidates.append((ids, full, full.text[positions[0]]))
    assert candidates, "no greedy completion contains a printable ASCII character"
    prompt, full, stop = candidates[0]
    cut = full.text.index(stop)
    sample = generate(rollout, [token_prompt(prompt)], max_tokens=24, temperature=0.0, stop=[stop]).results[0]
    sample = sample.samples[0]
    assert sample.finish_reason == rollout_pb2.FINISH_REASON_STOP
    assert sample.text == full.text[:cut]
    assert stop not in sample.text
    assert list(sample.token_ids) == list(full.token_ids[: len(sample.token_ids)])


def test_stop_token_id_ends_the_sample(rollout) -> None:
    full = greedy(rollout.stub, [PROMPTS[1]], max_tokens=24)[0]
    stop_token = full.token_ids[5]
    first = list(full.token_ids).index(stop_token)
    sample = generate(
        rollout, [token_prompt(PROMPTS[1])], max_tokens=24, temperature=0.0, stop_token_ids=[stop_token]
    ).results[0]
    sample = sample.samples[0]
    assert sample.finish_reason == rollout_pb2.FINISH_REASON_STOP
    assert list(sample.token_ids) == list(full.token_ids[: first + 1])


def test_stream_generate_yields_every_sample_once(rollout) -> None:
    request = rollout_pb2.StreamGenerateRequest(
        prompts=[token_prompt(ids) for ids in PROMPTS],
        sampling=rollout_pb2.SamplingParams(n=2, max_tokens=8, temperature=1.0, seed=7),
    )
    streamed = list(rollout.stub.StreamGenerate(request, timeout=120))
    assert sorted((m.sample.prompt_index, m.sample.sample_index) for m in streamed) == [
        (p, s) for p in range(len(PROMPTS)) for s in range(2)
    ]
    for message in streamed:
        assert list(message.prompt_token_ids) == PROMPTS[message.sample.prompt_index]
    # Same seeds: the unary call returns the same samples.
    unary = generate(rollout, [token_prompt(ids) for ids in PROMPTS], n=2, max_tokens=8, temperature=1.0, seed=7)
    by_index = {(m.sample.prompt_index, m.sample.sample_index): list(m.sample.token_ids) for m in streamed}
    for result in unary.results:
        for sample in result.samples:
            assert by_index[(sample.prompt_index, sample.sample_index)] == list(sample.token_ids)


def test_stream_generate_yields_a_sample_as_soon_as_it_finishes(rollout) -> None:
    """A sample that hits the context length after a few tokens arrives before a
    sample of the same call that still has ~200 tokens to go."""
    request = rollout_pb2.StreamGenerateRequest(
        prompts=[token_prompt([5, 6, 7]), token_prompt([5] * 250)],  # context: 256 tokens
        sampling=rollout_pb2.SamplingParams(max_tokens=200, temperature=1.0, seed=3),
    )
    streamed = list(rollout.stub.StreamGenerate(request, timeout=120))
    assert [m.sample.prompt_index for m in streamed] == [1, 0]
    assert len(streamed[0].sample.token_ids) <= 6 < len(streamed[1].sample.token_ids)


def test_seeded_batch_larger_than_one_engine_step_generates(rollout) -> None:
    """16 prompts x 8 samples x 200 prompt tokens do not fit one engine step. vLLM 0.32
    on CPU kills its engine when a seeded request's prompt is split across steps
    (chunked prefill), which the service therefore turns off."""
    prompts = [token_prompt([5 + i % 90] * 200) for i in range(16)]
    response = rollout.stub.Generate(
        rollout_pb2.GenerateRequest(
            prompts=prompts, sampling=rollout_pb2.SamplingParams(n=8, max_tokens=4, temperature=1.0, seed=1)
        ),
        timeout=300,
    )
    assert response.completion_tokens == 16 * 8 * 4
    assert greedy(rollout.stub, [PROMPTS[0]], max_tokens=4)[0].token_ids  # the engine is still alive


def test_greedy_with_n_samples_gives_n_identical_samples(rollout) -> None:
    # vLLM itself refuses n > 1 with temperature 0; the service runs them one by one.
    response = generate(rollout, [token_prompt(PROMPTS[0])], n=3, temperature=0.0, max_tokens=12)
    samples = response.results[0].samples
    assert [s.sample_index for s in samples] == [0, 1, 2]
    assert len({tuple(s.token_ids) for s in samples}) == 1
    assert list(samples[0].token_ids) == list(greedy(rollout.stub, [PROMPTS[0]], max_tokens=12)[0].token_ids)
