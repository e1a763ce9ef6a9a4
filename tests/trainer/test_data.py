"""Loaders: IDX, npz, image folders, Keras' built-in sets with their local fallbacks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import synthetic_arrays, write_idx, write_image_folder

from trainer import data
from trainer.data import DatasetError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def no_local_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras cache and no data-dir variables, so only explicit locations count."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.delenv("TRAINER_DATA_DIR", raising=False)
    monkeypatch.delenv("MNIST_DIR", raising=False)
    return tmp_path / "keras-home" / "datasets"


def test_read_idx_gzipped_and_raw_round_trip(tmp_path: Path) -> None:
    images, _ = synthetic_arrays(5, size=4)
    gzipped = write_idx(tmp_path / "a-idx3-ubyte", images, gzipped=True)
    raw = write_idx(tmp_path / "b-idx3-ubyte", images, gzipped=False)
    np.testing.assert_array_equal(data.read_idx(gzipped), images)
    np.testing.assert_array_equal(data.read_idx(raw), images)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetError, match="bad magic"):
        data.read_idx(bad)
    images, _ = synthetic_arrays(3, size=4)
    path = write_idx(tmp_path / "cut-idx3-ubyte", images, gzipped=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"header says \[3, 4, 4\]"):
        data.read_idx(path)
    floats = tmp_path / "floats"
    floats.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(DatasetError, match="unsupported"):
        data.read_idx(floats)


def test_read_idx_corrupt_gzip_or_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (300, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "noise-idx3-ubyte", images)
    damaged = bytearray(path.read_bytes())
    for position in range(40, len(damaged) - 20, 97):
        damaged[position] ^= 0x5A
    path.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=r"cannot read .*Error -3"):
        data.read_idx(path)
    with pytest.raises(DatasetError, match="cannot read"):
        data.read_idx(tmp_path)


def test_load_idx_pairs_images_with_labels(idx_dir: Path) -> None:
    dataset = data.load_idx(idx_dir)
    assert dataset.input_shape == (8, 8, 1)
    assert dataset.class_names == ("0", "1", "2")
    assert (len(dataset.train_labels), len(dataset.test_labels)) == (30, 12)
    # Brightness encodes the label (see synthetic_arrays).
    brightness = dataset.train_images.reshape(30, -1).min(axis=1)
    np.testing.assert_array_equal((brightness - 40) // 80, dataset.train_labels)


def test_load_idx_reads_class_names_file_and_dotted_names(tmp_path: Path, idx_dir: Path) -> None:
    (idx_dir / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    assert data.load_idx(idx_dir).class_names == ("circle", "square", "triangle")
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for path in idx_dir.glob("*.gz"):
        name = path.name.removesuffix(".gz").replace("-idx", ".idx")
        (dotted / name).write_bytes(gzip.decompress(path.read_bytes()))
    assert len(data.load_idx(dotted).train_labels) == 30


def test_load_idx_missing_files_says_which(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        data.load_idx(tmp_path)


def test_real_mnist_matches_the_published_checks(mnist_dir: Path) -> None:
    dataset = data.load_idx(mnist_dir, class_names=data.DIGIT_CLASS_NAMES)
    assert dataset.train_images.shape == (60000, 28, 28, 1)
    assert dataset.test_images.shape == (10000, 28, 28, 1)
    assert dataset.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert dataset.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(dataset.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(dataset.test_labels).tolist() == MNIST_TEST_COUNTS


def test_load_npz_keras_layout(tmp_path: Path) -> None:
    train_images, train_labels = synthetic_arrays(20, size=6)
    test_images, test_labels = synthetic_arrays(9, size=6, seed=3)
    path = tmp_path / "set.npz"
    np.savez(
        path, x_train=train_images, y_train=train_labels.astype(np.int32),
        x_test=test_images, y_test=test_labels, class_names=np.array(["a", "b", "c"]),
    )  # fmt: skip
    dataset = data.load_npz(path)
    assert dataset.input_shape == (6, 6, 1)
    assert dataset.class_names == ("a", "b", "c")
    assert dataset.train_labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.test_images[..., 0], test_images)


def test_load_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match=r"missing arrays \['x_test', 'y_test'\]"):
        data.load_npz(path)
    floats = tmp_path / "floats.npz"
    np.savez(
        floats, x_train=np.zeros((2, 4, 4)), y_train=np.zeros(2, np.int64),
        x_test=np.zeros((1, 4, 4)), y_test=np.zeros(1, np.int64),
    )  # fmt: skip
    with pytest.raises(DatasetError, match=r"integers in 0\.\.255"):
        data.load_npz(floats)
    with pytest.raises(DatasetError, match="no such file"):
        data.load_npz(tmp_path / "absent.npz")


def test_load_npz_corrupt_or_odd_files_are_one_clear_error(tmp_path: Path) -> None:
    def arrays(x_train):
        return {
            "x_train": x_train, "y_train": np.zeros(len(x_train), np.int64),
            "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.zeros(2, np.int64),
        }  # fmt: skip

    noise = np.random.default_rng(0).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, **arrays(noise))
    damaged = bytearray(corrupt.read_bytes())
    for position in range(200, 5000, 50):
        damaged[position] ^= 0x33
    corrupt.write_bytes(bytes(damaged))
    not_zip = tmp_path / "not-zip.npz"
    not_zip.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    objects = tmp_path / "objects.npz"
    np.savez(objects, **arrays(np.array([None, "a"], dtype=object)))
    empty = tmp_path / "empty.npz"
    np.savez(empty, **{**arrays(np.zeros((0, 28, 28), np.uint8)), "y_test": np.zeros(0, int)})
    single = tmp_path / "single.npz"
    np.save(single.with_suffix(".npy"), noise)
    single.with_suffix(".npy").rename(single)
    for path, message in [
        (corrupt, "not a readable .npz"), (not_zip, "not a readable .npz"),
        (objects, "not a readable .npz"), (empty, "no labels"), (single, "a single array"),
    ]:  # fmt: skip
        with pytest.raises(DatasetError, match=message):
            data.load_npz(path)


def test_load_folder_holds_out_a_stratified_test_split(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "shapes", {"cat": 10, "dog": 5})
    dataset = data.load_folder(root, test_split=0.2, seed=3)
    assert dataset.class_names == ("cat", "dog")
    assert dataset.input_shape == (10, 12, 1)
    assert np.bincount(dataset.test_labels).tolist() == [2, 1]
    assert np.bincount(dataset.train_labels).tolist() == [8, 4]
    # Class "dog" was drawn brighter; pairing survives the split.
    assert (dataset.train_images[dataset.train_labels == 1].min() >= 90).all()
    again = data.load_folder(root, test_split=0.2, seed=3)
    np.testing.assert_array_equal(again.test_images, dataset.test_images)


def test_load_folder_train_test_layout_rgb_and_resize(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "set" / "train", {"red": 3, "blue": 2}, mode="RGB")
    write_image_folder(tmp_path / "set" / "test", {"red": 1, "blue": 1}, mode="RGB")
    dataset = data.load_folder(tmp_path / "set")
    assert dataset.class_names == ("blue", "red")
    assert dataset.input_shape == (10, 12, 3)
    assert len(dataset.train_labels) == 5 and len(dataset.test_labels) == 2
    small = data.load_folder(tmp_path / "set", image_size=(6, 6), channels=1)
    assert small.input_shape == (6, 6, 1)


def test_load_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        data.load_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        data.load_folder(tmp_path / "empty")
    write_image_folder(tmp_path / "mixed", {"a": 2}, size=(10, 10))
    write_image_folder(tmp_path / "mixed", {"b": 2}, size=(12, 12))
    with pytest.raises(DatasetError, match=r"different sizes.*--image-size"):
        data.load_folder(tmp_path / "mixed")
    assert data.load_folder(tmp_path / "mixed", image_size=(8, 8)).input_shape == (8, 8, 1)
    write_image_folder(tmp_path / "split" / "train", {"a": 2, "b": 2})
    write_image_folder(tmp_path / "split" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(DatasetError, match="'zebra' is not among the training classes"):
        data.load_folder(tmp_path / "split")
    broken = write_image_folder(tmp_path / "broken", {"a": 2, "b": 2})
    (broken / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad\.png: not a readable image"):
        data.load_folder(broken)


def test_limited_is_seeded_random_and_proportional(mnist_dir: Path) -> None:
    dataset = data.load_idx(mnist_dir)
    small = dataset.limited(6000, seed=7)
    assert (len(small.train_labels), len(small.test_labels)) == (6000, 1000)
    assert np.bincount(small.train_labels).min() > 450  # not a class-sorted prefix
    same = dataset.limited(6000, seed=7)
    np.testing.assert_array_equal(same.train_labels, small.train_labels)
    other = dataset.limited(6000, seed=8)
    assert not np.array_equal(other.train_labels, small.train_labels)
    assert dataset.limited(None) is dataset


def test_builtin_prefers_data_dir_then_env(
    tmp_path: Path, idx_dir: Path, no_local_copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert data.load_builtin("mnist", data_dir=idx_dir).source == str(idx_dir)
    # A sub-folder named after the data set, as in a shared data root.
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    for path in idx_dir.iterdir():
        (root / "mnist" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("TRAINER_DATA_DIR", str(root))
    assert data.load_builtin("mnist").source == str(root / "mnist")
    monkeypatch.delenv("TRAINER_DATA_DIR")
    monkeypatch.setenv("MNIST_DIR", str(idx_dir))
    loaded = data.load_builtin("mnist")
    assert loaded.source == str(idx_dir)
    assert loaded.class_names == data.DIGIT_CLASS_NAMES


def test_builtin_explicit_dir_without_files_is_an_error(
    tmp_path: Path, no_local_copies: Path
) -> None:
    with pytest.raises(DatasetError) as error:
        data.load_builtin("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message


def test_builtin_without_any_copy_lists_where_it_looked(no_local_copies: Path) -> None:
    with pytest.raises(DatasetError) as error:
        data.load_builtin("mnist", download=False)
    message = str(error.value)
    assert str(no_local_copies / "mnist.npz") in message
    assert "--data-dir" in message and "\n" not in message


def test_builtin_reads_keras_cache_npz(idx_dir: Path, no_local_copies: Path) -> None:
    source = data.load_idx(idx_dir)
    no_local_copies.mkdir(parents=True)
    np.savez(
        no_local_copies / "mnist.npz",
        x_train=source.train_images[..., 0], y_train=source.train_labels,
        x_test=source.test_images[..., 0], y_test=source.test_labels,
    )  # fmt: skip
    loaded = data.load_builtin("mnist", download=False)
    assert loaded.source == str(no_local_copies / "mnist.npz")
    np.testing.assert_array_equal(loaded.train_images, source.train_images)


def test_builtin_failed_download_explains_the_fix(
    no_local_copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DatasetError, match=r"download failed.*name resolution.*--data-dir"):
        data.load_builtin("mnist")


def test_fashion_mnist_from_the_debian_package(
    fashion_mnist_dir: Path, no_local_copies: Path
) -> None:
    dataset = data.load_builtin("fashion_mnist", download=False)
    assert dataset.source == str(fashion_mnist_dir)
    assert dataset.class_names[0] == "T-shirt_top" and dataset.num_classes == 10
    assert dataset.train_images.shape == (60000, 28, 28, 1)


def test_load_dataset_specs_and_reshaping(tmp_path: Path, idx_dir: Path) -> None:
    assert data.load_dataset(f"idx:{idx_dir}").input_shape == (8, 8, 1)
    rgb = data.load_dataset(f"idx:{idx_dir}", image_size=(16, 16), channels=3)
    assert rgb.input_shape == (16, 16, 3)
    with pytest.raises(DatasetError, match="unknown data set 'cifar'"):
        data.load_dataset("cifar")
    with pytest.raises(DatasetError, match="unknown data set"):
        data.load_dataset("folder:")


@pytest.mark.parametrize(
    ("text", "expected"), [("28", (28, 28)), ("32x48", (32, 48)), (None, None)]
)
def test_parse_image_size(text: str | None, expected) -> None:
    assert data.parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["0", "axb", "1x2x3", ""])
def test_parse_image_size_rejects(text: str) -> None:
    with pytest.raises(DatasetError, match="HEIGHTxWIDTH"):
        data.parse_image_size(text)
