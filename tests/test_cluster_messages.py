"""`--ray` runs that cannot start say so in one sentence, in seconds, before Ray starts; Ray itself is kept quiet.

None of these tests starts Ray: `ray.init` is replaced by one that fails the test if it is reached (or that
raises what Ray raises, for the sentences said about it). The runs that do start Ray are in test_cluster.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import warnings
from pathlib import Path

import pytest
import ray

from chatbot.cli import main
from chatbot.cluster import remote_files
from chatbot.cluster.connection import ClusterOptions
from chatbot.cluster.pipelines import WORKER_STOPPED, Plan, find_user_error, plan, root_cause, worker_error
from chatbot.cluster.quiet import quiet_ray, worker_stopped
from chatbot.errors import QuestionError, UserError
from chatbot.frontends.progress_line import ProgressLine, duration_words
from tests.conftest import make_image

ADDRESS_HINT = "Check the address (`ray status` on the head node prints it)."


class RayStarted(Exception):
    """Raised by the stand-in for `ray.init`: the run got as far as starting Ray."""


@pytest.fixture(autouse=True)
def no_cluster_around(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No RAY_ADDRESS, and no cluster recorded by `ray start` on this machine, unless a test makes them."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))


@pytest.fixture
def no_ray_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RayStarted(f"ray.init{args}{kwargs}")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_image(root / "red.png", (200, 30, 30))
    make_image(root / "blue.png", (30, 30, 200))
    return root


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.splitlines()[-1]


def describe(photos: Path, out: Path, model: Path | str, *extra: str) -> int:
    return main(["describe", str(photos), "--model", str(model), "--out", str(out), *extra])


@pytest.mark.usefixtures("no_ray_start")
def test_a_model_that_is_not_there_is_refused_before_ray_starts_as_on_one_machine(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    nope = tmp_path / "nope"
    assert describe(photos, tmp_path / "alone.jsonl", nope) == 2
    alone = last_error_line(capsys)
    assert alone == (f"blip2-chat: No checkpoint folder at {nope}. Check the path, or pass a hub id such as "
                     "Salesforce/blip2-opt-2.7b.")
    assert describe(photos, tmp_path / "ray.jsonl", nope, "--ray") == 2
    assert last_error_line(capsys) == alone
    assert not (tmp_path / "ray.jsonl").exists()
    assert main(["index", str(photos), "--model", str(nope), "--index", str(tmp_path / "i"), "--ray"]) == 2
    assert last_error_line(capsys) == alone
    assert not (tmp_path / "i").exists()


@pytest.mark.usefixtures("no_ray_start")
def test_an_address_where_nothing_listens_is_said_in_seconds(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Ray would wait for it forever, repeating a warning every few seconds."""
    port = free_port()
    assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray", f"127.0.0.1:{port}") == 2
    assert last_error_line(capsys) == (f"blip2-chat: Could not start or reach the Ray cluster at 127.0.0.1:{port}: "
                                       f"nothing accepts connections at port {port} of 127.0.0.1. {ADDRESS_HINT}")
    assert not (tmp_path / "a.jsonl").exists()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])  # free, and nothing listens there once closed


@pytest.mark.usefixtures("no_ray_start")
def test_a_head_that_was_killed_without_ray_stop_is_said_not_waited_for(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ray start` records its head's address; `--ray` and `--ray auto` connect to it (not start their own)
    while the record is there, and waited forever when nothing answered there any more."""
    port = free_port()
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    for address in ([], ["auto"]):
        assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray", *address) == 2
        assert last_error_line(capsys) == (
            f"blip2-chat: Could not start or reach the Ray instance recorded as running on this machine "
            f"(127.0.0.1:{port}): nothing accepts connections at port {port} of 127.0.0.1. It stopped without "
            "`ray stop`: run `ray stop` to clear the record, then try again.")


@pytest.mark.usefixtures("no_ray_start")
def test_ray_address_in_the_environment_is_checked_as_an_address_given(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray") == 2
    assert last_error_line(capsys) == (
        f"blip2-chat: Could not start or reach the Ray cluster at 127.0.0.1:{port} (RAY_ADDRESS): nothing accepts "
        f"connections at port {port} of 127.0.0.1. Check RAY_ADDRESS, or unset it.")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray", "auto") == 2
    assert last_error_line(capsys) == (
        "blip2-chat: RAY_ADDRESS is ray://head:10001, a Ray Client address, with which Ray Data does not run. "
        "Unset it, or set it to the head's address (head:6379).")
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.usefixtures("no_ray_start")
@pytest.mark.parametrize("command", ["describe", "index"])
def test_ray_client_addresses_are_refused_with_what_works(
    command: str, photos: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Ray Data does not run through Ray Client (Ray's maintainers: ray-project/ray#42739)."""
    where = ["--out", str(tmp_path / "a.jsonl")] if command == "describe" else ["--index", str(tmp_path / "i")]
    assert main([command, str(photos), *where, "--ray", "ray://head:10001"]) == 2
    assert last_error_line(capsys) == (
        "blip2-chat: --ray ray://head:10001 would connect through Ray Client, with which Ray Data does not run. "
        "Run blip2-chat on a node of the cluster with --ray auto (ray attach, kubectl exec, or ray job submit -- "
        "blip2-chat ...), or give the head's address (head:6379) from a machine the cluster can reach.")
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "i").exists()


def fail_init_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def init(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(ray, "init", init)


def test_a_refused_token_is_said_with_where_the_token_goes(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ray says 'Failed to connect to Ray cluster at ...' and keeps the reason in its cause's text."""
    with socket.create_server(("127.0.0.1", 0)) as head:
        address = f"127.0.0.1:{head.getsockname()[1]}"
        cause = RuntimeError(
            "Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
            '  File "python/ray/includes/common.pxi", line 119, in ray._raylet.check_status\n'
            "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or "
            "incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not 'token'). Ensure that the token for the "
            "cluster is available in a local file (e.g., ~/.ray/auth_token or via RAY_AUTH_TOKEN_PATH) or as the "
            "`RAY_AUTH_TOKEN` environment variable.\n")
        error = ConnectionError(f"Failed to connect to Ray cluster at {address}")
        error.__cause__ = cause
        fail_init_with(monkeypatch, error)
        assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray", address) == 2
    assert last_error_line(capsys) == (
        f"blip2-chat: Could not start or reach the Ray cluster at {address}: it refused this machine's authentication "
        "token (missing or incorrect). Copy the cluster's token (`ray get-auth-token` on the head node prints it) to "
        "~/.ray/auth_token on this machine, or set RAY_AUTH_TOKEN.")


def test_rays_own_sentence_ends_with_one_full_stop(
    photos: Path, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail_init_with(monkeypatch, ValueError(
        "Ray Client requires pip package `ray[client]`. If you installed the minimal Ray (e.g. `pip install ray`), "
        "please reinstall by executing `pip install ray[client]`."))
    assert describe(photos, tmp_path / "a.jsonl", checkpoints["opt"], "--ray", "auto") == 2
    assert last_error_line(capsys) == ("blip2-chat: Could not start or reach the Ray cluster at auto: Ray Client "
                                       f"requires pip package `ray[client]`. {ADDRESS_HINT}")


@pytest.mark.usefixtures("no_ray_start")
def test_object_storage_that_cannot_be_reached_ends_in_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Google Cloud Storage's client retries for 15 minutes by default (and Ctrl+C could not stop it): here,
    without credentials or network, the listing ends once its retries are spent."""
    monkeypatch.setattr(remote_files, "STORAGE_SECONDS", 1.0)
    monkeypatch.setattr(remote_files, "FIRST_ANSWER_SECONDS", 120.0)
    assert main(["describe", "gs://no-such-bucket/img/", "-r", "--out", str(tmp_path / "a.jsonl"), "--ray"]) == 2
    assert last_error_line(capsys) == (
        "blip2-chat: Could not list gs://no-such-bucket/img/: no access token could be made for it (no credentials "
        "on this machine, or no network). Check the URI, the network and the storage credentials on this machine "
        "(it lists the files).")
    assert not (tmp_path / "a.jsonl").exists()


def test_a_listing_without_any_answer_is_given_up_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    never = threading.Event()
    monkeypatch.setattr(remote_files, "_images_under", lambda *args, **kwargs: never.wait())
    monkeypatch.setattr(remote_files, "FIRST_ANSWER_SECONDS", 0.5)
    try:
        with pytest.raises(UserError) as raised:
            remote_files.list_storage_images(["gs://bucket/img/"], recursive=True)
    finally:
        never.set()  # the listing's thread ends
    assert str(raised.value) == ("Could not list gs://bucket/img/: no answer within 0.5 seconds. Check the URI, "
                                 "the network and the storage credentials on this machine (it lists the files).")


@pytest.mark.parametrize(("rows", "batch_size", "workers", "expected"), [
    (12, 8, 6, Plan(blocks=6, batch=2)),  # every worker gets a batch, not 1 batch of 8 and 5 idle
    (1000, 8, 6, Plan(blocks=125, batch=8)),  # enough work: batches keep their size
    (3, 8, 6, Plan(blocks=3, batch=1)),  # fewer rows than workers: one each
    (7, 8, 2, Plan(blocks=2, batch=4)),
    (100_000, 8, 1, Plan(blocks=1000, batch=8)),  # blocks capped; each holds several batches
])
def test_extra_workers_get_work_on_small_jobs(rows: int, batch_size: int, workers: int, expected: Plan) -> None:
    assert plan(rows, batch_size, workers) == expected


def ray_error(text: str) -> Exception:
    """An exception of a class from Ray's package, holding a worker's traceback as text, as Ray's do."""
    kind = type("RayTaskError", (Exception,), {"__module__": "ray.exceptions"})
    return kind(text)


WORKER_TRACEBACK = (
    "\x1b[36mray::MapWorker(MapBatches(CaptionActor)).submit()\x1b[39m (pid=7, ip=10.0.0.2)\n"
    '  File "/app/chatbot/cluster/actors.py", line 86, in __call__\n'
    "    raise error\n"
    "{last}\n\n"
    "The above exception was the direct cause of the following exception:\n\n"
    "\x1b[36mray::MapWorker(MapBatches(CaptionActor)).submit()\x1b[39m (pid=7, ip=10.0.0.2)\n"
    "ray.exceptions.UserCodeException: UDF failed to process a data block.\n")


def test_a_workers_user_error_comes_back_as_it_was_raised() -> None:
    error = ray_error(WORKER_TRACEBACK.format(last="chatbot.errors.QuestionError: The prompt is too long. Shorten it."))
    found = find_user_error(error)
    assert isinstance(found, QuestionError) and str(found) == "The prompt is too long. Shorten it."
    wrapped = ray_error("the actor died")
    wrapped.__cause__ = QuestionError("The prompt is too long.", "Shorten it.")
    assert worker_error(wrapped, "Go on.") is wrapped.__cause__


def test_anything_else_from_a_worker_is_one_sentence() -> None:
    error = ray_error(WORKER_TRACEBACK.format(last="FileNotFoundError: [Errno 2] No such file: '/x/died'"))
    assert root_cause(error) == "FileNotFoundError: [Errno 2] No such file: '/x/died'"
    assert str(worker_error(error, "Go on.")) == (
        "A Ray worker failed: FileNotFoundError: [Errno 2] No such file: '/x/died'. Go on. (Ray's logs are in "
        "/tmp/ray/session_latest/logs on each node.)")
    assert root_cause(ray_error("\x1b[36mThe actor died unexpectedly before finishing this task.\x1b[39m\nmore")) == (
        "The actor died unexpectedly before finishing this task")


def test_ray_is_quiet_while_a_run_uses_it(capfd: pytest.CaptureFixture[str]) -> None:
    """Ray's loggers, Ray Data's console, Ray's warnings, and the raylet's messages (which Ray prints on stdout,
    where describe may be writing rows) say nothing; a worker that stopped is remembered, to be said in our words."""
    import ray._private.worker as ray_worker

    printer = ray_worker.print_to_stdstream
    with quiet_ray():
        logging.getLogger("ray._private.authentication").warning("Token authentication is enabled ...")
        logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled.")
        logging.getLogger("ray.data._internal.execution.streaming_executor").info("Execution finished.")
        warnings.warn_explicit("The minimum number of concurrent actors ...", UserWarning, "x.py", 1,
                               module="ray.data._internal.execution.operators.actor_pool_map_operator")
        assert not worker_stopped()
        ray_worker.print_to_stdstream({"lines": [
            "A worker died or was killed while executing a task by an unexpected system error."],
            "pid": "raylet", "is_err": False}, ignore_prefix=False)
        assert worker_stopped()
    assert capfd.readouterr() == ("", "")
    assert ray_worker.print_to_stdstream is printer  # as it was, after the run
    assert WORKER_STOPPED == "A Ray worker stopped; its batch was given to another."


def test_hours_and_minutes_are_said_in_the_singular_when_one() -> None:
    assert duration_words(104 * 60) == "1 hour 44 minutes"  # was "1 hours 44 minutes"
    assert duration_words(121 * 60) == "2 hours 1 minute"
    assert duration_words(2 * 3600) == "2 hours"
    assert duration_words(2 * 3600 + 5 * 60) == "2 hours 5 minutes"
    assert duration_words(5400) == "1 hour 30 minutes"
    assert (duration_words(1), duration_words(89), duration_words(95)) == ("1 second", "89 seconds", "2 minutes")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ray_runs_speed_is_measured_after_its_first_batch() -> None:
    """Its first batch waits for Ray and the workers' models, then arrives at once: neither says the speed."""
    import io

    clock, stream = Clock(), io.StringIO()
    progress = ProgressLine(12, stream, every_seconds=0, clock=clock)
    progress.start("Describing 12 images, 4 at a time.", measure_after=4)
    clock.now += 60  # Ray starts, the models load, the first batch is answered
    for _ in range(4):
        progress.advance()
    for _ in range(2):  # two batches, 2 seconds each
        clock.now += 2
        for _ in range(4):
            progress.advance()
    lines = stream.getvalue().splitlines()
    assert lines[:5] == ["Describing 12 images, 4 at a time.", "1 of 12 images done.", "2 of 12 images done.",
                         "3 of 12 images done.", "4 of 12 images done."]
    assert lines[5] == "5 of 12 images done, 0.5 images per second, about 14 seconds left."
    assert lines[-1] == "12 of 12 images done, 2.0 images per second."


def test_a_note_during_the_run_gets_its_own_line_below_the_bar() -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock, stream = Clock(), Terminal()
    progress = ProgressLine(4, stream, clock=clock, environ={"TERM": "xterm-256color"})
    progress.start()
    clock.now += 1
    progress.advance()
    progress.note(WORKER_STOPPED)
    clock.now += 1
    progress.advance()
    progress.finish()
    lines = stream.getvalue().split("\n")
    assert lines[0].startswith("\r[######------------------] 1/4 images")
    assert lines[1] == WORKER_STOPPED
    assert lines[2].startswith("\r[############------------] 2/4 images") and lines[3] == ""


def test_options_keep_refusing_what_they_refused() -> None:
    with pytest.raises(UserError, match=r"--ray takes a cluster address such as head:6379, or auto \(got 'head'\)"):
        ClusterOptions("head").check()
