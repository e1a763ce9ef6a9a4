"""Which files of a labelled folder belong to which class: one sub-folder per class."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from client.evaluation import EvaluationError
from client.names import escape_name

_DECIMAL = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ClassFolders:
    files: dict[str, list[Path]]  # class folder name -> its images (sorted by folder name)
    ignored: list[Path]  # files directly in the folder: no class
    unlisted: list[tuple[str, str]]  # (relative name ending in "/", reason) of unlistable folders

    @property
    def all_files(self) -> list[Path]:
        return [path for paths in self.files.values() for path in paths]


def list_class_folders(folder: Path, *, skip: Path) -> ClassFolders:
    """The images of every class sub-folder of `folder`, searched recursively.

    `skip` is the report folder: when it sits inside `folder` it is not a class, nor is an
    earlier run's report folder. Raises EvaluationError when `folder` cannot be listed or has
    no class sub-folders.
    """
    from client.outputs import is_report_folder
    from client.preprocess import find_images

    skipped = skip.resolve()
    try:
        classes: dict[str, list[Path]] = {
            entry.name: []
            for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
            if entry.is_dir()
            and not entry.name.startswith(".")
            and entry.resolve() != skipped
            and not is_report_folder(entry)
        }
    except OSError as error:
        raise EvaluationError(
            f"cannot list {escape_name(str(folder))}: {error.strerror or error}"
        ) from None
    if not classes:
        raise EvaluationError(
            f"{escape_name(str(folder))} has no class sub-folders (expected one sub-folder per "
            "class)"
        )
    # Each class folder is listed on its own, so that a class folder that is a symlink is
    # followed (find_images does not follow symlinked folders below its root).
    unlisted = []
    for name in classes:
        classes[name], unreadable = find_images(folder / name)
        unlisted += [(f"{name}/{item.name}", item.reason) for item in unreadable]
    files, _ = find_images(folder)  # its unreadable folders are those of the classes
    ignored = [path for path in files if path.parent == folder]
    return ClassFolders(classes, ignored, unlisted)


def map_class_folders(
    folder_names: list[str], known_names: dict[int, str], n_classes: int
) -> dict[str, int]:
    """Class id of every class folder, from the model's class names or class ids.

    known_names: class id -> name as the model returned them (the serving API has no call that
    lists class names, so only classes predicted at least once are known).
    A folder matches a class name exactly, then ignoring case and punctuation ("T-shirt_top"
    matches "T-shirt/top"); otherwise a decimal folder name is read as a class id, unless the
    model's class names are themselves numbers that differ from their ids. Raises
    EvaluationError naming every folder that matches nothing, and folders that map to the same
    class.
    """
    exact = {name: class_id for class_id, name in known_names.items()}
    loose: dict[str, set[int]] = {}
    for class_id, name in known_names.items():
        loose.setdefault(_loose(name), set()).add(class_id)
    numeric_names = bool(known_names) and all(_DECIMAL.fullmatch(n) for n in known_names.values())
    names_are_ids = all(name == str(class_id) for class_id, name in known_names.items())

    mapping: dict[str, int] = {}
    unmatched: list[str] = []
    for folder in folder_names:
        candidates = loose.get(_loose(folder), set())
        if folder in exact:
            mapping[folder] = exact[folder]
        elif len(candidates) == 1:
            mapping[folder] = next(iter(candidates))
        elif (
            _DECIMAL.fullmatch(folder)
            and int(folder) < n_classes
            and (names_are_ids or not numeric_names)
        ):
            mapping[folder] = int(folder)
        else:
            unmatched.append(folder)
    if unmatched:
        seen = ", ".join(repr(known_names[key]) for key in sorted(known_names)) or "none"
        raise EvaluationError(
            f"class folder(s) {', '.join(map(repr, unmatched))} match no class name the model "
            f"returned ({seen}) and are not class ids 0..{n_classes - 1}; name the class "
            "folders after the model's class names or ids (a name is only known once the "
            "model has predicted it, so ids are the safe choice)"
        )
    by_id: dict[int, list[str]] = {}
    for folder, class_id in mapping.items():
        by_id.setdefault(class_id, []).append(folder)
    clashes = [folders for folders in by_id.values() if len(folders) > 1]
    if clashes:
        described = "; ".join(" and ".join(map(repr, folders)) for folders in clashes)
        raise EvaluationError(f"class folders map to the same class: {described}")
    return mapping


def _loose(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.casefold()).strip("_")
