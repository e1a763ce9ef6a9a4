"""Hostile file names (issue 12): every name the file system gives survives every output.

Real files with carriage returns, newlines, bytes that are not UTF-8, quotes, commas, formula
prefixes, backslashes and names of NAME_MAX bytes are scored into CSV and JSON Lines, resumed
and evaluated against the fake server; every output must name each file losslessly (see
client/names.py for the escaping) and stay valid UTF-8 / CSV / JSON.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from client_fixtures import fake, fake_class, fake_server_instance, save_png
from typer.testing import CliRunner

from client.cli import app
from client.evaluation.metrics import compute_metrics
from client.evaluation.report import build_report
from client.evaluation.sections import report_document
from client.evaluation.writers import to_markdown
from client.names import escape_name, name_bytes, name_order, unescape_name
from client.outputs import PredictionWriter, read_rows
from client.scoring import ScoredImage

__all__ = ["fake", "fake_server_instance"]  # fixtures used by name

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME_MAX = os.pathconf("/tmp", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255

# File names (one path component each) that broke, or could break, an output format.
HOSTILE = [
    "carriage\rreturn.png",
    "line\nfeed.png",
    "both\r\n.png",
    "tab\there.png",
    "\x1b[31mred.png",  # a terminal escape sequence
    "next\x85line.png",  # U+0085, a C1 control that str.splitlines() breaks at
    "line\u2028separator.png",  # printable to JSON, a line break to str.splitlines()
    os.fsdecode(b"latin1 caf\xe9.png"),  # not UTF-8
    os.fsdecode(b"\xff\xfe.png"),
    'double "quote".png',
    "single 'quote'.png",
    "comma, here.png",
    "=HYPERLINK(1).png",  # spreadsheet formula prefixes
    "+1.png",
    "-2.png",
    "@sum.png",
    "back\\slash.png",
    "\\xff.png",  # the escaped form of b"\xff" spelled out: must not collide with it
    "pipe | and *stars* and [brackets] and <b>tag</b> and $x$.png",
    "two  spaces.png",
    "ünïcödé 日本.png",
    "L" * (NAME_MAX - 4) + ".png",  # NAME_MAX bytes
    os.fsdecode(b"\xe9" * ((NAME_MAX - 4) // 2) + b".png"),  # long and not UTF-8
]
HOSTILE_FOLDER = os.fsdecode(b"folder\xff\nname")
BROKEN = os.fsdecode(b"broken\r\xfe.png")  # a hostile name on a corrupt image: an error row


def hostile_tree(root: Path) -> dict[str, int]:
    """PNGs under every hostile name (plus one nested in a hostile folder) and a broken file;
    returns real relative name -> class the fake predicts (-1 for the broken one)."""
    expected = {}
    names = [*HOSTILE, f"{HOSTILE_FOLDER}/{HOSTILE[0]}", f"{HOSTILE_FOLDER}/plain.png"]
    for index, name in enumerate(names):
        value = 40 + index
        save_png(root / name, np.full((28, 28), value, dtype=np.uint8))
        expected[name] = fake_class(value)
    (root / BROKEN).write_bytes(b"")
    expected[BROKEN] = -1
    return expected


def run(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def score(folder: Path, out: Path, server: str, *extra: str):
    return run("score", folder, "--out", out, "-s", server, "--preprocess", "none", "-b", "4",
               *extra)  # fmt: skip


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {unescape_name(row["path"]): row for row in rows}


# -- the escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("plain/name.png", "plain/name.png"),
        ("a\rb\n.png", "a\\x0db\\x0a.png"),
        (os.fsdecode(b"caf\xe9.png"), "caf\\xe9.png"),
        ("back\\slash", "back\\\\slash"),
        ("\\xff", "\\\\xff"),
        ("\x85nel", "\\xc2\\x85nel"),  # a C1 control: its UTF-8 bytes
        ('ünï 日本, "q" =1', 'ünï 日本, "q" =1'),
    ],
)
def test_escape_name_is_the_documented_form(name, text):
    assert escape_name(name) == text
    assert unescape_name(text) == name
    assert name_bytes(text) == os.fsencode(name)


def test_escaping_round_trips_every_byte_string():
    import codecs
    import random

    rng = random.Random(12)
    alphabet = [0x5C, 0x78, 0x41, 0x66, 0xFF, 0xC3, 0xA9, 0x0A, 0x0D, 0xE2, 0x80, 0x2F, 0x22]
    for _ in range(5000):
        raw = bytes(
            rng.choice([*alphabet, rng.randrange(1, 256)]) for _ in range(rng.randrange(12))
        )
        text = escape_name(os.fsdecode(raw))
        text.encode("utf-8")  # always valid UTF-8
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
        assert name_bytes(text) == raw
        assert codecs.escape_decode(text.encode())[0] == raw  # Python's bytes-literal rules
        assert unescape_name(text) == os.fsdecode(raw)


def test_a_lone_backslash_from_an_older_file_reads_as_itself():
    assert unescape_name("a\\b.png") == "a\\b.png"


# -- score, resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_score_writes_every_hostile_name_and_resume_repeats_nothing(fake, tmp_path, suffix):
    images = tmp_path / "images"
    expected = hostile_tree(images)
    out = tmp_path / f"preds.{suffix}"
    result = score(images, out, fake.grpc_url)
    assert result.exit_code == 3, result.output  # the broken file, as for any corrupt image
    assert "1 failed" in result.stderr

    raw = out.read_bytes()
    raw.decode("utf-8")  # strict: the file is valid UTF-8
    lines = raw.decode().split("\n")
    assert lines[-1] == "" and "\r" not in raw.decode()  # one physical line per row
    rows = read_rows(out)
    assert len(rows) == len(expected) == len(lines) - 1 - (suffix == "csv")
    got = by_name(rows)
    assert set(got) == set(expected)
    for name, row in got.items():
        assert row["path"] == escape_name(name)
        if expected[name] < 0:
            assert row["error"] == "empty file" and row["class_id"] is None
        else:
            assert row["error"] is None and row["class_id"] == expected[name], name
    assert [name_order(unescape_name(row["path"])) for row in rows] == sorted(
        name_order(name) for name in expected
    )
    if suffix == "jsonl":
        assert [json.loads(line)["path"] for line in lines[:-1]] == [row["path"] for row in rows]
    else:
        parsed = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
        assert [row["path"] for row in parsed] == [row["path"] for row in rows]

    # Resume a finished file: only the failed row is tried again, nothing is duplicated.
    complete = out.read_bytes()
    fake.behaviour.batch_sizes.clear()
    resumed = score(images, out, fake.grpc_url, "--resume")
    assert resumed.exit_code == 3, resumed.output
    assert sum(fake.behaviour.batch_sizes) == 0  # the broken file fails decoding, never sent
    assert f"{len(expected) - 1} rows kept, 1 failed rows" in resumed.stderr
    assert out.read_bytes() == complete

    # Resume after a crash that tore the file after 7 rows: exactly the rest is scored again.
    kept = 7 + (suffix == "csv")
    out.write_bytes(b"\n".join(complete.split(b"\n")[:kept]) + b"\n" + b'{"pa')
    kept_good = sum(row["error"] is None for row in rows[:7])
    fake.behaviour.batch_sizes.clear()
    resumed = score(images, out, fake.grpc_url, "--resume")
    assert resumed.exit_code == 3, resumed.output
    assert sum(fake.behaviour.batch_sizes) == len(expected) - 1 - kept_good
    assert out.read_bytes() == complete


def test_a_class_name_with_a_carriage_return_is_quoted_in_csv(tmp_path):
    out = tmp_path / "p.csv"
    probabilities = np.full(10, 0.1, np.float32)
    row = ScoredImage("a\r.png", 1, "one\rtwo\nthree", 0.5, [], 3, None, probabilities, 1.0)
    with PredictionWriter(out) as writer:
        writer.write(row)
        writer.write(ScoredImage("b.png", None, None, None, [], None, "empty file", None, None))
    rows = read_rows(out)
    assert [r["path"] for r in rows] == ["a\\x0d.png", "b.png"]
    assert rows[0]["class"] == "one\rtwo\nthree"
    with PredictionWriter(out, resume=True) as writer:
        assert writer.done == {"a\r.png"}
    assert read_rows(out)[0]["class"] == "one\rtwo\nthree"


def test_a_csv_row_torn_by_an_unquoted_carriage_return_is_refused_in_one_line(fake, tmp_path):
    # What the client wrote before names were escaped: "\r" split the row in two.
    images = tmp_path / "images"
    save_png(images / "a.png", np.full((28, 28), 40, np.uint8))
    out = tmp_path / "preds.csv"
    header = "path,class_id,class,confidence,top_k,model_version,error\n"
    out.write_bytes(f"{header}x\ry.png,0,digit-0,0.91,0:0.91,3,\n".encode())
    with pytest.raises(ValueError, match=r"preds.csv:\d+ has 1 fields"):
        read_rows(out)
    result = score(images, out, fake.grpc_url, "--resume")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- evaluate ----------------------------------------------------------------------------------


def test_evaluate_names_every_hostile_file_in_every_report(fake, tmp_path):
    data = tmp_path / "data"
    expected = {}
    for index, name in enumerate(HOSTILE):
        value = 40 + index
        # Files in folder (class + 1) % 10 are all mistakes; the rest are right.
        true_class = fake_class(value) if index % 2 else (fake_class(value) + 1) % 10
        relative = f"{true_class}/{name}" if index % 3 else f"{true_class}/{HOSTILE_FOLDER}/{name}"
        save_png(data / relative, np.full((28, 28), value, np.uint8))
        expected[relative] = index % 2 == 1
    (data / "0").mkdir(exist_ok=True)
    (data / "0" / BROKEN).write_bytes(b"")
    report_dir = tmp_path / "report"
    result = run("evaluate", data, "--report-dir", report_dir, "-s", fake.grpc_url,
                 "--preprocess", "none", "--mistakes", "50")  # fmt: skip
    assert result.exit_code == 3, result.output

    report = json.loads((report_dir / "report.json").read_bytes().decode("utf-8"))
    wrong = {name for name, right in expected.items() if not right}
    assert {unescape_name(item["path"]) for item in report["most_confident_mistakes"]} == wrong
    assert [unescape_name(item["path"]) for item in report["failed"]] == [f"0/{BROKEN}"]
    assert report["n_images"] == len(expected) + 1
    assert report["n_correct"] == len(expected) - len(wrong)

    markdown = (report_dir / "report.md").read_bytes().decode("utf-8")
    page = (report_dir / "report.html").read_bytes().decode("utf-8")
    table_lines = [line for line in markdown.split("\n") if line.startswith("| ")]
    for name in [*wrong, f"0/{BROKEN}"]:
        text = escape_name(name)
        assert html.escape(text) in page, name
        # Markdown escapes its own punctuation with backslashes; undone, it is the same text.
        assert any(markdown_text(text) in line for line in table_lines), name
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (report_dir / png).read_bytes().startswith(b"\x89PNG")


def markdown_text(text: str) -> str:
    for character in "\\|*_`[]<>#":
        text = text.replace(character, "\\" + character)
    return text


def test_markdown_cells_keep_runs_of_spaces_but_no_line_breaks():
    metrics = compute_metrics([], [], [], [], n_classes=1)
    report = build_report(
        metrics, class_names=["a"], model_name="m", model_version=1, n_images=1,
        failed=[("two  spaces.png", "one\ntwo\rthree")],
    )  # fmt: skip
    markdown = to_markdown(report_document(report, b"", b"", ""))
    assert "| two  spaces.png | one two three |" in markdown


# -- folders that cannot be listed -------------------------------------------------------------


@pytest.fixture
def deny_listing(monkeypatch):
    """deny(folder): make listing `folder` fail with EACCES. Root may list anything, so there
    (and on file systems that ignore modes) os.scandir is made to refuse that folder exactly as
    the kernel would; otherwise the folder really is chmod 000 (and restored afterwards)."""
    restore = []

    def deny(folder: Path) -> None:
        folder.chmod(0)
        restore.append(folder)
        try:
            os.listdir(folder)
        except PermissionError:
            return  # the kernel refuses: a real unreadable folder
        real_scandir = os.scandir
        denied = os.fspath(folder)

        def scandir(path="."):
            if os.fspath(path) == denied:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)

    yield deny
    for folder in restore:
        folder.chmod(0o755)


def test_score_reports_an_unreadable_folder_as_a_row_and_scores_the_rest(
    fake, tmp_path, deny_listing
):
    images = tmp_path / "images"
    save_png(images / "a.png", np.full((28, 28), 41, np.uint8))
    save_png(images / "z" / "b.png", np.full((28, 28), 42, np.uint8))
    locked = os.fsdecode(b"locked\xff\r")
    save_png(images / "z" / locked / "hidden.png", np.full((28, 28), 43, np.uint8))
    deny_listing(images / "z" / locked)
    out = tmp_path / "preds.csv"
    result = score(images, out, fake.grpc_url)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    rows = read_rows(out)
    assert [row["path"] for row in rows] == ["a.png", "z/b.png", "z/locked\\xff\\x0d/"]
    assert [row["error"] for row in rows] == [None, None, "cannot list folder: Permission denied"]
    assert "cannot list folder z/locked\\xff\\x0d/" in result.stderr

    # --resume tries the folder again (still locked): one row for it, nothing else re-scored.
    fake.behaviour.batch_sizes.clear()
    resumed = score(images, out, fake.grpc_url, "--resume")
    assert resumed.exit_code == 3, resumed.output
    assert sum(fake.behaviour.batch_sizes) == 0
    assert [row["path"] for row in read_rows(out)] == [row["path"] for row in rows]


def test_score_of_a_folder_it_cannot_list_at_all_exits_2_in_one_line(fake, tmp_path, deny_listing):
    images = tmp_path / "images"
    images.mkdir()
    deny_listing(images)
    result = score(images, tmp_path / "preds.csv", fake.grpc_url)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot list ") and "Permission denied" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_reports_unreadable_folders_and_writes_the_report(fake, tmp_path, deny_listing):
    data = tmp_path / "data"
    for class_id in (1, 2, 3):
        save_png(data / str(class_id) / "x.png", np.full((28, 28), 40 + class_id, np.uint8))
    save_png(data / "2" / "sub" / "y.png", np.full((28, 28), 42, np.uint8))
    deny_listing(data / "2" / "sub")
    deny_listing(data / "3")  # a whole class folder
    report_dir = tmp_path / "report"
    result = run("evaluate", data, "--report-dir", report_dir, "-s", fake.grpc_url,
                 "--preprocess", "none")  # fmt: skip
    assert result.exit_code == 3, result.output
    report = json.loads((report_dir / "report.json").read_text())
    assert report["failed"] == [
        {"path": "2/sub/", "error": "cannot list folder: Permission denied"},
        {"path": "3/", "error": "cannot list folder: Permission denied"},
    ]
    assert report["n_scored"] == 2 and report["accuracy"] == 1.0
    assert "2/sub/" in (report_dir / "report.html").read_text()


# -- the real command line, in its own process -------------------------------------------------


@pytest.mark.slow
def test_the_command_line_in_a_subprocess_with_non_utf8_arguments(fake, tmp_path):
    images = tmp_path / os.fsdecode(b"in\xffput")
    expected = hostile_tree(images)
    out = tmp_path / os.fsdecode(b"preds\xfe.jsonl")
    command = [sys.executable, "-m", "client", "score", os.fsencode(images), "--out",
               os.fsencode(out), "-s", fake.grpc_url, "--preprocess", "none"]  # fmt: skip
    # A UTF-8 locale without Python's UTF-8 mode: stdout is strict UTF-8, as on most machines.
    environment = {**os.environ, "LC_ALL": "C.UTF-8", "COLUMNS": "400"}
    for variable in ("PYTHONUTF8", "PYTHONIOENCODING"):
        environment.pop(variable, None)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=120,
                          env=environment)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert b"Traceback" not in done.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {unescape_name(row["path"]) for row in rows} == set(expected)
    predicted = subprocess.run(
        [sys.executable, "-m", "client", "predict", os.fsencode(images / HOSTILE[5]),
         os.fsencode(images / HOSTILE[0]), "-s", fake.grpc_url, "--preprocess", "none"],
        cwd=images, capture_output=True, timeout=120, env=environment,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert escape_name(HOSTILE[5]).encode() in predicted.stdout
    assert b"carriage\\x0dreturn.png" in predicted.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_hostile_names_against_the_real_server(served_model, tmp_path):
    """The real client in its own process against the local server and a trained model."""
    images = tmp_path / "data"
    for index, name in enumerate(HOSTILE):
        save_png(images / str(index % 10) / name, np.full((28, 28), 3 * index, np.uint8))
    server = f"grpc://{served_model.grpc_target}"
    out = tmp_path / "preds.csv"

    def client(*args: object) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "client", *(os.fsencode(str(arg)) for arg in args)]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=120)

    done = client("score", images, "--out", out, "-s", server)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    names = {f"{index % 10}/{name}" for index, name in enumerate(HOSTILE)}
    assert {unescape_name(row["path"]) for row in rows} == names
    assert all(row["error"] is None and row["model_version"] == 1 for row in rows)
    complete = out.read_bytes()
    resumed = client("score", images, "--out", out, "-s", server, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert b"0 files to score" in resumed.stderr and out.read_bytes() == complete

    report_dir = tmp_path / "report"
    evaluated = client("evaluate", images, "--report-dir", report_dir, "-s", server,
                       "--mistakes", "50")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((report_dir / "report.json").read_bytes().decode("utf-8"))
    assert report["n_scored"] == len(HOSTILE)
    mistakes = {unescape_name(item["path"]) for item in report["most_confident_mistakes"]}
    assert mistakes <= names and len(mistakes) == len(HOSTILE) - report["n_correct"]
    page = (report_dir / "report.html").read_bytes().decode("utf-8")
    assert all(html.escape(escape_name(name)) in page for name in mistakes)
