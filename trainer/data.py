"""Data sets: every loader yields uint8 images [N, H, W, C], int64 labels and class names.

Data set specs (the `--dataset` option):

- `mnist`, `fashion_mnist`: Keras' built-in sets. Looked up locally first (see `load_builtin`),
  downloaded by Keras only when no local copy exists.
- `idx:DIR`: the four original IDX files (gzipped or not) in DIR.
- `npz:FILE`: a Keras-style `.npz` with `x_train`, `y_train`, `x_test`, `y_test` (and optionally
  `class_names`).
- `folder:DIR`: one sub-folder per class with PNG/JPEG/BMP files; either directly in DIR (a test
  split is held out) or in `DIR/train` and `DIR/test`.

Only numpy and Pillow here: no TensorFlow, so that `--help` and `export-images` stay fast.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DIGIT_CLASS_NAMES = tuple(str(digit) for digit in range(10))
# Keras' Fashion-MNIST names, with "T-shirt/top" written "T-shirt_top": class names become
# folder names (export-images, client evaluation), and "/" cannot be part of a folder name.
FASHION_CLASS_NAMES = (
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IDX_UINT8 = 0x08


class DatasetError(ValueError):
    """A data set that is missing or malformed; the message says where and how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """A train and a test split of uint8 images [N, H, W, C] with int64 labels in [0, K)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = self.split(split)
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DatasetError(
                    f"{self.name}: {split} images must be uint8 [N, H, W, C], "
                    f"got {images.dtype} {list(images.shape)}"
                )
            if len(images) != len(labels):
                raise DatasetError(
                    f"{self.name}: {len(images)} {split} images but {len(labels)} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise DatasetError(
                    f"{self.name}: {split} labels must lie in [0, {len(self.class_names)}), "
                    f"got [{labels.min()}, {labels.max()}]"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DatasetError(
                f"{self.name}: train images are {list(self.train_images.shape[1:])} "
                f"but test images are {list(self.test_images.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels)."""
        height, width, channels = self.train_images.shape[1:]
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if which == "train":
            return self.train_images, self.train_labels
        if which == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"split must be 'train' or 'test', got {which!r}")

    def limited(self, limit: int | None, seed: int = 0) -> Dataset:
        """A random subset of `limit` training examples and the same fraction of the test split.

        The subset is drawn with `seed`, so a limited run sees the same examples every time, and
        it is random rather than a prefix so that data sets stored class by class stay balanced.
        """
        if limit is None or limit >= len(self.train_labels):
            return self
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rng = np.random.default_rng(seed)
        train_keep = np.sort(rng.permutation(len(self.train_labels))[:limit])
        test_count = math.ceil(len(self.test_labels) * limit / len(self.train_labels))
        test_keep = np.sort(rng.permutation(len(self.test_labels))[:test_count])
        return replace(
            self,
            train_images=self.train_images[train_keep],
            train_labels=self.train_labels[train_keep],
            test_images=self.test_images[test_keep],
            test_labels=self.test_labels[test_keep],
        )


# --- IDX -------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) of unsigned bytes, as the MNIST files are."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as stream:
            data = stream.read()
    # A corrupt gzip body raises zlib.error, which is not an OSError.
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: cannot read ({error})") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != IDX_UINT8:
        raise DatasetError(f"{path}: IDX data type 0x{data[2]:02x} unsupported (need 0x08, ubyte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise DatasetError(
            f"{path}: IDX header says {list(shape)} ({expected} bytes) but the file has "
            f"{len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _idx_file(directory: Path, prefix: str, kind: str, rank: int) -> Path | None:
    # The original site names files "train-images-idx3-ubyte"; some mirrors use a dot.
    for separator in ("-", "."):
        for suffix in (".gz", ""):
            candidate = directory / f"{prefix}-{kind}{separator}idx{rank}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in `directory`, or None when any is missing."""
    files = {
        "train_images": _idx_file(directory, "train", "images", 3),
        "train_labels": _idx_file(directory, "train", "labels", 1),
        "test_images": _idx_file(directory, "t10k", "images", 3),
        "test_labels": _idx_file(directory, "t10k", "labels", 1),
    }
    if any(path is None for path in files.values()):
        return None
    return files  # type: ignore[return-value]


def load_idx(
    directory: Path, name: str | None = None, class_names: Sequence[str] | None = None
) -> Dataset:
    """Load train-/t10k- images and labels from IDX files in `directory`.

    Class names: `class_names`, else a `classes.txt` in `directory` (one name per line), else
    "0".."K-1".
    """
    directory = Path(directory)
    files = find_idx_files(directory)
    if files is None:
        raise DatasetError(
            f"{directory}: expected train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz)"
        )
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        if images.ndim == 3:
            arrays[f"{split}_images"] = images[..., np.newaxis]
        elif images.ndim != 4:
            raise DatasetError(
                f"{files[f'{split}_images']}: expected [N, H, W], got {images.shape}"
            )
        if arrays[f"{split}_labels"].ndim != 1:
            raise DatasetError(f"{files[f'{split}_labels']}: labels must be one-dimensional")
    labels = [arrays["train_labels"], arrays["test_labels"]]
    names = _class_names(class_names, directory / "classes.txt", labels)
    return Dataset(
        name=name or f"idx:{directory}",
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        class_names=names,
        source=str(directory),
    )


def _class_names(
    given: Sequence[str] | None, names_file: Path, labels: Sequence[np.ndarray]
) -> tuple[str, ...]:
    if given is not None:
        return tuple(given)
    if names_file.is_file():
        return tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    if not any(len(split) for split in labels):
        raise DatasetError(f"no labels to count classes from, and no {names_file}")
    count = max(int(split.max()) for split in labels if len(split)) + 1
    return tuple(str(index) for index in range(count))


# --- npz -------------------------------------------------------------------------------------


def load_npz(
    path: Path, name: str | None = None, class_names: Sequence[str] | None = None
) -> Dataset:
    """Load a Keras-style `.npz` (`x_train`, `y_train`, `x_test`, `y_test`, optional `class_names`).

    Images may be [N, H, W] or [N, H, W, C], of any integer type with values in 0..255.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected a .npz with x_train, y_train, ...)")
    # Arrays are decompressed on access, so corruption can surface at any of these steps.
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except unreadable as error:
        raise DatasetError(f"{path}: not a readable .npz ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single array, not a .npz with x_train, y_train, ...")
    with archive:
        missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in archive]
        if missing:
            raise DatasetError(f"{path}: missing arrays {missing} (has {sorted(archive.files)})")
        try:
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
            if class_names is None and "class_names" in archive:
                class_names = [str(value) for value in archive["class_names"]]
        except unreadable as error:
            raise DatasetError(f"{path}: not a readable .npz ({error})") from error
    for key in ("x_train", "x_test"):
        arrays[key] = _as_uint8_images(arrays[key], f"{path}:{key}")
    for key in ("y_train", "y_test"):
        labels = np.asarray(arrays[key]).reshape(-1)
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"{path}:{key}: labels must be integers, got {labels.dtype}")
        arrays[key] = labels.astype(np.int64)
    names = _class_names(class_names, path.with_suffix(".classes.txt"), [arrays["y_train"]])
    return Dataset(
        name=name or f"npz:{path}",
        train_images=arrays["x_train"],
        train_labels=arrays["y_train"],
        test_images=arrays["x_test"],
        test_labels=arrays["y_test"],
        class_names=names,
        source=str(path),
    )


def _as_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise DatasetError(
            f"{where}: expected images [N, H, W] or [N, H, W, C], got {images.shape}"
        )
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.integer):
        raise DatasetError(f"{where}: images must be integers in 0..255, got {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise DatasetError(f"{where}: pixel values must lie in 0..255")
    return images.astype(np.uint8)


# --- image folders ---------------------------------------------------------------------------


def _class_folders(directory: Path) -> list[Path]:
    return sorted(
        child for child in directory.iterdir() if child.is_dir() and not child.name.startswith(".")
    )


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        child
        for child in directory.iterdir()
        if child.is_file()
        and child.suffix.lower() in IMAGE_SUFFIXES
        and not child.name.startswith(".")
    )


def load_folder(
    directory: Path,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    test_split: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> Dataset:
    """Load images from one sub-folder per class (the folder name is the class name).

    `DIR/train/<class>/` and `DIR/test/<class>/` are used as they are; otherwise `DIR/<class>/`
    holds everything and a stratified, seeded `test_split` fraction becomes the test split.
    `image_size` (height, width) resizes every image; without it all images must share one size.
    `channels` 1 or 3 converts; without it, 1 when every image is grayscale, else 3.
    """
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such folder (expected one sub-folder per class)")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    split_dirs = {"train": directory / "train", "test": directory / "test"}
    presplit = all(path.is_dir() and _class_folders(path) for path in split_dirs.values())
    roots = split_dirs if presplit else {"all": directory}
    class_names = tuple(folder.name for folder in _class_folders(roots.get("train", directory)))
    if not class_names:
        raise DatasetError(f"{directory}: no class sub-folders (expected DIR/<class>/<image>)")

    files: dict[str, list[tuple[Path, int]]] = {}
    for split, root in roots.items():
        entries = []
        for folder in _class_folders(root):
            if folder.name not in class_names:
                raise DatasetError(
                    f"{folder}: class {folder.name!r} is not among the training classes"
                )
            entries += [(path, class_names.index(folder.name)) for path in _image_files(folder)]
        if not entries:
            raise DatasetError(f"{root}: no PNG/JPEG/BMP images in the class sub-folders")
        files[split] = entries

    def open_image(path: Path):
        try:
            return Image.open(path)
        except (OSError, UnidentifiedImageError) as error:
            raise DatasetError(f"{path}: not a readable image ({error})") from error

    # First pass reads only headers (mode, size), so images are decoded once, straight into
    # the output array, instead of all being held in memory as Pillow objects.
    headers = {}
    for entries in files.values():
        for path, _ in entries:
            with open_image(path) as image:
                headers[path] = (image.mode, image.size)
    if channels is None:
        gray = ("1", "L", "LA", "I", "I;16", "F")
        channels = 1 if all(mode in gray for mode, _ in headers.values()) else 3
    if image_size is None:
        sizes = {size for _, size in headers.values()}
        if len(sizes) > 1:
            examples = ", ".join(f"{width}x{height}" for width, height in sorted(sizes)[:3])
            raise DatasetError(
                f"{directory}: images have different sizes ({examples}, ...); "
                "pass --image-size HEIGHTxWIDTH"
            )
        width, height = sizes.pop()
        image_size = (height, width)

    mode = "L" if channels == 1 else "RGB"
    height, width = image_size
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, entries in files.items():
        pixels = np.empty((len(entries), height, width, channels), np.uint8)
        for index, (path, _) in enumerate(entries):
            with open_image(path) as image:
                try:
                    converted = image.convert(mode)
                except OSError as error:
                    raise DatasetError(f"{path}: not a readable image ({error})") from error
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels[index] = np.asarray(converted, np.uint8).reshape(height, width, channels)
        labels = np.array([label for _, label in entries], np.int64)
        arrays[split] = (pixels, labels)

    if not presplit:
        pixels, labels = arrays.pop("all")
        train_index, test_index = stratified_split(labels, test_split, seed)
        arrays = {
            "train": (pixels[train_index], labels[train_index]),
            "test": (pixels[test_index], labels[test_index]),
        }
    return Dataset(
        name=name or f"folder:{directory}",
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        class_names=class_names,
        source=str(directory),
    )


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): `test_fraction` of each class, at least one, drawn with `seed`."""
    if not 0 < test_fraction < 1:
        raise DatasetError(f"test split must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise DatasetError(f"class {label} has {len(members)} image; need 2 to hold one out")
        count = min(len(members) - 1, max(1, round(len(members) * test_fraction)))
        test += list(members[:count])
        train += list(members[count:])
    return np.sort(np.array(train, np.int64)), np.sort(np.array(test, np.int64))


# --- Keras' built-in sets --------------------------------------------------------------------


@dataclass(frozen=True)
class Builtin:
    class_names: tuple[str, ...]
    folder_names: tuple[str, ...]  # sub-folders of a data dir or Keras' cache that may hold it
    system_dirs: tuple[str, ...]  # where an OS package installs it
    keras_npz: str | None  # the file Keras' loader caches, when it caches an .npz
    fix: str  # how a user gets a local copy


BUILTINS = {
    "mnist": Builtin(
        class_names=DIGIT_CLASS_NAMES,
        folder_names=("mnist",),
        system_dirs=(),
        keras_npz="mnist.npz",
        fix="pass --data-dir DIR (or set TRAINER_DATA_DIR or MNIST_DIR) with the four MNIST "
        "IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, or connect to the internet",
    ),
    "fashion_mnist": Builtin(
        class_names=FASHION_CLASS_NAMES,
        folder_names=("fashion_mnist", "fashion-mnist"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        keras_npz=None,
        fix="apt-get install dataset-fashion-mnist, or pass --data-dir DIR (or set "
        "TRAINER_DATA_DIR) with the four Fashion-MNIST IDX files, or connect to the internet",
    ),
}


def keras_cache_dir() -> Path:
    """Where Keras caches downloads: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def _local_candidates(directory: Path, builtin: Builtin) -> list[Path]:
    candidates = [directory, *(directory / folder for folder in builtin.folder_names)]
    if builtin.keras_npz:
        candidates += [directory / builtin.keras_npz]
    return candidates


def _load_candidate(path: Path, name: str, builtin: Builtin) -> Dataset | None:
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path, name=name, class_names=builtin.class_names)
    if path.is_dir() and find_idx_files(path) is not None:
        return load_idx(path, name=name, class_names=builtin.class_names)
    return None


def load_builtin(name: str, data_dir: Path | None = None, download: bool = True) -> Dataset:
    """Load `mnist` or `fashion_mnist` from the first place that has it.

    Order: `data_dir` (else $TRAINER_DATA_DIR; the folder itself or a sub-folder named after the
    data set, IDX files or Keras' .npz), then for mnist $MNIST_DIR, then the OS package's
    folder, then Keras' cache, then Keras' download. An explicit `data_dir` that lacks the
    files is an error rather than a reason to look elsewhere.
    """
    builtin = BUILTINS[name]
    explicit = data_dir or (
        Path(os.environ["TRAINER_DATA_DIR"]) if os.environ.get("TRAINER_DATA_DIR") else None
    )
    if explicit is not None:
        for candidate in _local_candidates(Path(explicit), builtin):
            dataset = _load_candidate(candidate, name, builtin)
            if dataset is not None:
                return dataset
        raise DatasetError(
            f"{name}: not found in {explicit} (nor in its sub-folders "
            f"{', '.join(builtin.folder_names)}); {builtin.fix}"
        )

    looked: list[Path] = []
    fallbacks = []
    if name == "mnist" and os.environ.get("MNIST_DIR"):
        fallbacks.append(Path(os.environ["MNIST_DIR"]))
    fallbacks += [Path(folder) for folder in builtin.system_dirs]
    cache = keras_cache_dir()
    fallbacks += [cache / folder for folder in builtin.folder_names]
    if builtin.keras_npz:
        fallbacks.append(cache / builtin.keras_npz)
    for candidate in fallbacks:
        looked.append(candidate)
        dataset = _load_candidate(candidate, name, builtin)
        if dataset is not None:
            return dataset

    places = ", ".join(str(path) for path in looked)
    if not download:
        raise DatasetError(f"{name}: no local copy (looked in {places}); {builtin.fix}")
    return _download(name, builtin, places)


def _download(name: str, builtin: Builtin, places: str) -> Dataset:
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:  # Keras raises whatever urllib raised; all mean "no copy".
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(
            f"{name}: no local copy (looked in {places}) and Keras' download failed ({reason}); "
            f"{builtin.fix}"
        ) from error
    return Dataset(
        name=name,
        train_images=x_train[..., np.newaxis],
        train_labels=y_train.astype(np.int64),
        test_images=x_test[..., np.newaxis],
        test_labels=y_test.astype(np.int64),
        class_names=builtin.class_names,
        source=str(keras_cache_dir()),
    )


# --- one entry point -------------------------------------------------------------------------

SPEC_HELP = (
    "mnist | fashion_mnist (local copy first, then Keras' download) | idx:DIR (four IDX "
    "files) | npz:FILE (x_train, y_train, x_test, y_test) | folder:DIR (one sub-folder per "
    "class, or DIR/train and DIR/test)"
)


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'28' -> (28, 28); '32x48' -> (32, 48) as height x width; None stays None."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise DatasetError(f"image size must be N or HEIGHTxWIDTH, got {text!r}")
    return (sizes[0], sizes[-1])


def load_dataset(
    spec: str,
    data_dir: Path | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    test_split: float = 0.2,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load the data set `spec` names (see `SPEC_HELP`)."""
    kind, _, argument = spec.partition(":")
    if spec in BUILTINS:
        dataset = load_builtin(spec, data_dir=data_dir, download=download)
    elif kind == "idx" and argument:
        dataset = load_idx(Path(argument))
    elif kind == "npz" and argument:
        dataset = load_npz(Path(argument))
    elif kind == "folder" and argument:
        return load_folder(
            Path(argument), image_size=image_size, channels=channels,
            test_split=test_split, seed=seed,
        )  # fmt: skip
    else:
        raise DatasetError(f"unknown data set {spec!r}; use {SPEC_HELP}")
    return _reshape(dataset, image_size, channels)


def _reshape(dataset: Dataset, image_size: tuple[int, int] | None, channels: int | None) -> Dataset:
    """Apply --image-size/--channels to array data sets (folders apply them while decoding)."""
    height, width, current = dataset.input_shape
    if (image_size is None or image_size == (height, width)) and channels in (None, current):
        return dataset
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    from PIL import Image

    target_height, target_width = image_size or (height, width)
    target_channels = channels or current
    mode = "L" if target_channels == 1 else "RGB"

    def convert(images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), target_height, target_width, target_channels), np.uint8)
        for index, pixels in enumerate(images):
            image = Image.fromarray(pixels[..., 0] if current == 1 else pixels).convert(mode)
            if image.size != (target_width, target_height):
                image = image.resize((target_width, target_height), Image.Resampling.BILINEAR)
            out[index] = np.asarray(image).reshape(out.shape[1:])
        return out

    return replace(
        dataset,
        train_images=convert(dataset.train_images),
        test_images=convert(dataset.test_images),
    )
