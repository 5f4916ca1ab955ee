#!/usr/bin/env python3
"""Fuzz target `client_frame`: any bytes a WebSocket client sends, through the frame validator.

Checks `pm_ws.client_messages.decode_client_message` and `decode_request_id` as the
session calls them. Expected: a request that obeys every rule of SPEC §2
"Validation" (checked here independently of the validator), or a
`ProtocolError` coded DECODE_ERROR or INVALID_MESSAGE. Anything else that
escapes, or a request that breaks a rule, is a crash.

    uv run --group fuzz python tools/fuzz/fuzz_client_frame.py CORPUS_DIR [libFuzzer flags]
"""

from __future__ import annotations

import re
import unicodedata

import pm_proto as pb
from pm_ws import ProtocolError
from pm_ws.client_messages import (
    CommandRequest,
    PingRequest,
    RefreshTokenRequest,
    SubscribeRequest,
    UnsubscribeRequest,
    decode_client_message,
    decode_request_id,
)
from protomutator import RawMutate, mutate_serialized

EXPECTED_CODES = frozenset({"DECODE_ERROR", "INVALID_MESSAGE"})
COMMAND_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")


def valid_id(value: str) -> bool:
    """SPEC §2: 1..128 characters without control characters."""
    return 1 <= len(value) <= 128 and not any(unicodedata.category(c) == "Cc" for c in value)


def test_one_input(data: bytes) -> None:
    request_id = decode_request_id(data)
    assert len(request_id) <= 64
    try:
        request = decode_client_message(data)
    except ProtocolError as refusal:
        check_refusal(refusal, request_id)
        return
    assert data
    assert request.request_id == request_id
    assert not any(unicodedata.category(c) == "Cc" for c in request.request_id)
    match request:
        case SubscribeRequest() | UnsubscribeRequest():
            lists = (request.ids.project_ids, request.ids.sprint_ids, request.ids.work_item_ids)
            assert len(request.ids) >= 1
            for ids in lists:
                assert len(ids) <= 100
                assert len(set(ids)) == len(ids)
                assert all(valid_id(value) for value in ids), ids
            if isinstance(request, SubscribeRequest) and request.resume_from is not None:
                assert valid_id(request.resume_from.epoch)
                assert 0 <= request.resume_from.seq < 2**64
        case PingRequest():
            assert -(2**63) <= request.client_time_ms < 2**63
        case RefreshTokenRequest():
            assert 1 <= len(request.token.encode()) <= 8192
        case CommandRequest():
            assert COMMAND_NAME.fullmatch(request.name), request.name
        case _:
            raise AssertionError(f"unexpected request {request!r}")


def check_refusal(refusal: ProtocolError, request_id: str) -> None:
    assert refusal.code in EXPECTED_CODES, refusal.code
    assert refusal.message
    assert refusal.request_id in ("", request_id), (refusal.request_id, request_id)


def mutate(data: bytes, max_size: int, seed: int, raw_mutate: RawMutate) -> bytes:
    """Mutate a frame as a `pm.v1.ClientMessage` (see protomutator)."""
    return mutate_serialized(data, max_size, seed, pb.ClientMessage, raw_mutate)


def main() -> None:
    from libfuzzer import fuzz

    fuzz(test_one_input, mutate)


if __name__ == "__main__":
    main()
