"""The redis-server helper: its own port and data, and the faults a test inflicts on it."""

from __future__ import annotations

import pytest
import redis
from pm_testkit import RedisServer, RedisUser


def test_a_restart_keeps_the_port_and_starts_empty(own_redis_server: RedisServer) -> None:
    port = own_redis_server.port
    with own_redis_server.client() as admin:
        admin.set("k", "v")

    own_redis_server.restart()

    assert own_redis_server.port == port
    with own_redis_server.client() as admin:
        assert admin.get("k") is None


def test_a_stop_that_keeps_the_data_finds_it_again(own_redis_server: RedisServer) -> None:
    with own_redis_server.client() as admin:
        admin.set("k", "kept")

    own_redis_server.restart(keep_data=True)

    with own_redis_server.client() as admin:
        assert admin.get("k") == b"kept"


def test_a_killed_server_refuses_connections_until_started_again(
    own_redis_server: RedisServer,
) -> None:
    own_redis_server.kill()

    assert not own_redis_server.running
    with pytest.raises(redis.ConnectionError), own_redis_server.client() as admin:
        admin.ping()
    own_redis_server.start()
    with own_redis_server.client() as admin:
        assert admin.ping()


async def test_a_paused_server_answers_once_the_pause_is_over(
    own_redis_server: RedisServer,
) -> None:
    own_redis_server.pause(100)

    await own_redis_server.until_answering()
    await own_redis_server.sleep(0.01)


def test_a_user_given_at_start_logs_in_by_its_url(own_redis_server: RedisServer) -> None:
    listener = RedisUser("listener", "listener-password-0123")
    server = RedisServer(own_redis_server.workdir / "acl", users=[listener]).start()
    try:
        with redis.Redis.from_url(server.url_for(listener)) as client:
            assert client.acl_whoami() == "listener"
    finally:
        server.stop()


def test_subscribers_can_be_cut_off(own_redis_server: RedisServer) -> None:
    with own_redis_server.client() as admin:
        pubsub = admin.pubsub()
        pubsub.subscribe("channel")
        try:
            assert own_redis_server.kill_pubsub_clients() == 1
        finally:
            pubsub.close()
