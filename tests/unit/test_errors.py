"""The error-code enum and the exception tree under PegasusError."""

from __future__ import annotations

import pytest

import pegasus_kv
from pegasus_kv.core.errors import (
    CodecError,
    ErrorCode,
    InvalidArgumentError,
    KeyTooLargeError,
    NotPrimaryError,
    PegasusError,
    PegasusTimeoutError,
    all_error_classes,
    error_from_code,
)


def test_every_error_code_but_ok_has_its_own_exception_class() -> None:
    classes = all_error_classes()
    for code in ErrorCode:
        if code is ErrorCode.OK:
            continue
        assert code in classes, f"{code.name} has no exception class"
        assert classes[code].code is code


@pytest.mark.parametrize("code", [c for c in ErrorCode if c is not ErrorCode.OK])
def test_errors_rebuilt_from_the_wire_keep_code_message_and_retriable_flag(code: ErrorCode) -> None:
    error = error_from_code(int(code), "why it failed")
    assert isinstance(error, PegasusError)
    assert error.code is code
    assert error.retriable is code.retriable
    assert "why it failed" in str(error)


def test_routing_and_overload_errors_are_retriable_but_bad_input_is_not() -> None:
    assert NotPrimaryError().retriable
    assert PegasusTimeoutError().retriable
    assert ErrorCode.BUSY.retriable
    assert not InvalidArgumentError().retriable
    assert not CodecError().retriable


def test_size_errors_are_invalid_arguments_and_everything_is_a_pegasus_error() -> None:
    assert issubclass(KeyTooLargeError, InvalidArgumentError)
    assert issubclass(CodecError, pegasus_kv.PegasusError)


def test_an_unknown_wire_code_still_gives_a_pegasus_error() -> None:
    error = error_from_code(9999, "from a newer server")
    assert type(error) is PegasusError
    assert "9999" in str(error)
