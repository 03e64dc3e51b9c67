"""One submit/gather interface for this process and dask: results, dependencies, errors and retries."""

from __future__ import annotations

import operator

import pytest

from probe.execution.executor import LocalExecutor


def check_semantics(executor) -> None:
    """What every executor does (test_distributed runs this on a DaskExecutor): futures as arguments are replaced
    by their results; a task whose dependency failed fails with that error; as_completed yields each future once."""
    one = executor.submit(operator.add, 0, 1, key="one")
    two = executor.submit(operator.add, one, one, key="two")
    broken = executor.submit(operator.truediv, 1, 0, key="broken")
    after = executor.submit(operator.add, broken, 1, key="after")
    same_key = executor.submit(operator.add, two, 2, key="two")  # a key names a task for people: it may repeat
    assert executor.gather([one, two, same_key]) == [1, 2, 4]
    done = list(executor.as_completed([one, two, broken, after]))
    assert len(done) == 4 and set(done) == {one, two, broken, after}
    assert broken.status == after.status == "error"
    assert isinstance(broken.exception(), ZeroDivisionError) and isinstance(after.exception(), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        after.result()
    assert two.status == "finished" and two.exception() is None


def test_the_local_executor_keeps_the_interface():
    check_semantics(LocalExecutor())


def test_local_tasks_run_in_order_once_results_are_asked_for():
    ran = []

    def task(name, *_):
        ran.append(name)
        return name

    ex = LocalExecutor()
    a = ex.submit(task, "a", key="a")
    b = ex.submit(task, "b", a, key="b")
    c = ex.submit(task, "c", key="c")
    assert ran == [] and a.status == "pending"
    assert [f.result() for f in ex.as_completed([a, b, c])] == ["a", "b", "c"]
    assert ex.gather([c, b]) == ["c", "b"] and ran == ["a", "b", "c"]  # each ran once


def test_local_retries_and_ctrl_c():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("transient")
        return "ok"

    ex = LocalExecutor()
    assert ex.submit(flaky, key="f", retries=2).result() == "ok" and calls["n"] == 3
    calls["n"] = 0
    assert isinstance(ex.submit(flaky, key="f", retries=1).exception(), RuntimeError) and calls["n"] == 2

    def interrupted():
        raise KeyboardInterrupt

    stopped = ex.submit(interrupted, key="i")
    with pytest.raises(KeyboardInterrupt):  # stops the caller, and is not the task's error
        stopped.exception()
    assert stopped.status == "pending"
