import pytest
from pm_ws import TenantId
from pm_ws.brokers._redis_codec import DISCONNECT_MESSAGE, decode_channel_message

ACME = TenantId("acme")


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deeply_nested_disconnect_message_is_refused_with_value_error(depth: int) -> None:
    # RedisBroker catches ValueError around this call; a RecursionError escaped
    # into its listener (found by tools/fuzz, target redis_codec).
    data = DISCONNECT_MESSAGE + b"[" * depth + b"]" * depth

    with pytest.raises(ValueError, match="undecodable disconnect message"):
        decode_channel_message(ACME, data)
