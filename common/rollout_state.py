"""The rollout state beside the models: `<repo>/models.config`, read by TF Serving and by us.

The file is TF Serving's `ModelServerConfig` in protobuf text format, the one stock
tensorflow_model_server and the local server read with `--model_config_file` (and re-read every
`--model_config_file_poll_wait_seconds`). Per model it holds:

- `model_version_policy { specific { versions: ... } }`: the pinned versions, the only ones the
  servers load. Publishing a version therefore never loads or unloads anything; `stable` stays
  loaded until a rollout step unpins it. (TF Serving's policy is one of latest, all or specific:
  `latest` unloads whatever `stable` points at once enough newer versions exist, `all` loads
  every version ever published.)
- `version_labels`: where `stable` and `canary` point.
- comment lines `# history: <model> <label> <old> -> <new> <step> <UTC time>`: every label move,
  oldest first (TF Serving skips comments). `rollout rollback` reads them.

Written atomically: the whole text goes to a temporary file in the same folder, is flushed to
disk, and renamed over the old file, so a server polling the file reads the old state or the
new one, never half a file. Read-modify-write cycles hold an advisory lock
(`<repo>/.models.config.lock`) so that the trainer's first publish and a rollout command do not
lose each other's change.

Writers: the trainer's first publish of a model (both labels and the pin on that version), and
`python -m client rollout`. The schema below declares the fields of TF Serving's
model_server_config.proto and file_system_storage_path_source.proto that the rollout uses, with
their numbers, in a descriptor pool of its own: parsing needs protobuf only, not
tensorflow-serving-api (the client image has no TensorFlow), and a field TF Serving does not
know fails here as it would there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

CONFIG_FILE = "models.config"
LOCK_FILE = ".models.config.lock"
STABLE = "stable"
CANARY = "canary"
PLATFORM = "tensorflow"
HISTORY_KEEP = 100  # history lines kept per file; older moves are dropped first

HEADER = """\
# Rollout state of this model repository: TF Serving's ModelServerConfig (protobuf text).
# TF Serving and the local server read it with --model_config_file and re-read it every
# --model_config_file_poll_wait_seconds. Written by the trainer's first publish of a model and by
# `python -m client rollout` (atomically: a temporary file beside it, fsync, rename); those
# commands rewrite the whole file, so edit it by hand only while none runs, and keep to the
# fields below. The versions under `specific` are the ones served: publishing loads nothing until
# `rollout canary N` pins N. The `# history:` lines record every label move, oldest first;
# `rollout rollback` reads them. serving/models.config is the annotated template;
# docs/deploy.md, "Rolling out a new version", the whole flow.
"""
_HISTORY = re.compile(
    r"^# history: (?P<model>\S+) (?P<label>\S+) (?P<old>\d+|-) -> (?P<new>\d+) "
    r"(?P<step>\S+) (?P<time>\S+)\s*$"
)


class StateError(ValueError):
    """The state file cannot be read or would be invalid; one line for the user."""


@dataclass(frozen=True)
class HistoryEntry:
    model: str
    label: str
    old: int | None  # None: the label was new
    new: int
    step: str  # "publish", "init", "canary", "promote", "rollback"
    time: str  # UTC, ISO 8601 with a Z

    def line(self) -> str:
        old = "-" if self.old is None else str(self.old)
        return f"# history: {self.model} {self.label} {old} -> {self.new} {self.step} {self.time}"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the file. `policy` is "specific", "latest" or "all"."""

    name: str
    base_path: str
    policy: str = "specific"
    pins: tuple[int, ...] = ()  # for "specific", ascending
    num_versions: int = 1  # for "latest"
    labels: dict[str, int] = field(default_factory=dict)

    def served(self) -> set[int] | None:
        """The versions the policy pins (None when it is latest or all: it follows the disk)."""
        return set(self.pins) if self.policy == "specific" else None


@dataclass(frozen=True)
class RolloutState:
    models: tuple[ModelEntry, ...] = ()
    history: tuple[HistoryEntry, ...] = ()

    def model(self, name: str) -> ModelEntry | None:
        return next((entry for entry in self.models if entry.name == name), None)

    def with_model(self, entry: ModelEntry) -> RolloutState:
        """This state with `entry` replacing the model of the same name (or appended)."""
        models = [entry if m.name == entry.name else m for m in self.models]
        if entry.name not in {m.name for m in self.models}:
            models.append(entry)
        return replace(self, models=tuple(models))

    def moved(self, model: str, label: str, old: int | None, new: int, step: str) -> RolloutState:
        """This state with one more history line."""
        entry = HistoryEntry(model, label, old, new, step, utc_now())
        return replace(self, history=(*self.history, entry)[-HISTORY_KEEP:])

    def label_history(self, model: str, label: str) -> list[HistoryEntry]:
        return [h for h in self.history if h.model == model and h.label == label]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the schema ---------------------------------------------------------------------------

_schema = None


def schema():
    """The ModelServerConfig message class (field names and numbers as TF Serving's)."""
    global _schema
    if _schema is not None:
        return _schema
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kinds = descriptor_pb2.FieldDescriptorProto

    def add(message, name: str, number: int, kind: str, repeated=False, oneof=None) -> None:
        """A field; `kind` is a scalar type name ("string") or a message name (".tensorflow...")."""
        options = {"oneof_index": oneof} if oneof is not None else {}
        if kind.startswith("."):
            options.update(type=kinds.TYPE_MESSAGE, type_name=kind)
        else:
            options.update(type=getattr(kinds, f"TYPE_{kind.upper()}"))
        label = kinds.LABEL_REPEATED if repeated else kinds.LABEL_OPTIONAL
        message.field.add(name=name, number=number, label=label, **options)

    package = ".tensorflow.serving"
    proto = descriptor_pb2.FileDescriptorProto(
        name="common/rollout_state/model_server_config.proto",
        package=package[1:],
        syntax="proto3",
    )
    policy = proto.message_type.add(name="ServableVersionPolicy")
    add(policy.nested_type.add(name="Latest"), "num_versions", 1, "uint32")
    policy.nested_type.add(name="All")
    add(policy.nested_type.add(name="Specific"), "versions", 1, "int64", repeated=True)
    policy.oneof_decl.add(name="policy_choice")
    for name, number in (("latest", 100), ("all", 101), ("specific", 102)):
        add(policy, name, number, f"{package}.ServableVersionPolicy.{name.capitalize()}", oneof=0)
    model = proto.message_type.add(name="ModelConfig")
    entry = model.nested_type.add(name="VersionLabelsEntry")
    entry.options.map_entry = True
    add(entry, "key", 1, "string")
    add(entry, "value", 2, "int64")
    add(model, "name", 1, "string")
    add(model, "base_path", 2, "string")
    add(model, "model_platform", 4, "string")
    add(model, "model_version_policy", 7, f"{package}.ServableVersionPolicy")
    add(model, "version_labels", 8, f"{package}.ModelConfig.VersionLabelsEntry", repeated=True)
    add(proto.message_type.add(name="ModelConfigList"), "config", 1, f"{package}.ModelConfig",
        repeated=True)  # fmt: skip
    server = proto.message_type.add(name="ModelServerConfig")
    server.oneof_decl.add(name="config")
    add(server, "model_config_list", 1, f"{package}.ModelConfigList", oneof=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig")
    _schema = message_factory.GetMessageClass(descriptor)
    return _schema


# ---- text <-> state -------------------------------------------------------------------------


def parse(text: str, where: str = CONFIG_FILE) -> RolloutState:
    """The state in `text`; StateError names what is wrong (`where` is the file, for messages)."""
    from google.protobuf import text_format

    message = schema()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise StateError(
            f"{where}: not a ModelServerConfig the rollout understands ({error}); it keeps to "
            "name, base_path, model_platform, model_version_policy and version_labels"
        ) from None
    models = []
    for proto in message.model_config_list.config:
        if not proto.name or not proto.base_path:
            raise StateError(f"{where}: every model needs a name and a base_path")
        if proto.name in {m.name for m in models}:
            raise StateError(f"{where}: model {proto.name!r} is listed twice")
        which = proto.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(
            ModelEntry(
                name=proto.name,
                base_path=proto.base_path,
                policy=which,
                pins=tuple(sorted(set(proto.model_version_policy.specific.versions))),
                num_versions=max(proto.model_version_policy.latest.num_versions, 1),
                labels=dict(sorted(proto.version_labels.items())),
            )
        )
    history = []
    for line in text.splitlines():
        match = _HISTORY.match(line)
        if match:
            old = match["old"]
            history.append(
                HistoryEntry(
                    match["model"], match["label"], None if old == "-" else int(old),
                    int(match["new"]), match["step"], match["time"],
                )
            )  # fmt: skip
    return RolloutState(tuple(models), tuple(history))


def render(state: RolloutState) -> str:
    """The file's text for `state`: the header, the history lines, the ModelServerConfig."""
    from google.protobuf import text_format

    message = schema()()
    message.model_config_list.SetInParent()
    for entry in state.models:
        if entry.policy == "specific" and not entry.pins:
            raise StateError(f"model {entry.name!r}: a specific version policy needs a version")
        proto = message.model_config_list.config.add(
            name=entry.name, base_path=entry.base_path, model_platform=PLATFORM
        )
        policy = proto.model_version_policy
        if entry.policy == "specific":
            policy.specific.versions.extend(sorted(set(entry.pins)))
        elif entry.policy == "all":
            policy.all.SetInParent()
        else:
            policy.latest.num_versions = entry.num_versions
        for label, version in sorted(entry.labels.items()):
            proto.version_labels[label] = version
    history = "".join(entry.line() + "\n" for entry in state.history)
    return HEADER + ("#\n" + history if history else "") + text_format.MessageToString(message)


# ---- the file -------------------------------------------------------------------------------


def config_path(repo: Path | str) -> Path:
    return Path(repo) / CONFIG_FILE


def read(repo: Path | str) -> RolloutState | None:
    """The repository's state, or None when it has no models.config."""
    path = config_path(repo)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}") from None
    return parse(text, str(path))


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: temporary file in the same folder, fsync, rename, fsync."""
    folder = path.parent
    temporary = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # The servers run as other users and only read: make it world-readable whatever the
        # umask of the writer (mkstemp-style files would be 0600).
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked(repo: Path | str) -> Iterator[None]:
    """Hold the repository's advisory lock for a read-modify-write of models.config."""
    path = Path(repo) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def save(repo: Path | str, state: RolloutState) -> None:
    write_atomically(config_path(repo), render(state))


def protected_versions(repo: Path | str, model: str) -> set[int]:
    """Versions of `model` that must stay on disk: the ones a label points at or the file pins.

    StateError when the file cannot be read (the caller then must not delete anything).
    """
    state = read(repo)
    entry = state.model(model) if state else None
    if entry is None:
        return set()
    return set(entry.labels.values()) | set(entry.pins if entry.policy == "specific" else ())


def first_version(repo: Path | str, model: str, version: int, base_path: str) -> bool:
    """Start the rollout state of a model that has none: both labels and the pin on `version`.

    Creates models.config when the repository has none, adds the model when the file does not
    list it, and leaves a listed model alone. True when it wrote the file.
    """
    with locked(repo):
        state = read(repo) or RolloutState()
        if state.model(model) is not None:
            return False
        entry = ModelEntry(
            model, base_path, pins=(version,), labels={STABLE: version, CANARY: version}
        )
        state = state.with_model(entry)
        for label in (STABLE, CANARY):
            state = state.moved(model, label, None, version, "publish")
        save(repo, state)
        return True
