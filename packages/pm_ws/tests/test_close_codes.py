import pm_proto as pb
import pytest
from pm_ws import close_codes

# What the close frames and `Closing.code` carry today; clients and dashboards match on it.
WIRE = {
    "NORMAL": (1000, "NORMAL"),
    "SERVER_SHUTDOWN": (1001, "SERVER_SHUTDOWN"),
    "PROTOCOL_ERROR": (1002, "PROTOCOL_ERROR"),
    "POLICY_VIOLATION": (1008, "POLICY_VIOLATION"),
    "MESSAGE_TOO_BIG": (1009, "MESSAGE_TOO_BIG"),
    "INTERNAL_ERROR": (1011, "INTERNAL_ERROR"),
    "TOKEN_EXPIRED": (4001, "TOKEN_EXPIRED"),
    "IDENTITY_CHANGED": (4003, "IDENTITY_CHANGED"),
    "SLOW_CLIENT": (4008, "SLOW_CLIENT"),
    "HEARTBEAT_TIMEOUT": (4009, "HEARTBEAT_TIMEOUT"),
    "OPERATOR_DISCONNECT": (4010, "DISCONNECTED_BY_OPERATOR"),
    "BROADCAST_LAGGED": (4011, "BROADCAST_LAGGED"),
}


@pytest.mark.parametrize(("name", "wire"), WIRE.items())
def test_close_reasons_carry_the_codes_and_reasons_of_the_contract(
    name: str, wire: tuple[int, str]
) -> None:
    reason = getattr(close_codes, name)

    assert (reason.code, reason.reason) == wire
    assert pb.CloseCode.Name(reason.code) == f"CLOSE_CODE_{reason.reason}"


def test_every_code_of_the_proto_enum_is_a_server_code() -> None:
    declared = {code for code in pb.CloseCode.values() if code}

    assert close_codes.SERVER_CODES == declared == {code for code, _ in WIRE.values()}


@pytest.mark.parametrize(
    ("code", "label"),
    [(4008, "4008"), (1006, "1006"), (1015, "1015"), (3000, "other"), (4999, "other")],
)
def test_metric_labels_are_bounded_whatever_a_client_sends(code: int, label: str) -> None:
    assert close_codes.metric_label(code) == label


@pytest.mark.parametrize(("code", "valid"), [(0, True), (1000, True), (1005, False), (3000, True)])
def test_peer_codes_follow_rfc_6455(code: int, valid: bool) -> None:
    assert close_codes.is_valid_peer_code(code) is valid
