"""The scoring engine: order, batching, bad files, batch failures, shards."""

from __future__ import annotations

import numpy as np
import pytest
from client_fixtures import (
    fake,
    fake_server_instance,
    make_bad_files,
    make_uniform_folder,
    transport_kind,
)

from client.errors import ClientError
from client.preprocess import list_images
from client.scoring import decoding, image_input, parse_shard, score_files, shard_of
from client.transport import RetryPolicy, connect
from client.transport.base import Transport
from client.types import ModelMetadata, ModelSpec, PredictResult, SignatureInfo, TensorInfo

__all__ = ["fake", "fake_server_instance", "transport_kind"]  # fixtures used by name


def test_results_come_in_input_order_with_the_model_answers(fake, transport_kind, tmp_path):
    values = [int(v) for v in np.random.default_rng(3).integers(0, 256, size=45)]
    expected = make_uniform_folder(tmp_path, values)
    files = list_images(tmp_path)
    with connect(fake.url(transport_kind), max_connections=3) as transport:
        results = list(
            score_files(
                transport, ModelSpec(), files, root=tmp_path,
                batch_size=8, concurrency=3, preprocess="none", top_k=2, progress=False,
            )
        )  # fmt: skip
    assert [r.path for r in results] == [p.relative_to(tmp_path).as_posix() for p in files]
    for result in results:
        assert result.error is None
        assert result.class_id == expected[result.path]
        assert result.class_name == f"digit-{result.class_id}"
        assert result.confidence == pytest.approx(0.91)
        assert result.top_k[0] == (result.class_id, result.class_name, pytest.approx(0.91))
        assert len(result.top_k) == 2 and result.top_k[1][2] == pytest.approx(0.01)
        assert result.model_version == 3
        assert result.probabilities.shape == (10,) and result.latency_ms > 0
    assert sorted(fake.behaviour.batch_sizes) == [5] + [8] * 5


def test_bad_files_get_an_error_and_the_rest_is_scored(fake, transport_kind, tmp_path):
    make_uniform_folder(tmp_path, [11, 22, 33])
    make_bad_files(tmp_path)
    with connect(fake.url(transport_kind)) as transport:
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path,
                batch_size=4, preprocess="none", progress=False,
            )
        )  # fmt: skip
    by_path = {r.path: r for r in results}
    assert len(results) == 7
    for name in ("bad_empty.png", "bad_truncated.png", "bad_text.png", "bad_huge.png"):
        assert by_path[name].error, name
        assert "\n" not in by_path[name].error
        assert by_path[name].class_id is None
    assert "pixels" in by_path["bad_huge.png"].error or "large" in by_path["bad_huge.png"].error
    assert [r.class_id for r in results if r.error is None] == [1, 2, 3]


def test_a_rejected_batch_marks_each_of_its_images(fake, transport_kind, tmp_path):
    make_uniform_folder(tmp_path, [1, 2, 3])
    with connect(fake.url(transport_kind), retries=2) as transport:
        transport.retry = RetryPolicy(retries=2, initial_backoff=0.001)
        transport.metadata(ModelSpec())
        fake.behaviour.unavailable_next = 100
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path,
                batch_size=8, preprocess="none", progress=False,
            )
        )  # fmt: skip
    assert len(results) == 3
    assert all(r.error and r.error.startswith("UNAVAILABLE") for r in results)
    # The first try and the transport's two retries, counted once: the scorer's retry loop is
    # the only one (the transport's own is off inside it), so attempts never multiply.
    assert fake.behaviour.predict_calls == 3


def test_one_metadata_call_per_run(fake, transport_kind, tmp_path, monkeypatch):
    make_uniform_folder(tmp_path, [1, 2, 3])
    with connect(fake.url(transport_kind)) as transport:
        metadata = transport.metadata(ModelSpec())
        calls = []
        monkeypatch.setattr(transport, "metadata", lambda model: calls.append(model) or metadata)
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path, batch_size=2,
                preprocess="none", progress=False, metadata=metadata,
            )
        )  # fmt: skip
    assert [r.class_id for r in results] == [1, 2, 3]
    assert calls == []  # the REST transport learnt the output types from the first call


def test_an_unexpected_failure_costs_its_batch_not_the_run(fake, tmp_path, monkeypatch):
    expected = make_uniform_folder(tmp_path, [10, 20, 30, 40, 50])
    with connect(fake.grpc_url) as transport:
        predict = transport.predict
        calls = []

        def flaky_predict(model, inputs, **options):
            calls.append(len(calls))
            if len(calls) == 2:  # the second batch meets a bug in a library
                raise TypeError("something nobody expected")
            return predict(model, inputs, **options)

        monkeypatch.setattr(transport, "predict", flaky_predict)
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path,
                batch_size=2, concurrency=1, preprocess="none", progress=False,
            )
        )  # fmt: skip
    assert [r.error for r in results] == [
        None, None, "TypeError: something nobody expected",
        "TypeError: something nobody expected", None,
    ]  # fmt: skip
    assert all(r.class_id == expected[r.path] for r in results if r.ok)


def test_a_broken_decoding_pool_fails_its_batches_without_losing_rows(fake, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    class DyingPool(ThreadPoolExecutor):
        """Decodes one batch, then breaks as a process pool does when a worker is killed."""

        def submit(self, *args, **kwargs):
            if getattr(self, "used", False):
                raise BrokenProcessPool("a child process terminated abruptly")
            self.used = True
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(decoding, "process_pool", lambda processes: DyingPool(processes))
    make_uniform_folder(tmp_path, [10, 20, 30, 40, 50])
    with connect(fake.grpc_url) as transport:
        results = list(
            score_files(
                transport, ModelSpec(), list_images(tmp_path), root=tmp_path, batch_size=2,
                concurrency=1, preprocess="none", progress=False, decode_processes=1,
            )
        )  # fmt: skip
    assert len(results) == 5
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert all("BrokenProcessPool" in r.error for r in results[2:])


def test_scoring_checks_the_signature_before_sending(fake, transport_kind, tmp_path):
    with connect(fake.url(transport_kind)) as transport:
        with pytest.raises(ValueError, match=r"no signature 'nope'.*serving_default"):
            score_files(transport, ModelSpec(signature="nope"), [], root=tmp_path)
        with pytest.raises(ValueError, match="batch size"):
            score_files(transport, ModelSpec(), [], root=tmp_path, batch_size=0)


def _metadata(inputs: dict[str, TensorInfo]) -> ModelMetadata:
    signature = SignatureInfo("serving_default", inputs, {})
    return ModelMetadata("m", 1, {"serving_default": signature})


def test_image_input_comes_from_metadata():
    spec = image_input(
        _metadata({"x": TensorInfo("x", "uint8", (-1, 32, 24, 3))}), "serving_default"
    )
    assert (spec.name, spec.height, spec.width, spec.channels, spec.dtype) == (
        "x",
        32,
        24,
        3,
        "uint8",
    )
    for bad in (
        {"x": TensorInfo("x", "object", (-1, 2))},
        {"x": TensorInfo("x", "uint8", (-1, -1, -1, 1))},
        {"x": TensorInfo("x", "uint8", None)},
        {
            "a": TensorInfo("a", "uint8", (-1, 2, 2, 1)),
            "b": TensorInfo("b", "uint8", (-1, 2, 2, 1)),
        },
    ):
        with pytest.raises(ValueError):
            image_input(_metadata(bad), "serving_default")


@pytest.mark.parametrize("text", ["", "1", "4/4", "-1/4", "a/b", "1/0", "0/-2", "1/2/3"])
def test_parse_shard_rejects_nonsense(text):
    with pytest.raises(ValueError, match="i/N"):
        parse_shard(text)


def test_parse_shard_accepts_zero_based_index():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 3/4 ") == (3, 4)


def test_shards_partition_the_files_deterministically_and_evenly():
    names = [f"class{k % 10}/image{k:05d}.png" for k in range(5000)]
    for count in (1, 2, 3, 7):
        shards = [[n for n in names if shard_of(n, count) == index] for index in range(count)]
        assert sorted(n for shard in shards for n in shard) == sorted(names)  # each exactly once
        assert all(abs(len(s) - len(names) / count) < 0.1 * len(names) / count for s in shards)
    # The assignment depends on the path only, not on the other files.
    assert [shard_of(n, 7) for n in names[:50]] == [shard_of(n, 7) for n in reversed(names[:50])][
        ::-1
    ]


@pytest.mark.slow
def test_decoding_in_worker_processes_gives_the_same_results(fake, tmp_path):
    make_uniform_folder(tmp_path, [int(v) for v in range(0, 250, 7)])
    make_bad_files(tmp_path)
    files = list_images(tmp_path)
    with connect(fake.grpc_url) as transport:
        by_threads, by_processes = (
            [
                (r.path, r.class_id, r.confidence, r.error)
                for r in score_files(
                    transport, ModelSpec(), files, root=tmp_path, batch_size=8,
                    preprocess="none", progress=False, decode_processes=processes,
                )
            ]
            for processes in (0, 2)
        )  # fmt: skip
    assert by_processes == by_threads
    assert sum(error is not None for *_, error in by_processes) == 4


def test_an_encoded_image_signature_takes_the_pixel_signatures_size():
    pixels = SignatureInfo("serving_default", {"x": TensorInfo("x", "uint8", (-1, 32, 24, 3))}, {})
    encoded = SignatureInfo("serving_bytes", {"b": TensorInfo("b", "object", (-1,))}, {})
    metadata = ModelMetadata("m", 1, {"serving_default": pixels, "serving_bytes": encoded})
    spec = image_input(metadata, "serving_bytes")
    assert (spec.name, spec.dtype, spec.encoded) == ("b", "object", True)
    assert (spec.height, spec.width, spec.channels) == (32, 24, 3)
    assert not image_input(metadata, "serving_default").encoded


class DecodingModel(Transport):
    """A model with a `serving_bytes`-like signature: it decodes the files itself and, as TF
    Serving does, refuses the whole batch when one of them is not an image."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def metadata(self, model) -> ModelMetadata:
        signature = SignatureInfo(
            "serving_bytes",
            {"image_bytes": TensorInfo("image_bytes", "object", (-1,))},
            {"class_ids": TensorInfo("class_ids", "int64", (-1,))},
        )
        return ModelMetadata("m", 2, {"serving_bytes": signature})

    def predict(self, model, inputs, *, timeout=None, retry=None) -> PredictResult:
        import io

        from PIL import Image, UnidentifiedImageError

        self.batches.append(len(inputs["image_bytes"]))
        try:
            means = [
                np.asarray(Image.open(io.BytesIO(data))).mean() for data in inputs["image_bytes"]
            ]
        except (UnidentifiedImageError, OSError) as error:
            raise ClientError(f"cannot decode: {error}", "INVALID_ARGUMENT") from None
        class_ids = np.array([int(mean) % 10 for mean in means])
        return PredictResult({"class_ids": class_ids}, "m", 2)

    def close(self) -> None:
        pass


def test_encoded_images_are_sent_as_they_are_and_a_bad_one_costs_only_its_row(tmp_path):
    expected = make_uniform_folder(tmp_path, [11, 22, 33, 44, 55, 66, 77])
    (tmp_path / "not_an_image.png").write_bytes(b"hello, I am text")
    (tmp_path / "zero.png").write_bytes(b"")
    model = DecodingModel()
    results = list(
        score_files(
            model, ModelSpec(signature="serving_bytes"), list_images(tmp_path), root=tmp_path,
            batch_size=8, progress=False,
        )
    )  # fmt: skip
    by_path = {r.path: r for r in results}
    assert by_path["zero.png"].error == "empty file"  # never sent
    assert by_path["not_an_image.png"].error.startswith("INVALID_ARGUMENT")
    assert {path: by_path[path].class_id for path in expected} == expected
    # 8 files, one batch; refused, then halved until the bad file was alone.
    assert model.batches[0] == 8 and len(model.batches) <= 1 + 2 * 3
    with pytest.raises(ValueError, match="--preprocess mnist"):
        score_files(model, ModelSpec(signature="serving_bytes"), [], root=tmp_path,
                    preprocess="mnist")  # fmt: skip
