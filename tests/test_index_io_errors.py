"""An index SQLite cannot use for a reason that is not damage: said in one sentence, never set aside.

A user probe found a healthy index moved into `damaged-1/` on a full disk ("disk I/O error") or a database
without permission ("unable to open database file"), even by a plain `search`; a read-only index that could
not be searched at all; and `index` on a read-only `index.sqlite` ending in a traceback. These tests run as
root, whom permission bits do not stop, so SQLite's refusal is made at the boundary: `sqlite3.connect` hands
out real connections whose chosen statements raise the error SQLite raises there (with its code, as Python
3.11+ carries it, and without, as 3.10's errors come). The commands themselves are the real ones. Where the
machine allows it, `test_real_permissions_as_another_user` also runs them as an unprivileged user, on real
permission bits. The references are what each test wrote (its vectors, its file bytes, brute-force MaxSim).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.core.photo_index.access_errors import IndexAccessError
from chatbot.core.photo_index.store import FileState, IndexStore
from chatbot.errors import PhotoIndexError
from tests.conftest import make_image
from tests.test_photo_index import CHECKPOINT, brute_force, unit

ROOT = Path(__file__).resolve().parents[1]
IOERR_SHMSIZE, READONLY_DIRECTORY = (4874, "SQLITE_IOERR_SHMSIZE"), (1544, "SQLITE_READONLY_DIRECTORY")


def sqlite_error(kind: type[sqlite3.Error], words: str, code: tuple[int, str] | None) -> sqlite3.Error:
    """The error SQLite raises, with its code (Python 3.11+) or, `code` None, with words alone (Python 3.10)."""
    error = kind(words)
    if code is not None:
        error.sqlite_errorcode, error.sqlite_errorname = code  # type: ignore[attr-defined]
    return error


class RefusingConnection:
    """A real connection whose statements for which `refuses(sql)` is true raise `error()` instead of running."""

    def __init__(self, db: sqlite3.Connection, refuses: Callable[[str], bool], error: Callable[[], sqlite3.Error]):
        self._db, self._refuses, self._error = db, refuses, error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self._refuses(sql):
            raise self._error()
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self._refuses(sql):
            raise self._error()
        return self._db.executemany(sql, *args)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        if self._refuses(sql):
            raise self._error()
        return self._db.executescript(sql)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


Refuse = Callable[..., None]


@pytest.fixture
def refuse(monkeypatch: pytest.MonkeyPatch) -> Refuse:
    """refuse(error, refuses=every statement, read_only_too=False): from now on SQLite refuses so. A read-only
    connection (a `file:` URI with mode=ro or immutable=1) is left alone unless `read_only_too`: a folder or disk
    that takes no write."""
    real = sqlite3.connect

    def install(error: Callable[[], sqlite3.Error], refuses: Callable[[str], bool] = lambda sql: True,
                read_only_too: bool = False) -> None:
        def connect(database: Any, *args: Any, uri: bool = False, **kwargs: Any) -> Any:
            db = real(database, *args, uri=uri, **kwargs)
            read_only = uri and any(flag in str(database) for flag in ("mode=ro", "immutable=1"))
            return db if read_only and not read_only_too else RefusingConnection(db, refuses, error)

        monkeypatch.setattr(sqlite3, "connect", connect)

    return install


def make_index(folder: Path, n: int = 4) -> np.ndarray:
    """An index of `n` pictures /p/0.png ... with known vectors, cleanly closed (no -wal left); the vectors."""
    vectors = unit(np.random.default_rng(7).standard_normal((n, 32, 256)))
    store = IndexStore.open(folder, CHECKPOINT, create=True)
    shas = [f"{i:064x}" for i in range(n)]
    store.add_batch([FileState(f"/p/{i}.png", 1, 1, shas[i]) for i in range(n)], dict(zip(shas, vectors, strict=True)))
    store.close()
    return vectors


def files_of(folder: Path) -> dict[str, str]:
    """{name: sha256} of every file in the index folder and below (the lock file is the writers' own)."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != "writer.lock"}


def searched(store: IndexStore, vectors: np.ndarray) -> tuple[list[str], list[str]]:
    """(the store's best 3 for a query, brute-force MaxSim's best 3 over the vectors this test wrote)."""
    query = unit(np.random.default_rng(3).standard_normal(256))
    reference = brute_force(vectors, query)
    best = [f"/p/{i}.png" for i in np.argsort(-reference, kind="stable")[:3]]
    return [hit.path for hit in store.search(query, top=3)], best


# (the exception, SQLite's words, its code, what the sentence says, the way forward), as SQLite raises them
REFUSALS = {
    "full disk (no room for the -shm file)": (sqlite3.OperationalError, "disk I/O error", IOERR_SHMSIZE,
                                              "the disk it is on is full", "Free some space on that disk"),
    "full disk": (sqlite3.OperationalError, "database or disk is full", (13, "SQLITE_FULL"),
                  "the disk it is on is full", "Free some space on that disk"),
    "no permission": (sqlite3.OperationalError, "unable to open database file", (14, "SQLITE_CANTOPEN"),
                      "you do not have permission to write to its files", "Give yourself permission"),
    "read-only folder": (sqlite3.OperationalError, "attempt to write a readonly database", READONLY_DIRECTORY,
                         "you do not have permission to write to its files", "Give yourself permission"),
}


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index's disk has no byte free (what `shutil.disk_usage` says of it on a full disk)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=1 << 30, used=1 << 30, free=0))


@pytest.mark.parametrize("with_code", [True, False], ids=["python3.11", "python3.10"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_index_sqlite_refuses_is_never_set_aside(tmp_path: Path, refuse: Refuse, disk_full: None, case: str,
                                                     with_code: bool) -> None:
    kind, words, code, reason, way = REFUSALS[case]
    folder = tmp_path / "index"
    vectors = make_index(folder)
    before = files_of(folder)
    refuse(lambda: sqlite_error(kind, words, code if with_code else None),
           read_only_too=True)  # nothing opens it: the sentence is said, and nothing moves
    for command in ("search", "index"):
        with pytest.raises(IndexAccessError) as refused:
            IndexStore.open(folder, None if command == "search" else CHECKPOINT, create=command == "index")
        assert refused.value.message == f"The search index at {folder} could not be opened: {reason}."
        assert refused.value.hint.startswith(way) and refused.value.hint.endswith(
            "then run this again (nothing was moved or changed).")
        assert "damaged" not in str(refused.value) and "--rebuild" not in str(refused.value)
        assert files_of(folder) == before and not list(folder.glob("damaged-*"))
    # once the reason is gone, the same index searches as before
    refuse(lambda: sqlite_error(kind, words, code), refuses=lambda sql: False)
    store = IndexStore.open_existing(folder)
    found, best = searched(store, vectors)
    assert store.count() == 4 and found == best


@pytest.mark.parametrize("case", list(REFUSALS))
def test_search_reads_an_index_it_may_not_write(tmp_path: Path, refuse: Refuse, disk_full: None, case: str) -> None:
    """A read-only folder or file, or a full disk: a search opens the index read-only, and writes nothing."""
    kind, words, code, _, _ = REFUSALS[case]
    folder = tmp_path / "index"
    vectors = make_index(folder)
    before = files_of(folder)
    refuse(lambda: sqlite_error(kind, words, code))
    store = IndexStore.open_existing(folder)
    found, best = searched(store, vectors)
    assert store.checkpoint == CHECKPOINT and store.count() == 4 and found == best
    store.close()
    assert files_of(folder) == before  # no -wal, no -shm: an `immutable` read of index.sqlite alone


def test_rows_still_in_the_wal_are_read_too(tmp_path: Path, refuse: Refuse) -> None:
    """A -wal that holds rows (a run still writing, or one killed): they are only there, so the read-only
    reader reads through it, never `immutable` (which reads index.sqlite alone and would miss them)."""
    folder = tmp_path / "index"
    make_index(folder, 2)
    writer = IndexStore.open(folder, CHECKPOINT, create=True)
    extra = unit(np.random.default_rng(9).standard_normal((1, 32, 256)))
    writer.add_batch([FileState("/p/late.png", 1, 1, "e" * 64)], {"e" * 64: extra[0]})  # in the -wal only
    assert (folder / "index.sqlite-wal").stat().st_size > 0
    try:
        refuse(lambda: sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database",
                                    READONLY_DIRECTORY))
        reader = IndexStore.open_existing(folder)
        assert reader.count() == 3 and "/p/late.png" in reader.all_states()
        assert [hit.path for hit in reader.search(extra[0, 0], top=1)] == ["/p/late.png"]
        reader.close()
    finally:
        writer.close()


def test_a_lock_is_said_and_not_read_around(tmp_path: Path, refuse: Refuse) -> None:
    """A locked database is not opened `immutable` behind the lock's back: it is said, and nothing moves."""
    folder = tmp_path / "index"
    make_index(folder)
    before = files_of(folder)
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "database is locked", (5, "SQLITE_BUSY")))
    with pytest.raises(IndexAccessError, match="another program is using it and holds its lock") as refused:
        IndexStore.open_existing(folder)
    assert refused.value.hint.startswith("Wait for that program to finish")
    assert files_of(folder) == before and not list(folder.glob("damaged-*"))


@pytest.mark.parametrize("with_code", [True, False], ids=["python3.11", "python3.10"])
@pytest.mark.parametrize(("kind", "words", "code"), [
    (sqlite3.DatabaseError, "database disk image is malformed", (11, "SQLITE_CORRUPT")),
    (sqlite3.DatabaseError, "file is not a database", (26, "SQLITE_NOTADB")),
])
def test_damage_is_still_set_aside(tmp_path: Path, refuse: Refuse, kind: type[sqlite3.Error], words: str,
                                   code: tuple[int, str], with_code: bool) -> None:
    folder = tmp_path / "index"
    make_index(folder)
    before = files_of(folder)
    refuse(lambda: sqlite_error(kind, words, code if with_code else None), refuses=lambda sql: "journal_mode" in sql)
    with pytest.raises(PhotoIndexError, match=r"is damaged; its files were moved to .*damaged-1"):
        IndexStore.open_existing(folder)
    assert files_of(folder) == {f"damaged-1/{name}": sha for name, sha in before.items()}


def test_garbage_in_index_sqlite_is_still_set_aside(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    make_index(folder)
    (folder / "index.sqlite").write_bytes(b"this is not a database" * 100)
    before = files_of(folder)
    with pytest.raises(PhotoIndexError, match="is damaged; its files were moved to") as refused:
        IndexStore.open_existing(folder)
    assert not isinstance(refused.value, IndexAccessError)
    assert IndexStore.open(folder, CHECKPOINT, create=True).count() == 0  # the next `index` starts afresh
    assert (folder / "damaged-1" / "index.sqlite").read_bytes() == b"this is not a database" * 100
    assert {name: sha for name, sha in files_of(folder).items() if name.startswith("damaged-1/")} == \
        {f"damaged-1/{name}": sha for name, sha in before.items()}


def test_damage_that_cannot_be_set_aside_is_said_and_left_whole(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged index in a folder you may not write to: was "Permission denied (.../damaged-1)"."""
    folder = tmp_path / "index"
    make_index(folder)
    (folder / "index.sqlite").write_bytes(b"this is not a database" * 100)
    before = files_of(folder)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name.startswith("damaged-"):
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(PhotoIndexError) as refused:
        IndexStore.open_existing(folder)
    assert refused.value.message == (f"The search index at {folder} is damaged, and its files could not be moved "
                                     "aside: you do not have permission to write there.")
    assert "--index DIR" in refused.value.hint
    assert files_of(folder) == before


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for index, colour in enumerate([(200, 30, 30), (20, 180, 40), (30, 30, 200)]):
        make_image(root / f"{index}.png", colour)
    return root


def committed(folder: Path) -> tuple[dict[str, FileState], bytes, bytes]:
    """What the index holds: its records, its database's bytes and the committed rows of its matrix."""
    store = IndexStore.open_existing(folder)
    try:
        states = store.all_states()
        matrix = np.asarray(store.vectors.matrix).tobytes()
    finally:
        store.close()
    return states, (folder / "index.sqlite").read_bytes(), matrix


@pytest.mark.parametrize("refused_at", ["opening", "writing a batch"])
def test_index_on_a_read_only_database_says_so_and_changes_nothing(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, refuse: Refuse, capsys: pytest.CaptureFixture[str],
    refused_at: str,
) -> None:
    """`index` on an index.sqlite SQLite may not write: was `sqlite3.OperationalError: attempt to write a
    readonly database` from add_batch. Now one sentence and exit 2, before the model loads when SQLite says so
    at once (a write tried when the index is opened), and the index as it was."""
    folder = tmp_path / "index"
    (photos / "new").mkdir(exist_ok=True)
    assert main(["index", str(photos), "--model", str(retrieval_checkpoint), "--index", str(folder)]) == 0
    make_image(photos / "new" / "later.png", (240, 200, 0))
    before = committed(folder)
    capsys.readouterr()
    writes = ("UPDATE", "INSERT", "DELETE") if refused_at == "opening" else ("INSERT", "DELETE")
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database",
                                (8, "SQLITE_READONLY")), refuses=lambda sql: sql.lstrip().upper().startswith(writes))
    assert main(["index", str(photos), "-r", "--index", str(folder)]) == 2
    err = capsys.readouterr().err
    doing = "updated" if refused_at == "opening" else "written"
    assert f"blip2-chat: The search index at {folder} could not be {doing}: you do not have permission to write " \
           "to its files. Give yourself permission to read and write" in err
    assert "Traceback" not in err and "damaged" not in err
    assert ("Loading the search model" in err) == (refused_at == "writing a batch")
    refuse(lambda: sqlite3.OperationalError("unused"), refuses=lambda sql: False)
    assert committed(folder) == before and not list(folder.glob("damaged-*"))


def test_search_command_on_an_index_it_may_not_write(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, refuse: Refuse, capsys: pytest.CaptureFixture[str],
) -> None:
    """`blip2-chat search` on a read-only index folder: was "Permission denied (.../damaged-1)"; now the results,
    the same as before the folder became read-only, and not a file made or moved."""
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--model", str(retrieval_checkpoint), "--index", str(folder)]) == 0
    capsys.readouterr()
    assert main(["search", "a red square", "--index", str(folder), "--no-rerank", "--json"]) == 0
    writable = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    gc.collect()  # the first search's connection closes: SQLite folds its -wal into index.sqlite and deletes it
    before = files_of(folder)
    assert sorted(before) == ["index.sqlite", "vectors.f16"]
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database", READONLY_DIRECTORY))
    assert main(["search", "a red square", "--index", str(folder), "--no-rerank", "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == writable
    assert len(writable) == 3 and files_of(folder) == before


def test_a_failed_write_is_rolled_back_and_said(tmp_path: Path, refuse: Refuse) -> None:
    """The disk fills at a batch's commit: SQLite may roll back itself; the sentence is the full disk's (not
    "cannot rollback"), and the index holds what it held."""
    folder = tmp_path / "index"
    make_index(folder)
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "database or disk is full", (13, "SQLITE_FULL")),
           refuses=lambda sql: sql == "COMMIT")
    store = IndexStore.open(folder, CHECKPOINT, create=False)
    vector = unit(np.random.default_rng(5).standard_normal((32, 256)))
    with pytest.raises(IndexAccessError) as refused:
        store.add_batch([FileState("/p/new.png", 1, 1, "a" * 64)], {"a" * 64: vector})
    assert refused.value.message == f"The search index at {folder} could not be written: the disk it is on is full."
    assert refused.value.hint == ("Free some space on that disk, then run this again (the index keeps everything "
                                  "written before this).")
    assert store.count() == 4 and "/p/new.png" not in store.all_states()
    store.close()


def test_damage_found_while_searching_says_to_rebuild(tmp_path: Path, refuse: Refuse) -> None:
    folder = tmp_path / "index"
    vectors = make_index(folder)
    refuse(lambda: sqlite_error(sqlite3.DatabaseError, "database disk image is malformed", (11, "SQLITE_CORRUPT")),
           refuses=lambda sql: "JOIN files" in sql)
    store = IndexStore.open_existing(folder)
    with pytest.raises(PhotoIndexError) as refused:
        searched(store, vectors)
    assert refused.value.message == (f"The search index at {folder} is damaged "
                                     "(SQLite said 'database disk image is malformed').")
    assert refused.value.hint == (f"Build it again with `blip2-chat index PATH --rebuild --model {CHECKPOINT} "
                                  f"--index {folder}` (PATH: your photos folder).")
    store.close()


# ----- on real permission bits, as a user they stop


def _as_unprivileged() -> list[str] | None:
    """The command prefix that runs a program as a user permission bits stop, or None when there is none."""
    if os.name != "posix":
        return None
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        return None
    return prefix


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder any user may read (pytest's own are the owner's alone), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="index-io-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


def test_real_permissions_as_another_user(shared_folder: Path) -> None:
    prefix = _as_unprivileged()
    if prefix is None:
        pytest.skip("no way here to run as a user whom permission bits stop")
    if not os.access(sys.executable, os.X_OK) or (ROOT / "chatbot").stat().st_mode & 0o005 != 0o005:
        pytest.skip("the checkout cannot be read by another user")
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np
        from chatbot.core.photo_index.store import FileState, IndexStore
        from chatbot.errors import UserError
        folder = Path(sys.argv[1])
        try:
            if sys.argv[2] == "search":
                store = IndexStore.open_existing(folder)
                print(store.count(), [hit.path for hit in store.search(np.ones(256, np.float32), top=4)])
            else:
                store = IndexStore.open(folder, None, create=False, writing=True)
                store.add_batch([FileState("/p/x.png", 1, 1, "f" * 64)], {"f" * 64: np.ones((32, 256), np.float32)})
                print("written")
        except UserError as error:
            print(error)
        """)

    def run(folder: Path, command: str) -> str:
        done = subprocess.run([*prefix, sys.executable, "-c", script, str(folder), command], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done.stdout.strip()

    read_only, readonly_file = shared_folder / "read-only", shared_folder / "read-only-file"
    vectors = make_index(read_only)
    make_index(readonly_file)
    query = np.ones(256, np.float32)
    best = [f"/p/{i}.png" for i in np.argsort(-brute_force(vectors, query), kind="stable")]
    for path in read_only.iterdir():
        path.chmod(0o444)
    read_only.chmod(0o555)  # the prober's read-only index: folder 555, files 444
    before = files_of(read_only)
    assert run(read_only, "search") == f"4 {best}"
    assert files_of(read_only) == before  # not a file made (no -wal, no -shm) or moved
    assert sorted(os.listdir(read_only)) == ["index.sqlite", "vectors.f16", "writer.lock"]
    if os.geteuid() == 0:  # the folder and its files are the user's ...
        for path in [readonly_file, *readonly_file.iterdir()]:
            os.chown(path, 65534, 65534)
    (readonly_file / "index.sqlite").chmod(0o444)  # ... but the database is read-only
    kept = (readonly_file / "index.sqlite").read_bytes()
    assert run(readonly_file, "index") == (
        f"The search index at {readonly_file} could not be updated: you do not have permission to write to its "
        f"files. Give yourself permission to read and write {readonly_file} and the files in it (or ask whoever "
        "owns them), then run this again (nothing was moved or changed).")
    assert (readonly_file / "index.sqlite").read_bytes() == kept and not list(readonly_file.glob("damaged-*"))
    assert run(readonly_file, "search").startswith("4 ")


def test_a_new_index_that_fails_says_the_first_reason(
    tmp_path: Path, photos: Path, retrieval_checkpoint: Path, refuse: Refuse, capsys: pytest.CaptureFixture[str],
) -> None:
    """The second batch of a new index cannot be written, and then it cannot be read either: the sentence is the
    first failure's, not the one met while tidying up."""
    batches = iter(range(10))
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "database or disk is full", (13, "SQLITE_FULL")),
           refuses=lambda sql: (sql.startswith("INSERT INTO embeddings") and next(batches) >= 1)
           or sql.startswith("SELECT COUNT(*) FROM files"))
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--model", str(retrieval_checkpoint), "--index", str(folder),
                 "--batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert f"blip2-chat: The search index at {folder} could not be written: the disk it is on is full." in err
    assert "could not be read" not in err and "Traceback" not in err


def test_the_sentence_starts_a_line_of_its_own_after_the_progress_bar(
    tmp_path: Path, retrieval_checkpoint: Path, refuse: Refuse, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatbot.frontends import progress_line

    monkeypatch.setattr(progress_line, "is_terminal", lambda stream: True)  # the bar is drawn, as on a terminal
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, colour in enumerate([(200, 30, 30), (20, 180, 40)]):
        make_image(photos / f"{index}.png", colour)
    batches = iter(range(10))
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "database or disk is full", (13, "SQLITE_FULL")),
           refuses=lambda sql: sql.startswith("INSERT INTO embeddings") and next(batches) >= 1)  # the second batch
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--model", str(retrieval_checkpoint), "--index", str(folder),
                 "--batch-size", "1"]) == 2
    lines = capsys.readouterr().err.split("\n")
    assert f"blip2-chat: The search index at {folder} could not be written: the disk it is on is full. Free some " \
           "space on that disk, then run this again (the index keeps everything written before this)." in lines
    refuse(lambda: sqlite3.OperationalError("unused"), refuses=lambda sql: False)
    store = IndexStore.open_existing(folder)
    assert sorted(store.all_states()) == [str(photos / "0.png")]  # the first batch is kept
    store.close()


def test_the_model_of_an_index_it_may_not_write_is_still_read(tmp_path: Path, refuse: Refuse) -> None:
    """`search --chat` asks which model made the index (the demo's search model opens the demo's chat model):
    read read-only too, and not a file made."""
    from chatbot.core.photo_search import index_model

    folder = tmp_path / "index"
    make_index(folder)
    before = files_of(folder)
    refuse(lambda: sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database", READONLY_DIRECTORY))
    assert index_model(folder) == CHECKPOINT and files_of(folder) == before


def test_on_a_read_only_file_system_the_advice_fits_what_failed(tmp_path: Path, refuse: Refuse,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing refused on a read-only file system: "search it as it is" (searching reads it read-only). Reading it
    as it is refused too (a WAL with rows and no -shm file there): only the copy is a way forward."""
    from chatbot.core.photo_index import access_errors
    from chatbot.core.photo_index.access_errors import IndexAccessError

    folder = tmp_path / "index"
    make_index(folder)
    monkeypatch.setattr(access_errors, "_read_only_file_system", lambda where: True)
    readonly = lambda: sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database",  # noqa: E731
                                    READONLY_DIRECTORY)
    refuse(readonly)
    with pytest.raises(IndexAccessError) as writing:
        IndexStore.open(folder, CHECKPOINT, create=False, writing=True)
    assert writing.value.hint.startswith("Search it as it is, or copy the folder to a disk you can write to")
    refuse(readonly, read_only_too=True)
    with pytest.raises(IndexAccessError) as reading:
        IndexStore.open_existing(folder)
    assert reading.value.hint.startswith("Copy the folder to a disk you can write to and give that to --index")
