import asyncio
import errno
import logging
import resource
from collections.abc import Iterator
from typing import Any

import pytest
from pm_server.descriptors import (
    ACCEPT_OUT_OF_RESOURCES,
    RESERVED_DESCRIPTORS,
    OpenFilesLimit,
    check_connection_budget,
    quiet_accept_errors,
    raise_open_files_limit,
)


@pytest.fixture
def restored_limit() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield soft, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_limit_and_logged(
    restored_limit: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, hard = restored_limit
    if hard == resource.RLIM_INFINITY or hard <= 600:
        pytest.skip(f"needs a finite hard limit above 600, got {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (600, hard))
    caplog.set_level(logging.INFO, logger="pm_server.descriptors")

    limit = raise_open_files_limit()

    assert limit == OpenFilesLimit(before=600, soft=hard, hard=hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert f"raised the open files limit from 600 to {hard}" in caplog.text


def test_a_limit_already_at_its_ceiling_is_only_reported(
    restored_limit: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, hard = restored_limit
    if hard == resource.RLIM_INFINITY:
        pytest.skip("an unlimited hard limit is raised to a finite soft one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    caplog.set_level(logging.INFO, logger="pm_server.descriptors")

    limit = raise_open_files_limit()

    assert (limit.before, limit.soft) == (hard, hard)
    assert f"open files limit is {hard}" in caplog.text


def test_max_connections_beyond_the_limit_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = OpenFilesLimit(before=1024, soft=1024, hard=1024)

    assert check_connection_budget(1024 - RESERVED_DESCRIPTORS, limit)
    assert not caplog.records
    assert not check_connection_budget(10_000, limit)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "MAX_CONNECTIONS is 10000 but the open files limit (1024)" in record.getMessage()


def out_of_descriptors() -> dict[str, Any]:
    return {
        "message": ACCEPT_OUT_OF_RESOURCES,
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


async def test_accept_running_out_of_descriptors_is_logged_once_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)

    for _ in range(2048):
        loop.call_exception_handler(out_of_descriptors())

    [record] = caplog.records
    assert record.getMessage() == (
        "socket.accept() out of system resource (Too many open files): "
        "new connections wait until descriptors are free"
    )
    assert record.exc_info is None


async def test_other_loop_errors_reach_the_previous_handler() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: seen.append(context))
    quiet_accept_errors(loop)

    loop.call_exception_handler({"message": "something else"})
    loop.call_exception_handler(out_of_descriptors())

    assert [context["message"] for context in seen] == ["something else"]
