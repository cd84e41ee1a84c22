"""The app: its options and its JSON document, with the tasks run by a real worker."""

import json

import pytest

from {{ cookiecutter.project_slug }} import __main__ as app_main

TIMEOUT = "60"


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    status = app_main.main(["--json", "--timeout", TIMEOUT, *argv])
    return status, json.loads(capsys.readouterr().out)


def test_json_lists_every_task_with_its_result(worker, capsys):
    """--json prints one document: each submission's id, name, args, state and result, and ok."""
    status, document = run_json(
        capsys, "--tasks", "add,long_task,process_data,flaky", "--long-seconds", "1"
    )
    assert status == 0
    assert document["ok"] is True
    by_name = {task["name"].rpartition(".")[2]: task for task in document["tasks"]}
    assert list(by_name) == ["add", "long_task", "process_data", "flaky"]
    assert all(task["state"] == "SUCCESS" and "error" not in task for task in by_name.values())
    assert by_name["add"]["args"] == [2, 3] and by_name["add"]["result"] == 5
    assert by_name["long_task"]["args"] == [1]
    assert by_name["long_task"]["result"]["status"] == "worked for 1 s"
    assert by_name["process_data"]["result"]["count"] == len(app_main.SAMPLE_NUMBERS)
    assert by_name["flaky"]["result"] == {"tries": 3}
    # Each id is the task's own: the backend holds the same result under it.
    for task in by_name.values():
        assert app_main.app.AsyncResult(task["id"]).get(timeout=int(TIMEOUT)) == task["result"]


def test_count_sends_each_task_that_often(worker, capsys):
    """--count N sends each chosen task N times, each with its own id; the default is the
    first three tasks once each."""
    status, document = run_json(capsys, "--tasks", "add,process_data", "--count", "3")
    assert status == 0
    names = [task["name"].rpartition(".")[2] for task in document["tasks"]]
    assert names == ["add", "process_data"] * 3
    assert len({task["id"] for task in document["tasks"]}) == 6
    status, document = run_json(capsys, "--long-seconds", "0")
    assert status == 0
    names = [task["name"].rpartition(".")[2] for task in document["tasks"]]
    assert names == list(app_main.DEFAULT_TASKS)


def test_a_failed_task_makes_ok_false_and_exit_1(worker, capsys, monkeypatch):
    """A task that fails is in the document with its error, ok is false and the exit status 1."""
    monkeypatch.setattr(app_main, "SAMPLE_NUMBERS", [])
    status, document = run_json(capsys, "--tasks", "add,process_data")
    assert status == 1
    assert document["ok"] is False
    add_entry, failed = document["tasks"]
    assert add_entry["state"] == "SUCCESS"
    assert failed["state"] == "FAILURE" and "result" not in failed
    assert failed["error"].startswith("ValueError: process_data: numbers is empty")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "add,nope"], "unknown task 'nope'; choose from add,long_task"),
        (["--tasks", ","], "unknown task list (empty)"),
        (["--count", "0"], "'0' is not a whole number from 1 up"),
        (["--count", "two"], "'two' is not a whole number from 1 up"),
        (["--long-seconds", "-1"], "'-1' is not a whole number from 0 to"),
        (["--long-seconds", "1000"], "'1000' is not a whole number from 0 to"),
    ],
)
def test_bad_options_are_refused_before_anything_is_sent(capsys, argv, message):
    """A bad option value stops the app with exit status 2 and says what is allowed."""
    with pytest.raises(SystemExit) as stopped:
        app_main.main(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_help_names_every_option_and_task(capsys):
    """--help explains each option and lists every task --tasks takes."""
    with pytest.raises(SystemExit) as stopped:
        app_main.main(["--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--tasks", "--count", "--long-seconds", "--timeout", "--json"):
        assert option in text
    assert ",".join(app_main.TASK_NAMES) in text
