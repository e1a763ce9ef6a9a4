"""models.config as the rollout reads and writes it: TF Serving's schema, atomic writes, the
history, the pins each step keeps, and the gate's verdict."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from google.protobuf import text_format

from client.rollout import compare, steps
from common import rollout_state as rs

TEMPLATE = Path(__file__).resolve().parents[2] / "serving" / "models.config"


def tf_serving_parse(text: str):
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def state_with(pins, labels, history=()) -> rs.RolloutState:
    entry = rs.ModelEntry("mnist", "/models/mnist", pins=tuple(pins), labels=dict(labels))
    return rs.RolloutState((entry,), tuple(history))


def move(label, old, new, step) -> rs.HistoryEntry:
    return rs.HistoryEntry("mnist", label, old, new, step, "2026-12-02T00:00:00Z")


def test_the_schema_declares_tf_servings_field_names_and_numbers() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    def fields(descriptor):
        return {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}

    ours = rs.schema().DESCRIPTOR
    theirs = model_server_config_pb2.ModelServerConfig.DESCRIPTOR
    assert fields(ours).items() <= fields(theirs).items()
    ours_model = ours.fields_by_name["model_config_list"].message_type.fields_by_name["config"]
    theirs_model = theirs.fields_by_name["model_config_list"].message_type.fields_by_name["config"]
    ours_model, theirs_model = ours_model.message_type, theirs_model.message_type
    assert fields(ours_model).items() <= fields(theirs_model).items()
    ours_policy = ours_model.fields_by_name["model_version_policy"].message_type
    theirs_policy = theirs_model.fields_by_name["model_version_policy"].message_type
    assert fields(ours_policy) == fields(theirs_policy)
    for nested in ("Latest", "All", "Specific"):
        assert fields(ours_policy.nested_types_by_name[nested]) == fields(
            theirs_policy.nested_types_by_name[nested]
        )


def test_rendered_text_is_tf_servings_model_server_config() -> None:
    state = state_with((1, 3), {"stable": 1, "canary": 3}, [move("canary", 1, 3, "canary")])
    text = rs.render(state)
    proto = tf_serving_parse(text)
    (model,) = proto.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "mnist", "/models/mnist", "tensorflow",
    )  # fmt: skip
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    assert dict(model.version_labels) == {"stable": 1, "canary": 3}
    assert rs.parse(text) == state  # history survives as comments


def test_the_template_is_the_state_of_a_fresh_repository() -> None:
    text = TEMPLATE.read_text()
    state = rs.parse(text, str(TEMPLATE))
    (entry,) = state.models
    assert (entry.name, entry.base_path, entry.policy, entry.pins) == (
        "mnist", "/models/mnist", "specific", (1,),
    )  # fmt: skip
    assert entry.labels == {"stable": 1, "canary": 1}
    # What the writer renders from it says the same to TF Serving.
    assert tf_serving_parse(rs.render(state)) == tf_serving_parse(text)


def test_fields_the_rollout_does_not_know_are_refused_in_one_line() -> None:
    text = 'model_config_list { config { name: "a" base_path: "/a" logging_config {} } }'
    tf_serving_parse(text)  # TF Serving knows the field...
    with pytest.raises(rs.StateError, match='no field named "logging_config"'):
        rs.parse(text)  # ...the rollout would lose it on the next write, so it refuses
    with pytest.raises(rs.StateError, match="listed twice"):
        rs.parse('model_config_list { config { name: "a" base_path: "/a" } '
                 'config { name: "a" base_path: "/b" } }')  # fmt: skip


def test_write_atomically_replaces_whole_files_only(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "models.config"
    texts = ["a" * 100_000 + "\n", "b" * 150_000 + "\n"]
    rs.write_atomically(path, texts[0])
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    seen: set[str] = set()
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for index in range(200):
            rs.write_atomically(path, texts[index % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(texts) and seen
    # A failed rename leaves the old file and no temporary file behind.
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        rs.write_atomically(path, "new")
    assert path.read_text() == texts[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def test_concurrent_first_publishes_of_two_models_both_land(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)

    def first(name: str) -> None:
        barrier.wait()
        rs.first_version(tmp_path, name, 1, f"/models/{name}")

    threads = [threading.Thread(target=first, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(m.name for m in rs.read(tmp_path).models) == ["a", "b"]
    assert rs.first_version(tmp_path, "a", 2, "/models/a") is False  # listed: left alone


def test_the_stable_chain_pins_the_previous_stable_for_rollback() -> None:
    history = [
        move("stable", None, 1, "publish"),
        move("stable", 1, 3, "promote"),
        move("stable", 3, 5, "promote"),
    ]
    state = state_with((3, 5), {"stable": 5, "canary": 5}, history)
    (entry,) = state.models
    assert steps.stable_chain(state, entry) == [1, 3, 5]
    assert steps.rollback_target(state, entry) == 3
    assert steps.pins_for(state, entry, on_disk=[1, 2, 3, 4, 5]) == (3, 5)
    # A rollback pops: the next rollback target is the one before.
    state = state.moved("mnist", "stable", 5, 3, "rollback")
    entry = rs.ModelEntry("mnist", "/models/mnist", pins=(3,), labels={"stable": 3, "canary": 5})
    assert steps.stable_chain(state, entry) == [1, 3]
    assert steps.rollback_target(state, entry) == 1
    # The rollback target must still be on disk to be pinned; labels always are.
    assert steps.pins_for(state, entry, on_disk=[3, 5]) == (3, 5)
    # A label moved by hand counts as the newest stable.
    hand = rs.ModelEntry("mnist", "/models/mnist", pins=(4,), labels={"stable": 4})
    assert steps.stable_chain(state, hand) == [1, 3, 4]
    assert steps.rollback_target(state, hand) == 3


def comparison(stable_correct, canary_correct, per_class=(), failed=(0, 0)) -> dict:
    from client.rollout import stats

    test = stats.mcnemar(stable_correct, canary_correct)
    n = len(stable_correct)
    sides = {}
    for label, hits, fail in (
        ("stable", stable_correct, failed[0]),
        ("canary", canary_correct, failed[1]),
    ):
        sides[label] = {"version": 1 if label == "stable" else 2, "images": n, "failed": fail,
                        "accuracy": sum(hits) / n}  # fmt: skip
    return {
        **sides,
        "delta": sides["canary"]["accuracy"] - sides["stable"]["accuracy"],
        "per_class": list(per_class),
        "mcnemar": {
            "stable_only": test.stable_only,
            "canary_only": test.canary_only,
            "p_value": test.p_value,
        },
    }


def test_the_verdict_names_every_reason_the_gate_fails() -> None:
    same = [True] * 90 + [False] * 10
    assert compare.verdict(comparison(same, same), compare.Thresholds()) == []
    # 10 images only stable got right, 0 only canary: worse, and significantly (p = 0.002).
    worse = [True] * 80 + [False] * 20
    reasons = compare.verdict(comparison(same, worse), compare.Thresholds())
    assert len(reasons) == 2
    assert "below --min-delta +0" in reasons[0]
    assert "significantly worse: McNemar p = 0.001953" in reasons[1]
    # A better average cannot hide a class that got much worse.
    rows = [{"class": "7", "images": 20, "stable": 0.9, "canary": 0.8, "delta": -0.1}]
    better = [True] * 95 + [False] * 5
    reasons = compare.verdict(comparison(same, better, rows), compare.Thresholds())
    assert reasons == [
        "class '7' falls from 0.9000 to 0.8000 (20 images), more than --max-regression 0.05"
    ]
    # Five more right is no significant gain (p = 0.0625) when significance is required.
    reasons = compare.verdict(
        comparison(same, better), compare.Thresholds(require_significance=True)
    )
    assert len(reasons) == 1 and "not a significant gain: McNemar p = 0.0625" in reasons[0]
    # Images the server could not score fail the gate, whatever the accuracy.
    reasons = compare.verdict(comparison(same, same, failed=(0, 3)), compare.Thresholds())
    assert reasons == ["3 of 100 images could not be scored by canary (version 2); see the "
                       "server's log"]  # fmt: skip
